// target_pool: each balancing policy's picks, tiers of usable targets and failover order.
#include "relay/target_pool.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <string>

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
