// bandwidth: a forward's bandwidth limit at work: a token bucket per direction, shared by all its connections.
#pragma once

#include "relay/forward_spec.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>

namespace relay {

// A reader that waits for tokens looks again after this at the latest, so a raised (or lifted)
// limit reaches a waiting connection this soon.
inline constexpr std::chrono::milliseconds max_token_wait{200};

// `rate` bytes a second flow into the bucket, up to `burst`; each byte moved takes one out.
//
// One bucket is shared by every worker serving the forward, so its state is under a mutex: the
// tokens, the time they were last counted, the rate and the burst change together (a refill is
// a read-modify-write of the first two at the rate, and a PATCH changes the rate mid-flight), which
// lock-free would need a CAS loop over a packed state and still could not change all four at once.
// The lock is held for a few arithmetic operations, taken once per read of a limited direction (a
// read moves a whole chunk, see take), and there are as many contenders as workers: it is never
// contended for long. An unlimited bucket takes no lock: `limited()` is one relaxed atomic load,
// and the data paths ask nothing more of it.
class token_bucket {
 public:
  using clock = std::chrono::steady_clock;

  // `rate` bytes/s (nothing: unlimited) holding at most `burst` bytes. Tokens held are kept across
  // a change, down to the new burst; a bucket that was unlimited starts full.
  void set(std::optional<std::uint64_t> rate, std::uint64_t burst);
  bool limited() const { return limited_.load(std::memory_order_relaxed); }

  // Up to `want` bytes now: what the bucket holds, at most `want`. Nothing while it holds less than
  // min(want, chunk), where a chunk is 50 ms worth between 4 and 64 KiB: a limited reader moves
  // chunks worth their system calls, never a trickle. All of `want` when unlimited.
  std::uint64_t take(std::uint64_t want);
  // All `n` bytes or nothing (a datagram): true when taken.
  bool take_all(std::uint64_t n);
  // Tokens taken and not used (a read that found less than it was granted).
  void give_back(std::uint64_t n);
  // How long until take(n) grants something: until the bucket holds min(n, chunk) bytes. Zero when
  // it does now, or when unlimited.
  clock::duration time_until(std::uint64_t n);

 private:
  // Counts the tokens that flowed in since last_. With mutex_ held.
  void refill(clock::time_point now);
  std::uint64_t chunk() const;

  std::atomic<bool> limited_{false};
  std::mutex mutex_;
  double rate_ = 0;  // bytes per second; 0: unlimited
  double burst_ = 0;
  double tokens_ = 0;
  clock::time_point last_{};
};

// A forward's two buckets ("up" is client to target). The running forward makes one and keeps it
// across PATCHes, so connections and sessions that began under an older spec (or none) are held to
// the new limit too: they reference this object, not a copy.
struct forward_bandwidth {
  explicit forward_bandwidth(const std::optional<bandwidth_limit_spec>& limit) { configure(limit); }
  // The limit in place: a direction without a rate becomes unlimited.
  void configure(const std::optional<bandwidth_limit_spec>& limit);

  token_bucket up;
  token_bucket down;
};

}  // namespace relay
