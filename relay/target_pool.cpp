// target_pool: tiers of usable targets, and each balancing policy's pick within a tier.
#include "relay/target_pool.hpp"

#include "relay/forward_spec.hpp"

#include <cmath>
#include <limits>

namespace relay {

namespace {

constexpr std::uint64_t fnv_offset = 14695981039346656037ull;
constexpr std::uint64_t fnv_prime = 1099511628211ull;

std::uint64_t fnv1a(std::uint64_t h, const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= fnv_prime;
  }
  return h;
}

// A final mix (splitmix64's) so that nearby inputs give unrelated scores.
std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

bool is_tried(tried_set tried, std::size_t i) { return (tried >> i) & 1u; }

}  // namespace

std::uint64_t rendezvous_hash(const asio::ip::address& client, const target_spec& t) {
  std::uint64_t h = fnv_offset;
  if (client.is_v4()) {
    const auto b = client.to_v4().to_bytes();
    h = fnv1a(h, b.data(), b.size());
  } else {
    const auto v6 = client.to_v6();
    if (v6.is_v4_mapped()) {  // ::ffff:192.0.2.7 is 192.0.2.7
      const auto b = asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_bytes();
      h = fnv1a(h, b.data(), b.size());
    } else {
      const auto b = v6.to_bytes();
      h = fnv1a(h, b.data(), b.size());
    }
  }
  const auto where = format_endpoint(t.host, t.port);
  return mix(fnv1a(h, where.data(), where.size()));
}

target_pool::target_pool(std::vector<target_spec> targets, balance_policy policy)
    : targets_(std::move(targets)), policy_(policy) {
  slots_.reserve(targets_.size());
  for (std::size_t i = 0; i < targets_.size(); ++i) slots_.push_back(std::make_unique<slot>());
}

bool target_pool::in_tier(std::size_t i, tier t) const {
  const bool usable = health(i) != target_health::down;
  switch (t) {
    case tier::primary:
      return usable && !targets_[i].backup;
    case tier::backup:
      return usable && targets_[i].backup;
    case tier::rest:
      return !usable;
  }
  return false;
}

std::optional<std::size_t> target_pool::pick(const asio::ip::address& client, tried_set tried) {
  for (const auto t : {tier::primary, tier::backup, tier::rest}) {
    if (auto i = pick_in(t, client, tried)) return i;
  }
  return std::nullopt;
}

std::optional<std::size_t> target_pool::pick_in(tier t, const asio::ip::address& client, tried_set tried) {
  std::optional<std::size_t> best;
  switch (policy_) {
    case balance_policy::round_robin:
      return round_robin(t, tried);
    case balance_policy::first:
      for (std::size_t i = 0; i < targets_.size(); ++i) {
        if (in_tier(i, t) && !is_tried(tried, i)) return i;
      }
      return std::nullopt;
    case balance_policy::least_conn: {
      // active / weight compared as active_a * weight_b < active_b * weight_a (weights are at most
      // 1000: no overflow); ties go round robin.
      tried_set tied = ~tried_set{0};
      for (std::size_t i = 0; i < targets_.size(); ++i) {
        if (!in_tier(i, t) || is_tried(tried, i)) continue;
        if (!best) {
          best = i;
          tied = ~(tried_set{1} << i);
          continue;
        }
        const auto a = active(i) * targets_[*best].weight;
        const auto b = active(*best) * targets_[i].weight;
        if (a < b) {
          best = i;
          tied = ~(tried_set{1} << i);
        } else if (a == b) {
          tied &= ~(tried_set{1} << i);
        }
      }
      if (!best) return std::nullopt;
      return round_robin(t, tried | tied);  // among the least loaded, round robin decides
    }
    case balance_policy::source_hash: {
      double top = -1;
      for (std::size_t i = 0; i < targets_.size(); ++i) {
        if (!in_tier(i, t) || is_tried(tried, i)) continue;
        // Weighted rendezvous: -w / ln(u) for u in (0, 1] from the hash; the highest score wins.
        const double u = (static_cast<double>(rendezvous_hash(client, targets_[i]) >> 11) + 1.0) / 9007199254740992.0;
        const double score = u >= 1.0 ? std::numeric_limits<double>::infinity()
                                      : -static_cast<double>(targets_[i].weight) / std::log(u);
        if (score > top) {
          top = score;
          best = i;
        }
      }
      return best;
    }
  }
  return best;
}

// nginx's smooth weighted round robin: each candidate's running weight grows by its weight, the
// largest is chosen, and the chosen one gives back the sum. Weights 3 and 1 give A A B A, A A B A.
std::optional<std::size_t> target_pool::round_robin(tier t, tried_set tried) {
  std::lock_guard lock(rr_mutex_);
  std::optional<std::size_t> best;
  std::int64_t total = 0;
  for (std::size_t i = 0; i < targets_.size(); ++i) {
    if (!in_tier(i, t) || is_tried(tried, i)) continue;
    auto& s = *slots_[i];
    s.current += targets_[i].weight;
    total += targets_[i].weight;
    if (!best || s.current > slots_[*best]->current) best = i;
  }
  if (best) slots_[*best]->current -= total;
  return best;
}

}  // namespace relay
