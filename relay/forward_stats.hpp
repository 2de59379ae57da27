// forward_stats: per-forward counters, written by workers and read by the API as relaxed atomics.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

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

// One listen port's share of a forward's counters (a range's per_port view): TCP connections or
// UDP sessions that arrived on it, and their bytes.
struct port_counters {
  std::atomic<std::uint64_t> connections_active{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> bytes_up{0};
  std::atomic<std::uint64_t> bytes_down{0};
};

struct port_snapshot {
  std::uint16_t port = 0;
  std::uint64_t connections_active = 0;
  std::uint64_t connections_total = 0;
  std::uint64_t bytes_up = 0;
  std::uint64_t bytes_down = 0;
};

// A forward's port_counters: one block per port it has listened on, kept for the forward's life (a
// port that leaves the range and comes back counts on), so a connection holds a plain pointer to its
// port's block: no lock and no reference count on the data path. The map itself is the control
// plane's (the mutex is for that side only).
class port_stats {
 public:
  port_counters& at(std::uint16_t port) {
    std::lock_guard lock(mutex_);
    auto& block = blocks_[port];
    if (!block) block = std::make_unique<port_counters>();
    return *block;
  }
  // Ports first..last that have a block, in port order.
  std::vector<port_snapshot> read(std::uint16_t first, std::uint16_t last) const {
    constexpr auto r = std::memory_order_relaxed;
    std::lock_guard lock(mutex_);
    std::vector<port_snapshot> out;
    for (auto it = blocks_.lower_bound(first); it != blocks_.end() && it->first <= last; ++it) {
      const auto& b = *it->second;
      out.push_back({it->first, b.connections_active.load(r), b.connections_total.load(r), b.bytes_up.load(r),
                     b.bytes_down.load(r)});
    }
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::uint16_t, std::unique_ptr<port_counters>> blocks_;
};

inline void lower(std::atomic<std::uint64_t>& counter) { counter.fetch_sub(1, std::memory_order_relaxed); }

inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) {
  counter.fetch_add(by, std::memory_order_relaxed);
}

}  // namespace relay
