// controller targets: through the HTTP API in-process, targets that lead back into the daemon are refused.
#include "api_fixture.hpp"
#include "spec_helpers.hpp"
#include "relay/target_guard.hpp"

#include <catch2/catch.hpp>

using namespace test;
using nlohmann::json;

namespace {

// The fixture's API, protected as main protects the daemon's.
struct guarded_api : api_fixture {
  guarded_api() { engine.set_api_endpoints({"127.0.0.1"}, port); }
};

json forward(const std::string& listen_host, std::uint16_t listen_port, const std::string& target_host,
             std::uint16_t target_port, const std::string& protocol = "tcp") {
  return {{"protocol", protocol},       {"listen_host", listen_host}, {"listen_port", listen_port},
          {"target_host", target_host}, {"target_port", target_port}};
}

// A 400 with `code`, naming target_port and `endpoint` in its message.
void check_refused(const httplib::Result& r, const std::string& code, const std::string& endpoint) {
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == 400);
  const auto e = json::parse(r->body)["error"];
  CHECK(e["code"] == code);
  CHECK(e["field"] == "target_port");
  CHECK(e["message"].get<std::string>().find(endpoint) != std::string::npos);
}

json created(const httplib::Result& r) {
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 201);
  return json::parse(r->body);
}

std::string path_of(const json& f) { return "/api/v1/forwards/" + std::to_string(f["id"].get<int>()); }

}  // namespace

TEST_CASE("a forward to the daemon's own API is a 400 naming target_port, whatever the address form", "[api]") {
  guarded_api f;
  const std::string api = "127.0.0.1:" + std::to_string(f.port);
  const auto listen = GENERATE(as<std::string>{}, "127.0.0.2", "0.0.0.0");
  const auto target = GENERATE(as<std::string>{}, "127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1");
  INFO(listen << " -> " << target);
  check_refused(f.client.Post("/api/v1/forwards", forward(listen, 0, target, f.port).dump(), "application/json"),
                "target_is_api", api);
  CHECK(f.store.list().empty());
  CHECK(f.engine.snapshot().empty());
  // A UDP forward to the same port reaches no API; a PATCH onto the API is refused like a create.
  auto udp = created(f.client.Post("/api/v1/forwards", forward(listen, 0, target, f.port, "udp").dump(),
                                   "application/json"));
  auto tcp = created(f.client.Post("/api/v1/forwards", forward(listen, 0, target, 9).dump(), "application/json"));
  check_refused(f.client.Patch(path_of(tcp).c_str(), json{{"target_port", f.port}}.dump(), "application/json"),
                "target_is_api", api);
  CHECK(test::only_target(f.store.get(tcp["id"])->spec).port == 9);
}

TEST_CASE("a host-name target that resolves to the API: created, but each connection is reset and counted", "[api]") {
  guarded_api f;
  auto fw = created(f.client.Post("/api/v1/forwards", forward("127.0.0.2", 0, "localhost", f.port).dump(),
                                  "application/json"));
  auto c = connect_to(fw["listen_port"], "127.0.0.2");
  REQUIRE(c);
  const auto request = "GET /api/v1/forwards HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(f.port) + "\r\n\r\n";
  char buf[256];
  const bool sent = ::send(c.get(), request.data(), request.size(), MSG_NOSIGNAL) > 0;  // the reset may come first
  const auto n = sent ? ::recv(c.get(), buf, sizeof buf, 0) : -1;
  CHECK(n < 0);
  CHECK(errno == ECONNRESET);
  auto st = [&] { return json::parse(f.client.Get(path_of(fw).c_str())->body)["stats"]; };
  CHECK(eventually([&] { return st()["loops_refused"] == 1; }));
  CHECK(st()["connect_errors"] == 0);
  CHECK(f.client.Get("/metrics")->body.find("portrelay_forward_loops_refused_total{id=\"" +
                                             std::to_string(fw["id"].get<int>()) + "\",name=\"\",protocol=\"tcp\"} 1") !=
        std::string::npos);
}

TEST_CASE("a forward whose target is its own listen address is a 400, for TCP and UDP", "[api]") {
  guarded_api f;
  const auto protocol = GENERATE(as<std::string>{}, "tcp", "udp");
  INFO(protocol);
  SECTION("on create, with the same address or a wildcard listener") {
    const std::uint16_t port = free_port();
    const auto [listen, target] = GENERATE(std::pair<std::string, std::string>{"127.0.0.1", "127.0.0.1"},
                                           std::pair<std::string, std::string>{"0.0.0.0", "127.0.0.1"},
                                           std::pair<std::string, std::string>{"0.0.0.0", "127.0.0.5"},
                                           std::pair<std::string, std::string>{"127.0.0.1", "0.0.0.0"},
                                           std::pair<std::string, std::string>{"::1", "::1"});
    INFO(listen << " -> " << target);
    check_refused(f.client.Post("/api/v1/forwards", forward(listen, port, target, port, protocol).dump(),
                                "application/json"),
                  "forward_loop", relay::format_endpoint(listen, port));
    CHECK(f.store.list().empty());
  }
  SECTION("on a PATCH of the target, or of the listen port onto the target's") {
    auto fw = created(f.client.Post("/api/v1/forwards", forward("0.0.0.0", 0, "127.0.0.1", 9, protocol).dump(),
                                    "application/json"));
    const int port = fw["listen_port"];
    check_refused(f.client.Patch(path_of(fw).c_str(), json{{"target_port", port}}.dump(), "application/json"),
                  "forward_loop", "0.0.0.0:" + std::to_string(port));
    const std::uint16_t other = free_port();
    auto moved = created(f.client.Post("/api/v1/forwards", forward("127.0.0.1", 0, "127.0.0.1", other, protocol).dump(),
                                       "application/json"));
    check_refused(f.client.Patch(path_of(moved).c_str(), json{{"listen_port", other}}.dump(), "application/json"),
                  "forward_loop", "127.0.0.1:" + std::to_string(other));
    CHECK(test::only_target(f.store.get(fw["id"])->spec).port == 9);
    CHECK(f.store.get(moved["id"])->spec.listen_port == moved["listen_port"]);
    // The refused PATCH left the old listener serving.
    CHECK(f.engine.status(moved["id"]).state == relay::forward_state::active);
  }
}

TEST_CASE("a wildcard listener is its own target through any address of this host's interfaces", "[api]") {
  guarded_api f;
  std::string own;
  for (const auto& a : relay::interface_addresses()) {
    if (a.is_v4() && !a.is_loopback()) own = a.to_string();
  }
  if (own.empty()) {
    WARN("this host has no IPv4 address besides loopback: nothing to check");
    return;
  }
  INFO(own);
  const std::uint16_t port = free_port();
  check_refused(f.client.Post("/api/v1/forwards", forward("0.0.0.0", port, own, port).dump(), "application/json"),
                "forward_loop", "0.0.0.0:" + std::to_string(port));
  // The same address is no loop for a listener on loopback only.
  created(f.client.Post("/api/v1/forwards", forward("127.0.0.1", port, own, port).dump(), "application/json"));
}

TEST_CASE("a change that closes a cycle of forwards is a 400 - a chain that leaves is not", "[api]") {
  guarded_api f;
  target_server outside(target_server::echo);
  auto b = created(f.client.Post("/api/v1/forwards", forward("127.0.0.1", 0, "127.0.0.1", outside.port()).dump(),
                                 "application/json"));
  const std::uint16_t b_port = b["listen_port"];
  // A -> B -> outside: allowed, and it carries traffic.
  auto a = created(f.client.Post("/api/v1/forwards", forward("127.0.0.1", 0, "127.0.0.1", b_port).dump(),
                                 "application/json"));
  const std::uint16_t a_port = a["listen_port"];
  CHECK(echo_once(a_port, "through two forwards") == "through two forwards");
  const std::string via = "through forward " + std::to_string(a["id"].get<int>());
  SECTION("by a PATCH of B's target to A") {
    check_refused(f.client.Patch(path_of(b).c_str(), json{{"target_port", a_port}}.dump(), "application/json"),
                  "forward_loop", via);
    CHECK(test::only_target(f.store.get(b["id"])->spec).port == outside.port());
    CHECK(echo_once(a_port, "still out") == "still out");
  }
  SECTION("by a create whose listener another forward already leads to") {
    const std::uint16_t c_port = free_port();
    auto c = created(f.client.Post("/api/v1/forwards", forward("127.0.0.1", 0, "127.0.0.1", c_port).dump(),
                                   "application/json"));
    check_refused(f.client.Post("/api/v1/forwards", forward("0.0.0.0", c_port, "127.0.0.1", c["listen_port"]).dump(),
                                "application/json"),
                  "forward_loop", "forward " + std::to_string(c["id"].get<int>()));
    CHECK(f.store.list().size() == 3);
  }
  SECTION("by enabling a disabled forward that closes it") {
    const std::uint16_t c_port = free_port();
    auto body = forward("127.0.0.1", c_port, "127.0.0.1", a_port);
    body["enabled"] = false;
    auto c = created(f.client.Post("/api/v1/forwards", body.dump(), "application/json"));  // C -> A, leading nowhere
    auto to_c = f.client.Patch(path_of(b).c_str(), json{{"target_port", c_port}}.dump(), "application/json");
    REQUIRE(to_c);
    CHECK(to_c->status == 200);  // B -> C's port, where nothing listens
    check_refused(f.client.Patch(path_of(c).c_str(), json{{"enabled", true}}.dump(), "application/json"),
                  "forward_loop", "forward " + std::to_string(a["id"].get<int>()));
    CHECK_FALSE(f.store.get(c["id"])->spec.enabled);
    CHECK_FALSE(connect_to(c_port));
  }
}
