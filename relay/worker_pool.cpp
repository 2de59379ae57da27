// worker_pool: starts and joins the data-plane threads.
#include "relay/worker_pool.hpp"

#include <spdlog/spdlog.h>

namespace relay {

void log_coroutine_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::error("unexpected exception in a relay coroutine: {}", ex.what());
  }
}

worker_pool::worker_pool(std::size_t workers) {
  if (workers == 0) workers = 1;
  for (std::size_t i = 0; i < workers; ++i) {
    auto w = std::make_unique<worker>();
    w->guard.emplace(w->io.get_executor());
    workers_.push_back(std::move(w));
  }
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    workers_[i]->thread = std::thread([this, i] {
      for (;;) {
        try {
          workers_[i]->io.run();
          workers_[i]->finished = true;
          return;
        } catch (const std::exception& e) {
          spdlog::error("worker {}: unexpected exception: {}", i, e.what());
        }
      }
    });
  }
}

worker_pool::~worker_pool() { stop(); }

worker_pool::clock::time_point worker_pool::ping() {
  const auto now = clock::now();
  for (auto& w : workers_) {
    asio::post(w->io, [w = w.get(), stamp = now.time_since_epoch().count()] {
      w->last_stamp.store(stamp, std::memory_order_relaxed);
    });
  }
  return now;
}

bool worker_pool::answered(clock::time_point since) const {
  for (const auto& w : workers_) {
    if (w->last_stamp.load(std::memory_order_relaxed) < since.time_since_epoch().count()) return false;
  }
  return true;
}

void worker_pool::stop() {
  // First let every loop run out of work: the engine has closed everything, so what is left are the
  // completions of cancelled operations. Running them matters: an accept completion queued on one
  // worker holds a socket of another, and destroying it unrun after that worker is gone is a
  // use-after-free. Whatever is still running after the grace period is stopped.
  for (auto& w : workers_) w->guard.reset();
  const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (auto& w : workers_) {
    while (w->thread.joinable() && !w->finished && std::chrono::steady_clock::now() < grace) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  for (auto& w : workers_) w->io.stop();
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
}

}  // namespace relay
