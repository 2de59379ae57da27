// target_guard: which targets lead back into this daemon (its API, a forward's own listener, a
// cycle of its forwards), checked when a forward changes and again before each connect.
#pragma once

#include "relay/forward_spec.hpp"
#include "relay/forward_stats.hpp"

#include <asio/ip/address.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace relay {

// A socket this daemon listens on, or a forward's range of them (port to port_end).
struct listen_point {
  relay::protocol protocol = protocol::tcp;
  asio::ip::address address;
  std::uint16_t port = 0;
  // For "::": whether IPv4 clients are kept out. Forwards set IPV6_V6ONLY; the API does not, so
  // its "::" takes IPv4 too (Linux's default, net.ipv6.bindv6only = 0).
  bool v6_only = true;
  std::uint16_t port_end = 0;  // a range's last port; 0 (or below port): `port` alone
  std::uint16_t last() const { return std::max(port, port_end); }
};

// Whether an address is one of this host's interface addresses; asked only when a target meets a
// wildcard listener on its port.
using local_test = std::function<bool(const asio::ip::address&)>;

// The "reaches" rule: a connection to `to`:`port` arrives at the listener `l` when
//  - the protocols are equal and the port is l's (or one of its range), and
//  - `to` is `l`'s address, or `l` is a wildcard ("0.0.0.0" for IPv4; "::" for IPv6, and for IPv4
//    too unless v6_only) and `to` is an address of this host of a family it takes: loopback
//    (127.0.0.0/8, ::1) or an address on a local interface (getifaddrs: they change at runtime).
// Both sides are normalised first: an IPv4-mapped IPv6 address (::ffff:127.0.0.1) is the IPv4
// address, and scope ids are ignored except on link-local addresses, where fe80::1%eth0 and
// fe80::1%eth1 are two addresses (and fe80::1 with none reaches nothing: it cannot be connected).
// A destination "0.0.0.0" or "::" is its family's loopback address, where Linux sends a connect to
// it (ip_route_output_key_hash_rcu, tcp_v6_connect).
// Not seen: "local" routes for whole prefixes other than 127/8 (AnyIP: `ip route add local ... dev lo`).
bool reaches(const asio::ip::address& to, std::uint16_t port, relay::protocol protocol, const listen_point& l,
             const local_test& is_local);

// This host's interface addresses as they are now (getifaddrs), normalised as above.
std::vector<asio::ip::address> interface_addresses();
// A local_test that reads the interface addresses when first asked, then keeps them.
local_test fresh_local_test();

// Why a target must not be used; `message` names the target and where it leads.
struct refusal {
  enum class kind { api, own_listener, cycle };
  refusal::kind kind;
  std::string message;
};

// One place a forward's connections may go (a ranged forward's port p goes to port + p - its first).
struct guard_hop {
  asio::ip::address address;
  std::uint16_t port = 0;
};

// A listening forward and where its connections go: each IP-literal target of its pool (a host
// name is known only once resolved, and is left out).
struct guard_node {
  std::int64_t id = 0;  // 0: a forward being created
  listen_point listen;
  std::vector<guard_hop> targets;
};
// The node of an enabled forward; nothing when its listen address is not set yet (port 0) or not a literal.
std::optional<guard_node> node_of(const forward_spec& spec);

// A picture of the daemon's listeners (its API and its forwards) at one moment; immutable.
class target_guard {
 public:
  target_guard(std::vector<listen_point> api, std::vector<guard_node> forwards);

  // Why forward `id` must not connect to `to`:`port` (to port_end, for a range's targets; 0: `port`
  // alone) over `protocol`: it reaches the API (TCP), or
  // the forward's own listener, or a forward one of whose IP-literal targets leads, hop by hop, back to it.
  // A hop whose target is a host name ends the walk: where it leads is known only when that
  // forward resolves it (and checks it then). So a cycle is seen when at most one of its forwards
  // has a host-name target: with none, when it is closed by a change; with one, when that forward
  // connects. A cycle through two host-name targets is not seen.
  std::optional<refusal> check(std::int64_t id, relay::protocol protocol, const asio::ip::address& to,
                               std::uint16_t port, const local_test& is_local, std::uint16_t port_end = 0) const;
  // A change of `next` (whose node, when enabled, is among this guard's forwards): each of its
  // targets that is an IP literal, checked as above with the interface addresses of now (a ranged
  // forward's target as the range of ports it is sent to); the first refusal, which names that target.
  std::optional<refusal> check(const forward_spec& next) const;
  // Whether anything here listens on `port`: when not, no target on it can lead back (the cheap test).
  bool listens_on(std::uint16_t port) const;

 private:
  // The walk from `to`:first..last, whose ports are already known to meet a listener.
  std::optional<refusal> walk(std::int64_t origin, relay::protocol protocol, const asio::ip::address& to,
                              std::uint16_t first, std::uint16_t last, const local_test& is_local,
                              std::vector<std::size_t>& path, std::vector<std::vector<std::pair<int, int>>>& seen) const;
  // The nodes whose range meets first..last, in port order.
  std::vector<std::size_t> nodes_on(std::uint16_t first, std::uint16_t last) const;

  std::vector<listen_point> api_;
  std::vector<guard_node> nodes_;  // sorted by listen port (a range's first)
  int widest_ = 1;                 // the most ports one node listens on
};

// The data plane's side. Each worker holds the engine's latest guard (installed on that worker);
// a session asks before each connect. Only a target port that something of this daemon listens on
// costs more than a lookup, and only one that meets a wildcard listener reads the interface
// addresses (at most once a second per worker, so an address added since may go unseen that long).
void install_guard(std::shared_ptr<const target_guard> guard);
// On a worker: whether forward `id` must not connect to `to`:`port`. A refusal is counted in
// `stats.loops_refused` and logged (at most once a second per worker).
bool leads_back(std::int64_t id, relay::protocol protocol, const asio::ip::address& to, std::uint16_t port,
                forward_stats& stats);

}  // namespace relay
