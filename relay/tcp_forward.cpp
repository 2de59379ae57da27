// tcp_forward: hands accepted sockets to sessions on their workers and closes them all on request.
#include "relay/tcp_forward.hpp"

#include <asio/co_spawn.hpp>
#include <spdlog/spdlog.h>

namespace relay {

namespace {
// co_spawn completion: a coroutine that ends by exception is a bug worth a loud line, never silence.
void log_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::error("unexpected exception in a relay coroutine: {}", ex.what());
  }
}
}  // namespace

tcp_forward::tcp_forward(worker_pool& pool, std::size_t home, tcp_route route, std::shared_ptr<forward_stats> stats,
                         const engine_options& options)
    : pool_(pool),
      home_(home),
      options_(options),
      stats_(std::move(stats)),
      route_(std::move(route)),
      connections_(pool.size()) {}

void tcp_forward::listen(acceptor_ptr acceptor) {
  pool_.run_on(home_, [&] {
    if (acceptor_) acceptor_->close();
    acceptor_ = std::move(acceptor);
    auto label = "forward " + std::to_string(route_.forward_id);
    auto self = shared_from_this();
    asio::co_spawn(
        pool_.context(home_),
        accept_loop(acceptor_, pool_,
                    [self](asio::ip::tcp::socket s, std::size_t worker) { self->on_accept(std::move(s), worker); },
                    std::move(label)),
        log_exception);
  });
}

void tcp_forward::close_listener() {
  pool_.run_on(home_, [&] {
    if (acceptor_) acceptor_->close();
    acceptor_.reset();
  });
}

void tcp_forward::set_target(tcp_route route) {
  pool_.run_on(home_, [&] { route_ = std::move(route); });
}

void tcp_forward::stop() {
  close_listener();
  // Sessions spawned before the listener closed reach their worker's queue ahead of this close,
  // and a closed set refuses any that arrive later, so none slips through.
  for (std::size_t k = 0; k < pool_.size(); ++k) pool_.run_on(k, [&] { connections_[k].close(); });
}

void tcp_forward::on_accept(asio::ip::tcp::socket socket, std::size_t worker) {
  asio::co_spawn(pool_.context(worker), serve(shared_from_this(), std::move(socket), worker, route_), log_exception);
}

asio::awaitable<void> tcp_forward::serve(std::shared_ptr<tcp_forward> self, asio::ip::tcp::socket socket,
                                         std::size_t worker, tcp_route route) {
  tcp_session session(std::move(socket), std::move(route), *self->stats_, self->options_);
  auto listed = self->connections_[worker].add(session);
  if (!listed) co_return;  // the forward was stopped before this session began
  co_await session.run();
}

}  // namespace relay
