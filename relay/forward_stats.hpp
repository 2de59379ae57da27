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

  stats_snapshot read() const {
    constexpr auto r = std::memory_order_relaxed;
    return {connections_active.load(r), connections_total.load(r), bytes_up.load(r), bytes_down.load(r),
            connect_errors.load(r),     datagrams_up.load(r),      datagrams_down.load(r),
            datagrams_dropped.load(r),  sessions_evicted.load(r),  loops_refused.load(r)};
  }
};

inline void lower(std::atomic<std::uint64_t>& counter) { counter.fetch_sub(1, std::memory_order_relaxed); }

inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) {
  counter.fetch_add(by, std::memory_order_relaxed);
}

}  // namespace relay
