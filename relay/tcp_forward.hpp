// tcp_forward: a running TCP forward: its listener, its current targets and its live connections.
#pragma once

#include "relay/admission.hpp"
#include "relay/connection_set.hpp"
#include "relay/engine_options.hpp"
#include "relay/forward_stats.hpp"
#include "relay/running_forward.hpp"
#include "relay/tcp_listener.hpp"
#include "relay/tcp_session.hpp"
#include "relay/worker_pool.hpp"

#include <map>
#include <memory>
#include <vector>

namespace relay {

// The listening sockets (one per port of a range) are bound on the home worker; every worker accepts
// from each (a dup on the others) and serves what it accepted. Acceptors k, route k and connection
// set k belong to worker k.
// Every public method is for the control plane: it posts to the owning workers and waits.
class tcp_forward final : public running_forward, public std::enable_shared_from_this<tcp_forward> {
 public:
  tcp_forward(worker_pool& pool, std::size_t home, const forward_spec& spec, std::shared_ptr<forward_stats> stats,
              std::shared_ptr<port_stats> ports, const engine_options& options,
              const std::shared_ptr<target_pool>& targets, std::atomic<std::uint64_t>& connection_ids);

  // Starts accepting on the acceptors; live connections carry on through a listener change.
  void listen(listen_sockets sockets, bool replace) override;
  void close_ports(const std::vector<std::uint16_t>& ports) override;
  // Closes the listeners only; live connections carry on.
  void close_listener() override;
  // The listener closes; live connections carry on.
  void drain() override { close_listener(); }
  // New connections pick from the new pool; live ones keep their target, and take up a new
  // bandwidth limit at once. New lists and limits apply to new connections; live ones of a client
  // the new lists refuse are reset before this returns.
  void configure(const forward_spec& spec, std::shared_ptr<target_pool> targets) override;
  // Listener and every live connection closed before this returns.
  void stop() override;

  connection_page connections(std::uint64_t after, std::size_t limit) override;
  std::optional<connection_info> close_connection(std::uint64_t id) override;
  std::size_t close_connections(const prefix_set& clients) override;

 private:
  void on_accept(asio::ip::tcp::socket socket, const asio::ip::tcp::endpoint& client, std::size_t worker,
                 std::uint16_t port, port_counters* counters);
  // The accepted client's slot, or an empty ticket when the lists or a limit refuse it (counted,
  // and the socket closed with a reset). On worker `worker`.
  admission_ticket admit(asio::ip::tcp::socket& socket, const asio::ip::address& client, std::size_t worker);
  // After a configure, on worker k: resets the live connections whose client the new lists refuse,
  // and counts the others in a per-source limit that was just turned on.
  void review(std::size_t k);

  worker_pool& pool_;
  const std::size_t home_;
  const engine_options& options_;
  std::shared_ptr<forward_stats> stats_;
  const std::shared_ptr<port_stats> ports_;
  const std::shared_ptr<forward_bandwidth> bandwidth_;  // in every route: kept across configure()
  std::vector<tcp_route> routes_;        // [k] on worker k only; never resized (routes point into it)
  // [k] on worker k only: by port, the listening socket or a dup of it.
  std::vector<std::map<std::uint16_t, acceptor_ptr>> acceptors_;
  std::vector<connection_set> connections_;  // [k] on worker k only
  // Admission: the counts all workers share (the lists are in each route).
  admission admission_;
  std::atomic<std::uint64_t>& connection_ids_;  // the engine's: the last id given to a connection
};

}  // namespace relay
