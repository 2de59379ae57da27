// tcp_forward: hands accepted sockets to sessions on their workers and closes them all on request.
#include "relay/tcp_forward.hpp"

#include <asio/co_spawn.hpp>
#include <spdlog/spdlog.h>

#include <unistd.h>

namespace relay {

namespace {
tcp_route route_of(const forward_spec& spec, const std::shared_ptr<target_pool>& pool,
                   const std::shared_ptr<forward_bandwidth>& bandwidth) {
  return std::make_shared<const tcp_route_info>(tcp_route_info{spec, pool, bandwidth});
}
}  // namespace

tcp_forward::tcp_forward(worker_pool& pool, std::size_t home, const forward_spec& spec,
                         std::shared_ptr<forward_stats> stats, const engine_options& options,
                         const std::shared_ptr<target_pool>& targets)
    : pool_(pool),
      home_(home),
      options_(options),
      stats_(std::move(stats)),
      bandwidth_(std::make_shared<forward_bandwidth>(spec.bandwidth_limit)),
      routes_(pool.size()),
      acceptors_(pool.size()),
      connections_(pool.size()) {
  // One each: a worker's sessions share only its own.
  for (auto& r : routes_) r = route_of(spec, targets, bandwidth_);
}

void tcp_forward::listen(bound_socket socket) {
  close_listener();
  const auto bound = std::get<acceptor_ptr>(std::move(socket));
  const auto protocol = pool_.run_on(home_, [&] { return bound->local_endpoint().protocol(); });
  // Every worker accepts from the one listening socket (the home worker's, or a dup of it on the
  // others), so a connection is served where it was accepted: no hand-off between threads.
  for (std::size_t k = 0; k < pool_.size(); ++k) {
    pool_.run_on(k, [&] {
      acceptor_ptr a = bound;
      if (k != home_) {
        const int fd = ::dup(bound->native_handle());
        if (fd < 0) return;  // out of descriptors: the other workers still accept
        std::error_code ec;
        a = std::make_shared<asio::ip::tcp::acceptor>(pool_.context(k));
        a->assign(protocol, fd, ec);
        if (ec) {
          ::close(fd);
          return;
        }
      }
      acceptors_[k] = a;
      auto self = shared_from_this();
      asio::co_spawn(pool_.context(k),
                     accept_loop(a, k, [self](asio::ip::tcp::socket s, std::size_t worker) {
                       self->on_accept(std::move(s), worker);
                     }, "forward " + std::to_string(routes_[k]->spec.id)),
                     log_coroutine_exception);
    });
  }
}

void tcp_forward::close_listener() {
  // The port stops accepting once the last descriptor of the listening socket is closed.
  for (std::size_t k = 0; k < pool_.size(); ++k) {
    pool_.run_on(k, [&] {
      if (acceptors_[k]) acceptors_[k]->close();
      acceptors_[k].reset();
    });
  }
}

void tcp_forward::configure(const forward_spec& spec, std::shared_ptr<target_pool> targets) {
  bandwidth_->configure(spec.bandwidth_limit);  // thread-safe: live connections see it at their next read
  for (std::size_t k = 0; k < pool_.size(); ++k) {
    pool_.run_on(k, [&] { routes_[k] = route_of(spec, targets, bandwidth_); });
  }
}

void tcp_forward::stop() {
  close_listener();
  // Sessions spawned before the listener closed reach their worker's queue ahead of this close,
  // and a closed set refuses any that arrive later, so none slips through.
  for (std::size_t k = 0; k < pool_.size(); ++k) pool_.run_on(k, [&] { connections_[k].close(); });
}

void tcp_forward::on_accept(asio::ip::tcp::socket socket, std::size_t worker) {
  // On worker `worker`, which accepted it and serves it.
  auto session = std::make_shared<tcp_session>(std::move(socket), routes_[worker], *stats_, options_,
                                               shared_from_this());
  auto listed = connections_[worker].add(*session);
  if (!listed) return;  // the forward was stopped before this connection began
  session->start(std::move(listed));
}

}  // namespace relay
