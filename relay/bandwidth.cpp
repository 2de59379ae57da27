// bandwidth: the token bucket's arithmetic, and a forward's limit applied to its two buckets.
#include "relay/bandwidth.hpp"

#include <algorithm>
#include <cmath>

namespace relay {

namespace {
constexpr std::uint64_t min_chunk = 4 * 1024;
constexpr std::uint64_t max_chunk = 64 * 1024;
}  // namespace

void token_bucket::set(std::optional<std::uint64_t> rate, std::uint64_t burst) {
  std::lock_guard lock(mutex_);
  if (!rate) {
    rate_ = 0;
    limited_.store(false, std::memory_order_relaxed);
    return;
  }
  const auto now = clock::now();
  if (rate_ > 0) {
    refill(now);  // what flowed in so far flowed at the old rate
  } else {
    tokens_ = static_cast<double>(burst);
    last_ = now;
  }
  rate_ = static_cast<double>(*rate);
  burst_ = static_cast<double>(burst);
  tokens_ = std::min(tokens_, burst_);
  // Within the lock: a reader that sees the flag and then locks sees the rate with it.
  limited_.store(true, std::memory_order_relaxed);
}

void token_bucket::refill(clock::time_point now) {
  if (now <= last_) return;
  const double elapsed = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
  last_ = now;
}

std::uint64_t token_bucket::chunk() const {
  // At most a quarter of the burst, so that a read does not wait for a full bucket: tokens that flow
  // in while a full one waits for its reader are lost (a small burst at a high rate).
  return std::min(std::clamp(static_cast<std::uint64_t>(rate_ / 20), min_chunk, max_chunk),
                  static_cast<std::uint64_t>(burst_ / 4));
}

std::uint64_t token_bucket::take(std::uint64_t want) {
  std::lock_guard lock(mutex_);
  if (rate_ == 0) return want;  // lifted since the caller looked
  refill(clock::now());
  const auto held = static_cast<std::uint64_t>(tokens_);
  if (held < std::min(want, chunk())) return 0;
  const auto granted = std::min(want, held);
  tokens_ -= static_cast<double>(granted);
  return granted;
}

bool token_bucket::take_all(std::uint64_t n) {
  std::lock_guard lock(mutex_);
  if (rate_ == 0) return true;
  refill(clock::now());
  if (tokens_ < static_cast<double>(n)) return false;
  tokens_ -= static_cast<double>(n);
  return true;
}

void token_bucket::give_back(std::uint64_t n) {
  if (n == 0) return;
  std::lock_guard lock(mutex_);
  tokens_ = std::min(burst_, tokens_ + static_cast<double>(n));
}

token_bucket::clock::duration token_bucket::time_until(std::uint64_t n) {
  std::lock_guard lock(mutex_);
  if (rate_ == 0) return clock::duration::zero();
  refill(clock::now());
  const double needed = static_cast<double>(std::min({n, chunk(), static_cast<std::uint64_t>(burst_)})) - tokens_;
  if (needed <= 0) return clock::duration::zero();
  return std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(std::ceil(needed) / rate_));
}

void forward_bandwidth::configure(const std::optional<bandwidth_limit_spec>& limit) {
  for (auto [bucket, rate] : {std::pair{&up, limit ? limit->up_bytes_per_s : std::nullopt},
                              std::pair{&down, limit ? limit->down_bytes_per_s : std::nullopt}}) {
    bucket->set(rate, rate ? burst_bytes_for(*limit, *rate) : 0);
  }
}

}  // namespace relay
