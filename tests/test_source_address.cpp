// source_address: connections, UDP sessions and health checks to targets leave from the forward's
// source address, seen at real loopback targets through the real API; a target of the other family
// is skipped with a connect error that says why; an address the host lacks is a 400.
#include "api_fixture.hpp"
#include "daemon_state.hpp"
#include "engine_helpers.hpp"
#include "relay/socket_options.hpp"

#include <catch2/catch.hpp>

#include <asio/io_context.hpp>

#include <netinet/in.h>

#include <string>

using namespace test;
using api::json;

namespace {

// The text of an address as the kernel gave it (accept, recvfrom, getsockname).
std::string address_of(const sockaddr_storage& a) {
  char text[INET6_ADDRSTRLEN] = "";
  const void* bytes = a.ss_family == AF_INET6
                          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6&>(a).sin6_addr)
                          : static_cast<const void*>(&reinterpret_cast<const sockaddr_in&>(a).sin_addr);
  ::inet_ntop(a.ss_family, bytes, text, sizeof text);
  return text;
}

// Where the next connection on `listener` comes from, or "" when none comes within the timeout.
// The address accept gives, which a health check's connection has even when reset since.
std::string next_peer(const fd& listener) {
  pollfd p{listener.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(io_timeout).count())) != 1) return "";
  sockaddr_storage from{};
  socklen_t len = sizeof from;
  fd c(::accept4(listener.get(), reinterpret_cast<sockaddr*>(&from), &len, SOCK_CLOEXEC));
  return c ? address_of(from) : "";
}

json forward(const std::string& protocol, const json& targets, const json& source) {
  return json{{"protocol", protocol}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
              {"targets", targets}, {"balance", "first"}, {"source_address", source}};
}

json target(const std::string& host, std::uint16_t port) { return json{{"host", host}, {"port", port}}; }

json post(api_fixture& fx, const json& body) {
  const auto r = fx.client.Post("/api/v1/forwards", body.dump(), "application/json");
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 201);
  return body_of(r);
}

json get(api_fixture& fx, const json& f) {
  const auto r = fx.client.Get("/api/v1/forwards/" + std::to_string(f["id"].get<std::int64_t>()));
  REQUIRE(r);
  return body_of(r);
}

httplib::Result patch(api_fixture& fx, const json& f, const json& body) {
  return fx.client.Patch("/api/v1/forwards/" + std::to_string(f["id"].get<std::int64_t>()), body.dump(),
                         "application/json");
}

// Where a new TCP connection through forward `f` reaches `listener` from.
std::string tcp_peer(const json& f, const fd& listener) {
  auto c = connect_to(f["listen_port"].get<std::uint16_t>());
  REQUIRE(c);
  return next_peer(listener);
}

// A UDP target of our own on `host`: where the next datagram comes from.
struct udp_target {
  std::uint16_t port = 0;
  fd s;
  explicit udp_target(const std::string& host = "127.0.0.1") {
    socklen_t len;
    auto ss = make_addr(host, 0, len);
    s = fd(::socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    set_timeouts(s.get());
    REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  std::string next_peer() {
    char buf[2048];
    sockaddr_storage from{};
    socklen_t len = sizeof from;
    return ::recvfrom(s.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len) >= 0 ? address_of(from)
                                                                                                 : "";
  }
};

// Where a datagram from a new client (a new session) through forward `f` reaches `t` from.
std::string udp_peer(const json& f, udp_target& t) {
  auto c = udp_client(f["listen_port"].get<std::uint16_t>());
  ::send(c.get(), "?", 1, 0);
  return t.next_peer();
}

std::string last_error(api_fixture& fx, const json& f, std::size_t target) {
  const auto e = get(fx, f)["stats"]["targets"][target]["last_error"];
  return e.is_null() ? "" : e.get<std::string>();
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Whether this machine lacks `address` (a documentation address, RFC 5737), as a test of an address
// the host does not have needs. Some test machines do have one of them (this one has 192.0.2.2).
bool host_lacks(const char* address) {
  return relay::check_local_address(asio::ip::make_address(address)).value() == EADDRNOTAVAIL;
}

}  // namespace

TEST_CASE("a tcp forward with source_address connects from it - a PATCH moves new connections", "[tcp][api]") {
  api_fixture fx;
  std::uint16_t port = 0;
  const auto listener = listen_on(port);
  const auto f = post(fx, forward("tcp", json::array({target("127.0.0.1", port)}), "127.0.0.2"));
  CHECK(f["source_address"] == "127.0.0.2");
  CHECK(tcp_peer(f, listener) == "127.0.0.2");
  const auto r = patch(fx, f, json{{"source_address", "127.0.0.3"}});
  REQUIRE(r);
  REQUIRE(r->status == 200);
  CHECK(tcp_peer(f, listener) == "127.0.0.3");
  REQUIRE(patch(fx, f, json{{"source_address", nullptr}})->status == 200);
  CHECK(tcp_peer(f, listener) == "127.0.0.1");  // the kernel's choice towards 127.0.0.1
}

TEST_CASE("a udp forward with source_address sends each session's datagrams from it", "[udp][api]") {
  api_fixture fx;
  udp_target t;
  const auto f = post(fx, forward("udp", json::array({target("127.0.0.1", t.port)}), "127.0.0.2"));
  CHECK(udp_peer(f, t) == "127.0.0.2");
  REQUIRE(patch(fx, f, json{{"source_address", "127.0.0.3"}})->status == 200);
  CHECK(udp_peer(f, t) == "127.0.0.3");
}

// The bind takes no port (IP_BIND_ADDRESS_NO_PORT): connect picks one free towards its target, so
// connections from one source address are not held to one ephemeral range for every target.
TEST_CASE("start_connect with a source binds it with IP_BIND_ADDRESS_NO_PORT set first", "[tcp]") {
  for (const std::string host : {"127.0.0.1", "::1"}) {
    INFO("target " << host);
    std::uint16_t port = 0;
    const auto listener = listen_on(port, host);
    asio::io_context loop;
    asio::ip::tcp::socket s(loop);
    const auto source = asio::ip::make_address(host == "::1" ? "::1" : "127.0.0.2");
    const auto begun = relay::start_connect(s, {asio::ip::make_address(host), port}, relay::connect_options::connection,
                                            source);
    REQUIRE(begun.state != relay::connect_state::failed);
    int no_port = 0;
    socklen_t len = sizeof no_port;
    REQUIRE(::getsockopt(s.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &no_port, &len) == 0);
    CHECK(no_port == 1);
    CHECK(next_peer(listener) == source.to_string());
  }
}

TEST_CASE("a target of the other family than source_address is skipped with a connect error saying why",
          "[tcp][udp][api]") {
  api_fixture fx;
  SECTION("tcp: the only target fails and the client is reset") {
    std::uint16_t port = 0;
    const auto listener = listen_on(port);
    const auto f = post(fx, forward("tcp", json::array({target("127.0.0.1", port)}), "::1"));
    auto c = connect_to(f["listen_port"].get<std::uint16_t>());
    REQUIRE(c);
    CHECK(read_to_end(c.get()).error == ECONNRESET);
    const auto why = last_error(fx, f, 0);
    INFO(why);
    CHECK(has(why, "target address is IPv4 but source_address is IPv6"));
    CHECK(get(fx, f)["stats"]["targets"][0]["connect_errors"] == 1);
    pollfd p{listener.get(), POLLIN, 0};
    CHECK(::poll(&p, 1, 0) == 0);  // nothing reached it
  }
  SECTION("tcp: a pool of an IPv4 and an IPv6 target with source ::1 reaches the IPv6 one") {
    std::uint16_t v4 = 0, v6 = 0;
    const auto listener4 = listen_on(v4);
    const auto listener6 = listen_on(v6, "::1");
    const auto f = post(fx, forward("tcp", json::array({target("127.0.0.1", v4), target("::1", v6)}), "::1"));
    CHECK(tcp_peer(f, listener6) == "::1");
    CHECK(has(last_error(fx, f, 0), "target address is IPv4 but source_address is IPv6"));
    CHECK(last_error(fx, f, 1).empty());
  }
  SECTION("udp: a pool of an IPv4 and an IPv6 target with source 127.0.0.2 reaches the IPv4 one") {
    udp_target t4("127.0.0.1");
    udp_target t6("::1");
    const auto f = post(fx, forward("udp", json::array({target("::1", t6.port), target("127.0.0.1", t4.port)}),
                                    "127.0.0.2"));
    CHECK(udp_peer(f, t4) == "127.0.0.2");
    CHECK(has(last_error(fx, f, 0), "target address is IPv6 but source_address is IPv4"));
    CHECK(get(fx, f)["stats"]["connect_errors"] == 1);
  }
}

TEST_CASE("health checks leave from source_address", "[tcp][api]") {
  api_fixture fx;
  std::uint16_t port = 0;
  const auto listener = listen_on(port);
  auto body = forward("tcp", json::array({target("127.0.0.1", port)}), "127.0.0.2");
  body["health_check"] = json{{"interval_s", 1}, {"timeout_s", 1}};
  const auto f = post(fx, body);
  CHECK(next_peer(listener) == "127.0.0.2");  // no client connected: this is a check
  REQUIRE(patch(fx, f, json{{"source_address", "127.0.0.3"}})->status == 200);
  // A check started before the PATCH may still come from the old address; the checker it replaced
  // is stopped, so the next ones come from the new one.
  CHECK(eventually([&] { return next_peer(listener) == "127.0.0.3"; }));
  CHECK(next_peer(listener) == "127.0.0.3");
}

TEST_CASE("bad source_address values are 400s naming source_address - nothing is applied", "[api]") {
  api_fixture fx;
  std::uint16_t port = 0;
  const auto listener = listen_on(port);
  const auto targets = json::array({target("127.0.0.1", port)});
  REQUIRE(host_lacks("192.0.2.1"));
  const std::vector<std::pair<std::string, std::string>> bad{
      {"not-an-address", "must be null or an IP address"},
      {"fe80::1%lo", "link-local source addresses are not supported"},
      {"0.0.0.0", "is a wildcard"},
      {"224.0.0.1", "is a multicast address"},
      {"192.0.2.1", "source_address 192.0.2.1 is not an address of this host"},
      // lo's 127.0.0.1/8 broadcast: bind(2) takes it, connections would leave from another address.
      {"127.255.255.255", "source_address 127.255.255.255 is a broadcast address of this host"},
  };
  for (const auto& [value, says] : bad) {
    INFO("source_address " << value);
    const auto r = fx.client.Post("/api/v1/forwards", forward("tcp", targets, value).dump(), "application/json");
    REQUIRE(r);
    CHECK(r->status == 400);
    const auto e = body_of(r)["error"];
    CHECK(e["code"] == "invalid_field");
    CHECK(e["field"] == "source_address");
    CHECK(has(e["message"].get<std::string>(), says));
  }
  CHECK(body_of(fx.client.Get("/api/v1/forwards")).empty());

  const auto f = post(fx, forward("tcp", targets, "127.0.0.2"));
  for (const auto& [value, says] : bad) {
    INFO("PATCH source_address " << value);
    const auto r = patch(fx, f, json{{"source_address", value}, {"name", "changed"}});
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(body_of(r)["error"]["field"] == "source_address");
    CHECK(has(body_of(r)["error"]["message"].get<std::string>(), says));
  }
  const auto now = get(fx, f);
  CHECK(now["source_address"] == "127.0.0.2");
  CHECK(now["name"] == f["name"]);
  CHECK(tcp_peer(f, listener) == "127.0.0.2");  // the live forward kept it too
}

// The decision for a stored forward whose address went away by a restart: it is served, and each
// connection fails with a connect error naming the bind's error, until the address comes back.
TEST_CASE("a stored forward whose source address the host lacks starts and fails each connection", "[tcp][store]") {
  REQUIRE(host_lacks("198.51.100.1"));
  REQUIRE(host_lacks("198.51.100.2"));
  std::uint16_t port = 0;
  const auto listener = listen_on(port);
  daemon_state d;
  auto created = d.ctl->create(forward("tcp", json::array({target("127.0.0.1", port)}), "127.0.0.2"));
  REQUIRE(created.status == 201);
  const auto id = created.body["id"].get<std::int64_t>();
  auto spec = d.store->get(id)->spec;
  spec.source_address = asio::ip::make_address("198.51.100.1");  // as if the host had it when it was stored
  d.store->update(spec);
  d.restart();
  auto f = d.ctl->get(id).body;
  CHECK(f["state"] == "active");
  CHECK(f["source_address"] == "198.51.100.1");
  auto c = connect_to(f["listen_port"].get<std::uint16_t>());
  REQUIRE(c);
  CHECK(read_to_end(c.get()).error == ECONNRESET);
  f = d.ctl->get(id).body;
  const auto why = f["stats"]["targets"][0]["last_error"];
  INFO(why.dump());
  CHECK(has(why.get<std::string>(), "Cannot assign requested address"));
  // A change that keeps it is saved (the address may come back); a new one the host lacks is not.
  CHECK(d.ctl->patch(id, json{{"name", "kept"}}).status == 200);
  CHECK(d.ctl->patch(id, json{{"source_address", "198.51.100.2"}}).status == 400);
}
