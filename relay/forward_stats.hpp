// forward_stats: per-forward counters, written by workers and read by the API as relaxed atomics.
#pragma once

#include <atomic>
#include <cstdint>

namespace relay {

struct stats_snapshot {
  std::uint64_t connections_active = 0;
  std::uint64_t connections_total = 0;
  std::uint64_t bytes_up = 0;    // client -> target
  std::uint64_t bytes_down = 0;  // target -> client
  std::uint64_t connect_errors = 0;
  std::uint64_t datagrams_up = 0;  // UDP only, from here on
  std::uint64_t datagrams_down = 0;
  std::uint64_t datagrams_dropped = 0;
  std::uint64_t sessions_evicted = 0;
  std::uint64_t loops_refused = 0;  // connections or sessions whose target leads back into the daemon
  // UDP: ICMP errors (port, host or network unreachable, prohibited) reported on a session's socket.
  std::uint64_t target_unreachable = 0;
  // Connections or sessions refused right after accept (TCP: reset) or at their first datagram
  // (UDP: dropped): by the allow and deny lists, and by max_connections or max_connections_per_source.
  std::uint64_t refused_acl = 0;
  std::uint64_t refused_limit = 0;
  // TCP, accept_proxy_protocol: connections closed for a missing, partial, malformed or oversized
  // PROXY header, or none in time.
  std::uint64_t proxy_errors = 0;
};

struct forward_stats {
  std::atomic<std::uint64_t> connections_active{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> bytes_up{0};
  std::atomic<std::uint64_t> bytes_down{0};
  std::atomic<std::uint64_t> connect_errors{0};
  std::atomic<std::uint64_t> datagrams_up{0};
  std::atomic<std::uint64_t> datagrams_down{0};
  std::atomic<std::uint64_t> datagrams_dropped{0};
  std::atomic<std::uint64_t> sessions_evicted{0};
  std::atomic<std::uint64_t> loops_refused{0};
  std::atomic<std::uint64_t> target_unreachable{0};
  std::atomic<std::uint64_t> refused_acl{0};
  std::atomic<std::uint64_t> refused_limit{0};
  std::atomic<std::uint64_t> proxy_errors{0};

  stats_snapshot read() const {
    constexpr auto r = std::memory_order_relaxed;
    stats_snapshot s;
    s.connections_active = connections_active.load(r);
    s.connections_total = connections_total.load(r);
    s.bytes_up = bytes_up.load(r);
    s.bytes_down = bytes_down.load(r);
    s.connect_errors = connect_errors.load(r);
    s.datagrams_up = datagrams_up.load(r);
    s.datagrams_down = datagrams_down.load(r);
    s.datagrams_dropped = datagrams_dropped.load(r);
    s.sessions_evicted = sessions_evicted.load(r);
    s.loops_refused = loops_refused.load(r);
    s.target_unreachable = target_unreachable.load(r);
    s.refused_acl = refused_acl.load(r);
    s.refused_limit = refused_limit.load(r);
    s.proxy_errors = proxy_errors.load(r);
    return s;
  }
};

inline void lower(std::atomic<std::uint64_t>& counter) { counter.fetch_sub(1, std::memory_order_relaxed); }

inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) {
  counter.fetch_add(by, std::memory_order_relaxed);
}

}  // namespace relay
