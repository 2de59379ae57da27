// target_guard tests: the reaches rule and the walk along forwards' targets, as pure values.
#include "relay/target_guard.hpp"
#include "spec_helpers.hpp"

#include <catch2/catch.hpp>

#include <net/if.h>

namespace {

using relay::protocol;

asio::ip::address ip(const char* text) { return asio::ip::make_address(text); }

relay::listen_point point(const char* host, std::uint16_t port, protocol p = protocol::tcp, bool v6_only = true) {
  return {p, ip(host), port, v6_only};
}

// No interface addresses beyond loopback, unless a test says so.
const relay::local_test only_loopback = [](const asio::ip::address&) { return false; };

bool reaches(const char* to, std::uint16_t port, const relay::listen_point& l,
             const relay::local_test& local = only_loopback) {
  return relay::reaches(ip(to), port, protocol::tcp, l, local);
}

relay::guard_node node(std::int64_t id, const char* listen, std::uint16_t port, const char* target,
                       std::uint16_t target_port, protocol p = protocol::tcp) {
  relay::forward_spec s;
  s.id = id;
  s.protocol = p;
  s.listen_host = listen;
  s.listen_port = port;
  test::only_target(s).host = target;
  test::only_target(s).port = target_port;
  return *relay::node_of(s);
}

}  // namespace

TEST_CASE("an address reaches a listener on its own address and port only", "[engine]") {
  const auto api = point("127.0.0.1", 7410);
  CHECK(reaches("127.0.0.1", 7410, api));
  CHECK_FALSE(reaches("127.0.0.1", 7411, api));
  CHECK_FALSE(reaches("127.0.0.2", 7410, api));  // a listener on 127.0.0.1 does not take 127.0.0.2
  CHECK_FALSE(relay::reaches(ip("127.0.0.1"), 7410, protocol::udp, api, only_loopback));
  CHECK(reaches("::ffff:127.0.0.1", 7410, api));  // IPv4-mapped is the IPv4 address
  CHECK(reaches("0.0.0.0", 7410, api));           // a connect to 0.0.0.0 goes to 127.0.0.1
  CHECK_FALSE(reaches("0.0.0.0", 7410, point("127.0.0.2", 7410)));
  CHECK(reaches("::", 7410, point("::1", 7410)));
  CHECK(reaches("::1", 7410, point("::1", 7410)));
  CHECK_FALSE(reaches("::1", 7410, api));
}

TEST_CASE("a wildcard listener is reached by this host's addresses of the families it takes", "[engine]") {
  const auto any4 = point("0.0.0.0", 80);
  CHECK(reaches("127.0.0.1", 80, any4));
  CHECK(reaches("127.3.4.5", 80, any4));  // all of 127/8
  CHECK(reaches("0.0.0.0", 80, any4));
  CHECK(reaches("::ffff:127.0.0.2", 80, any4));
  CHECK_FALSE(reaches("::1", 80, any4));
  CHECK_FALSE(reaches("192.0.2.7", 80, any4));
  const relay::local_test has_192_0_2_7 = [](const asio::ip::address& a) { return a == ip("192.0.2.7"); };
  CHECK(reaches("192.0.2.7", 80, any4, has_192_0_2_7));
  CHECK_FALSE(reaches("192.0.2.8", 80, any4, has_192_0_2_7));

  const auto any6_only = point("::", 80);  // a forward on "::": IPV6_V6ONLY
  CHECK(reaches("::1", 80, any6_only));
  CHECK(reaches("::", 80, any6_only));
  CHECK_FALSE(reaches("127.0.0.1", 80, any6_only));
  const auto any6_dual = point("::", 80, protocol::tcp, false);  // the API on "::" takes IPv4 as well
  CHECK(reaches("127.0.0.1", 80, any6_dual));
  CHECK(reaches("::ffff:127.0.0.1", 80, any6_dual));
  CHECK(reaches("0.0.0.0", 80, any6_dual));
}

TEST_CASE("a link-local address is one per interface - other scope ids are ignored", "[engine]") {
  auto scoped = [](const char* text, unsigned scope) {
    auto a = asio::ip::make_address_v6(text);
    a.scope_id(scope);
    return asio::ip::address(a);
  };
  const relay::listen_point on_2{protocol::tcp, scoped("fe80::1", 2), 80, true};
  auto reaches_2 = [&](const asio::ip::address& to, const relay::local_test& local = only_loopback) {
    return relay::reaches(to, 80, protocol::tcp, on_2, local);
  };
  CHECK(reaches_2(scoped("fe80::1", 2)));
  CHECK_FALSE(reaches_2(scoped("fe80::1", 3)));  // the same address on another link
  CHECK_FALSE(reaches_2(ip("fe80::1")));         // no link: such a connect fails
  const relay::listen_point global{protocol::tcp, ip("2001:db8::1"), 80, true};
  CHECK(relay::reaches(scoped("2001:db8::1", 5), 80, protocol::tcp, global, only_loopback));

  const relay::local_test on_link_2 = [&](const asio::ip::address& a) { return a == scoped("fe80::1", 2); };
  CHECK(relay::reaches(scoped("fe80::1", 2), 80, protocol::tcp, point("::", 80), on_link_2));
  CHECK_FALSE(relay::reaches(scoped("fe80::1", 3), 80, protocol::tcp, point("::", 80), on_link_2));

  // A forward on fe80::1%lo: its own target by name or index, not the same address on another link.
  const auto lo = std::to_string(if_nametoindex("lo"));
  const auto n = node(1, "fe80::1%lo", 5000, "fe80::9%99", 5000);
  CHECK(n.listen.address == scoped("fe80::1", if_nametoindex("lo")));
  relay::target_guard guard({}, {n});
  auto check = [&](const std::string& to) {
    return guard.check(1, protocol::tcp, ip(to.c_str()), 5000, only_loopback);
  };
  CHECK(check("fe80::1%lo")->kind == relay::refusal::kind::own_listener);
  CHECK(check("fe80::1%" + lo)->kind == relay::refusal::kind::own_listener);
  CHECK_FALSE(check("fe80::1%99"));
}

TEST_CASE("the guard's interface addresses include loopback and are normalised", "[engine]") {
  const auto found = relay::interface_addresses();
  CHECK(std::find(found.begin(), found.end(), ip("127.0.0.1")) != found.end());
  CHECK(relay::fresh_local_test()(ip("127.0.0.1")));
  CHECK_FALSE(relay::fresh_local_test()(ip("198.51.100.254")));  // TEST-NET-2: no host has it
}

TEST_CASE("as targets the API, a forward's own listener and cycles are refused - chains out are not", "[engine]") {
  relay::target_guard guard({point("127.0.0.1", 7410)},
                            {node(1, "127.0.0.1", 5001, "127.0.0.1", 5002), node(2, "0.0.0.0", 5002, "127.0.0.1", 5001),
                             node(3, "127.0.0.1", 5003, "192.0.2.1", 80), node(4, "127.0.0.1", 5004, "127.0.0.1", 5003),
                             node(5, "127.0.0.1", 5005, "localhost", 5006),
                             node(6, "127.0.0.1", 5006, "127.0.0.1", 5005)});
  auto check = [&](std::int64_t id, const char* to, std::uint16_t port, protocol p = protocol::tcp) {
    return guard.check(id, p, ip(to), port, only_loopback);
  };
  auto api = check(3, "127.0.0.1", 7410);
  REQUIRE(api);
  CHECK(api->kind == relay::refusal::kind::api);
  CHECK(api->message == "target 127.0.0.1:7410 is this daemon's API (127.0.0.1:7410): a forward must not expose it");
  CHECK_FALSE(check(3, "127.0.0.1", 7410, protocol::udp));  // the API takes no UDP

  auto own = check(3, "127.0.0.1", 5003);
  REQUIRE(own);
  CHECK(own->kind == relay::refusal::kind::own_listener);
  CHECK(own->message.find("own listen address 127.0.0.1:5003") != std::string::npos);

  auto cycle = check(1, "127.0.0.1", 5002);  // 1 -> 2 (0.0.0.0:5002) -> 1
  REQUIRE(cycle);
  CHECK(cycle->kind == relay::refusal::kind::cycle);
  CHECK(cycle->message.find("through forward 2 (0.0.0.0:5002)") != std::string::npos);
  CHECK(check(2, "::ffff:127.0.0.1", 5001)->kind == relay::refusal::kind::cycle);
  CHECK_FALSE(check(1, "127.0.0.1", 5002, protocol::udp));  // forward 2 is TCP

  CHECK_FALSE(check(4, "127.0.0.1", 5003));  // 4 -> 3 -> 192.0.2.1: a chain that leaves
  CHECK_FALSE(check(1, "127.0.0.1", 5004));  // into 4 -> 3 -> out; 1 is not on it
  // 6 -> 5, whose target is a host name: where it leads is known only when 5 resolves it.
  CHECK_FALSE(check(6, "127.0.0.1", 5005));
  // ... and when it does, 5 -> 6 -> 5 is seen.
  CHECK(check(5, "127.0.0.1", 5006)->kind == relay::refusal::kind::cycle);
  CHECK(guard.listens_on(7410));
  CHECK(guard.listens_on(5006));
  CHECK_FALSE(guard.listens_on(5007));
}

TEST_CASE("a change is checked with its IP-literal target only, against the guard it is in", "[engine]") {
  relay::forward_spec next;
  next.id = 7;
  next.listen_host = "0.0.0.0";
  next.listen_port = 6000;
  test::only_target(next).host = "127.0.0.1";
  test::only_target(next).port = 6000;
  relay::target_guard with_next({}, {*relay::node_of(next)});
  CHECK(with_next.check(next)->kind == relay::refusal::kind::own_listener);
  test::only_target(next).host = "localhost";
  CHECK_FALSE(relay::target_guard({}, {*relay::node_of(next)}).check(next));
  next.listen_port = 0;  // not bound yet: no node
  CHECK_FALSE(relay::node_of(next));
}

TEST_CASE("every IP-literal target of a pool is checked and a refusal names the one at fault", "[engine]") {
  relay::forward_spec next;
  next.id = 7;
  next.listen_host = "127.0.0.1";
  next.listen_port = 6000;
  next.targets = {{"192.0.2.1", 80, 1, false}, {"localhost", 6000, 1, false}, {"127.0.0.1", 7410, 1, true}};
  const auto n = relay::node_of(next);
  REQUIRE(n);
  REQUIRE(n->targets.size() == 2);  // the host name is checked when a connection resolves it
  CHECK(n->targets[1].port == 7410);
  auto api = relay::target_guard({point("127.0.0.1", 7410)}, {*n}).check(next);
  REQUIRE(api);  // the backup too: it serves when the others are down
  CHECK(api->kind == relay::refusal::kind::api);
  CHECK(api->message.rfind("target 127.0.0.1:7410 ", 0) == 0);
  next.targets.push_back({"127.0.0.1", 6000, 1, false});
  auto own = relay::target_guard({}, {*relay::node_of(next)}).check(next);
  REQUIRE(own);
  CHECK(own->kind == relay::refusal::kind::own_listener);
  CHECK(own->message.rfind("target 127.0.0.1:6000 ", 0) == 0);
}

TEST_CASE("a cycle through any target of another forward's pool is refused", "[engine]") {
  relay::forward_spec a;  // 1 -> 192.0.2.1:80 or 2
  a.id = 1;
  a.listen_host = "127.0.0.1";
  a.listen_port = 5101;
  a.targets = {{"192.0.2.1", 80, 1, false}, {"127.0.0.1", 5102, 1, false}};
  relay::forward_spec b;  // 2 -> 192.0.2.2:80 or 1
  b.id = 2;
  b.listen_host = "127.0.0.1";
  b.listen_port = 5102;
  b.targets = {{"192.0.2.2", 80, 1, false}, {"127.0.0.1", 5101, 1, false}};
  relay::target_guard guard({}, {*relay::node_of(a), *relay::node_of(b)});
  auto cycle = guard.check(b);
  REQUIRE(cycle);
  CHECK(cycle->kind == relay::refusal::kind::cycle);
  CHECK(cycle->message.rfind("target 127.0.0.1:5101 leads back", 0) == 0);
  CHECK(cycle->message.find("through forward 1 (127.0.0.1:5101)") != std::string::npos);
  b.targets.pop_back();  // 2 -> out only: 1 -> 2 -> out is a chain
  CHECK_FALSE(relay::target_guard({}, {*relay::node_of(a), *relay::node_of(b)}).check(a));
}
