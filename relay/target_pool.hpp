// target_pool: a forward's targets with their health, and the balancing policy that picks one for
// each new connection or session. Shared by all the forward's workers: picks and health changes are
// thread-safe.
#pragma once

#include <asio/ip/address.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace relay {

// One entry of a forward's pool, as the API gives it.
struct target_spec {
  std::string host;  // target_host's rules
  std::uint16_t port = 0;
  std::uint32_t weight = 1;  // 1-1000; ignored by balance_policy::first
  bool backup = false;       // serves only while no non-backup target is up

  bool operator==(const target_spec&) const = default;
};

// How a new connection picks among the usable targets (names as nginx's and HAProxy's).
enum class balance_policy {
  round_robin,  // smooth weighted round robin (nginx's): weights 3 and 1 go A A B A, A A B A
  least_conn,   // fewest active connections relative to weight; ties broken round robin
  source_hash,  // the client IP picks: weighted rendezvous hashing, so a target going down moves only its clients
  first,        // the first usable target in list order: ordered failover
};

enum class target_health : std::uint8_t { unchecked, up, down };

inline constexpr std::size_t max_targets = 64;

// Which targets one connection has tried: bit i for target i.
using tried_set = std::uint64_t;

class target_pool {
 public:
  target_pool(std::vector<target_spec> targets, balance_policy policy);
  target_pool(const target_pool&) = delete;
  target_pool& operator=(const target_pool&) = delete;

  const std::vector<target_spec>& targets() const { return targets_; }
  balance_policy policy() const { return policy_; }

  // The next target a connection from `client` should try, among those not in `tried`: first the
  // policy's choice among the usable non-backup targets (up or unchecked), then among the usable
  // backups, then among the rest (down ones: a target that recovered between checks is found).
  // Nothing once every target was tried. Round robin advances its shared state on each call.
  std::optional<std::size_t> pick(const asio::ip::address& client, tried_set tried);

  target_health health(std::size_t i) const { return slots_[i]->health.load(std::memory_order_relaxed); }
  void set_health(std::size_t i, target_health h) { slots_[i]->health.store(h, std::memory_order_relaxed); }

  // Live connections or sessions on target i (least_conn reads them).
  void opened(std::size_t i) { slots_[i]->active.fetch_add(1, std::memory_order_relaxed); }
  void closed(std::size_t i) { slots_[i]->active.fetch_sub(1, std::memory_order_relaxed); }
  std::uint64_t active(std::size_t i) const { return slots_[i]->active.load(std::memory_order_relaxed); }

 private:
  struct slot {
    std::atomic<target_health> health{target_health::unchecked};
    std::atomic<std::uint64_t> active{0};
    std::int64_t current = 0;  // smooth round robin's running weight, under rr_mutex_
  };
  enum class tier { primary, backup, rest };
  bool in_tier(std::size_t i, tier t) const;
  std::optional<std::size_t> pick_in(tier t, const asio::ip::address& client, tried_set tried);
  std::optional<std::size_t> round_robin(tier t, tried_set tried);

  const std::vector<target_spec> targets_;
  const balance_policy policy_;
  std::vector<std::unique_ptr<slot>> slots_;
  std::mutex rr_mutex_;  // smooth round robin's state, shared by every worker
};

// The 64-bit score of `client` for target `t` in rendezvous hashing (FNV-1a of the address bytes
// and "host:port"), exposed for tests.
std::uint64_t rendezvous_hash(const asio::ip::address& client, const target_spec& t);

}  // namespace relay
