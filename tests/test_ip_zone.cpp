// ip_zone: zones checked and resolved; link-local forwards for real, in a network namespace of the test's own.
#include "relay/ip_zone.hpp"

#include "api_fixture.hpp"
#include "netns.hpp"

#include <catch2/catch.hpp>

#include <net/if.h>
#include <netdb.h>
#include <spawn.h>
#include <sys/wait.h>

#include <functional>
#include <optional>

using namespace test;
using nlohmann::json;

extern char** environ;

namespace {

const unsigned lo_index = if_nametoindex("lo");

// Runs `argv` and waits; whether it exited 0.
bool run(std::vector<std::string> argv) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = 0;
  if (::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) return false;
  int status = 0;
  return ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Runs `body` on a thread of its own in a network namespace made for it (tests/netns.hpp: lo up),
// with a veth pair v0 <-> v1 and fe80::1 on each end, so one link-local address is on two links.
// What the body starts (the engine's and the API's threads, their sockets) is in that namespace too.
// Nothing when it ran; why not when this process may not make one (no CAP_SYS_ADMIN, no iproute2,
// no veth).
std::optional<std::string> in_own_network(const std::function<void()>& body) {
  std::optional<netns> ns;
  try {
    ns.emplace();
  } catch (const std::system_error& e) {
    return std::string(e.what());
  }
  return in_netns(*ns, [&]() -> std::optional<std::string> {
    const std::vector<std::vector<std::string>> setup{
        {"ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
        {"ip", "link", "set", "v0", "up"},
        {"ip", "link", "set", "v1", "up"},
        {"ip", "-6", "addr", "add", "fe80::1/64", "dev", "v0", "nodad"},
        {"ip", "-6", "addr", "add", "fe80::1/64", "dev", "v1", "nodad"}};
    for (const auto& command : setup) {
      if (!run(command)) return "failed: " + command[1] + " " + command[2] + " " + command[3] + " ...";
    }
    body();
    return std::nullopt;
  });
}

// A socket connected to a literal with a zone ("fe80::1%v0"), which inet_pton cannot read; empty
// when the connect fails.
fd connect_scoped(const std::string& host, std::uint16_t port, int type = SOCK_STREAM) {
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  hints.ai_socktype = type;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return fd();
  fd s(::socket(found->ai_family, type | SOCK_CLOEXEC, 0));
  set_timeouts(s.get());
  const bool connected = ::connect(s.get(), found->ai_addr, found->ai_addrlen) == 0;
  ::freeaddrinfo(found);
  return connected ? std::move(s) : fd();
}

// What a TCP connection to host:port reads before the end: the tag of the target it reached.
std::string reached(const std::string& host, std::uint16_t port) {
  auto c = connect_scoped(host, port);
  if (!c) return "<refused>";
  return recv_all(c.get());
}

json forward(const std::string& listen_host, std::uint16_t listen_port, const std::string& target_host,
             std::uint16_t target_port, const std::string& protocol = "tcp") {
  return {{"protocol", protocol},       {"listen_host", listen_host}, {"listen_port", listen_port},
          {"target_host", target_host}, {"target_port", target_port}};
}

// The body of a 201 or 200, or a failed REQUIRE showing what came instead.
json answered(const httplib::Result& r, int status) {
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == status);
  return json::parse(r->body);
}

std::string error_code(const httplib::Result& r) {
  REQUIRE(r);
  INFO(r->body);
  return json::parse(r->body)["error"]["code"];
}

}  // namespace

TEST_CASE("an IPv6 zone names an interface by name or by index - unknown ones are told apart", "[api]") {
  REQUIRE(lo_index != 0);
  CHECK(relay::split_zone("fe80::1%eth0").address == "fe80::1");
  CHECK(relay::split_zone("fe80::1%eth0").zone == "eth0");
  CHECK_FALSE(relay::split_zone("fe80::1").zone);
  CHECK(relay::split_zone("fe80::1%").zone == "");

  CHECK(relay::interface_index("lo").value() == lo_index);
  CHECK(relay::interface_index(std::to_string(lo_index)).value() == lo_index);
  for (const char* none : {"nosuchif0", "", "0", "4294967295", "99999999999", "+1", "1x", "lo/"}) {
    INFO(none);
    const auto index = relay::interface_index(none);
    REQUIRE_FALSE(index);
    CHECK(index.error().code == std::errc::no_such_device);
  }
  CHECK_FALSE(relay::check_interface("fe80::1%lo"));
  CHECK_FALSE(relay::check_interface("::1"));
  CHECK(relay::check_interface("fe80::1%nosuchif0") == "unknown network interface 'nosuchif0'");

  auto a = relay::scoped_address("fe80::1%lo");
  REQUIRE(a);
  CHECK(a.value().to_v6().scope_id() == lo_index);
  a = relay::scoped_address("fe80::1%" + std::to_string(lo_index));
  REQUIRE(a);
  CHECK(a.value().to_v6().scope_id() == lo_index);
  a = relay::scoped_address("127.0.0.1");
  REQUIRE(a);
  CHECK(a.value() == asio::ip::make_address("127.0.0.1"));
  a = relay::scoped_address("fe80::1%nosuchif0");
  REQUIRE_FALSE(a);
  CHECK(a.error().code == std::errc::no_such_device);
  CHECK(a.error().message == "unknown network interface 'nosuchif0'");
  CHECK_FALSE(relay::scoped_address("fe80::zz%lo"));
}

TEST_CASE("link-local forwards listen on their own link: one address on two links is two forwards", "[api]") {
  const auto skipped = in_own_network([] {
    target_server one([](int s) { send_all(s, "one"); }, "::");
    target_server two([](int s) { send_all(s, "two"); });
    udp_echo_server echo;
    const std::string v0 = std::to_string(if_nametoindex("v0"));
    REQUIRE(v0 != "0");
    api_fixture f;
    auto post = [&](const json& body) { return f.client.Post("/api/v1/forwards", body.dump(), "application/json"); };
    auto patch = [&](const json& fwd, const json& body) {
      const auto path = "/api/v1/forwards/" + std::to_string(fwd["id"].get<int>());
      return f.client.Patch(path.c_str(), body.dump(), "application/json");
    };

    // The target's zone is used when the relay connects, too.
    const auto a = answered(post(forward("fe80::1%v0", 0, "fe80::1%v1", one.port())), 201);
    CHECK(a["listen_host"] == "fe80::1%v0");
    CHECK(a["target_host"] == "fe80::1%v1");
    CHECK(a["state"] == "active");
    const auto port = a["listen_port"].get<std::uint16_t>();
    answered(post(forward("fe80::1%v1", port, "127.0.0.1", two.port())), 201);
    CHECK(reached("fe80::1%v0", port) == "one");
    CHECK(reached("fe80::1%v1", port) == "two");
    CHECK(error_code(post(forward("fe80::1%v0", port, "127.0.0.1", 9))) == "address_in_use");

    // Into the other link's forward is a chain; into its own listener, by name or index, a loop.
    answered(patch(a, {{"target_port", port}}), 200);
    CHECK(reached("fe80::1%v0", port) == "two");
    for (const auto& own : {std::string("fe80::1%v0"), "fe80::1%" + v0}) {
      INFO(own);
      CHECK(error_code(patch(a, {{"target_host", own}})) == "forward_loop");
    }
    answered(patch(a, {{"target_port", one.port()}}), 200);
    // A listener on "::" is reached through the link-local address of any link.
    const auto any = answered(post(forward("::", 0, "127.0.0.1", two.port())), 201);
    CHECK(error_code(patch(any, {{"target_host", "fe80::1%v0"}, {"target_port", any["listen_port"]}})) ==
          "forward_loop");

    // The same interface by its index is the same address: the listener moves, no conflict with itself.
    const auto respelt = answered(patch(a, {{"listen_host", "fe80::1%" + v0}}), 200);
    CHECK(respelt["listen_host"] == "fe80::1%" + v0);
    CHECK(respelt["listen_port"] == port);
    CHECK(reached("fe80::1%v0", port) == "one");

    const auto u = answered(post(forward("fe80::1%v0", 0, "127.0.0.1", echo.port(), "udp")), 201);
    auto c = connect_scoped("fe80::1%v0", u["listen_port"].get<std::uint16_t>(), SOCK_DGRAM);
    REQUIRE(c);
    REQUIRE(send_all(c.get(), "ping"));
    CHECK(recv_datagram(c.get()) == "ping");

    // After a restart the text is as typed and the listener is on its link again.
    f.engine.shutdown();
    store::forward_store again((f.dir.path / "api.db").string());
    relay::engine e(test_engine_options());
    api::controller restarted(again, e);
    restarted.restore();
    const auto restored = restarted.get(a["id"].get<std::int64_t>()).body;
    CHECK(restored["listen_host"] == "fe80::1%" + v0);
    CHECK(restored["state"] == "active");
    CHECK(reached("fe80::1%v0", port) == "one");
    CHECK(reached("fe80::1%v1", port) == "two");
  });
  if (skipped) WARN("not run: this process cannot make a network namespace (" << *skipped << ")");
}
