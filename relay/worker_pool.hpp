// worker_pool: the data-plane threads, one io_context each; the control plane reaches them only by posting.
#pragma once

#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <future>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

namespace relay {

// The completion handler for co_spawn on a worker: a coroutine that ends by exception is a bug
// worth a loud line, never silence.
void log_coroutine_exception(std::exception_ptr e);

class worker_pool {
 public:
  explicit worker_pool(std::size_t workers);
  ~worker_pool();
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  std::size_t size() const { return workers_.size(); }
  asio::io_context& context(std::size_t index) { return workers_[index]->io; }

  // The worker that gets the next listener or connection (round robin; safe from any thread).
  std::size_t next() { return next_.fetch_add(1, std::memory_order_relaxed) % workers_.size(); }

  // Runs fn on worker `index` and waits for its result (exceptions travel back). Control plane only:
  // called on the worker's own thread it runs inline instead of deadlocking.
  template <class Fn>
  auto run_on(std::size_t index, Fn fn) -> decltype(fn()) {
    auto& io = context(index);
    if (io.get_executor().running_in_this_thread()) return fn();
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto done = task.get_future();
    asio::post(io, [&task] { task(); });
    return done.get();
  }

  // Liveness, for the service manager's watchdog: ping() queues a stamp on every worker and returns
  // at once; answered(since) is true when every worker has run a stamp queued at or after `since`,
  // which only a loop that is still turning can do.
  using clock = std::chrono::steady_clock;
  clock::time_point ping();
  bool answered(clock::time_point since) const;

  // Lets the workers finish what is queued (up to 2 s), then stops and joins them. Idempotent.
  void stop();

 private:
  struct worker {
    asio::io_context io{1};
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
    std::thread thread;
    std::atomic<clock::rep> last_stamp{0};
    std::atomic<bool> finished{false};  // run() returned: no work was left  // when the stamp this worker ran last was queued
  };
  std::vector<std::unique_ptr<worker>> workers_;
  std::atomic<std::size_t> next_{0};
};

}  // namespace relay
