// admission: who may use a forward (its allow and deny lists) and how many at once (max_connections,
// max_connections_per_source), decided when a TCP connection is accepted or a UDP session opens.
#pragma once

#include "relay/forward_spec.hpp"
#include "relay/forward_stats.hpp"
#include "relay/ip_prefix.hpp"

#include <asio/ip/address.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>

namespace relay {

// A forward's allow and deny lists, compiled for matching when the forward is configured (never per
// connection). Immutable once built, so any thread may match against it.
class source_filter {
 public:
  explicit source_filter(const forward_spec& spec);

  // No deny prefix contains `client` and (allow is empty or an allow prefix contains it): deny
  // wins. O(log n) in the lists' lengths. An IPv4-mapped IPv6 address matches IPv4 entries.
  bool admits(const asio::ip::address& client) const;

 private:
  prefix_set allow_;
  prefix_set deny_;
};

// The filter for `spec`, or null when it has no lists (everyone is admitted, and the client's
// address need not be read at all).
std::shared_ptr<const source_filter> make_filter(const forward_spec& spec);

class admission;

// One slot in a forward's live counts, held by a TCP connection or UDP session for its life; giving
// it back (reset() or the destructor) lowers the counts. Empty when the admission refused it.
// Move-only; used on one thread at a time (the worker that owns the connection). 32 bytes, so an idle
// connection grows by little.
class admission_ticket {
 public:
  admission_ticket() = default;
  admission_ticket(admission_ticket&& o) noexcept;
  admission_ticket& operator=(admission_ticket&& o) noexcept;
  ~admission_ticket() { reset(); }

  void reset();
  explicit operator bool() const { return owner_ != nullptr; }

  // The client's address as it was read (at admission, or later through remember()), if it was.
  std::optional<asio::ip::address> source() const;
  // Keeps the client's address, so that a later change of the rules need not read it again.
  void remember(const asio::ip::address& client);

 private:
  friend class admission;
  using key = std::array<unsigned char, 16>;  // an IPv6 address; IPv4 as ::ffff:a.b.c.d, so one client is one key

  admission* owner_ = nullptr;
  key source_{};
  std::uint32_t epoch_ = 0;  // the per-source count it is counted in (0: none)
  bool has_source_ = false;
};

// A forward's live connections (TCP) or sessions (UDP), shared by all its workers, and the limits
// they are held to. The forward-wide count is one atomic (no lock, whatever the limits); the count
// per client IP address is kept, under a mutex, only while max_connections_per_source is on. Every
// method may be called from any thread. It must outlive its tickets.
class admission {
 public:
  admission() = default;
  admission(const admission&) = delete;
  admission& operator=(const admission&) = delete;

  // Limits for the connections admitted from now on; 0 is no limit. Lowering one closes nothing:
  // new ones are refused until the count is under it. Turning the per-source limit on (0 -> N)
  // starts a fresh per-source count that the live tickets join through count_source(), so the
  // connections already there count against the new limit as soon as their forward has reviewed
  // them (on each worker, before its configure returns); turning it off forgets the count.
  void set_limits(std::uint32_t max_total, std::uint32_t max_per_source);

  // A slot for a connection or session from `client`, or an empty ticket when a limit is reached.
  // `client` may be null while the per-source limit is off (its address was not read). `leaving`:
  // slots the caller frees once this succeeds (a UDP session evicted at udp_max_sessions to make
  // room), which max_connections does not count; so a refused client evicts no one.
  admission_ticket admit(const asio::ip::address* client, std::uint32_t leaving = 0);
  // Counts `ticket`, taken by admit(nullptr) before its client was known (a TCP client still sending
  // its PROXY header holds a slot of max_connections), in the per-source limit for `client`: false
  // when that limit is reached (the caller closes it, and the ticket with it).
  bool admit_source(admission_ticket& ticket, const asio::ip::address& client);

  // Counts a live ticket's client in the per-source count when that limit is on and the ticket is
  // not counted in it yet; never refuses (a connection already live is not closed by a limit).
  void count_source(admission_ticket& ticket, const asio::ip::address& client);

  // Whether the per-source limit is on: an accepting worker must read the client's address.
  bool per_source() const { return per_source_on_.load(std::memory_order_acquire); }
  // Live tickets (for tests and checks).
  std::uint32_t live() const { return total_.load(std::memory_order_relaxed); }
  std::uint32_t live_from(const asio::ip::address& client);

 private:
  friend class admission_ticket;
  struct key_hash {
    std::size_t operator()(const admission_ticket::key& k) const noexcept;
  };
  static admission_ticket::key key_of(const asio::ip::address& a);
  // Counts a ticket that remembers its source in the per-source count, unless that limit is reached.
  bool count_in_source(admission_ticket& t);
  void release(admission_ticket& t);

  std::atomic<std::uint32_t> total_{0};
  std::atomic<std::uint32_t> max_total_{0};
  std::atomic<bool> per_source_on_{false};
  std::mutex mutex_;  // guards what follows
  std::uint32_t max_per_source_ = 0;
  std::uint32_t epoch_ = 0;       // the current per-source count's, 0 while off
  std::uint32_t last_epoch_ = 0;  // so that a count turned on again is never taken for an old one
  std::unordered_map<admission_ticket::key, std::uint32_t, key_hash> per_source_;
};

// A new client of a forward (TCP: a connection; UDP: a session's first datagram), judged by its
// lists (`filter`, null: none) and then its counts: its slot, or an empty ticket when refused, the
// refusal counted in stats.refused_acl or refused_limit with one debug line ("forward 7: connection
// from 10.0.0.1 refused: ...", `what` naming the thing refused). `leaving`: as admission::admit.
admission_ticket admit_client(const source_filter* filter, admission& counts, forward_stats& stats,
                              std::int64_t forward, const asio::ip::address& client, std::string_view what,
                              std::uint32_t leaving = 0);

// The client a PROXY header named for a connection holding `ticket` (its max_connections slot since
// the accept), judged by the lists and the per-source limit as admit_client judges, and counted the
// same way; false when refused.
bool admit_carried(const source_filter* filter, admission& counts, forward_stats& stats, std::int64_t forward,
                   admission_ticket& ticket, const asio::ip::address& client, std::string_view what);

// After a change of a forward's lists or limits, one live client: false when the new lists refuse it
// (the caller cuts it off), else true, and it is counted in a per-source limit that was just turned on
// (see admission::set_limits). Nothing to review while reviewing() is false.
bool still_admitted(const source_filter* filter, admission& counts, admission_ticket& ticket,
                    const asio::ip::address& client);
inline bool reviewing(const source_filter* filter, const admission& counts) { return filter || counts.per_source(); }
// The one line an operator's change that cut clients off is worth ("forward 7: reset 2 connections
// whose client is no longer admitted"); `done` and `noun` say how and what.
void log_cut_off(std::int64_t forward, std::size_t count, std::string_view done, std::string_view noun);

}  // namespace relay
