// engine over real loopback sockets: the control of forwards (add, remove, disable, re-enable,
// retarget, rebind), listen-address conflicts, forwards that could not start, worker liveness, and
// targets refused because they lead back into the daemon.
#include "engine_helpers.hpp"
#include "spec_helpers.hpp"
#include "hosts.hpp"
#include "relay/engine.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

using namespace test;

namespace {

// Sends `text` and reads as many bytes back, leaving the connection open.
std::string exchange(int s, const std::string& text) {
  send_all(s, text);
  return recv_exact(s, text.size());
}

}  // namespace

TEST_CASE("a forward listens only on its listen_host", "[tcp]") {
  target_server target(target_server::echo);
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, target.port()));
  CHECK(echo_once(s.listen_port, "x") == "x");
  CHECK_FALSE(connect_to(s.listen_port, "127.0.0.2"));
}

TEST_CASE("removing or disabling a forward closes its listener and live connections at once", "[tcp]") {
  target_server target(target_server::echo);
  relay::engine engine(each_datapath());
  auto s = start(engine, spec_for(1, target.port()));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  CHECK(exchange(c.get(), "ping") == "ping");

  SECTION("delete") {
    engine.remove(1);
    CHECK(engine.status(1).state == relay::forward_state::error);
  }
  SECTION("disable") {
    auto off = s;
    off.enabled = false;
    auto p = engine.prepare(off);
    REQUIRE(p);
    engine.apply(off, std::move(p.value()));
    CHECK(engine.status(1).state == relay::forward_state::disabled);
  }
  CHECK(closed_by_peer(c.get()));
  CHECK_FALSE(connect_to(s.listen_port));
}

TEST_CASE("re-enabling a disabled forward serves again on its port", "[tcp]") {
  target_server target(target_server::echo);
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, target.port()));
  s.enabled = false;
  start(engine, s);
  CHECK_FALSE(connect_to(s.listen_port));
  s.enabled = true;
  start(engine, s);
  CHECK(echo_once(s.listen_port, "again") == "again");
}

TEST_CASE("changing the target: new connections go to the new one, live ones stay", "[tcp]") {
  auto tagged = [](char tag) {
    return [tag](int fd) {
      send_all(fd, std::string(1, tag));
      target_server::echo(fd);
    };
  };
  target_server a(tagged('A')), b(tagged('B'));
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, a.port()));
  auto live = connect_to(s.listen_port);
  REQUIRE(live);
  CHECK(recv_exact(live.get(), 1) == "A");

  test::only_target(s).port = b.port();
  start(engine, s);
  auto fresh = connect_to(s.listen_port);
  REQUIRE(fresh);
  CHECK(recv_exact(fresh.get(), 1) == "B");
  CHECK(exchange(live.get(), "still here") == "still here");
  CHECK(exchange(fresh.get(), "new") == "new");
}

TEST_CASE("changing the listen port binds the new one before releasing the old", "[tcp]") {
  target_server target(target_server::echo);
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, target.port()));
  const auto old_port = s.listen_port;
  auto live = connect_to(old_port);
  REQUIRE(live);

  SECTION("to a free port: the new port serves, the old one is closed, live connections carry on") {
    s.listen_port = 0;
    s = start(engine, s);
    CHECK(s.listen_port != old_port);
    CHECK(echo_once(s.listen_port, "moved") == "moved");
    CHECK_FALSE(connect_to(old_port));
    CHECK(exchange(live.get(), "live") == "live");
  }
  SECTION("to a port in use: the change fails and the old address keeps serving") {
    std::uint16_t taken = 0;
    auto other = listen_on(taken);
    auto next = s;
    next.listen_port = taken;
    auto p = engine.prepare(next);
    REQUIRE_FALSE(p);
    CHECK(p.error().code == std::errc::address_in_use);
    CHECK(p.error().message.find("bind 127.0.0.1:" + std::to_string(taken)) == 0);
    CHECK(echo_once(old_port, "still") == "still");
    CHECK(engine.status(1).state == relay::forward_state::active);
  }
}

TEST_CASE("two forwards cannot share a listen address", "[tcp]") {
  target_server target(target_server::echo);
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, target.port()));
  auto dup = spec_for(0, target.port(), s.listen_port);
  auto p = engine.prepare(dup);
  REQUIRE_FALSE(p);
  CHECK(p.error().code == std::errc::address_in_use);
}

TEST_CASE("a forward that could not start is reported with its reason", "[engine]") {
  relay::engine engine(fast_options());
  auto s = spec_for(5, 80, 1);
  engine.fail(s, "bind 127.0.0.1:1: Permission denied");
  auto st = engine.status(5);
  CHECK(st.state == relay::forward_state::error);
  CHECK(st.error == "bind 127.0.0.1:1: Permission denied");
}

TEST_CASE("a stuck worker leaves the watchdog's ping unanswered until it runs again", "[engine]") {
  std::promise<void> entered, release;  // declared first: they outlive the pool, which joins its threads
  auto released = release.get_future();
  relay::worker_pool pool(2);
  const auto first = pool.ping();
  CHECK(eventually([&] { return pool.answered(first); }));

  asio::post(pool.context(1), [&] {
    entered.set_value();
    released.wait();  // worker 1 is busy: a handler that never returns, as a bug would be
  });
  entered.get_future().wait();
  const auto second = pool.ping();
  CHECK_FALSE(eventually([&] { return pool.answered(second); }, 300ms));
  release.set_value();
  CHECK(eventually([&] { return pool.answered(second); }));
}

// Targets that lead back into the daemon, found when a connection is about to connect: host names
// (resolved per connection) and what no controller checked (a forward restored from the store).
namespace {

// Connects to a forward and sends a byte: true when the forward answers with a reset (which may
// come before the byte is sent).
bool reset_on_connect(std::uint16_t port, const std::string& host = "127.0.0.1") {
  auto c = connect_to(port, host);
  if (!c) return false;
  char byte = 'x';
  if (::send(c.get(), &byte, 1, MSG_NOSIGNAL) < 0) return errno == ECONNRESET;
  return ::recv(c.get(), &byte, 1, 0) < 0 && errno == ECONNRESET;
}

// Points forward `s` at `host`:`port` (a PATCH of its target, without the controller's check).
relay::forward_spec retarget(relay::engine& engine, relay::forward_spec s, const std::string& host,
                             std::uint16_t port) {
  test::only_target(s).host = host;
  test::only_target(s).port = port;
  return start(engine, s);
}

}  // namespace

TEST_CASE("a target that is the forward's own listener is reset and counted, not connected", "[tcp]") {
  relay::engine engine(fast_options());
  const auto listen_host = GENERATE(as<std::string>{}, "127.0.0.1", "0.0.0.0");
  const auto target_host = GENERATE(as<std::string>{}, "localhost", "127.0.0.1");
  INFO(listen_host << " -> " << target_host);
  auto s = spec_for(1, 9);
  s.listen_host = listen_host;
  s = start(engine, s);
  s = retarget(engine, s, target_host, s.listen_port);
  CHECK(reset_on_connect(s.listen_port));
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  const auto st = engine.status(1).stats;
  CHECK(st.loops_refused == 1);
  CHECK(st.connections_total == 1);  // no connection came back round
  CHECK(st.connect_errors == 0);
}

TEST_CASE("a host-name target that reaches the API is reset and counted - the API sees nothing", "[tcp]") {
  target_server api(target_server::echo);
  relay::engine engine(fast_options());
  engine.set_api_endpoints({"127.0.0.1"}, api.port());
  auto s = start(engine, spec_for(1, 9));
  s = retarget(engine, s, "localhost", api.port());
  CHECK(reset_on_connect(s.listen_port));
  CHECK(eventually([&] { return engine.status(1).stats.loops_refused == 1; }));
  CHECK(api.accepted() == 0);
}

TEST_CASE("a cycle through another forward is refused where a host-name target closes it", "[tcp]") {
  relay::engine engine(fast_options());
  auto a = start(engine, spec_for(1, 9));
  auto b = start(engine, spec_for(2, a.listen_port));  // B -> A
  a = retarget(engine, a, "localhost", b.listen_port);    // A -> (localhost) B -> A
  CHECK(reset_on_connect(a.listen_port));
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  CHECK(engine.status(1).stats.loops_refused == 1);
  CHECK(engine.status(1).stats.connections_total == 1);
  CHECK(engine.status(2).stats.connections_total == 0);
  // Entering the cycle at B: B's literal target A is let through, and A refuses to go on to B.
  auto c = connect_to(b.listen_port);
  REQUIRE(c);
  send_all(c.get(), std::string("x"));
  CHECK(closed_by_peer(c.get()));  // B's target reset it, so B ends the connection
  CHECK(eventually([&] { return engine.status(1).stats.loops_refused == 2; }));
  CHECK(eventually([&] { return engine.status(2).stats.connections_active == 0; }));
  CHECK(engine.status(2).stats.connections_total == 1);
}

TEST_CASE("a UDP session that moves to a name's next address is refused there when it leads back", "[udp]") {
  REQUIRE(test_hosts::installed);
  relay::engine engine(fast_options());
  auto s = spec_for(1, 9, free_port());  // not from the ephemeral range, which others' sockets take
  s.protocol = relay::protocol::udp;
  s.listen_host = "0.0.0.0";
  s = start(engine, s);
  // [::1]:P first, where nothing listens (the forward is IPv4 only), then 127.0.0.1:P, itself.
  s = retarget(engine, s, test_hosts::dual, s.listen_port);
  auto c = udp_client(s.listen_port);
  send_all(c.get(), std::string("round and round"));
  CHECK(eventually([&] { return engine.status(1).stats.loops_refused == 1; }));
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  const auto st = engine.status(1).stats;
  CHECK(st.target_unreachable == 1);
  CHECK(st.connections_total == 1);
  CHECK(st.datagrams_up == 1);
}

TEST_CASE("a UDP forward whose target is its own listener drops the datagram and counts the session", "[udp]") {
  relay::engine engine(fast_options());
  const auto target_host = GENERATE(as<std::string>{}, test_hosts::v4_only, "127.0.0.1");
  INFO(target_host);
  REQUIRE(test_hosts::installed);
  auto s = spec_for(1, 9);
  s.protocol = relay::protocol::udp;
  s.listen_host = "0.0.0.0";
  s = start(engine, s);
  s = retarget(engine, s, target_host, s.listen_port);
  auto c = udp_client(s.listen_port);
  send_all(c.get(), std::string("round and round"));
  // The session is closed before the datagram that opened it is counted as dropped: wait for both.
  CHECK(eventually([&] {
    const auto st = engine.status(1).stats;
    return st.loops_refused == 1 && st.connections_active == 0 && st.datagrams_dropped == 1;
  }));
  const auto st = engine.status(1).stats;
  CHECK(st.connections_total == 1);
  CHECK(st.datagrams_up == 0);
}
