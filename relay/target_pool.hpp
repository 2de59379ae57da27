// target_pool: a forward's targets with their health and counters, and the balancing policy that
// picks one for each new connection or session. Shared by all the forward's workers (and its health
// checker): picks, counters and health changes are thread-safe.
#pragma once

#include "relay/forward_spec.hpp"

#include <asio/ip/address.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace relay {

enum class target_health : std::uint8_t { unchecked, up, down };
// The API's name: "unchecked", "up" or "down".
std::string_view to_string(target_health h);

// Which targets one connection has tried: bit i for target i (max_targets is 64).
using tried_set = std::uint64_t;
static_assert(max_targets <= 64);

// How long a target that passive checking marked down waits before its one trial connection.
inline constexpr std::chrono::seconds passive_down_time{10};

// One target's counters and health, as GET's stats.targets shows them.
struct target_stats {
  std::string host;
  std::uint16_t port = 0;
  target_health health = target_health::unchecked;
  std::chrono::system_clock::time_point since;  // of the current health (the pool's creation for unchecked)
  std::string last_error;                       // empty when there was none
  std::uint64_t connections_active = 0;         // UDP: sessions
  std::uint64_t connections_total = 0;
  std::uint64_t bytes_up = 0;  // client -> target
  std::uint64_t bytes_down = 0;
  std::uint64_t connect_errors = 0;
};

// One target's live state. A pool made by a PATCH shares the state of the targets it keeps (same
// host and port) with the pool before it, so counters and health carry over, and connections still
// running on the old pool keep counting in the same place.
class target_state {
 public:
  std::atomic<target_health> health{target_health::unchecked};
  std::atomic<std::uint64_t> active{0};
  std::atomic<std::uint64_t> total{0};
  std::atomic<std::uint64_t> bytes_up{0};
  std::atomic<std::uint64_t> bytes_down{0};
  std::atomic<std::uint64_t> connect_errors{0};
  // Passive checking: a down target's trial connection is due from here on (steady clock, ns).
  std::atomic<std::int64_t> retry_at{0};

 private:
  friend class target_pool;
  std::mutex mutex;  // the health transition and what follows; rare next to the counters
  // Consecutive, from checks and connection attempts; written under `mutex`, read without it by
  // attempt_succeeded's fast path (an up target with no failures has nothing to change).
  std::atomic<std::uint32_t> failures{0};
  std::uint32_t successes = 0;  // consecutive checks
  std::chrono::system_clock::time_point since = std::chrono::system_clock::now();
  std::string last_error;
};

class target_pool {
 public:
  // Called (outside any lock, on whichever thread saw it) when a target's health changes, after the
  // pool has logged it: an info line for up, a warning with the reason for down.
  using health_listener = std::function<void(std::size_t index, target_health now)>;

  // `label` names the forward in log lines ("forward 3 (web)"). `previous`: the pool this one
  // replaces, whose kept targets' state it shares.
  target_pool(const forward_spec& spec, std::string label = {}, const target_pool* previous = nullptr);
  // For tests: a pool with passive checking.
  target_pool(std::vector<target_spec> targets, balance_policy policy);
  target_pool(const target_pool&) = delete;
  target_pool& operator=(const target_pool&) = delete;

  const std::vector<target_spec>& targets() const { return targets_; }
  balance_policy policy() const { return policy_; }
  const std::optional<health_check_spec>& health_check() const { return check_; }
  // Where the health checks leave from (forward_spec::source_address).
  const std::optional<asio::ip::address>& source_address() const { return source_; }
  // Registered before the pool is shared; each is called on every change of health.
  void add_listener(health_listener listener) { listeners_.push_back(std::move(listener)); }

  // The next target a connection from `client` should try, among those not in `tried`: first the
  // policy's choice among the usable non-backup targets (up or unchecked, or passively down with its
  // trial due: the pick claims the trial), then among the usable backups, then among the rest (down
  // ones, so that a target that recovered between checks is found). Nothing once every target was
  // tried. Round robin advances its shared state on each call.
  std::optional<std::size_t> pick(const asio::ip::address& client, tried_set tried);

  // What a connection attempt or a UDP session found. A failure counts a connect error and one
  // toward `fall` (health_check's, or 3); a success resets that count and marks an unchecked target
  // up, and, with passive checking only, a down one too (its trial connection succeeded).
  void attempt_failed(std::size_t i, const std::string& reason);
  void attempt_succeeded(std::size_t i);
  // What an active check found: `fall` consecutive failures mark a target down, `rise` consecutive
  // successes a down one up; an unchecked one is up on its first success.
  void check_result(std::size_t i, bool ok, const std::string& reason);

  target_health health(std::size_t i) const { return state(i).health.load(std::memory_order_relaxed); }
  // For tests: sets the health with no log or listener (down: for passive_down_time).
  void set_health(std::size_t i, target_health h);

  // Live connections or sessions on target i (least_conn reads them); opened() also counts the total.
  void opened(std::size_t i);
  void closed(std::size_t i);
  std::uint64_t active(std::size_t i) const { return state(i).active.load(std::memory_order_relaxed); }
  target_state& state(std::size_t i) const { return *states_[i]; }

  std::vector<target_stats> snapshot() const;

 private:
  enum class tier { primary, backup, rest };
  bool usable(std::size_t i) const;
  bool in_tier(std::size_t i, tier t) const;
  std::optional<std::size_t> pick_in(tier t, const asio::ip::address& client, tried_set tried);
  std::optional<std::size_t> round_robin(tier t, tried_set tried);
  // Whether the pick of i from tier t may stand: a passively down target's trial is claimed by one
  // pick only, however many saw it due at once.
  bool claim(std::size_t i, tier t);
  // With s.mutex held: the new health and its time. Returns whether it changed.
  bool change(target_state& s, target_health now, const std::string& reason);
  void announce(std::size_t i, target_health now, const std::string& reason);
  std::uint32_t fall() const { return check_ ? check_->fall : health_check_spec{}.fall; }

  const std::vector<target_spec> targets_;
  const balance_policy policy_;
  const std::optional<health_check_spec> check_;
  const std::optional<asio::ip::address> source_;
  const std::string label_;
  std::vector<std::shared_ptr<target_state>> states_;
  std::vector<health_listener> listeners_;
  std::mutex rr_mutex_;                 // smooth round robin's running weights, shared by every worker
  std::vector<std::int64_t> current_;  // under rr_mutex_
};

// The 64-bit score of `client` for target `t` in rendezvous hashing (FNV-1a of the address bytes
// and "host:port"), exposed for tests.
std::uint64_t rendezvous_hash(const asio::ip::address& client, const target_spec& t);

}  // namespace relay
