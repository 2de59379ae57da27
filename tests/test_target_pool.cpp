// target_pool: each balancing policy's picks, tiers of usable targets and failover order.
#include "relay/target_pool.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

using relay::balance_policy;
using relay::target_health;
using relay::target_pool;
using relay::target_spec;

namespace {

const auto client = asio::ip::make_address("127.0.0.2");

// The names of `n` successive first picks.
std::string run(target_pool& p, int n, const asio::ip::address& from = client) {
  std::string out;
  for (int i = 0; i < n; ++i) out += p.targets()[p.pick(from, 0).value()].host;
  return out;
}

}  // namespace

TEST_CASE("round robin is smooth and weighted - weights 3 and 1 go A A B A A A B A", "[engine]") {
  target_pool p({{"A", 1, 3}, {"B", 2, 1}}, balance_policy::round_robin);
  CHECK(run(p, 8) == "AABAAABA");
  target_pool even({{"A", 1, 2}, {"B", 2, 2}}, balance_policy::round_robin);
  CHECK(run(even, 6) == "ABABAB");
  target_pool three({{"A", 1, 5}, {"B", 2, 1}, {"C", 3, 1}}, balance_policy::round_robin);
  CHECK(run(three, 7) == "AABACAA");  // nginx's own example for weights 5, 1, 1
}

TEST_CASE("a down target is skipped and backups serve only while no primary is usable", "[engine]") {
  target_pool p({{"A", 1}, {"B", 2}, {"C", 3, 1, true}}, balance_policy::round_robin);
  p.set_health(0, target_health::down);
  CHECK(run(p, 4) == "BBBB");
  p.set_health(1, target_health::down);
  CHECK(run(p, 2) == "CC");  // every primary down: the backup
  p.set_health(0, target_health::up);
  CHECK(run(p, 2) == "AA");  // one recovered: the backup is left
}

TEST_CASE("failover order within one connection - each target once and down ones last", "[engine]") {
  target_pool p({{"A", 1}, {"B", 2}, {"C", 3, 1, true}, {"D", 4}}, balance_policy::first);
  p.set_health(1, target_health::down);
  relay::tried_set tried = 0;
  std::string order;
  while (auto i = p.pick(client, tried)) {
    order += p.targets()[*i].host;
    tried |= relay::tried_set{1} << *i;
  }
  CHECK(order == "ADCB");  // usable primaries in list order, then the backup, then the down one
}

TEST_CASE("least_conn picks the fewest connections per weight and breaks ties round robin", "[engine]") {
  target_pool p({{"A", 1, 1}, {"B", 2, 2}, {"C", 3, 1}}, balance_policy::least_conn);
  for (int i = 0; i < 2; ++i) p.opened(0);  // A: 2 per weight 1
  for (int i = 0; i < 2; ++i) p.opened(1);  // B: 1 per weight 1 (2 of weight 2)
  p.opened(2);                              // C: 1 per weight 1
  // B and C tie: round robin between them.
  std::map<std::string, int> seen;
  for (int i = 0; i < 10; ++i) ++seen[p.targets()[p.pick(client, 0).value()].host];
  CHECK(seen["A"] == 0);
  CHECK(seen["B"] > 0);
  CHECK(seen["C"] > 0);
  p.closed(0);
  p.closed(0);  // A now idle
  CHECK(p.targets()[p.pick(client, 0).value()].host == "A");
}

TEST_CASE("source_hash keeps a client on one target and moves only the clients of a target that goes down",
          "[engine]") {
  target_pool p({{"A", 1}, {"B", 2}, {"C", 3}}, balance_policy::source_hash);
  std::map<std::string, std::string> before;
  for (int i = 1; i <= 200; ++i) {
    const auto ip = asio::ip::make_address("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256));
    before[ip.to_string()] = run(p, 1, ip);
    CHECK(run(p, 3, ip) == std::string(3, before[ip.to_string()][0]));  // sticky
  }
  std::map<std::string, int> share;
  for (const auto& [ip, t] : before) ++share[t];
  CHECK(share.size() == 3);  // every target gets some clients
  p.set_health(1, target_health::down);
  for (const auto& [ip, t] : before) {
    const auto now = run(p, 1, asio::ip::make_address(ip));
    if (t != "B") CHECK(now == t);  // only B's clients move
    CHECK(now != "B");
  }
  // An IPv4-mapped IPv6 client is the IPv4 client.
  CHECK(run(p, 1, asio::ip::make_address("::ffff:10.0.0.7")) == run(p, 1, asio::ip::make_address("10.0.0.7")));
}

TEST_CASE("source_hash weights - a target of weight 3 gets about three times the clients of weight 1",
          "[engine]") {
  target_pool p({{"A", 1, 3}, {"B", 2, 1}}, balance_policy::source_hash);
  int a = 0;
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    const auto ip = asio::ip::make_address_v4(static_cast<asio::ip::address_v4::uint_type>(0x0a000000 + i));
    a += run(p, 1, ip) == "A";
  }
  CHECK(a > n * 70 / 100);  // 75 % expected
  CHECK(a < n * 80 / 100);
}

TEST_CASE("first takes the first usable target in list order - weights ignored", "[engine]") {
  target_pool p({{"A", 1, 1}, {"B", 2, 1000}}, balance_policy::first);
  CHECK(run(p, 3) == "AAA");
  p.set_health(0, target_health::down);
  CHECK(run(p, 2) == "BB");
}

// The health state machine. Passive checking (no health_check) counts connection attempts; active
// checking counts checks and real failures alike.
namespace {

// A pool that records each health change its listeners hear, as "A+" (up) or "A-" (down).
struct watched {
  target_pool pool;
  std::string heard;
  explicit watched(const relay::forward_spec& spec, const target_pool* previous = nullptr)
      : pool(spec, "forward 1", previous) {
    pool.add_listener([this](std::size_t i, target_health now) {
      heard += pool.targets()[i].host + (now == target_health::up ? "+" : "-");
    });
  }
};

relay::forward_spec pool_spec(std::vector<target_spec> targets, std::optional<relay::health_check_spec> check = {}) {
  relay::forward_spec s;
  s.targets = std::move(targets);
  s.balance = balance_policy::first;
  s.health_check = check;
  return s;
}

relay::health_check_spec checks(std::uint32_t rise, std::uint32_t fall) {
  relay::health_check_spec c;
  c.rise = rise;
  c.fall = fall;
  return c;
}

// Makes target i's passive trial due now, as if passive_down_time had passed.
void trial_due(target_pool& p, std::size_t i) { p.state(i).retry_at.store(0); }

}  // namespace

TEST_CASE("passive - fall failed attempts take a target down and pick skips it", "[engine]") {
  watched w(pool_spec({{"A", 1}, {"B", 2}}));
  w.pool.attempt_failed(0, "connect A:1: Connection refused");
  w.pool.attempt_failed(0, "connect A:1: Connection refused");
  CHECK(w.pool.health(0) == target_health::unchecked);  // 2 of the default fall 3
  CHECK(run(w.pool, 1) == "A");
  w.pool.attempt_succeeded(0);  // a success resets the count: two more failures are not enough
  w.pool.attempt_failed(0, "x");
  w.pool.attempt_failed(0, "x");
  CHECK(w.pool.health(0) == target_health::up);
  w.pool.attempt_failed(0, "connect A:1: Connection refused");
  CHECK(w.pool.health(0) == target_health::down);
  CHECK(w.pool.snapshot()[0].last_error == "connect A:1: Connection refused");
  CHECK(w.pool.snapshot()[0].connect_errors == 5);
  CHECK(run(w.pool, 3) == "BBB");
  CHECK(w.heard == "A+A-");
}

TEST_CASE("passive - a down target gets one trial once its wait is over - success brings it up", "[engine]") {
  watched w(pool_spec({{"A", 1}, {"B", 2}}));
  for (int i = 0; i < 3; ++i) w.pool.attempt_failed(0, "refused");
  REQUIRE(w.pool.health(0) == target_health::down);
  CHECK(run(w.pool, 2) == "BB");  // its wait (passive_down_time) is not over
  trial_due(w.pool, 0);
  CHECK(run(w.pool, 1) == "A");   // the trial
  CHECK(run(w.pool, 3) == "BBB");  // one trial only: the pick claimed it
  CHECK(w.pool.health(0) == target_health::down);
  w.pool.attempt_succeeded(0);
  CHECK(w.pool.health(0) == target_health::up);
  CHECK(run(w.pool, 2) == "AA");
  CHECK(w.heard == "A-A+");
}

TEST_CASE("passive - one trial however many connections pick at once", "[engine]") {
  // Rounds of picks released together by a barrier, the trial made due before each: a pick may
  // see it due and find it claimed by the time it claims it. It must then move on, not go there too.
  // A is the one primary, and source_hash scans the 63 backups after it: time for that to happen.
  std::vector<target_spec> targets{{"A", 1}};
  for (int i = 1; i < 64; ++i) targets.push_back({"B" + std::to_string(i), static_cast<std::uint16_t>(i + 1), 1, true});
  target_pool p(targets, balance_policy::source_hash);
  p.set_health(0, target_health::down);
  // Two pickers (one per core of the test machine) spin until each round starts together; the last
  // to finish a round counts its trials and makes the trial due again for the next.
  constexpr int threads = 2;
  constexpr int rounds = 20000;
  std::atomic<int> round{0};
  std::atomic<int> finished{0};
  std::atomic<int> trials{0};
  int doubled = 0;  // rounds in which more than one pick went to A
  trial_due(p, 0);
  std::vector<std::thread> pickers;
  for (int t = 0; t < threads; ++t) {
    pickers.emplace_back([&] {
      for (int r = 0; r < rounds; ++r) {
        while (round.load() != r) std::this_thread::yield();
        if (p.pick(client, 0) == 0u) ++trials;
        if (finished.fetch_add(1) + 1 == threads * (r + 1)) {
          doubled += trials.exchange(0) > 1;
          trial_due(p, 0);
          round.store(r + 1);
        }
      }
    });
  }
  for (auto& t : pickers) t.join();
  CHECK(doubled == 0);
}

TEST_CASE("passive - a failed trial keeps the target down for another wait", "[engine]") {
  watched w(pool_spec({{"A", 1}, {"B", 2}}));
  for (int i = 0; i < 3; ++i) w.pool.attempt_failed(0, "refused");
  trial_due(w.pool, 0);
  REQUIRE(run(w.pool, 1) == "A");
  trial_due(w.pool, 0);  // the trial took longer to fail than the wait (a connect timeout of 30 s)
  w.pool.attempt_failed(0, "refused again");
  CHECK(w.pool.health(0) == target_health::down);
  CHECK(w.pool.snapshot()[0].last_error == "refused again");
  const auto wait = w.pool.state(0).retry_at.load() -
                    std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now().time_since_epoch()).count();
  CHECK(wait > std::chrono::nanoseconds(relay::passive_down_time - std::chrono::seconds(1)).count());
  CHECK(run(w.pool, 2) == "BB");
  CHECK(w.heard == "A-");  // no second "down"
}

TEST_CASE("active - rise and fall - unchecked is up on its first success", "[engine]") {
  watched w(pool_spec({{"A", 1}, {"B", 2}}, checks(2, 3)));
  w.pool.check_result(0, true, {});
  CHECK(w.pool.health(0) == target_health::up);
  w.pool.check_result(0, false, "timed out after 2 s");
  w.pool.check_result(0, false, "timed out after 2 s");
  CHECK(w.pool.health(0) == target_health::up);
  w.pool.check_result(0, true, {});  // breaks the run of failures
  w.pool.check_result(0, false, "a");
  w.pool.check_result(0, false, "b");
  CHECK(w.pool.health(0) == target_health::up);
  w.pool.check_result(0, false, "connect 127.0.0.1:1: Connection refused");
  CHECK(w.pool.health(0) == target_health::down);
  CHECK(w.pool.snapshot()[0].last_error == "connect 127.0.0.1:1: Connection refused");
  CHECK(run(w.pool, 2) == "BB");
  w.pool.check_result(0, true, {});
  CHECK(w.pool.health(0) == target_health::down);  // 1 of rise 2
  w.pool.check_result(0, false, "c");
  w.pool.check_result(0, true, {});
  CHECK(w.pool.health(0) == target_health::down);  // the failure started the count again
  w.pool.check_result(0, true, {});
  CHECK(w.pool.health(0) == target_health::up);
  CHECK(w.heard == "A+A-A+");
  // An unchecked target's failures count toward fall as well.
  for (int i = 0; i < 3; ++i) w.pool.check_result(1, false, "refused");
  CHECK(w.pool.health(1) == target_health::down);
  CHECK(w.heard == "A+A-A+B-");
}

TEST_CASE("active - real connection failures count toward fall and only checks bring a target back", "[engine]") {
  watched w(pool_spec({{"A", 1}, {"B", 2}}, checks(1, 3)));
  w.pool.check_result(0, true, {});
  w.pool.check_result(0, false, "check failed");
  w.pool.attempt_failed(0, "connect failed");
  CHECK(w.pool.health(0) == target_health::up);
  w.pool.attempt_failed(0, "connect failed");
  CHECK(w.pool.health(0) == target_health::down);
  trial_due(w.pool, 0);
  CHECK(run(w.pool, 2) == "BB");  // no passive trials under active checking
  w.pool.attempt_succeeded(0);    // a connection that got through anyway (to a down target, last)
  CHECK(w.pool.health(0) == target_health::down);
  w.pool.check_result(0, true, {});
  CHECK(w.pool.health(0) == target_health::up);
  CHECK(w.heard == "A+A-A+");
}

TEST_CASE("every target down - picks still try them all - backups first once no primary is usable", "[engine]") {
  watched w(pool_spec({{"A", 1}, {"B", 2}, {"C", 3, 1, true}}, checks(1, 1)));
  w.pool.check_result(0, false, "x");
  CHECK(run(w.pool, 1) == "B");
  w.pool.check_result(1, false, "x");
  CHECK(run(w.pool, 1) == "C");  // the backup while both primaries are down
  w.pool.check_result(2, false, "x");
  CHECK(run(w.pool, 1) == "A");  // all down: the rest, in policy order, so a recovered one is found
  relay::tried_set tried = 0;
  std::string order;
  while (auto i = w.pool.pick(client, tried)) {
    order += w.pool.targets()[*i].host;
    tried |= relay::tried_set{1} << *i;
  }
  CHECK(order == "ABC");
}

TEST_CASE("a pool made with previous keeps the counters and health of the targets it keeps", "[engine]") {
  watched before(pool_spec({{"A", 1}, {"B", 2}}, checks(1, 1)));
  before.pool.opened(0);
  before.pool.opened(0);
  before.pool.closed(0);
  before.pool.state(0).bytes_up += 100;
  before.pool.attempt_failed(0, "refused");  // fall 1: down
  before.pool.check_result(1, true, {});
  REQUIRE(before.pool.health(0) == target_health::down);

  // A kept (with a new weight), B dropped, C new.
  watched after(pool_spec({{"A", 1, 5}, {"C", 3}}, checks(1, 1)), &before.pool);
  auto a = after.pool.snapshot()[0];
  CHECK(a.health == target_health::down);
  CHECK(a.last_error == "refused");
  CHECK(a.connections_active == 1);
  CHECK(a.connections_total == 2);
  CHECK(a.bytes_up == 100);
  CHECK(a.connect_errors == 1);
  const auto c = after.pool.snapshot()[1];
  CHECK(c.health == target_health::unchecked);
  CHECK(c.connections_total == 0);
  // A connection still running on the old pool ends in the same place.
  before.pool.closed(0);
  CHECK(after.pool.active(0) == 0);
  // The new pool's listener hears the change; the old one's is the old pool's business.
  after.pool.check_result(0, true, {});
  CHECK(after.heard == "A+");
  CHECK(before.heard == "A-B+");
}
