// target_pool: tiers of usable targets, and each balancing policy's pick within a tier.
#include "relay/target_pool.hpp"

#include <spdlog/spdlog.h>

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

std::int64_t steady_now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string_view to_string(target_health h) {
  switch (h) {
    case target_health::up:
      return "up";
    case target_health::down:
      return "down";
    case target_health::unchecked:
      break;
  }
  return "unchecked";
}

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

target_pool::target_pool(const forward_spec& spec, std::string label, const target_pool* previous)
    : targets_(spec.targets),
      policy_(spec.balance),
      check_(spec.health_check),
      source_(spec.source_address),
      label_(std::move(label)) {
  states_.reserve(targets_.size());
  for (const auto& t : targets_) {
    std::shared_ptr<target_state> kept;
    if (previous) {
      for (std::size_t j = 0; j < previous->targets_.size(); ++j) {
        const auto& old = previous->targets_[j];
        if (old.host == t.host && old.port == t.port) kept = previous->states_[j];
      }
    }
    states_.push_back(kept ? kept : std::make_shared<target_state>());
  }
  current_.assign(targets_.size(), 0);
}

target_pool::target_pool(std::vector<target_spec> targets, balance_policy policy)
    : target_pool([&] {
        forward_spec s;
        s.targets = std::move(targets);
        s.balance = policy;
        return s;
      }()) {}

bool target_pool::usable(std::size_t i) const {
  const auto& s = state(i);
  if (s.health.load(std::memory_order_relaxed) != target_health::down) return true;
  return !check_ && steady_now() >= s.retry_at.load(std::memory_order_relaxed);  // its trial is due
}

bool target_pool::in_tier(std::size_t i, tier t) const {
  const bool ok = usable(i);
  switch (t) {
    case tier::primary:
      return ok && !targets_[i].backup;
    case tier::backup:
      return ok && targets_[i].backup;
    case tier::rest:
      return !ok;
  }
  return false;
}

bool target_pool::claim(std::size_t i, tier t) {
  auto& s = state(i);
  if (t == tier::rest || check_ || s.health.load(std::memory_order_relaxed) != target_health::down) return true;
  auto due = s.retry_at.load(std::memory_order_relaxed);
  const auto now = steady_now();
  if (now < due) return false;  // seen due, but another pick has claimed the trial since
  const auto next = now + std::chrono::duration_cast<std::chrono::nanoseconds>(passive_down_time).count();
  return s.retry_at.compare_exchange_strong(due, next, std::memory_order_relaxed);
}

void target_pool::set_health(std::size_t i, target_health h) {
  const auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(passive_down_time).count();
  state(i).retry_at.store(steady_now() + wait, std::memory_order_relaxed);
  state(i).health.store(h, std::memory_order_relaxed);
}

void target_pool::opened(std::size_t i) {
  state(i).active.fetch_add(1, std::memory_order_relaxed);
  state(i).total.fetch_add(1, std::memory_order_relaxed);
}

void target_pool::closed(std::size_t i) { state(i).active.fetch_sub(1, std::memory_order_relaxed); }

bool target_pool::change(target_state& s, target_health now, const std::string& reason) {
  if (now == target_health::down) s.last_error = reason;
  if (s.health.load(std::memory_order_relaxed) == now) return false;
  s.health.store(now, std::memory_order_relaxed);
  s.since = std::chrono::system_clock::now();
  return true;
}

void target_pool::announce(std::size_t i, target_health now, const std::string& reason) {
  const auto where = target_endpoint(targets_[i]);
  if (now == target_health::up) {
    spdlog::info("{}: target {} is up", label_, where);
  } else {
    spdlog::warn("{}: target {} is down: {}", label_, where, reason);
  }
  for (const auto& listener : listeners_) listener(i, now);
}

void target_pool::attempt_failed(std::size_t i, const std::string& reason) {
  auto& s = state(i);
  s.connect_errors.fetch_add(1, std::memory_order_relaxed);
  bool went_down = false;
  {
    std::lock_guard lock(s.mutex);
    s.last_error = reason;
    s.successes = 0;
    ++s.failures;
    if (s.health.load(std::memory_order_relaxed) == target_health::down || s.failures >= fall()) {
      if (!check_) {
        const auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(passive_down_time).count();
        s.retry_at.store(steady_now() + wait, std::memory_order_relaxed);
      }
      went_down = change(s, target_health::down, reason);
    }
  }
  if (went_down) announce(i, target_health::down, reason);
}

void target_pool::attempt_succeeded(std::size_t i) {
  auto& s = state(i);
  const auto h = s.health.load(std::memory_order_relaxed);
  // Every connection ends here: an up target with no failures to forget takes no lock.
  if (h == target_health::up && s.failures.load(std::memory_order_relaxed) == 0) return;
  bool went_up = false;
  {
    std::lock_guard lock(s.mutex);
    s.failures = 0;
    if (h == target_health::unchecked || (h == target_health::down && !check_)) went_up = change(s, target_health::up, {});
  }
  if (went_up) announce(i, target_health::up, {});
}

void target_pool::check_result(std::size_t i, bool ok, const std::string& reason) {
  auto& s = state(i);
  std::optional<target_health> changed;
  {
    std::lock_guard lock(s.mutex);
    const auto h = s.health.load(std::memory_order_relaxed);
    if (ok) {
      s.failures = 0;
      ++s.successes;
      if (h == target_health::unchecked || (h == target_health::down && s.successes >= (check_ ? check_->rise : 1))) {
        if (change(s, target_health::up, {})) changed = target_health::up;
      }
    } else {
      s.successes = 0;
      ++s.failures;
      s.last_error = reason;
      if (s.failures >= fall() && change(s, target_health::down, reason)) changed = target_health::down;
    }
  }
  if (changed) announce(i, *changed, reason);
}

std::vector<target_stats> target_pool::snapshot() const {
  constexpr auto r = std::memory_order_relaxed;
  std::vector<target_stats> out;
  out.reserve(targets_.size());
  for (std::size_t i = 0; i < targets_.size(); ++i) {
    auto& s = state(i);
    target_stats t;
    t.host = targets_[i].host;
    t.port = targets_[i].port;
    {
      std::lock_guard lock(s.mutex);
      t.health = s.health.load(r);
      t.since = s.since;
      t.last_error = s.last_error;
    }
    t.connections_active = s.active.load(r);
    t.connections_total = s.total.load(r);
    t.bytes_up = s.bytes_up.load(r);
    t.bytes_down = s.bytes_down.load(r);
    t.connect_errors = s.connect_errors.load(r);
    out.push_back(std::move(t));
  }
  return out;
}

std::optional<std::size_t> target_pool::pick(const asio::ip::address& client, tried_set tried) {
  // One target: whatever its health, it is the only one to try (and no lock is taken).
  if (targets_.size() == 1) return is_tried(tried, 0) ? std::nullopt : std::optional<std::size_t>(0);
  for (const auto t : {tier::primary, tier::backup, tier::rest}) {
    while (auto i = pick_in(t, client, tried)) {
      if (claim(*i, t)) return i;
      tried |= tried_set{1} << *i;  // another connection took its trial: it waits again
    }
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
    current_[i] += targets_[i].weight;
    total += targets_[i].weight;
    if (!best || current_[i] > current_[*best]) best = i;
  }
  if (best) current_[*best] -= total;
  return best;
}

}  // namespace relay
