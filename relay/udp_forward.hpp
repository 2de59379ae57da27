// udp_forward: a running UDP forward: one listening socket and a session per client address, on one worker.
#pragma once

#include "relay/admission.hpp"
#include "relay/bandwidth.hpp"
#include "relay/forward_spec.hpp"
#include "relay/forward_stats.hpp"
#include "relay/running_forward.hpp"
#include "relay/target_pool.hpp"
#include "relay/worker_pool.hpp"

#include <asio/awaitable.hpp>
#include <asio/ip/udp.hpp>
#include <asio/steady_timer.hpp>

#include <chrono>
#include <list>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

namespace relay {

// How long an address of a UDP target that answered with an ICMP error is passed over by new
// sessions, while its name has other addresses (nginx's `fail_timeout`, with its default).
inline constexpr std::chrono::seconds udp_fail_timeout{10};
// At most this many failed addresses are remembered per forward; past it, new failures are not.
inline constexpr std::size_t udp_max_failed_addresses = 1024;

// What a session is: a client's IP:port, the listen port and the local address it sent to. On a
// wildcard listener (0.0.0.0, ::) a client sending to two of the host's addresses has two sessions,
// as a NAT would see two flows, and each session's replies leave from its own address; so does a
// client sending to two ports of a range, whose replies leave from each port. On a listener bound to
// one address `local` is left unspecified.
struct flow {
  asio::ip::udp::endpoint client;
  asio::ip::address local;
  std::uint16_t port = 0;
  bool operator==(const flow&) const = default;
};

struct flow_hash {
  std::size_t operator()(const flow& f) const noexcept;
};

// Everything lives on the home worker: the sockets (one per port of a range), the session table,
// the LRU list and the one sweep timer, so nothing here needs a lock. Sessions are found in O(1) by flow; the LRU
// list (front = most recent) gives eviction and idle expiry in O(1) with a single timer.
// Datagrams are never queued: one that cannot be sent at once, or that the forward's bandwidth
// limit cannot take whole (either way), is dropped and counted. I/O is
// batched: recvmmsg of up to 32 datagrams per call into the worker's scratch space, and one sendmmsg
// per run of datagrams bound for the same session (or, for replies, the same client). A wildcard
// listener takes each datagram's destination address from the same recvmmsg (IP_PKTINFO) and
// replies from it in the same sendmmsg, so a client always hears back from the address it sent to.
class udp_forward final : public running_forward, public std::enable_shared_from_this<udp_forward> {
 public:
  // `drain_idle`: during a drain, a session idle this long is done (engine_options::udp_drain_idle_timeout).
  udp_forward(worker_pool& pool, std::size_t home, const forward_spec& spec, std::shared_ptr<forward_stats> stats,
              std::shared_ptr<port_stats> ports, std::chrono::milliseconds drain_idle,
              std::shared_ptr<target_pool> targets, std::atomic<std::uint64_t>& connection_ids);
  ~udp_forward() override;

  // New listening sockets that replace the old ones end the old sessions: their replies would leave
  // from an address the clients never sent to. A port that leaves the range ends its sessions.
  void listen(listen_sockets sockets, bool replace) override;
  void close_ports(const std::vector<std::uint16_t>& ports) override;
  void close_listener() override;
  // The socket stays open, since live sessions' replies leave through it; datagrams from clients
  // without a session are dropped and counted.
  void drain() override;
  // New sessions pick from the new pool; idle timeout, cap and bandwidth limit apply to all
  // sessions at once. New lists and limits apply to new sessions; live ones of a client the new
  // lists refuse are closed before this returns.
  void configure(const forward_spec& spec, std::shared_ptr<target_pool> targets) override;
  void stop() override;

  connection_page connections(std::uint64_t after, std::size_t limit) override;
  std::optional<connection_info> close_connection(std::uint64_t id) override;
  std::size_t close_connections(const prefix_set& clients) override;

 private:
  using clock = std::chrono::steady_clock;
  struct session;
  using session_ptr = std::shared_ptr<session>;
  // One port's listening socket: its sessions' replies leave through it.
  struct listener {
    udp_socket_ptr socket;
    std::uint16_t port = 0;
    port_counters* counters = nullptr;
    bool reply_gso = true;  // replies through it may go as GSO sends (see send_batch)
  };
  using listener_ptr = std::shared_ptr<listener>;

  asio::awaitable<void> receive_from_clients(listener_ptr l);
  asio::awaitable<void> start_session(session_ptr s);
  asio::awaitable<void> receive_from_target(session_ptr s);
  asio::awaitable<void> sweep();

  // The session for a client's datagram (opened if new), or nullptr when it is dropped (counted).
  session* client_datagram(const flow& from, const listener_ptr& via);
  // Keeps a datagram for a session whose target is still resolving (a few at most; then dropped).
  void hold(session& s, const char* data, std::size_t n);
  // A slot for a new session of `f`, or an empty ticket when the lists or a limit refuse it (the
  // datagram is counted in refused_acl or refused_limit, not in datagrams_dropped). Past
  // udp_max_sessions the least recent session is evicted first, so max_connections refuses only
  // when it is the lower cap (and a client then refused by its per-source limit has still evicted one).
  admission_ticket admit(const flow& f);
  // After a configure: closes the sessions whose client the new lists refuse, and counts the others
  // in a per-source limit that was just turned on (see admission::set_limits).
  void review();
  session* open_session(const flow& f, admission_ticket ticket, const listener_ptr& via);
  // Picks the session's target from targets_ (the next one when a name does not resolve) and
  // resolves it into s.targets; false when no target is left (the session is closed).
  asio::awaitable<bool> pick_target(session_ptr s);
  // Drops the addresses in s.targets of the other family than the forward's source_address. When
  // none is left, the target has failed (counted, with why) and false is returned: the next is picked.
  bool reachable_from_source(session& s);
  // Connects the session to address `index` of its target (a new socket, so ICMP errors meant for
  // the old address are gone with it). False when it is closed instead: the address leads back into
  // the daemon, or no socket could be opened (each counted).
  bool connect_to(session& s, std::size_t index);
  bool connect_upstream(session& s, const asio::ip::udp::endpoint& target);
  // An ICMP error (`error`, an errno) on the session's socket: counted in target_unreachable and
  // against the target's health, the address remembered as failed for udp_fail_timeout, and the
  // session moved to the next address of its target, if any (or closed, when the target was down
  // already and the pool has others).
  void target_failed(session& s, int error);
  // Registers, before `targets` is shared with the home worker, the listener that closes the
  // sessions on a target that goes down (on the home worker), so that their clients' next datagrams
  // open sessions on a target that is up.
  void watch(target_pool& targets);
  void close_sessions_on(const target_state* dead);
  // The address a session should use among `targets`, trying from `from` on (wrapping around): the
  // first that has not failed within udp_fail_timeout, else `from` itself.
  std::size_t choose_address(const std::vector<asio::ip::udp::endpoint>& targets, std::size_t from);
  // A session's v2 PROXY header (DGRAM): its client, and the address and port the client sent to.
  std::string proxy_header_for(const flow& f, const listener& via) const;
  void send_upstream(session& s, const char* data, std::size_t n);
  // Whether a datagram of `n` bytes fits `bucket` now (then it is taken from it); one that does
  // not is counted as dropped.
  bool within_limit(token_bucket& bucket, std::size_t n);
  void close_session(session& s, bool evicted);
  void close_all_sessions();
  void close_sockets();
  void enforce_cap();
  void touch(session& s);
  connection_info describe(const session& s) const;

  worker_pool& pool_;
  const std::size_t home_;
  std::shared_ptr<forward_stats> stats_;
  const std::shared_ptr<port_stats> ports_;
  // Home worker only, from here on.
  forward_spec spec_;  // as last configured: what new sessions use, and the cap
  std::shared_ptr<target_pool> targets_;  // spec_'s pool: where new sessions go
  std::chrono::milliseconds idle_;  // spec_'s idle timeout, shortened while draining
  forward_bandwidth bandwidth_;     // spec_'s limit, for every session
  const std::chrono::milliseconds drain_idle_;
  std::map<std::uint16_t, listener_ptr> listeners_;  // by port
  bool wildcard_ = false;  // the sockets are bound to 0.0.0.0 or ::, so replies name their source
  // Admission: spec_'s lists compiled (null: none), and the live session counts, which must outlive
  // the sessions' tickets (so they come before the table).
  std::shared_ptr<const source_filter> filter_;
  admission admission_;
  std::unordered_map<flow, session_ptr, flow_hash> sessions_;
  std::list<session*> lru_;
  // Target addresses that answered with an ICMP error, and when (see udp_fail_timeout).
  std::unordered_map<asio::ip::udp::endpoint, clock::time_point> failed_;  // asio's std::hash
  asio::steady_timer sweep_timer_;
  bool sweeping_ = false;
  bool stopped_ = false;
  bool draining_ = false;
  const target_pool* watched_ = nullptr;  // control plane: the pool the last listener went to
  std::atomic<std::uint64_t>& connection_ids_;  // the engine's: the last id given to a connection
};

}  // namespace relay
