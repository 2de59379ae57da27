// tcp_forward: hands accepted sockets to sessions on their workers and closes them all on request.
#include "relay/tcp_forward.hpp"

#include "relay/socket_options.hpp"

#include <asio/co_spawn.hpp>
#include <spdlog/spdlog.h>

#include <unistd.h>

namespace relay {

namespace {
tcp_route route_of(const forward_spec& spec, const std::shared_ptr<target_pool>& pool,
                   const std::shared_ptr<forward_bandwidth>& bandwidth,
                   const std::shared_ptr<const source_filter>& filter, admission& counts, const tcp_route& slot) {
  return std::make_shared<const tcp_route_info>(tcp_route_info{spec, pool, bandwidth, filter, &counts, &slot});
}
}  // namespace

tcp_forward::tcp_forward(worker_pool& pool, std::size_t home, const forward_spec& spec,
                         std::shared_ptr<forward_stats> stats, std::shared_ptr<port_stats> ports,
                         const engine_options& options, const std::shared_ptr<target_pool>& targets,
                         std::atomic<std::uint64_t>& connection_ids)
    : pool_(pool),
      home_(home),
      options_(options),
      stats_(std::move(stats)),
      ports_(std::move(ports)),
      bandwidth_(std::make_shared<forward_bandwidth>(spec.bandwidth_limit)),
      routes_(pool.size()),
      acceptors_(pool.size()),
      connections_(pool.size()),
      connection_ids_(connection_ids) {
  // One each: a worker's sessions share only its own.
  const auto filter = make_filter(spec);
  for (auto& r : routes_) r = route_of(spec, targets, bandwidth_, filter, admission_, r);
  admission_.set_limits(spec.max_connections, spec.max_connections_per_source);
}

void tcp_forward::listen(listen_sockets sockets, bool replace) {
  if (replace) close_listener();
  if (sockets.empty()) return;
  struct port_listener {
    std::uint16_t port;
    acceptor_ptr bound;
    port_counters* counters;
  };
  std::vector<port_listener> listeners;
  for (auto& [port, socket] : sockets) {
    listeners.push_back({port, std::get<acceptor_ptr>(std::move(socket)), &ports_->at(port)});
  }
  const auto protocol = pool_.run_on(home_, [&] { return listeners.front().bound->local_endpoint().protocol(); });
  const auto label = "forward " + std::to_string(routes_[home_]->spec.id);
  // Every worker accepts from each listening socket (the home worker's, or a dup of it on the
  // others), so a connection is served where it was accepted: no hand-off between threads. A range
  // of N ports costs N descriptors per worker.
  for (std::size_t k = 0; k < pool_.size(); ++k) {
    pool_.run_on(k, [&] {
      auto self = shared_from_this();
      for (const auto& l : listeners) {
        acceptor_ptr a = l.bound;
        if (k != home_) {
          const int fd = ::dup(l.bound->native_handle());
          if (fd < 0) continue;  // out of descriptors: the other workers still accept
          std::error_code ec;
          a = std::make_shared<asio::ip::tcp::acceptor>(pool_.context(k));
          a->assign(protocol, fd, ec);
          if (ec) {
            ::close(fd);
            continue;
          }
        }
        acceptors_[k][l.port] = a;
        asio::co_spawn(pool_.context(k),
                       accept_loop(a, k,
                                   [self, port = l.port, counters = l.counters](
                                       asio::ip::tcp::socket s, const asio::ip::tcp::endpoint& client,
                                       std::size_t worker) {
                                     self->on_accept(std::move(s), client, worker, port, counters);
                                   },
                                   label),
                       log_coroutine_exception);
      }
    });
  }
}

void tcp_forward::close_ports(const std::vector<std::uint16_t>& ports) {
  // A port stops accepting once the last descriptor of its listening socket is closed.
  for (std::size_t k = 0; k < pool_.size(); ++k) {
    pool_.run_on(k, [&] {
      for (const auto port : ports) {
        auto it = acceptors_[k].find(port);
        if (it == acceptors_[k].end()) continue;
        it->second->close();
        acceptors_[k].erase(it);
      }
    });
  }
}

void tcp_forward::close_listener() {
  for (std::size_t k = 0; k < pool_.size(); ++k) {
    pool_.run_on(k, [&] {
      for (auto& [port, a] : acceptors_[k]) a->close();
      acceptors_[k].clear();
    });
  }
}

void tcp_forward::configure(const forward_spec& spec, std::shared_ptr<target_pool> targets) {
  // The limits first: a connection accepted before its worker's review() below is then either
  // counted per source at admission (per_source() is on, so its address is read) or by that review.
  admission_.set_limits(spec.max_connections, spec.max_connections_per_source);
  bandwidth_->configure(spec.bandwidth_limit);  // thread-safe: live connections see it at their next read
  const auto filter = make_filter(spec);  // compiled once, shared by every worker
  for (std::size_t k = 0; k < pool_.size(); ++k) {
    pool_.run_on(k, [&] {
      routes_[k] = route_of(spec, targets, bandwidth_, filter, admission_, routes_[k]);
      review(k);
    });
  }
}

void tcp_forward::review(std::size_t k) {
  const auto* filter = routes_[k]->filter.get();
  if (!reviewing(filter, admission_)) return;
  // A connection from before the per-source limit was turned on counts in it from now on, as an
  // operator expects of "at most N per client"; it is never closed for it (it may leave its client
  // over the limit, which then refuses that client's new connections until it is under).
  std::vector<stoppable*> denied;
  connections_[k].for_each([&](stoppable& c) {
    const auto client = c.ticket().source();  // kept since accept
    if (client && !still_admitted(filter, admission_, c.ticket(), *client)) denied.push_back(&c);
  });
  log_cut_off(routes_[k]->spec.id, denied.size(), "reset", "connection");
  for (auto* c : denied) c->cut_off();
}

void tcp_forward::stop() {
  close_listener();
  // Sessions spawned before the listener closed reach their worker's queue ahead of this close,
  // and a closed set refuses any that arrive later, so none slips through.
  for (std::size_t k = 0; k < pool_.size(); ++k) pool_.run_on(k, [&] { connections_[k].close(); });
}

void tcp_forward::on_accept(asio::ip::tcp::socket socket, const asio::ip::tcp::endpoint& client, std::size_t worker,
                            std::uint16_t port, port_counters* counters) {
  // On worker `worker`, which accepted it and serves it.
  const auto& spec = routes_[worker]->spec;
  if (port < spec.listen_port || port > last_port(spec)) {
    // The port left the range in a PATCH whose close_ports has not reached this worker yet.
    std::error_code ignored;
    reset_on_close(socket);
    socket.close(ignored);
    return;
  }
  // A client that must start with a PROXY header is admitted by the session once the header names
  // it (max_connections included).
  admission_ticket ticket;
  if (!spec.accept_proxy_protocol) {
    ticket = admit(socket, client.address(), worker);
    if (!ticket) return;
  }
  const arrival at{static_cast<std::uint16_t>(port - spec.listen_port), counters};
  const auto id = connection_ids_.fetch_add(1, std::memory_order_relaxed) + 1;
  auto session = std::make_shared<tcp_session>(std::move(socket), routes_[worker], *stats_, options_,
                                               shared_from_this(), at, id);
  session->hold(std::move(ticket));
  auto listed = connections_[worker].add(*session);
  if (!listed) return;  // the forward was stopped before this connection began
  session->start(std::move(listed));
}

// Each worker copies its part while the others relay on; no lock is shared with the data path.
connection_page tcp_forward::connections(std::uint64_t after, std::size_t limit) {
  std::vector<connection_page> parts;
  for (std::size_t k = 0; k < pool_.size(); ++k) {
    parts.push_back(pool_.run_on(k, [&] { return connections_[k].page(after, limit); }));
  }
  return merge_pages(std::move(parts), limit);
}

std::optional<connection_info> tcp_forward::close_connection(std::uint64_t id) {
  for (std::size_t k = 0; k < pool_.size(); ++k) {
    if (auto closed = pool_.run_on(k, [&] { return connections_[k].close(id); })) return closed;
  }
  return std::nullopt;
}

std::size_t tcp_forward::close_connections(const prefix_set& clients) {
  std::size_t closed = 0;
  for (std::size_t k = 0; k < pool_.size(); ++k) closed += pool_.run_on(k, [&] { return connections_[k].close(clients); });
  return closed;
}

admission_ticket tcp_forward::admit(asio::ip::tcp::socket& socket, const asio::ip::address& client,
                                     std::size_t worker) {
  // The ticket keeps the address (accept gave it: no system call), so a later PATCH of the lists
  // judges this connection by it even once the client's socket has reset.
  auto ticket = admit_client(routes_[worker]->filter.get(), admission_, *stats_, routes_[worker]->spec.id, client,
                             "connection from");
  if (!ticket) {  // reset right after accept: before any session, resolve or connection to a target
    reset_on_close(socket);
    std::error_code ignored;
    socket.close(ignored);
  }
  return ticket;
}

}  // namespace relay
