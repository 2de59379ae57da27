// Port ranges (listen_port_end) through the real API, engine and loopback sockets: every port reaches
// its offset on the targets (TCP and UDP), all-or-nothing binding, overlaps, a PATCH that moves a
// range under a live connection, per-port counters and the descriptor budget.
#include "api_fixture.hpp"
#include "daemon_state.hpp"
#include "descriptor_limit.hpp"

#include <catch2/catch.hpp>

#include <sys/resource.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace test;
using nlohmann::json;

namespace {

// "40012\n": what a port_teller's port says first.
std::string said_by(std::uint16_t port) {
  char text[8];
  std::snprintf(text, sizeof text, "%05u\n", static_cast<unsigned>(port));
  return text;
}

// A target range: TCP and UDP on 127.0.0.1 on `n` consecutive ports. A TCP connection hears its port
// (said_by), then gets back what it sends until EOF; a datagram is answered with its port.
class port_teller {
 public:
  explicit port_teller(std::uint16_t n) {
    for (int attempt = 0; attempt < 100 && !sockets_; ++attempt) bind_all(free_ports(n), n);
    if (!sockets_) throw std::runtime_error("port_teller: no free range");
  }
  std::uint16_t first() const { return first_; }

 private:
  void bind_all(std::uint16_t first, std::uint16_t n) {
    std::vector<answering_sockets::socket_at> all;
    for (std::uint16_t i = 0; i < n; ++i) {
      for (const bool udp : {false, true}) {
        auto s = bound_on("127.0.0.1", static_cast<std::uint16_t>(first + i), udp);
        if (!s) return;  // taken meanwhile: another range
        all.push_back({std::move(s), udp, said_by(static_cast<std::uint16_t>(first + i))});
      }
    }
    first_ = first;
    sockets_ = std::make_unique<answering_sockets>(std::move(all), true);
  }

  std::uint16_t first_ = 0;
  std::unique_ptr<answering_sockets> sockets_;
};

json range_body(const char* protocol, std::uint16_t listen_port, std::uint16_t size, std::uint16_t target_port) {
  return json{{"protocol", protocol},
              {"listen_host", "127.0.0.1"},
              {"listen_port", listen_port},
              {"listen_port_end", listen_port + size - 1},
              {"target_host", "127.0.0.1"},
              {"target_port", target_port}};
}

httplib::Result post(api_fixture& fx, const json& body) {
  return fx.client.Post("/api/v1/forwards", body.dump(), "application/json");
}

httplib::Result patch(api_fixture& fx, std::int64_t id, const json& body) {
  return fx.client.Patch(("/api/v1/forwards/" + std::to_string(id)).c_str(), body.dump(), "application/json");
}

// What a new TCP connection to `port` hears first: the target port it reached ("" when refused).
std::string tcp_reaches(std::uint16_t port) {
  auto c = connect_to(port);
  if (!c) return "";
  return recv_exact(c.get(), 6);
}

// What a datagram to `port` gets back: the target port it reached ("" when nothing answers in `wait`).
std::string udp_reaches(std::uint16_t port, std::chrono::milliseconds wait = io_timeout) {
  auto c = udp_client(port);
  ::send(c.get(), "?", 1, 0);
  return recv_datagram(c.get(), wait);
}

// Whether every port of first..first+n-1 can be bound for `udp` (or TCP) on 127.0.0.1 now.
bool all_free(std::uint16_t first, std::uint16_t n, bool udp) {
  for (std::uint16_t i = 0; i < n; ++i) {
    if (!bound_on("127.0.0.1", static_cast<std::uint16_t>(first + i), udp)) return false;
  }
  return true;
}

// A forward over `size` ports in front of a port_teller of as many, with `room` free ports above it
// to move into. Port i of the range and of the targets: port(i), target(i).
struct ranged_forward {
  port_teller targets;
  api_fixture fx;
  std::uint16_t listen;
  std::int64_t id = 0;
  std::string path;

  ranged_forward(const char* protocol, std::uint16_t size, std::uint16_t room = 0)
      : targets(size), listen(free_ports(static_cast<std::uint16_t>(size + room))) {
    auto r = post(fx, range_body(protocol, listen, size, targets.first()));
    INFO(r->body);
    REQUIRE(r->status == 201);
    CHECK(body_of(r)["listen_port_end"] == listen + size - 1);
    id = body_of(r)["id"].get<std::int64_t>();
    path = "/api/v1/forwards/" + std::to_string(id);
  }
  std::uint16_t port(int i) const { return static_cast<std::uint16_t>(listen + i); }
  std::string target(int i) const { return said_by(static_cast<std::uint16_t>(targets.first() + i)); }
  json get(const std::string& query = "") { return body_of(fx.client.Get((path + query).c_str())); }
  // Moves the range up by `by` ports.
  void move(int by, int size) {
    auto r = patch(fx, id, json{{"listen_port", listen + by}, {"listen_port_end", listen + by + size - 1}});
    INFO(r->body);
    REQUIRE(r->status == 200);
  }
};

}  // namespace

TEST_CASE("a 64-port tcp range: every port reaches its offset on the target", "[api][tcp]") {
  ranged_forward f("tcp", 64);
  for (int i = 0; i < 64; ++i) {
    INFO("port " << f.port(i));
    CHECK(tcp_reaches(f.port(i)) == f.target(i));
  }
  CHECK(f.get()["stats"]["connections_total"] == 64);
}

TEST_CASE("a 64-port udp range: every port reaches its offset and replies leave from the port the client used",
          "[api][udp]") {
  ranged_forward f("udp", 64);
  for (int i = 0; i < 64; ++i) {
    INFO("port " << f.port(i));
    CHECK(udp_reaches(f.port(i)) == f.target(i));  // a connected client hears only from the port it sent to
  }
  // One client socket, two ports: two sessions, each answered from its own port.
  fd c(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  set_timeouts(c.get());
  for (const int i : {5, 40}) {
    socklen_t len;
    auto to = make_addr("127.0.0.1", f.port(i), len);
    REQUIRE(::sendto(c.get(), "?", 1, 0, reinterpret_cast<sockaddr*>(&to), len) == 1);
    sockaddr_in from{};
    socklen_t from_len = sizeof from;
    char buf[64];
    const auto n = ::recvfrom(c.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
    REQUIRE(n > 0);
    CHECK(std::string(buf, static_cast<std::size_t>(n)) == f.target(i));
    CHECK(ntohs(from.sin_port) == f.port(i));
  }
  CHECK(f.get()["stats"]["connections_total"] == 66);
}

TEST_CASE("a range with one port taken is a 409 naming that port and leaves nothing bound", "[api][tcp][udp]") {
  const bool udp = GENERATE(false, true);
  INFO((udp ? "udp" : "tcp"));
  api_fixture fx;
  const auto listen = free_ports(32);
  const auto taken = static_cast<std::uint16_t>(listen + 17);
  {
    socklen_t len;
    auto ss = make_addr("127.0.0.1", taken, len);
    fd holder(::socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0));
    REQUIRE(::bind(holder.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    if (!udp) REQUIRE(::listen(holder.get(), 8) == 0);
    auto r = post(fx, range_body(udp ? "udp" : "tcp", listen, 32, 9));
    INFO(r->body);
    CHECK(r->status == 409);
    const auto error = body_of(r)["error"];
    CHECK(error["code"] == "address_in_use");
    CHECK(error["field"] == "listen_port");
    CHECK(error["message"].get<std::string>().find("listen port " + std::to_string(taken) + " is in use") !=
          std::string::npos);
    CHECK(body_of(fx.client.Get("/api/v1/forwards")).empty());
  }
  // Every port of the range is free again (the one taken too, now that its holder is gone).
  CHECK(all_free(listen, 32, udp));
}

TEST_CASE("two forwards whose ranges overlap conflict - also across a wildcard address", "[api][tcp]") {
  api_fixture fx;
  const auto listen = free_ports(24);
  auto first = post(fx, range_body("tcp", listen, 16, 9));
  REQUIRE(first->status == 201);
  auto second = range_body("tcp", static_cast<std::uint16_t>(listen + 8), 16, 9);
  auto r = post(fx, second);
  INFO(r->body);
  CHECK(r->status == 409);
  CHECK(body_of(r)["error"]["message"].get<std::string>().find("listen port " + std::to_string(listen + 8)) !=
        std::string::npos);
  second["listen_host"] = "0.0.0.0";
  CHECK(post(fx, second)->status == 409);
  CHECK(all_free(static_cast<std::uint16_t>(listen + 16), 8, false));  // the ports only the refused one had
  // The same ports on the other protocol are another forward.
  second["protocol"] = "udp";
  CHECK(post(fx, second)->status == 201);
}

TEST_CASE("a PATCH moving a range by half its width keeps the shared ports and their live connections",
          "[api][tcp]") {
  ranged_forward f("tcp", 16, 8);
  // A live connection on a port in both ranges (offset 12 before the move).
  auto live = connect_to(f.port(12));
  REQUIRE(live);
  REQUIRE(recv_exact(live.get(), 6) == f.target(12));
  REQUIRE(send_all(live.get(), "before"));
  REQUIRE(recv_exact(live.get(), 6) == "before");

  f.move(8, 16);
  // It survives and keeps relaying, to the target it had.
  REQUIRE(send_all(live.get(), "after!"));
  CHECK(recv_exact(live.get(), 6) == "after!");
  // A port only in the new range works, at its new offset; so does a shared port.
  CHECK(tcp_reaches(f.port(20)) == f.target(12));
  CHECK(tcp_reaches(f.port(12)) == f.target(4));
  // A port only in the old one is refused, and free.
  CHECK(tcp_reaches(f.port(2)) == "");
  CHECK(all_free(f.listen, 8, false));
  ::shutdown(live.get(), SHUT_WR);
  CHECK(recv_all(live.get()).empty());  // the orderly end passes through
}

TEST_CASE("a PATCH moving a udp range ends the sessions of the ports that leave and keeps the others",
          "[api][udp]") {
  ranged_forward f("udp", 16, 8);
  auto kept = udp_client(f.port(12));
  ::send(kept.get(), "?", 1, 0);
  REQUIRE(recv_datagram(kept.get()) == f.target(12));
  auto dropped = udp_client(f.port(2));
  ::send(dropped.get(), "?", 1, 0);
  REQUIRE(recv_datagram(dropped.get()) == f.target(2));

  f.move(8, 16);
  CHECK(f.get()["stats"]["connections_active"] == 1);  // the kept session
  // The kept session still goes to its target (offset 12), a new client of that port to offset 4.
  ::send(kept.get(), "?", 1, 0);
  CHECK(recv_datagram(kept.get()) == f.target(12));
  CHECK(udp_reaches(f.port(12)) == f.target(4));
  CHECK(udp_reaches(f.port(23)) == f.target(15));
  CHECK(all_free(f.listen, 8, true));
}

TEST_CASE("per_port counts each port's connections and bytes and only on request", "[api][tcp]") {
  ranged_forward f("tcp", 8);
  for (int i = 0; i < 3; ++i) CHECK(tcp_reaches(f.port(2)) == f.target(2));
  auto held = connect_to(f.port(5));
  REQUIRE(recv_exact(held.get(), 6) == f.target(5));
  REQUIRE(send_all(held.get(), "0123456789"));
  REQUIRE(recv_exact(held.get(), 10) == "0123456789");

  CHECK_FALSE(f.get().contains("per_port"));
  json ports;
  REQUIRE(eventually([&] {
    ports = f.get("?per_port=true")["per_port"];
    // A worker counts bytes just after it passed them on, and a close just after it happened.
    return ports.size() == 8 && ports[2]["connections_active"] == 0 && ports[2]["bytes_down"] == 18 &&
           ports[5]["bytes_down"] == 16 && ports[5]["bytes_up"] == 10;
  }));
  for (std::size_t i = 0; i < 8; ++i) {
    INFO(ports[i].dump());
    CHECK(ports[i]["port"] == f.port(static_cast<int>(i)));
    CHECK(ports[i]["connections_total"] == (i == 2 ? 3 : i == 5 ? 1 : 0));
  }
  CHECK(ports[5]["connections_active"] == 1);  // 16 bytes down: its port, then the echo

  for (const char* bad : {"?per_port=yes", "?per_port=1", "?per_port=", "?per_port=true&per_port=false"}) {
    INFO(bad);
    auto r = f.fx.client.Get((f.path + bad).c_str());
    CHECK(r->status == 400);
    CHECK(body_of(r)["error"]["field"] == "per_port");
  }
}

TEST_CASE("bad ranges are 400s naming listen_port_end and change nothing", "[api]") {
  api_fixture fx;
  const auto listen = free_ports(2);
  auto check_refused = [&](json body, const std::string& says) {
    INFO(body.dump());
    auto r = post(fx, body);
    INFO(r->body);
    CHECK(r->status == 400);
    CHECK(body_of(r)["error"]["code"] == "invalid_field");
    CHECK(body_of(r)["error"]["field"] == "listen_port_end");
    CHECK(body_of(r)["error"]["message"].get<std::string>().find(says) != std::string::npos);
  };
  auto body = range_body("tcp", listen, 2, 9);
  body["listen_port"] = 0;
  check_refused(body, "needs an explicit listen_port");
  body = range_body("tcp", listen, 2, 9);
  body["listen_port_end"] = listen;
  check_refused(body, "from listen_port + 1");
  body["listen_port_end"] = listen + 16384;
  check_refused(body, "to listen_port + 16383");
  body = range_body("udp", listen, 2, 65535);
  check_refused(body, "target 127.0.0.1:65535");
  body = range_body("tcp", listen, 2, 9);
  body.erase("target_host");
  body.erase("target_port");
  body["targets"] =
      json::array({json{{"host", "127.0.0.1"}, {"port", 9}}, json{{"host", "127.0.0.2"}, {"port", 65535}}});
  check_refused(body, "127.0.0.2:65535");
  CHECK(body_of(fx.client.Get("/api/v1/forwards")).empty());
  CHECK(all_free(listen, 2, false));

  // A health check's port is not offset: it checks that one port, so 65535 is fine.
  body = range_body("tcp", listen, 2, 9);
  body["health_check"] = json{{"port", 65535}};
  CHECK(post(fx, body)->status == 201);
  // A PATCH that would make it bad changes nothing.
  const auto id = body_of(fx.client.Get("/api/v1/forwards"))[0]["id"].get<std::int64_t>();
  auto r = patch(fx, id, json{{"target_port", 65535}});
  CHECK(r->status == 400);
  CHECK(body_of(r)["error"]["field"] == "listen_port_end");
  CHECK(body_of(fx.client.Get(("/api/v1/forwards/" + std::to_string(id)).c_str()))["target_port"] == 9);
}

TEST_CASE("a range whose targets reach its own ports or the API is refused", "[api]") {
  api_fixture fx;
  fx.engine.set_api_endpoints({"127.0.0.1"}, fx.port);  // as the daemon does once its API is bound
  const auto listen = free_ports(16);
  auto body = range_body("tcp", listen, 16, static_cast<std::uint16_t>(listen + 8));
  auto r = post(fx, body);
  INFO(r->body);
  CHECK(r->status == 400);
  CHECK(body_of(r)["error"]["code"] == "forward_loop");
  body = range_body("tcp", listen, 16, static_cast<std::uint16_t>(fx.port - 5));
  r = post(fx, body);
  INFO(r->body);
  CHECK(r->status == 400);
  CHECK(body_of(r)["error"]["code"] == "target_is_api");
  // A range beside its targets is fine.
  body = range_body("tcp", listen, 8, static_cast<std::uint16_t>(listen + 8));
  CHECK(post(fx, body)->status == 201);
  // A cycle through two ranges that share only some ports: this one's ports +12..+15 go to +4..+7,
  // the first one's, which go to +12..+15 again.
  body = range_body("tcp", static_cast<std::uint16_t>(listen + 12), 4, static_cast<std::uint16_t>(listen + 2));
  r = post(fx, body);
  INFO(r->body);
  CHECK(r->status == 400);
  CHECK(body_of(r)["error"]["code"] == "forward_loop");
  CHECK(body_of(r)["error"]["message"].get<std::string>().find("through forward") != std::string::npos);
  // Shifted so that its targets miss the first range's ports that lead back: no cycle.
  body = range_body("tcp", static_cast<std::uint16_t>(listen + 12), 4, static_cast<std::uint16_t>(listen + 8));
  CHECK(post(fx, body)->status == 201);
}

TEST_CASE("a range that would not fit the descriptor limit is a 409 saying so, with nothing bound", "[api][tcp]") {
  daemon_state d;
  const auto listen = free_ports(64);
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  const auto open = open_fds();
  // Room for 100 more descriptors: 64 ports on 2 workers need 128.
  const rlimit low{static_cast<rlim_t>(open + 100), saved.rlim_max};
  REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
  auto r = d.ctl->create(range_body("tcp", listen, 64, 9));
  setrlimit(RLIMIT_NOFILE, &saved);
  INFO(r.body.dump());
  CHECK(r.status == 409);
  CHECK(r.body["error"]["code"] == "descriptor_limit");
  CHECK(r.body["error"]["field"] == "listen_port_end");
  const auto message = r.body["error"]["message"].get<std::string>();
  CHECK(message.find("RLIMIT_NOFILE") != std::string::npos);
  CHECK(message.find("need 128 descriptors") != std::string::npos);
  CHECK(d.ctl->list().body.empty());
  CHECK(all_free(listen, 64, false));
  // With the limit back, it fits.
  CHECK(d.ctl->create(range_body("tcp", listen, 64, 9)).status == 201);
}
