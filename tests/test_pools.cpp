// Pools in the data path: each policy's picks, failover inside a connection, passive health, UDP
// sessions leaving a target that went down, and PATCHes of a pool with live traffic, over loopback.
#include "engine_helpers.hpp"
#include "hosts.hpp"
#include "relay/engine.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <set>

using namespace test;
using relay::balance_policy;

namespace {

// A TCP target that says who it is: each connection gets its one-letter name, then an echo of what
// it sends until EOF, so a connection holds its target for as long as the client holds it.
class named_backend {
 public:
  explicit named_backend(const std::string& name, std::uint16_t port = 0)
      : server_([name](int s) {
          send_all(s, name);
          target_server::echo(s);
        }, "127.0.0.1", port) {}
  std::uint16_t port() const { return server_.port(); }

 private:
  target_server server_;
};

// The UDP counterpart: every datagram is answered with the name.
class udp_teller {
 public:
  explicit udp_teller(std::string name) : name_(std::move(name)) {
    socklen_t len;
    auto ss = make_addr("127.0.0.1", 0, len);
    s_ = fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (::bind(s_.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) throw std::runtime_error("udp bind");
    ::getsockname(s_.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~udp_teller() {
    stop_ = true;
    thread_.join();
  }
  std::uint16_t port() const { return port_; }

 private:
  void run() {
    char buf[2048];
    while (!stop_) {
      pollfd p{s_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      sockaddr_storage from{};
      socklen_t len = sizeof from;
      if (::recvfrom(s_.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len) >= 0) {
        ::sendto(s_.get(), name_.data(), name_.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
      }
    }
  }

  std::string name_;
  fd s_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A TCP port held bound with nothing listening: a connect to it is refused at once.
struct refusing_port {
  fd s{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  std::uint16_t port = 0;
  refusing_port() {
    socklen_t len;
    auto ss = make_addr("127.0.0.1", 0, len);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) throw std::runtime_error("bind");
    ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
};

relay::target_spec at(std::uint16_t port, std::uint32_t weight = 1, bool backup = false) {
  return {"127.0.0.1", port, weight, backup};
}

relay::forward_spec pool_spec(std::vector<relay::target_spec> targets, balance_policy balance,
                              relay::protocol p = relay::protocol::tcp) {
  relay::forward_spec s;
  s.id = 1;
  s.name = "pool";
  s.protocol = p;
  s.listen_host = "127.0.0.1";
  s.targets = std::move(targets);
  s.balance = balance;
  return s;
}

// A connection through the forward, open, with the name of the backend that answered ("" if none).
struct via {
  fd c;
  std::string name;
};

via connect_via(std::uint16_t port, const std::string& source = {}) {
  via v{source.empty() ? connect_to(port) : connect_from(port, source), {}};
  if (v.c) v.name = recv_exact(v.c.get(), 1);
  return v;
}

// Which backend answered a connection (closed again at once).
std::string who(std::uint16_t port, const std::string& source = {}) { return connect_via(port, source).name; }

// Connections in a row, until one reaches `name` (paced: each is a real connection); the last answer.
std::string until_served_by(std::uint16_t port, const std::string& name) {
  std::string last;
  eventually([&] {
    last = who(port);
    if (last != name) std::this_thread::sleep_for(50ms);
    return last == name;
  });
  return last;
}

bool echoes(const via& v, const std::string& text) {
  return send_all(v.c.get(), text) && recv_exact(v.c.get(), text.size()) == text;
}

}  // namespace

TEST_CASE("weighted round robin sends a run of 8 connections as A A B A A A B A", "[tcp]") {
  named_backend a("A"), b("B");
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec({at(a.port(), 3), at(b.port())}, balance_policy::round_robin));
  std::string run;
  for (int i = 0; i < 8; ++i) run += who(s.listen_port);
  CHECK(run == "AABAAABA");
  CHECK(eventually([&] { return engine.status(1).targets.at(0).connections_active == 0; }));
  const auto t = engine.status(1).targets;
  REQUIRE(t.size() == 2);
  CHECK(t[0].connections_total == 6);
  CHECK(t[1].connections_total == 2);
  CHECK(t[0].health == relay::target_health::up);  // a connection succeeded
}

TEST_CASE("least_conn sends new connections to the target holding fewer", "[tcp]") {
  named_backend a("A"), b("B");
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec({at(a.port()), at(b.port())}, balance_policy::least_conn));
  std::vector<via> held;
  for (int i = 0; i < 4; ++i) held.push_back(connect_via(s.listen_port));
  CHECK(std::count_if(held.begin(), held.end(), [](const via& v) { return v.name == "A"; }) == 2);
  CHECK(std::count_if(held.begin(), held.end(), [](const via& v) { return v.name == "B"; }) == 2);
  std::erase_if(held, [](const via& v) { return v.name == "A"; });
  REQUIRE(eventually([&] { return engine.status(1).targets.at(0).connections_active == 0; }));
  CHECK(engine.status(1).targets.at(1).connections_active == 2);
  // A holds none and B two: both new ones go to A, where round robin would alternate.
  held.push_back(connect_via(s.listen_port));
  held.push_back(connect_via(s.listen_port));
  CHECK(held[2].name == "A");
  CHECK(held[3].name == "A");
}

TEST_CASE("source_hash keeps each client address on its target and moves only the group of one that goes down", "[tcp]") {
  std::vector<std::unique_ptr<named_backend>> backends;
  std::vector<relay::target_spec> targets;
  for (const char* name : {"A", "B", "C"}) {
    backends.push_back(std::make_unique<named_backend>(name));
    targets.push_back(at(backends.back()->port()));
  }
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec(targets, balance_policy::source_hash));
  std::map<std::string, std::string> home;  // client address -> its backend
  std::set<std::string> used;
  for (int k = 2; k <= 9; ++k) {
    const auto source = "127.0.0." + std::to_string(k);
    home[source] = who(s.listen_port, source);
    used.insert(home[source]);
    for (int again = 0; again < 2; ++again) CHECK(who(s.listen_port, source) == home[source]);
  }
  REQUIRE(used.count("") == 0);
  REQUIRE(used.size() >= 2);  // eight addresses over three targets: the hash spreads them
  const auto gone = home["127.0.0.2"];
  backends[static_cast<std::size_t>(gone[0] - 'A')].reset();  // its port now refuses
  for (const auto& [source, was] : home) {
    INFO(source << " was on " << was);
    const auto now = who(s.listen_port, source);
    if (was == gone) {
      CHECK(now != gone);
      CHECK_FALSE(now.empty());
    } else {
      CHECK(now == was);
    }
  }
}

TEST_CASE("first sends every connection to the first target while it serves and then to the next", "[tcp]") {
  auto a = std::make_unique<named_backend>("A");
  named_backend b("B");
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec({at(a->port()), at(b.port())}, balance_policy::first));
  for (int i = 0; i < 4; ++i) CHECK(who(s.listen_port) == "A");
  a.reset();
  for (int i = 0; i < 2; ++i) CHECK(who(s.listen_port) == "B");
  CHECK(engine.status(1).targets.at(1).connections_total == 2);
}

TEST_CASE("a backup serves only while every primary is down and is left when one comes back", "[tcp]") {
  auto a = std::make_unique<named_backend>("A");
  const auto a_port = a->port();
  named_backend b("B");
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec({at(a_port), at(b.port(), 1, true)}, balance_policy::round_robin));
  for (int i = 0; i < 4; ++i) CHECK(who(s.listen_port) == "A");
  CHECK(engine.status(1).targets.at(1).connections_total == 0);
  a.reset();
  for (int i = 0; i < 5; ++i) CHECK(who(s.listen_port) == "B");  // the first three fail over from A
  auto t = engine.status(1).targets;
  CHECK(t.at(0).health == relay::target_health::down);
  CHECK(t.at(0).connect_errors == 3);  // once down, A is not tried while the backup serves
  // A comes back; its passive trial, due relay::passive_down_time after it went down, finds it.
  a = std::make_unique<named_backend>("A", a_port);
  CHECK(until_served_by(s.listen_port, "A") == "A");
  CHECK(engine.status(1).targets.at(0).health == relay::target_health::up);
  for (int i = 0; i < 3; ++i) CHECK(who(s.listen_port) == "A");
}

TEST_CASE("a connection whose target refuses is served by the next and the refusal is counted on that target", "[tcp]") {
  refusing_port r;
  named_backend b("B");
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec({at(r.port), at(b.port())}, balance_policy::round_robin));
  for (int i = 0; i < 4; ++i) CHECK(who(s.listen_port) == "B");
  const auto st = engine.status(1);
  CHECK(st.targets.at(0).connect_errors >= 1);
  CHECK(st.targets.at(0).connections_total == 0);
  CHECK_FALSE(st.targets.at(0).last_error.empty());
  CHECK(st.targets.at(1).connect_errors == 0);
  CHECK(st.targets.at(1).connections_total == 4);
  CHECK(st.stats.connect_errors == st.targets.at(0).connect_errors);
  CHECK(st.stats.connections_total == 4);
}

TEST_CASE("three failed connections mark a target down and it is passed over from then on", "[tcp]") {
  refusing_port r;
  named_backend b("B");
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec({at(r.port), at(b.port())}, balance_policy::first));
  for (int i = 0; i < 3; ++i) CHECK(who(s.listen_port) == "B");
  auto t = engine.status(1).targets;
  CHECK(t.at(0).health == relay::target_health::down);
  CHECK(t.at(0).connect_errors == 3);
  CHECK(t.at(1).health == relay::target_health::up);
  for (int i = 0; i < 3; ++i) CHECK(who(s.listen_port) == "B");
  CHECK(engine.status(1).targets.at(0).connect_errors == 3);  // its trial is 10 s away
}

TEST_CASE("when every target refuses each is tried once and the client is reset", "[tcp]") {
  refusing_port r1, r2, r3;
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec({at(r1.port), at(r2.port), at(r3.port)}, balance_policy::round_robin));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  const auto end = read_to_end(c.get());
  CHECK(end.bytes.empty());
  CHECK(end.error == ECONNRESET);
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  const auto st = engine.status(1);
  CHECK(st.stats.connect_errors == 3);
  for (const auto& t : st.targets) CHECK(t.connect_errors == 1);
}

TEST_CASE("a host-name target that leads back into the daemon is passed over for the next target", "[tcp]") {
  REQUIRE(test_hosts::installed);
  named_backend b("B");
  relay::engine engine(fast_options());
  auto s = start(engine, pool_spec({at(b.port())}, balance_policy::first));
  s.targets = {{test_hosts::v4_only, s.listen_port, 1, false}, at(b.port())};
  s = start(engine, s);
  CHECK(who(s.listen_port) == "B");
  const auto st = engine.status(1);
  CHECK(st.stats.loops_refused == 1);
  CHECK(st.stats.connect_errors == 0);  // the daemon's configuration is at fault, not the target
  CHECK(st.targets.at(0).health == relay::target_health::unchecked);
}

TEST_CASE("UDP sessions on a target that goes down are closed and their clients move to another", "[udp]") {
  auto a = std::make_unique<udp_teller>("A");
  udp_teller b("B");
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec({at(a->port()), at(b.port())}, balance_policy::first, relay::protocol::udp));
  auto c = udp_client(s.listen_port);
  send_all(c.get(), std::string("x"));
  CHECK(recv_datagram(c.get()) == "A");
  CHECK(engine.status(1).targets.at(0).connections_active == 1);
  CHECK(engine.status(1).targets.at(0).health == relay::target_health::up);  // it answered
  a.reset();  // A's port answers with ICMP port unreachable from now on
  // The same client, the same flow: its session stays on A until A is down (three errors), then
  // is closed, and the next datagram opens one on B.
  std::string answer;
  CHECK(eventually([&] {
    send_all(c.get(), std::string("x"));
    answer = recv_datagram(c.get(), 100ms);
    return answer == "B";
  }));
  const auto st = engine.status(1);
  CHECK(st.targets.at(0).health == relay::target_health::down);
  CHECK(st.targets.at(0).connections_active == 0);
  CHECK(st.targets.at(1).connections_active == 1);
  CHECK(st.stats.target_unreachable >= 3);
  CHECK(st.stats.connections_total == 2);
}

TEST_CASE("a UDP session on a down target's failed trial is closed so its client moves on", "[udp]") {
  auto a = std::make_unique<udp_teller>("A");
  const auto a_port = a->port();
  a.reset();  // A's port answers with ICMP port unreachable
  udp_teller b("B");
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec({at(a_port), at(b.port())}, balance_policy::first, relay::protocol::udp));
  auto c = udp_client(s.listen_port);
  REQUIRE(eventually([&] {
    send_all(c.get(), std::string("x"));
    return recv_datagram(c.get(), 100ms) == "B";
  }));
  REQUIRE(engine.status(1).targets.at(0).health == relay::target_health::down);
  // relay::passive_down_time on, a new session is A's trial: it meets the ICMP error, and its client
  // must not stay there (A is down already, so no change of health closes it).
  const auto failed = engine.status(1).targets.at(0).connect_errors;
  fd trial;
  REQUIRE(eventually([&] {
    trial = udp_client(s.listen_port);
    send_all(trial.get(), std::string("x"));
    if (recv_datagram(trial.get(), 100ms) == "B") return false;  // before the trial was due
    return engine.status(1).targets.at(0).connect_errors > failed;
  }, 40s));
  CHECK(eventually([&] {
    send_all(trial.get(), std::string("x"));
    return recv_datagram(trial.get(), 100ms) == "B";
  }));
}

TEST_CASE("UDP counts sessions and bytes per target", "[udp]") {
  udp_teller a("A"), b("B");
  relay::engine engine(fast_options());
  const auto s = start(engine, pool_spec({at(a.port()), at(b.port())}, balance_policy::round_robin,
                                         relay::protocol::udp));
  auto c1 = udp_client(s.listen_port);
  auto c2 = udp_client(s.listen_port);
  send_all(c1.get(), std::string("hello"));
  CHECK(recv_datagram(c1.get()) == "A");
  send_all(c2.get(), std::string("hi"));
  CHECK(recv_datagram(c2.get()) == "B");
  // Replies are counted just after they leave: the client may have them first.
  CHECK(eventually([&] { return engine.status(1).targets.at(1).bytes_down == 1; }));
  const auto t = engine.status(1).targets;
  CHECK(t.at(0).connections_active == 1);
  CHECK(t.at(0).bytes_up == 5);
  CHECK(t.at(0).bytes_down == 1);
  CHECK(t.at(1).connections_total == 1);
  CHECK(t.at(1).bytes_up == 2);
}

TEST_CASE("a PATCH of the pool keeps live connections on kept and removed targets and the kept one's counters", "[tcp]") {
  named_backend a("A"), b("B"), c("C");
  relay::engine engine(fast_options());
  auto s = start(engine, pool_spec({at(a.port()), at(b.port())}, balance_policy::round_robin));
  auto on_a = connect_via(s.listen_port);
  auto on_b = connect_via(s.listen_port);
  REQUIRE(on_a.name == "A");
  REQUIRE(on_b.name == "B");
  CHECK(echoes(on_a, "1"));
  CHECK(echoes(on_b, "1"));
  s.targets = {at(a.port()), at(c.port())};  // A kept, B removed, C added
  s = start(engine, s);
  CHECK(echoes(on_a, "2"));
  CHECK(echoes(on_b, "2"));
  CHECK(eventually([&] { return engine.status(1).targets.at(0).bytes_down == 3; }));  // "A", "1", "2"
  auto t = engine.status(1).targets;
  REQUIRE(t.size() == 2);
  CHECK(t[1].port == c.port());
  CHECK(t[0].connections_active == 1);  // carried over from the pool before
  CHECK(t[0].connections_total == 1);
  CHECK(t[0].bytes_up == 2);
  std::string names;
  for (int i = 0; i < 4; ++i) names += who(s.listen_port);
  CHECK(names.find('B') == std::string::npos);
  CHECK(names.find('A') != std::string::npos);
  CHECK(names.find('C') != std::string::npos);
  on_a.c.reset();
  on_b.c.reset();
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  t = engine.status(1).targets;
  CHECK(t[0].connections_active == 0);  // the old pool's connection closed in the shared state
  CHECK(t[1].connections_active == 0);
}

TEST_CASE("the engine runs a pool's health check - a killed target is down within fall intervals and a second then up again and a disabled forward checks nothing", "[tcp]") {
  using relay::target_health;
  named_backend a("A");
  std::atomic<int> checks_on_b{0};
  const auto counting = [&](int s) {
    checks_on_b++;
    send_all(s, "B");
    target_server::echo(s);
  };
  auto b = std::make_unique<target_server>(counting);
  const auto b_port = b->port();
  relay::engine engine(fast_options());
  auto spec = pool_spec({at(a.port()), at(b_port)}, balance_policy::round_robin);
  spec.health_check = relay::health_check_spec{.interval_s = 1, .timeout_s = 1, .rise = 2, .fall = 2, .port = std::nullopt};
  spec = start(engine, spec);
  const auto health = [&](std::size_t i) { return engine.status(1).targets.at(i).health; };
  REQUIRE(eventually([&] { return health(0) == target_health::up && health(1) == target_health::up; }));
  std::string names;
  for (int i = 0; i < 4; ++i) names += who(spec.listen_port);
  CHECK(names == "ABAB");

  // Killed: the checks find it, with no connection needed to tell.
  b.reset();
  const auto killed = std::chrono::steady_clock::now();
  REQUIRE(eventually([&] { return health(1) == target_health::down; }));
  CHECK(std::chrono::steady_clock::now() - killed <= 2 * 1s + 1s);  // fall x interval + a second
  const auto errors = engine.status(1).targets.at(1).connect_errors;
  for (int i = 0; i < 4; ++i) CHECK(who(spec.listen_port) == "A");
  CHECK(engine.status(1).targets.at(1).connect_errors == errors);  // down: not tried while A serves
  CHECK(engine.status(1).targets.at(1).last_error.find("refused") != std::string::npos);

  // Back on its port: up after `rise` checks, and served again.
  b = std::make_unique<target_server>(counting, "127.0.0.1", b_port);
  REQUIRE(eventually([&] { return health(1) == target_health::up; }));
  CHECK(until_served_by(spec.listen_port, "B") == "B");

  // Disabled: its checker stops, so B sees no new connection over three intervals (one check that
  // was connecting as the forward stopped may still be counted: its accept can come after).
  spec.enabled = false;
  spec = start(engine, spec);
  const int seen = checks_on_b;
  CHECK_FALSE(eventually([&] { return checks_on_b > seen + 1; }, 3s));
}
