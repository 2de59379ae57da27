// tcp_session: one client connection: connect to a target of the forward's pool (the next one when
// it cannot), then move bytes both ways until both directions are done, with splice(2) through a
// pooled pipe or a copy through the worker's buffer.
#pragma once

#include "relay/admission.hpp"
#include "relay/bandwidth.hpp"
#include "relay/connection_set.hpp"
#include "relay/engine_options.hpp"
#include "relay/forward_spec.hpp"
#include "relay/forward_stats.hpp"
#include "relay/proxy_protocol.hpp"
#include "relay/splice_pipe.hpp"
#include "relay/target_pool.hpp"

#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace relay {

// A reset is passed on after the bytes the resetting side sent before it, as long as the other
// side keeps taking them: when it takes nothing (reads nothing, acknowledges nothing) for this
// long, the reset goes at once and what it had not taken is lost.
inline constexpr std::chrono::milliseconds reset_delivery_stall{2'000};

// accept_proxy_protocol: a client's whole PROXY header must arrive within this long of its accept.
inline constexpr std::chrono::milliseconds proxy_header_timeout{3'000};

// Where a new connection goes and how: the forward's spec and pool as they were when the connection
// was accepted, so a PATCH only affects later ones. One copy per worker, shared by that worker's
// sessions (no string copy per connection, and a reference count no other core touches); a new
// option is read from it where it is used. The pool is one for all workers (its picks and counters
// are thread-safe).
struct tcp_route_info {
  forward_spec spec;
  std::shared_ptr<target_pool> pool;  // spec's targets
  // The forward's buckets: one object for all its routes, so a PATCH of the limit reaches live
  // connections too.
  std::shared_ptr<forward_bandwidth> bandwidth;
  // Admission: the lists as compiled for this worker (null: none), and the forward's counts, which
  // outlive its sessions (their owner keeps it).
  std::shared_ptr<const source_filter> filter;
  admission* counts = nullptr;
  // The worker's slot for its forward's current route, read on that worker only: a client admitted
  // after its PROXY header is judged by the lists as they are then, not as they were at its accept
  // (a change of the lists meanwhile had no address to judge it by).
  const std::shared_ptr<const tcp_route_info>* latest = nullptr;
};
using tcp_route = std::shared_ptr<const tcp_route_info>;

// The listen port a connection came in on: its offset in the forward's range (added to the port of
// whichever target it goes to) and its counters (the forward's port_stats keeps them).
struct arrival {
  std::uint16_t offset = 0;
  port_counters* counters = nullptr;
};

// A callback state machine rather than coroutines, so an idle connection costs its two sockets, two
// pending readiness waits and this object: no buffer, no coroutine frame. Bytes move only between
// readiness waits, through a pipe leased from the worker's pool (splice) or the worker's one copy
// buffer; only bytes the destination would not take at once are held, and reading that direction
// stops until they are gone. A socket that nothing reads any more (its direction blocked on the
// destination, or ended) gets an error wait from then on, so its peer's reset is still seen at
// once. Everything runs on the worker that owns the client socket.
//
// The session's phase:
//   header --a whole PROXY header read, and its source admitted--> connecting (accept_proxy_protocol only)
//   header --closed, malformed, oversized or not whole within proxy_header_timeout; or refused--> done (reset)
//   connecting --connected--> relaying --one direction finished--> half_closed --the other--> done
//   connecting --no address of the target connects, resolve fails, or an address leads back into the
//               daemon--> connecting (the pool's next target)
//   connecting --the pool has no target left to try--> done (the client is reset)
//   relaying | half_closed --a socket's error--> resetting --delivered, or stalled--> done (reset)
//   resetting --a bandwidth-limited direction out of tokens--> done (reset)
//   any --stop()--> done
// In `resetting`, the direction that reads the failed socket takes what it still holds to the other
// side, and once the other side's kernel has acknowledged it all, that side is reset; the reverse
// direction, which could only write to the failed socket, is dropped.
//
// Each direction's flow (bytes read from `from` and not yet taken by `to` are `pending()`; nothing
// is read while they are):
//   reading --a read found `from` empty--> drained --nothing pending: wait for `from`--> reading
//   reading | drained --`to` would not take it all--> blocked --`to` took it--> reading
//   reading --`from` ended (EOF, or its error is passed on)--> ended
//   ended --nothing pending--> finished (`to` is shut down for sending; or, resetting, the reset is passed on)
//   any --the session resets and `to` is the failed socket: dropped--> finished
// `blocked` and `ended` with bytes pending wait for `to` to take them. A direction of a forward with
// a bandwidth limit reads only what its bucket grants; granted nothing, it stays `reading` and waits
// on its own timer rather than on `from` (which gets its error wait meanwhile). Two facts sit beside
// the state, since they do not follow the life cycle: `splicing` (the automatic datapath's mode, which
// flips with the sizes read) and `watched` (an error wait on `from` was queued; once only).
class tcp_session final : public stoppable, public std::enable_shared_from_this<tcp_session> {
 public:
  // `owner` keeps the forward (its connection set and stats) alive for as long as the session; `id`
  // is its engine-wide number (connection_info::id).
  tcp_session(asio::ip::tcp::socket client, tcp_route route, forward_stats& stats, const engine_options& options,
              std::shared_ptr<void> owner, arrival port, std::uint64_t id);
  ~tcp_session();
  tcp_session(const tcp_session&) = delete;
  tcp_session& operator=(const tcp_session&) = delete;

  // Resolves and connects, then relays; pending operations keep the session alive until both
  // sockets are done with. `listed` keeps it in its forward's connection set meanwhile.
  void start(connection_set::registration listed);

  // Closes both sides at once (forward disabled, deleted or shut down). Same worker only.
  void stop() override;

  // Admission (relay/admission.hpp): the slot this connection holds in its forward's counts until
  // it stops, given before start(); and what a change of the forward's lists needs. Same worker only.
  void hold(admission_ticket ticket) { ticket_ = std::move(ticket); }
  admission_ticket& ticket() override { return ticket_; }
  void cut_off() override;
  // For the connections list: 0 once done. Same worker only.
  std::uint64_t connection_id() const override { return phase_ == phase::done ? 0 : id_; }
  connection_info describe() const override;

 private:
  using clock = std::chrono::steady_clock;
  enum class phase : std::uint8_t { header, connecting, relaying, half_closed, resetting, done };
  enum class flow : std::uint8_t { reading, drained, blocked, ended, finished };  // a direction's state

  // One direction of the relay: from `from` to `to`.
  struct direction {
    direction(asio::ip::tcp::socket* f, asio::ip::tcp::socket* t, std::atomic<std::uint64_t>* c)
        : from(f), to(t), counter(c) {}
    asio::ip::tcp::socket* from;
    asio::ip::tcp::socket* to;
    std::atomic<std::uint64_t>* counter;
    std::atomic<std::uint64_t>* target_counter = nullptr;  // the connected target's, in its target_state
    std::atomic<std::uint64_t>* port_counter = nullptr;    // the listen port's
    std::uint64_t bytes = 0;  // this connection's, for its entry in the connections list
    splice_pipe pipe;  // splice path: leased from the worker's pool until the direction waits to read or finishes
    std::unique_ptr<std::vector<char>> held;  // copy path: bytes `to` did not take yet
    std::size_t held_from = 0;
    std::unique_ptr<asio::steady_timer> throttle;  // a limited direction's wait for tokens, made at the first
    flow state = flow::reading;
    bool splicing = false;  // automatic datapath: bulk seen, so splice
    bool watched = false;  // an error wait on `from` was queued (when nothing read it any more): once only
    // Bytes read from `from` that `to` has not taken yet.
    bool pending() const { return pipe.size() > 0 || held != nullptr; }
    bool finished() const { return state == flow::finished; }
  };

  // accept_proxy_protocol: reads the client's header, never a byte past it (so what follows is
  // relayed as the client's first data), then admits the client it names.
  void read_header();
  void header_read();
  void header_failed(const std::string& why);
  // The client's address and port, and the address and port it connected to: as a PROXY header
  // carried them, else the socket's.
  asio::ip::tcp::endpoint client_endpoint() const;
  asio::ip::tcp::endpoint local_endpoint() const;
  // Counted as a live connection from here on (after the header, when there is one), then connects.
  void begin();
  // Picks the next target not tried yet and connects to it; resets the client when none is left.
  void next_target();
  // Every address of the current target failed (or it did not resolve): counted against it, then
  // the next target.
  void target_failed(const std::string& reason);
  void resolve();
  void try_connect(std::size_t index);
  void on_connect(std::size_t index, std::error_code ec);
  void arm_connect_timeout();
  void connected(const std::error_code& reset);

  void pump(direction& d);
  // Moves what is pending (pipe or held bytes) to `to`: true when nothing is left.
  bool flush(direction& d, std::error_code& ec);
  // Reads at most `most` bytes from `from` and passes them on; `d` becomes `ended` or `drained` when
  // the read saw so. Returns the bytes read.
  std::size_t fill(direction& d, std::error_code& ec, std::size_t most);
  std::size_t fill_splice(direction& d, std::error_code& ec, std::size_t most);
  std::size_t fill_copy(direction& d, std::error_code& ec, std::size_t most);
  token_bucket& bucket(const direction& d) const {
    return &d == &up_ ? route_->bandwidth->up : route_->bandwidth->down;
  }
  // A limited direction with no tokens for a read: waits on its timer (no longer than
  // max_token_wait), then pumps again.
  void wait_for_tokens(direction& d, token_bucket& b, std::size_t want);
  void release_pipe(direction& d);
  void wait(direction& d, asio::socket_base::wait_type what);
  void watch(direction& d);
  void finish(direction& d);
  // `s` failed (reset, or a local error): deliver what its direction still holds, then reset the other.
  void broken(asio::ip::tcp::socket& s, const std::error_code& ec);
  void pass_reset();
  void arm_reset_timer(clock::time_point at);
  void refuse();
  void arm_idle_timer();
  void moved(direction& d, std::size_t n);
  std::string peer() const;
  const target_spec& target() const { return route_->spec.targets[target_]; }
  // The current target's port for this connection's listen port.
  std::uint16_t target_port() const { return static_cast<std::uint16_t>(target().port + port_.offset); }
  std::string target_text() const { return format_endpoint(target().host, target_port()); }

  // The addresses a client's PROXY header carried (accept_proxy_protocol, and not LOCAL or UNKNOWN).
  struct carried {
    asio::ip::tcp::endpoint source;  // an IPv4-mapped address unmapped
    asio::ip::tcp::endpoint destination;
  };

  asio::ip::tcp::socket client_;
  asio::ip::tcp::socket upstream_;
  std::unique_ptr<proxy_header_parser> header_;  // in the header phase only
  std::unique_ptr<carried> carried_;
  asio::steady_timer timer_;
  std::unique_ptr<std::vector<asio::ip::tcp::endpoint>> endpoints_;  // while connecting only
  std::unique_ptr<asio::ip::tcp::resolver> resolver_;               // for host names, while resolving
  direction up_;
  direction down_;
  clock::time_point deadline_ = clock::time_point::max();
  asio::ip::tcp::socket* failed_ = nullptr;  // resetting: the socket whose error is passed on
  unsigned attempt_ = 0;  // which connect attempt a timeout belongs to
  int unacknowledged_ = 0;  // resetting: the other side's send queue when last looked at
  std::uint8_t polls_ = 0;  // resetting: how often it was looked at (the interval doubles)
  std::uint8_t target_ = 0;  // the pool's target being tried, then the connected one
  bool counted_ = false;     // the pool counts this connection on target_ (opened; closed() when done)
  tried_set tried_ = 0;      // connecting: the targets tried so far
  std::error_code failure_;  // connecting: why the last address of target_ failed
  phase phase_ = phase::connecting;
  // For the connections list; written here only, read by describe() on this worker.
  const std::uint64_t id_;
  const std::chrono::system_clock::time_point started_;
  coarse_clock::time_point last_active_;  // when bytes last moved (coarse: a read costs no system call)
  bool timed_out_ = false;
  bool timer_armed_ = false;
  tcp_route route_;
  arrival port_;
  forward_stats& stats_;
  const engine_options& options_;
  std::shared_ptr<void> owner_;
  connection_set::registration listed_;  // declared after owner_: it leaves the set before the set may go
  admission_ticket ticket_;              // declared after owner_: its counts are the forward's
};

}  // namespace relay
