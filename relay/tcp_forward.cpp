// tcp_forward: hands accepted sockets to sessions on their workers and closes them all on request.
#include "relay/tcp_forward.hpp"

#include <asio/co_spawn.hpp>
#include <asio/post.hpp>
#include <spdlog/spdlog.h>

namespace relay {

namespace {
tcp_route route_of(const forward_spec& spec) { return {spec.id, spec.target_host, spec.target_port}; }
}  // namespace

tcp_forward::tcp_forward(worker_pool& pool, std::size_t home, const forward_spec& spec,
                         std::shared_ptr<forward_stats> stats, const engine_options& options)
    : pool_(pool),
      home_(home),
      options_(options),
      stats_(std::move(stats)),
      route_(route_of(spec)),
      connections_(pool.size()) {}

void tcp_forward::listen(bound_socket socket) {
  pool_.run_on(home_, [&] {
    if (acceptor_) acceptor_->close();
    acceptor_ = std::get<acceptor_ptr>(std::move(socket));
    auto label = "forward " + std::to_string(route_.forward_id);
    auto self = shared_from_this();
    asio::co_spawn(
        pool_.context(home_),
        accept_loop(acceptor_, pool_,
                    [self](asio::ip::tcp::socket s, std::size_t worker) { self->on_accept(std::move(s), worker); },
                    std::move(label)),
        log_coroutine_exception);
  });
}

void tcp_forward::close_listener() {
  pool_.run_on(home_, [&] {
    if (acceptor_) acceptor_->close();
    acceptor_.reset();
  });
}

void tcp_forward::configure(const forward_spec& spec) {
  pool_.run_on(home_, [&] { route_ = route_of(spec); });
}

void tcp_forward::stop() {
  close_listener();
  // Sessions spawned before the listener closed reach their worker's queue ahead of this close,
  // and a closed set refuses any that arrive later, so none slips through.
  for (std::size_t k = 0; k < pool_.size(); ++k) pool_.run_on(k, [&] { connections_[k].close(); });
}

void tcp_forward::on_accept(asio::ip::tcp::socket socket, std::size_t worker) {
  // The socket already belongs to worker `worker`; its session is made and started there.
  asio::post(pool_.context(worker), [self = shared_from_this(), socket = std::move(socket), worker,
                                     route = route_]() mutable {
    auto session = std::make_shared<tcp_session>(std::move(socket), std::move(route), *self->stats_,
                                                 self->options_, self);
    auto listed = self->connections_[worker].add(*session);
    if (!listed) return;  // the forward was stopped before this connection began
    session->start(std::move(listed));
  });
}

}  // namespace relay
