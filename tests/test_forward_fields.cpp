// forward_fields: every writable field, walked from the one declaration (relay/forward_fields), so a
// new field is covered here without editing this file: POST, GET, restart, GET, PATCH, its refused
// values and its wrong protocol, through the real controller, store file and engine. A field whose
// change reaches a live forward through configure() must also say here how a client sees its value
// at work (`observers`), or which test shows it: the walk fails for a field that does neither.
#include "api/controller.hpp"
#include "api_fixture.hpp"
#include "daemon_state.hpp"
#include "hosts.hpp"
#include "relay/forward_fields.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>

using namespace test;
using api::json;

namespace {

// A target that says which of its addresses a client reached: TCP and UDP on 127.0.0.1 and on ::1,
// all four on one port, answering each connection or datagram with that address ("127.0.0.1:P" or
// "[::1]:P"), or with the address the client came from ("127.0.0.2") when it tells the `peer`. A
// connection is answered and closed; a datagram gets one back.
class address_teller {
 public:
  explicit address_teller(bool peer = false) : peer_(peer) {
    for (int attempt = 0; attempt < 100 && !sockets_; ++attempt) bind_all();
    if (!sockets_) throw std::runtime_error("address_teller: no port free on both loopbacks");
  }
  std::uint16_t port() const { return port_; }

 private:
  void bind_all() {
    std::vector<answering_sockets::socket_at> all;
    std::uint16_t port = 0;
    for (const char* host : {"127.0.0.1", "::1"}) {
      for (const bool udp : {false, true}) {
        auto s = bound_on(host, port, udp);
        if (!s) return;  // the kernel's port is taken on the other address: try another
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &len);
        port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
        all.push_back({std::move(s), udp, relay::format_endpoint(host, port)});
      }
    }
    port_ = port;
    sockets_ = std::make_unique<answering_sockets>(std::move(all), false, peer_);
  }

  const bool peer_;
  std::uint16_t port_ = 0;
  std::unique_ptr<answering_sockets> sockets_;
};

json base_body(relay::protocol p, std::uint16_t target_port) {
  return json{{"protocol", relay::to_string(p)}, {"listen_host", "127.0.0.1"}, {"listen_port", free_port()},
              {"target_host", "127.0.0.1"}, {"target_port", target_port}};
}

json target(const std::string& host, std::uint16_t port, int weight = 1, bool backup = false) {
  return json{{"host", host}, {"port", port}, {"weight", weight}, {"backup", backup}};
}

// Two targets for the walk: target_port moves the forward from one to the other. One that tells
// the client's address (source_address). And echoes, TCP and UDP, for a field seen in the bytes
// that flow back (bandwidth_limit).
struct targets {
  address_teller first, second;
  address_teller peer{true};
  target_server echo{target_server::echo};
  udp_echo_server udp_echo;
};

// The body the walk of `field` starts from: a pool (the shorthand and `targets` do not go together)
// of the first target for `targets`, of both for `balance`, so that policies differ; the shorthand
// for an echo for `bandwidth_limit`, `proxy_protocol` and `accept_proxy_protocol`, for the peer
// teller for `source_address`, and for the first target otherwise.
json base_body(relay::protocol p, const targets& t, const std::string& field) {
  if (field == "source_address") return base_body(p, t.peer.port());
  if (field == "bandwidth_limit" || field == "proxy_protocol" || field == "accept_proxy_protocol") {
    return base_body(p, p == relay::protocol::tcp ? t.echo.port() : t.udp_echo.port());
  }
  auto body = base_body(p, t.first.port());
  if (field == "listen_port_end") body["listen_port"] = free_ports(4);  // room for the walk's ranges
  if (field != "targets" && field != "balance") return body;
  body.erase("target_host");
  body.erase("target_port");
  body["targets"] = json::array({target("127.0.0.1", t.first.port())});
  if (field == "balance") body["targets"].push_back(target("127.0.0.1", t.second.port()));
  return body;
}

// The values a field takes in the walk: its examples; two free ports for the listen port, the two
// targets' ports for the target port, pools and health checks of the live targets; ranges from
// the listen port of `body` (base_body's); "v2" alone for the PROXY protocol of a UDP forward.
std::vector<json> values_of(const relay::forward_field& f, const targets& t, const json& body) {
  if (f.name == "proxy_protocol" && body["protocol"] == "udp") return {"v2"};
  if (f.name == "listen_port") return {free_port(), free_port()};
  if (f.name == "listen_port_end") {
    const auto port = body["listen_port"].get<int>();
    return {port + 3, port + 1};
  }
  if (f.name == "target_port") return {t.second.port(), t.first.port()};
  if (f.name == "targets") {
    return {json::array({target("127.0.0.1", t.first.port(), 3), target("localhost", t.second.port(), 1, true)}),
            json::array({target("::1", t.second.port(), 2), target("127.0.0.1", t.first.port(), 1, true)})};
  }
  if (f.name == "health_check") {
    std::vector<json> checks{f.examples.begin(), f.examples.end()};
    checks.at(0)["port"] = t.first.port();
    checks.at(1)["port"] = t.second.port();
    return checks;
  }
  return {f.examples.begin(), f.examples.end()};
}

// What a client reaches through `forward` now: the target's answer to a new connection or to a
// datagram from a new client port (a new UDP session), or "" when nothing answers.
std::string reached(const json& forward) {
  const auto host = forward["listen_host"].get<std::string>();
  const auto port = forward["listen_port"].get<std::uint16_t>();
  if (forward["protocol"] == "tcp") return recv_all(connect_to(port, host).get());
  auto c = udp_client(port, host);
  ::send(c.get(), "?", 1, 0);
  return recv_datagram(c.get());
}

json stats_of(daemon_state& d, const json& forward) { return d.ctl->get(forward["id"].get<std::int64_t>()).body["stats"]; }

// Admission (allow, deny, max_connections, max_connections_per_source): a client from `source` that
// holds its connection or session once the target answered (a TCP target's close leaves it
// half-closed and live while the client keeps its end); empty when it got no answer.
fd held_from(const json& forward, const std::string& source = "127.0.0.1") {
  const auto host = forward["listen_host"].get<std::string>();
  const auto port = forward["listen_port"].get<std::uint16_t>();
  if (forward["protocol"] == "tcp") {
    auto c = connect_from(port, source, host);
    return c && !recv_all(c.get()).empty() ? std::move(c) : fd();
  }
  socklen_t len, source_len;
  auto to = make_addr(host, port, len);
  auto from = make_addr(source, 0, source_len);
  fd c(::socket(to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (::bind(c.get(), reinterpret_cast<sockaddr*>(&from), source_len) != 0 ||
      ::connect(c.get(), reinterpret_cast<sockaddr*>(&to), len) != 0) {
    return fd();
  }
  ::send(c.get(), "?", 1, 0);
  return recv_datagram(c.get()).empty() ? fd() : std::move(c);
}

// One more client from 127.0.0.1 is refused (TCP: reset before any answer; UDP: no session) and
// counted in `counter` ("refused_acl" or "refused_limit").
void refused(daemon_state& d, const json& forward, const std::string& counter) {
  const auto before = stats_of(d, forward)[counter].get<std::uint64_t>();
  const auto host = forward["listen_host"].get<std::string>();
  const auto port = forward["listen_port"].get<std::uint16_t>();
  if (forward["protocol"] == "tcp") {
    CHECK(recv_all(connect_to(port, host).get()).empty());
  } else {
    auto c = udp_client(port, host);
    ::send(c.get(), "?", 1, 0);  // no answer is waited for: none comes
  }
  CHECK(eventually([&] { return stats_of(d, forward)[counter].get<std::uint64_t>() > before; }));
}

// A limit of `n` at work: n clients from 127.0.0.1 hold their connections or sessions, and the next
// one is refused.
void limit_holds(daemon_state& d, const json& forward, std::uint64_t n) {
  std::vector<fd> held;
  for (std::uint64_t i = 0; i < n; ++i) {
    held.push_back(held_from(forward));
    REQUIRE(held.back());
  }
  refused(d, forward, "refused_limit");
  CHECK(stats_of(d, forward)["connections_active"] == n);
}

bool lists(const json& list, const char* prefix) { return std::find(list.begin(), list.end(), prefix) != list.end(); }

// The bandwidth_limit walk's observer, on a forward to an echo, through the limited direction and
// the other one (so a PATCH that moves the limit from up to down shows whether it reached the live
// forward). TCP: of twice the burst, echoed, the limited direction still has a burst's worth to move
// at the limit's rate (a second, in the examples) when the other is done; at least half of that
// time passes. UDP: of four 30,000-byte datagrams sent at once, a burst holds two at most: the
// others are dropped and counted in the limited direction, and none in the other.
void observe_bandwidth(daemon_state& d, const json& f) {
  using steady = std::chrono::steady_clock;
  const auto& limit = f["bandwidth_limit"];
  REQUIRE(limit.is_object());
  const bool up = !limit["up_bytes_per_s"].is_null();
  REQUIRE(limit[up ? "down_bytes_per_s" : "up_bytes_per_s"].is_null());  // the examples limit one way
  const auto rate = limit[up ? "up_bytes_per_s" : "down_bytes_per_s"].get<std::uint64_t>();
  relay::bandwidth_limit_spec given;
  if (!limit["burst_bytes"].is_null()) given.burst_bytes = limit["burst_bytes"].get<std::uint64_t>();
  const auto burst = relay::burst_bytes_for(given, rate);
  REQUIRE(burst <= 65536);  // a quick walk, and a burst that holds two datagrams at most
  const auto port = f["listen_port"].get<std::uint16_t>();
  const auto before = stats_of(d, f);
  const auto delta = [&](const char* counter) {
    return stats_of(d, f)[counter].get<std::uint64_t>() - before[counter].get<std::uint64_t>();
  };
  if (f["protocol"] == "udp") {
    auto c = udp_client(port);
    const std::string datagram(30000, 'd');
    for (int i = 0; i < 4; ++i) REQUIRE(::send(c.get(), datagram.data(), datagram.size(), 0) == 30000);
    CHECK(recv_datagram(c.get()) == datagram);  // the first fits
    // Each one is dropped on its way or comes back.
    REQUIRE(eventually([&] { return delta("datagrams_down") + delta("datagrams_dropped") == 4; }));
    if (up) {
      CHECK(delta("datagrams_up") < 4);
    } else {
      CHECK(delta("datagrams_up") == 4);
      CHECK(delta("datagrams_down") < 4);
    }
    return;
  }
  const auto bytes = 2 * burst;
  const auto start = steady::now();
  auto c = connect_to(port);
  REQUIRE(c);
  std::thread sender([&] {
    send_all(c.get(), std::string(bytes, 'b'));
    ::shutdown(c.get(), SHUT_WR);
  });
  const bool all_sent = eventually([&] { return delta("bytes_up") == bytes; });
  const auto sent = steady::now();
  const auto echoed = recv_all(c.get()).size();
  const auto back = steady::now();
  sender.join();
  REQUIRE(all_sent);
  CHECK(echoed == bytes);
  const std::chrono::duration<double> limited = up ? sent - start : back - sent;
  CHECK(limited.count() >= static_cast<double>(bytes - burst) / static_cast<double>(rate) / 2);
}

// How a client sees each reconfigure field's value at work in the live forward, given the forward as
// GET shows it after a POST or a PATCH.
using observer = std::function<void(daemon_state&, const json& forward)>;
const std::map<std::string, observer>& observers() {
  static const std::map<std::string, observer> all{
      // New connections and sessions reach the target named by target_host and target_port: the
      // address the target says it was reached on. "localhost" is ::1 first (tests/hosts.hpp).
      {"target_host", [](daemon_state&, const json& f) {
         const auto host = f["target_host"].get<std::string>();
         CHECK(reached(f) == relay::format_endpoint(host == "localhost" ? "::1" : host, f["target_port"]));
       }},
      {"target_port", [](daemon_state&, const json& f) {
         CHECK(reached(f) == relay::format_endpoint(f["target_host"].get<std::string>(), f["target_port"]));
       }},
      // New connections and sessions reach the primary target: a backup serves only while no
      // primary is up.
      {"targets", [](daemon_state&, const json& f) {
         std::set<std::string> primaries;
         for (const auto& t : f["targets"]) {
           const auto host = t["host"].get<std::string>();
           if (!t["backup"].get<bool>()) primaries.insert(relay::format_endpoint(host == "localhost" ? "::1" : host, t["port"]));
         }
         CHECK(primaries.count(reached(f)) == 1);
       }},
      // Four new connections or sessions over the walk's two targets, from one client address:
      // "first" reaches only the first, source_hash only one, the others both.
      {"balance", [](daemon_state&, const json& f) {
         std::set<std::string> seen;
         for (int i = 0; i < 4; ++i) seen.insert(reached(f));
         const auto policy = f["balance"].get<std::string>();
         INFO("balance " << policy << " reached " << seen.size() << " targets");
         if (policy == "first") {
           CHECK(seen == std::set<std::string>{relay::format_endpoint("127.0.0.1", f["targets"][0]["port"])});
         } else {
           CHECK(seen.size() == (policy == "source_hash" ? 1u : 2u));
         }
       }},
      // New connections and sessions leave from the source address: the target sees it as their peer.
      {"source_address", [](daemon_state&, const json& f) {
         CHECK(reached(f) == (f["source_address"].is_null() ? "127.0.0.1" : f["source_address"].get<std::string>()));
       }},
      // The active check finds the live target up: its health leaves "unchecked" within a check or two.
      {"health_check", [](daemon_state& d, const json& f) {
         CHECK(eventually([&] {
           const auto rows = stats_of(d, f)["targets"];
           return !rows.empty() && std::all_of(rows.begin(), rows.end(), [](const json& r) { return r["health"] == "up"; });
         }));
       }},
      // At the cap, one more client's session evicts the least recent: the live count stays at the cap.
      {"udp_max_sessions", [](daemon_state& d, const json& f) {
         const auto cap = f["udp_max_sessions"].get<std::uint64_t>();
         const auto evicted = stats_of(d, f)["sessions_evicted"].get<std::uint64_t>();
         for (std::uint64_t i = 0; i <= cap; ++i) REQUIRE(!reached(f).empty());
         CHECK(stats_of(d, f)["connections_active"] == cap);
         CHECK(stats_of(d, f)["sessions_evicted"].get<std::uint64_t>() > evicted);
       }},
      // A short timeout ends an idle session well within the wait; a long one keeps it meanwhile
      // (the walk goes from the long example to the short one, so a PATCH that did not reach the
      // live forward leaves its sessions up and fails here).
      {"bandwidth_limit", observe_bandwidth},
      // Through an echo: the target's bytes come back, so a header sent to it is seen by the client.
      {"proxy_protocol", [](daemon_state&, const json& f) {
         const auto port = f["listen_port"].get<std::uint16_t>();
         const auto version = f["proxy_protocol"];
         if (f["protocol"] == "udp") {
           auto c = udp_client(port);
           ::send(c.get(), "?", 1, 0);
           const auto back = recv_datagram(c.get());
           CHECK(back.size() == (version.is_null() ? 1u : 29u));  // a v2 header of two IPv4 addresses: 28 bytes
           CHECK(back.substr(back.size() - 1) == "?");
           return;
         }
         const auto back = echo_once(port, "?");
         if (version.is_null()) {
           CHECK(back == "?");
         } else if (version == "v1") {
           CHECK(back.rfind("PROXY TCP4 127.0.0.1 127.0.0.1 ", 0) == 0);
         } else {
           CHECK(back.rfind(std::string("\r\n\r\n\0\r\nQUIT\n\x21\x11", 14), 0) == 0);
         }
         CHECK(back.substr(back.size() - 1) == "?");
       }},
      // On: a client without a header is refused (counted in proxy_errors), one with it gets its
      // bytes after the header echoed. Off: the header is the client's data like any other.
      {"accept_proxy_protocol", [](daemon_state& d, const json& f) {
         const auto port = f["listen_port"].get<std::uint16_t>();
         const std::string header = "PROXY TCP4 192.0.2.1 127.0.0.1 1000 2000\r\n";
         if (f["accept_proxy_protocol"].get<bool>()) {
           const auto errors = stats_of(d, f)["proxy_errors"].get<std::uint64_t>();
           CHECK(echo_once(port, header + "?") == "?");
           CHECK(echo_once(port, "?").empty());
           CHECK(stats_of(d, f)["proxy_errors"].get<std::uint64_t>() == errors + 1);
         } else {
           CHECK(echo_once(port, header + "?") == header + "?");
         }
       }},
      {"udp_idle_timeout_s", [](daemon_state& d, const json& f) {
         REQUIRE(!reached(f).empty());
         const bool expires = f["udp_idle_timeout_s"].get<int>() <= 2;
         CHECK(eventually([&] { return stats_of(d, f)["connections_active"] == 0; }, expires ? 30s : 0s) == expires);
       }},
      // Admission: the walk's examples admit 127.0.0.1 first (allow 127.0.0.0/8; deny of others)
      // and then refuse it (allow 192.0.2.0/24; deny 127.0.0.0/8), so the PATCH is seen refusing it.
      {"allow", [](daemon_state& d, const json& f) {
         if (f["allow"].empty() || lists(f["allow"], "127.0.0.0/8")) {
           CHECK(held_from(f));
         } else {
           refused(d, f, "refused_acl");
         }
       }},
      {"deny", [](daemon_state& d, const json& f) {
         if (lists(f["deny"], "127.0.0.0/8")) {
           refused(d, f, "refused_acl");
         } else {
           CHECK(held_from(f));
         }
       }},
      {"max_connections", [](daemon_state& d, const json& f) {
         limit_holds(d, f, f["max_connections"].get<std::uint64_t>());
       }},
      // Per client address: 127.0.0.1 is at its limit, and 127.0.0.2 still gets in.
      {"max_connections_per_source", [](daemon_state& d, const json& f) {
         limit_holds(d, f, f["max_connections_per_source"].get<std::uint64_t>());
         CHECK(held_from(f, "127.0.0.2"));
       }},
  };
  return all;
}

// Whether something listens on the forward's address now: binding it ourselves fails.
bool address_taken(const json& forward) {
  const bool udp = forward["protocol"] == "udp";
  socklen_t len;
  auto ss = make_addr(forward["listen_host"].get<std::string>(), forward["listen_port"].get<std::uint16_t>(), len);
  fd s(::socket(ss.ss_family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0));
  return ::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno == EADDRINUSE;
}

}  // namespace

TEST_CASE("every writable field: POST, GET, restart, PATCH, refused values and wrong protocol are 400s naming it",
          "[api][store]") {
  REQUIRE(test_hosts::installed);  // "localhost" resolves the same on every machine
  const relay::forward_spec defaults;
  const targets servers;
  for (const auto& field : relay::forward_fields()) {
    // A change that reaches the live forward through configure() is seen by a client here.
    const auto observe = observers().find(field.name);
    if (field.effect == relay::change_effect::reconfigure) {
      INFO("field " << field.name << " changes live forwards: give it an observer in tests/test_forward_fields.cpp");
      REQUIRE(observe != observers().end());
    }
    for (const auto protocol : {relay::protocol::tcp, relay::protocol::udp}) {
      if (!field.applies_to(protocol)) continue;
      if (field.name == "protocol" && protocol == relay::protocol::udp) continue;  // its example is udp
      INFO("field " << field.name << " on a " << relay::to_string(protocol) << " forward");
      auto body = base_body(protocol, servers, field.name);
      const auto values = values_of(field, servers, body);
      REQUIRE(!values.empty());
      const auto first = values.front();
      REQUIRE(first != field.write(defaults));
      daemon_state d;

      body[field.name] = first;
      auto created = d.ctl->create(body);
      INFO(created.body.dump());
      REQUIRE(created.status == 201);
      const auto id = created.body["id"].get<std::int64_t>();
      CHECK(created.body[field.name] == first);
      CHECK(d.ctl->get(id).body[field.name] == first);
      if (field.effect == relay::change_effect::rebind || field.effect == relay::change_effect::enable) {
        CHECK(address_taken(created.body) == created.body["enabled"].get<bool>());
      }
      if (observe != observers().end()) observe->second(d, created.body);

      d.restart();
      auto restored = d.ctl->get(id);
      CHECK(restored.body[field.name] == first);
      CHECK(restored.body["state"] == (restored.body["enabled"].get<bool>() ? "active" : "disabled"));

      // PATCH to the next example, or back to the default.
      const auto second = values.size() > 1 ? values[1] : json(field.write(defaults));
      auto patched = d.ctl->patch(id, json{{field.name, second}});
      INFO(patched.body.dump());
      REQUIRE(patched.status == 200);
      CHECK(patched.body[field.name] == second);
      CHECK(d.ctl->get(id).body[field.name] == second);
      if (field.effect == relay::change_effect::rebind || field.effect == relay::change_effect::enable) {
        // The live forward moved: its new address is held, the old one given back.
        CHECK(address_taken(patched.body) == patched.body["enabled"].get<bool>());
        if (patched.body["listen_port"] != restored.body["listen_port"] ||
            patched.body["listen_host"] != restored.body["listen_host"] ||
            patched.body["protocol"] != restored.body["protocol"]) {
          CHECK_FALSE(address_taken(restored.body));
        }
      }
      if (observe != observers().end()) observe->second(d, patched.body);  // the live forward uses it
      d.restart();
      CHECK(d.ctl->get(id).body[field.name] == second);

      // Refused values: a 400 naming the field, in POST and PATCH, and nothing changes.
      for (const auto& bad : field.refused) {
        INFO("refused value " << bad.dump());
        auto post = base_body(protocol, servers, field.name);
        post[field.name] = bad;
        auto r = d.ctl->create(post);
        CHECK(r.status == 400);
        CHECK(r.body["error"]["field"] == field.name);
        auto p = d.ctl->patch(id, json{{field.name, bad}});
        CHECK(p.status == 400);
        CHECK(p.body["error"]["field"] == field.name);
        CHECK(d.ctl->get(id).body[field.name] == second);
      }
      CHECK(d.ctl->list().body.size() == 1);
    }
  }
}

TEST_CASE("a value for a field that does not apply to the forward's protocol is a 400 naming it - null is fine",
          "[api]") {
  for (const auto& field : relay::forward_fields()) {
    for (const auto protocol : {relay::protocol::tcp, relay::protocol::udp}) {
      if (field.applies_to(protocol)) continue;
      INFO("field " << field.name << " on a " << relay::to_string(protocol) << " forward");
      daemon_state d;
      auto body = base_body(protocol, 9);
      body[field.name] = field.examples.front();
      auto r = d.ctl->create(body);
      CHECK(r.status == 400);
      CHECK(r.body["error"]["code"] == "invalid_field");
      CHECK(r.body["error"]["field"] == field.name);
      CHECK(r.body["error"]["message"].get<std::string>().find("applies only to") != std::string::npos);
      CHECK(d.ctl->list().body.empty());
      // What GET shows for it, null, may be sent back.
      body[field.name] = nullptr;
      auto created = d.ctl->create(body);
      REQUIRE(created.status == 201);
      CHECK(created.body[field.name].is_null());
      const auto id = created.body["id"].get<std::int64_t>();
      auto p = d.ctl->patch(id, json{{field.name, field.examples.front()}});
      CHECK(p.status == 400);
      CHECK(p.body["error"]["field"] == field.name);
      CHECK(d.ctl->patch(id, json{{field.name, nullptr}}).status == 200);
      // Moving the forward to a protocol the field applies to takes the field with it.
      const auto other = protocol == relay::protocol::tcp ? "udp" : "tcp";
      auto moved = d.ctl->patch(id, json{{"protocol", other}, {field.name, field.examples.front()}});
      INFO(moved.body.dump());
      CHECK(moved.status == 200);
      CHECK(moved.body[field.name] == field.examples.front());
    }
  }
}

TEST_CASE("proxy_protocol v1 on a udp forward is a 400 naming proxy_protocol - whichever field comes first", "[api]") {
  daemon_state d;
  json body{{"proxy_protocol", "v1"}};  // before protocol: the rule is checked once every field is read
  body.update(base_body(relay::protocol::udp, 9));
  auto r = d.ctl->create(body);
  CHECK(r.status == 400);
  CHECK(r.body["error"]["code"] == "invalid_field");
  CHECK(r.body["error"]["field"] == "proxy_protocol");
  CHECK(d.ctl->list().body.empty());
  body["proxy_protocol"] = "v2";
  auto udp = d.ctl->create(body);
  REQUIRE(udp.status == 201);
  CHECK(d.ctl->patch(udp.body["id"].get<std::int64_t>(), json{{"proxy_protocol", "v1"}}).body["error"]["field"] ==
        "proxy_protocol");
  // A TCP forward with v1 made UDP: refused, and it stays TCP with v1.
  auto tcp_body = base_body(relay::protocol::tcp, 9);
  tcp_body["proxy_protocol"] = "v1";
  auto tcp = d.ctl->create(tcp_body);
  REQUIRE(tcp.status == 201);
  const auto id = tcp.body["id"].get<std::int64_t>();
  auto moved = d.ctl->patch(id, json{{"protocol", "udp"}});
  CHECK(moved.status == 400);
  CHECK(moved.body["error"]["field"] == "proxy_protocol");
  CHECK(d.ctl->get(id).body["protocol"] == "tcp");
  CHECK(d.ctl->get(id).body["proxy_protocol"] == "v1");
  CHECK(d.ctl->get(udp.body["id"].get<std::int64_t>()).body["proxy_protocol"] == "v2");
}
