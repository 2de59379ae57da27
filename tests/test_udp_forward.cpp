// UDP forwards over real loopback sockets: sessions per client, whole datagrams, expiry, eviction, fds.
#include "engine_helpers.hpp"
#include "spec_helpers.hpp"
#include "hosts.hpp"
#include "relay/engine.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstdlib>

extern char** environ;

using namespace test;

namespace {

relay::forward_spec udp_spec(std::int64_t id, std::uint16_t target_port, const std::string& host = "127.0.0.1") {
  relay::forward_spec s;
  s.id = id;
  s.protocol = relay::protocol::udp;
  s.listen_host = host;
  test::only_target(s).host = host;
  test::only_target(s).port = target_port;
  return s;
}

relay::engine_options options() {
  relay::engine_options o;
  o.workers = 2;
  return o;
}

std::string ask(int s, const std::string& text) {
  send_all(s, text);
  return recv_datagram(s);
}

// An unconnected UDP socket (it hears from anyone) bound to `host`, so its address stays the same
// whichever address it sends to.
fd udp_open(const std::string& host) {
  socklen_t len;
  auto ss = make_addr(host, 0, len);
  fd s(::socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  set_timeouts(s.get());
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) throw std::runtime_error("udp bind");
  return s;
}

// Sends `text` to host:port and waits for one datagram: its payload and the address it came from.
std::pair<std::string, std::string> ask_from(int s, const std::string& host, std::uint16_t port, const std::string& text) {
  socklen_t len;
  auto to = make_addr(host, port, len);
  ::sendto(s, text.data(), text.size(), 0, reinterpret_cast<sockaddr*>(&to), len);
  std::string buf(65536, '\0');
  sockaddr_storage from{};
  socklen_t from_len = sizeof from;
  auto n = ::recvfrom(s, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &from_len);
  if (n < 0) return {"", ""};
  buf.resize(static_cast<std::size_t>(n));
  char text_address[INET6_ADDRSTRLEN] = {};
  std::uint16_t from_port;
  if (from.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<sockaddr_in6*>(&from);
    inet_ntop(AF_INET6, &a->sin6_addr, text_address, sizeof text_address);
    from_port = ntohs(a->sin6_port);
    return {buf, "[" + std::string(text_address) + "]:" + std::to_string(from_port)};
  }
  const auto* a = reinterpret_cast<sockaddr_in*>(&from);
  inet_ntop(AF_INET, &a->sin_addr, text_address, sizeof text_address);
  from_port = ntohs(a->sin_port);
  return {buf, std::string(text_address) + ":" + std::to_string(from_port)};
}

// On a wildcard listener, clients sending to several of the host's addresses: each hears back from
// the address it sent to (a connected client hears nothing else), and each (client, address) is a
// session of its own. `local` are addresses of this host other than the one the kernel would pick.
void replies_come_from_the_address_sent_to(const std::string& wildcard, const std::vector<std::string>& local) {
  udp_echo_server target(wildcard == "::" ? "::1" : "127.0.0.1");
  relay::engine engine(options());
  auto spec = udp_spec(1, target.port(), wildcard == "::" ? "::1" : "127.0.0.1");
  spec.listen_host = wildcard;
  auto s = start(engine, spec);
  for (const auto& address : local) {
    INFO("a client connected to " << address);
    auto c = udp_client(s.listen_port, address);
    CHECK(ask(c.get(), "to " + address) == "to " + address);
  }
  // One unconnected client, to each address in turn: the reply names it, from a session of its own.
  auto u = udp_open(wildcard == "::" ? "::1" : "127.0.0.1");
  for (const auto& address : local) {
    INFO("the unconnected client sends to " << address);
    const auto [reply, from] = ask_from(u.get(), address, s.listen_port, "hello");
    CHECK(reply == "hello");
    CHECK(from == (wildcard == "::" ? "[" + address + "]" : address) + ":" + std::to_string(s.listen_port));
  }
  REQUIRE(eventually([&] { return engine.status(1).stats.datagrams_down == 2 * local.size(); }));
  CHECK(engine.status(1).stats.connections_total == 2 * local.size());
  CHECK(engine.status(1).stats.datagrams_dropped == 0);
  CHECK(target.distinct_peers() == 2 * local.size());
}

// Runs the hidden test `name` in a new process (this test binary) in a network namespace of its own,
// and returns its exit status: Catch2's count of failed assertions, 0 when all passed, and not 0
// when `name` matches no test (-w NoTests), so a renamed test cannot pass without running.
int run_in_own_network_namespace(const std::string& name) {
  std::vector<std::string> vars{"PORTRELAY_TEST_NETNS=1"};
  for (char** e = environ; *e; ++e) vars.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe", filter = name, warn = "-w", no_tests = "NoTests";
  char* argv[] = {exe.data(), filter.data(), warn.data(), no_tests.data(), nullptr};
  pid_t pid;
  if (posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data()) != 0) return -1;
  int status = 0;
  const bool ended = eventually([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 120s);
  if (!ended) {
    ::kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs `ip args...` and waits for it; true when it succeeded.
bool ip(std::vector<std::string> args) {
  args.insert(args.begin(), "ip");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  int status = 0;
  return posix_spawnp(&pid, "ip", nullptr, nullptr, argv.data(), environ) == 0 && waitpid(pid, &status, 0) == pid &&
         WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// True once a datagram sent to `address` over loopback arrives there.
bool carries_datagrams(const std::string& address) {
  auto to = udp_open(address);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(to.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  auto from = udp_open(address);
  ::sendto(from.get(), "?", 1, 0, reinterpret_cast<sockaddr*>(&ss), len);
  return !recv_datagram(to.get(), 100ms).empty();
}

// Enters a network namespace of its own, with loopback up and these IPv6 addresses on it, ready:
// the first datagram in a new namespace was seen lost (TSan on a loaded machine), so each address must
// carry one first. False (and the test passes vacuously) unless run by run_in_own_network_namespace.
bool own_network_namespace(const std::vector<std::string>& addresses) {
  if (!std::getenv("PORTRELAY_TEST_NETNS")) return false;
  REQUIRE(::unshare(CLONE_NEWNET) == 0);
  REQUIRE(ip({"link", "set", "lo", "up"}));
  for (const auto& address : addresses) {
    INFO(address);
    REQUIRE(ip({"addr", "add", address + "/128", "dev", "lo", "nodad"}));
    REQUIRE(eventually([&] { return carries_datagrams(address); }));
  }
  return true;
}

}  // namespace

TEST_CASE("a datagram goes to the target and the reply comes back from the listening address", "[udp]") {
  udp_echo_server target;
  relay::engine engine(options());
  auto s = start(engine, udp_spec(1, target.port()));
  auto c = udp_client(s.listen_port);  // connected: the kernel drops replies from any other source
  CHECK(ask(c.get(), "query") == "query");
  CHECK(ask(c.get(), "second") == "second");
  // The reply can reach the client a moment before the worker counts it.
  REQUIRE(eventually([&] { return engine.status(1).stats.datagrams_down == 2; }));
  auto st = engine.status(1).stats;
  CHECK(st.connections_total == 1);
  CHECK(st.connections_active == 1);
  CHECK(st.datagrams_up == 2);
  CHECK(st.datagrams_down == 2);
  CHECK(st.bytes_up == 11);
  CHECK(st.bytes_down == 11);
  CHECK(st.datagrams_dropped == 0);
  CHECK(target.distinct_peers() == 1);
}

TEST_CASE("500 clients at once, each with its own session, each getting only its own replies", "[udp]") {
  udp_echo_server target;
  relay::engine engine(options());
  auto s = start(engine, udp_spec(1, target.port()));
  std::vector<fd> clients;
  for (int i = 0; i < 500; ++i) clients.push_back(udp_client(s.listen_port));
  for (int round = 0; round < 2; ++round) {
    // In waves, so no socket buffer on the way overflows; every session stays open throughout.
    for (int wave = 0; wave < 500; wave += 50) {
      for (int i = wave; i < wave + 50; ++i) send_all(clients[i].get(), "client " + std::to_string(i) + " round " + std::to_string(round));
      for (int i = wave; i < wave + 50; ++i) {
        INFO("client " << i);
        CHECK(recv_datagram(clients[i].get()) == "client " + std::to_string(i) + " round " + std::to_string(round));
      }
    }
  }
  REQUIRE(eventually([&] { return engine.status(1).stats.datagrams_down == 1000; }));
  auto st = engine.status(1).stats;
  CHECK(st.connections_active == 500);
  CHECK(st.connections_total == 500);
  CHECK(st.datagrams_up == 1000);
  CHECK(st.datagrams_down == 1000);
  CHECK(target.distinct_peers() == 500);
}

TEST_CASE("60,000-byte datagrams pass intact, never truncated or merged", "[udp]") {
  udp_echo_server target;
  relay::engine engine(options());
  auto s = start(engine, udp_spec(1, target.port()));
  auto c = udp_client(s.listen_port);
  for (int i = 0; i < 5; ++i) {
    const auto payload = random_bytes(60000, i);
    CHECK(ask(c.get(), payload) == payload);
  }
  const auto small = std::string("tiny");
  CHECK(ask(c.get(), small) == small);
  CHECK(eventually([&] { return engine.status(1).stats.bytes_down == 5 * 60000 + 4; }));
}

// A burst the relay reads in batches: runs of equal-size datagrams leave in one GSO send, which the
// kernel must cut back into exactly the datagrams that came in. The sizes break runs in every way:
// runs longer than 64 segments and than 65,000 bytes, a shorter datagram ending a run, a larger
// one starting the next, single bytes.
// On a wildcard listener, each run's GSO send also names the address the client sent to.
TEST_CASE("a burst of datagrams in runs of equal size arrives whole, in order, each on its own", "[udp]") {
  const auto [listen_host, client_to] =
      GENERATE(std::make_pair(std::string("127.0.0.1"), std::string("127.0.0.1")),
               std::make_pair(std::string("0.0.0.0"), std::string("127.0.0.5")));
  INFO("listening on " << listen_host << ", the client sends to " << client_to);
  udp_echo_server target;
  relay::engine engine(options());
  auto spec = udp_spec(1, target.port());
  spec.listen_host = listen_host;
  auto s = start(engine, spec);
  auto c = udp_client(s.listen_port, client_to);  // connected: a reply from elsewhere never arrives
  int big = 8 << 20;
  setsockopt(c.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  std::vector<std::size_t> sizes;
  auto add = [&](int n, std::size_t size) { sizes.insert(sizes.end(), static_cast<std::size_t>(n), size); };
  add(100, 1400);
  add(1, 700);
  add(70, 200);
  add(1, 1);
  add(6, 20000);
  add(5, 900);
  add(1, 1000);
  add(5, 1000);
  add(3, 1);
  std::uint64_t bytes = 0;
  for (int wave = 0; wave < 3; ++wave) {
    std::vector<std::string> sent;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      auto payload = random_bytes(sizes[i], wave * 1000 + i);
      bytes += payload.size();
      CHECK(send_all(c.get(), payload));  // all at once: the relay finds them queued together
      sent.push_back(std::move(payload));
    }
    for (std::size_t i = 0; i < sent.size(); ++i) {
      INFO("wave " << wave << ", datagram " << i << " of " << sizes[i] << " bytes");
      REQUIRE(recv_datagram(c.get()) == sent[i]);
    }
  }
  const auto n = 3 * sizes.size();
  REQUIRE(eventually([&] { return engine.status(1).stats.datagrams_down == n; }));
  auto st = engine.status(1).stats;
  CHECK(st.datagrams_up == n);
  CHECK(st.bytes_up == bytes);
  CHECK(st.bytes_down == bytes);
  CHECK(st.datagrams_dropped == 0);
}

TEST_CASE("on 0.0.0.0 a client hears back from the address it sent to, one session per address", "[udp]") {
  replies_come_from_the_address_sent_to("0.0.0.0", {"127.0.0.5", "127.0.0.7", "127.0.0.1"});
}

TEST_CASE("on :: a client hears back from the address it sent to (in a namespace with a second address)", "[udp]") {
  CHECK(run_in_own_network_namespace("in a namespace of its own: on :: replies come from the address sent to") == 0);
}

TEST_CASE("in a namespace of its own: on :: replies come from the address sent to", "[.][udp]") {
  if (!own_network_namespace({"fd00::5", "fd00::7"})) return;
  replies_come_from_the_address_sent_to("::", {"fd00::5", "fd00::7", "::1"});
}

TEST_CASE("idle sessions expire and their descriptors come back", "[udp]") {
  udp_echo_server target;
  relay::engine engine(options());
  auto spec = udp_spec(1, target.port());
  spec.udp_idle_timeout_s = 1;
  auto s = start(engine, spec);
  const auto baseline = open_fds();
  std::vector<fd> clients;
  for (int i = 0; i < 100; ++i) {
    clients.push_back(udp_client(s.listen_port));
    REQUIRE(ask(clients.back().get(), "x") == "x");
  }
  CHECK(engine.status(1).stats.connections_active == 100);
  CHECK(open_fds() >= baseline + 200);  // our 100 clients plus the relay's 100 upstream sockets
  clients.clear();
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  CHECK(eventually([&] { return open_fds() == baseline; }));
  CHECK(engine.status(1).stats.connections_total == 100);
  CHECK(engine.status(1).stats.sessions_evicted == 0);
}

TEST_CASE("at the cap the least recently active session is evicted and counted", "[udp]") {
  udp_echo_server target;
  relay::engine engine(options());
  auto spec = udp_spec(1, target.port());
  spec.udp_max_sessions = 3;
  auto s = start(engine, spec);
  auto a = udp_client(s.listen_port), b = udp_client(s.listen_port), c = udp_client(s.listen_port);
  REQUIRE(ask(a.get(), "a") == "a");
  REQUIRE(ask(b.get(), "b") == "b");
  REQUIRE(ask(c.get(), "c") == "c");
  REQUIRE(ask(a.get(), "a again") == "a again");  // b is now the least recently active
  auto d = udp_client(s.listen_port);
  CHECK(ask(d.get(), "d") == "d");
  auto st = engine.status(1).stats;
  CHECK(st.connections_active == 3);
  CHECK(st.sessions_evicted == 1);
  CHECK(st.connections_total == 4);
  // b comes back as a new session, evicting c, the least recent by then.
  CHECK(ask(b.get(), "b back") == "b back");
  CHECK(engine.status(1).stats.connections_total == 5);
  CHECK(engine.status(1).stats.sessions_evicted == 2);
  CHECK(target.distinct_peers() == 5);  // every session had its own upstream source port

  SECTION("lowering the cap evicts at once") {
    auto lower = s;
    lower.udp_max_sessions = 1;
    start(engine, lower);
    CHECK(engine.status(1).stats.connections_active == 1);
    CHECK(engine.status(1).stats.sessions_evicted == 4);
  }
}

TEST_CASE("delete and disable close every session at once", "[udp]") {
  udp_echo_server target;
  relay::engine engine(options());
  auto s = start(engine, udp_spec(1, target.port()));
  const auto baseline = open_fds();
  std::vector<fd> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(udp_client(s.listen_port));
    REQUIRE(ask(clients.back().get(), "hi") == "hi");
  }
  SECTION("delete") { engine.remove(1); }
  SECTION("disable") {
    s.enabled = false;
    start(engine, s);
    CHECK(engine.status(1).stats.connections_active == 0);
  }
  clients.clear();
  CHECK(open_fds() + 1 == baseline);  // the relay's listening socket is gone too
  auto late = udp_client(s.listen_port);
  send_all(late.get(), std::string("anyone?"));
  CHECK(recv_datagram(late.get(), 300ms).empty());
}

TEST_CASE("in a drain, sessions in use keep their replies and new clients get none", "[udp]") {
  udp_echo_server target;
  auto o = options();
  o.udp_drain_idle_timeout = 60s;  // in use means a datagram within this; no test step comes near it
  relay::engine engine(o);
  auto s = start(engine, udp_spec(1, target.port()));
  auto a = udp_client(s.listen_port);
  REQUIRE(ask(a.get(), "before") == "before");
  engine.drain();
  for (int i = 0; i < 3; ++i) CHECK(ask(a.get(), "during " + std::to_string(i)) == "during " + std::to_string(i));
  auto b = udp_client(s.listen_port);
  send_all(b.get(), std::string("new"));
  CHECK(recv_datagram(b.get(), 300ms).empty());
  CHECK(eventually([&] { return engine.status(1).stats.datagrams_dropped == 1; }));
  CHECK(engine.status(1).stats.connections_active == 1);
}

TEST_CASE("in a drain, a session idle for the drain idle time is done, whatever its own idle timeout", "[udp]") {
  udp_echo_server target;
  auto o = options();
  o.udp_drain_idle_timeout = 200ms;  // the client sends nothing more: no work races this
  relay::engine engine(o);
  auto spec = udp_spec(1, target.port());
  spec.udp_idle_timeout_s = 86400;
  auto s = start(engine, spec);
  auto a = udp_client(s.listen_port);
  REQUIRE(ask(a.get(), "before") == "before");
  const auto fds_with_session = open_fds();
  engine.drain();
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  CHECK(eventually([&] { return open_fds() < fds_with_session; }));  // its socket to the target is closed
}

TEST_CASE("a target that is down costs only that session's datagrams", "[udp]") {
  udp_echo_server target;
  // Below the ephemeral range: a port the kernel just gave back could go to any process's next
  // socket, and one bound there would take the datagrams meant to draw ICMP errors.
  const auto dead_port = free_port();
  relay::engine engine(options());
  auto dead = start(engine, udp_spec(1, dead_port));
  auto live = start(engine, udp_spec(2, target.port()));
  auto c = udp_client(dead.listen_port);
  for (int i = 0; i < 5; ++i) send_all(c.get(), std::string("into the void"));
  auto ok = udp_client(live.listen_port);
  CHECK(ask(ok.get(), "fine") == "fine");
  // ICMP port unreachable comes back; whether the next send fails (dropped) or the session's reader
  // consumes the error first depends on timing, but every datagram is accounted for exactly once
  // and nothing else is hurt: the listener, the session and the other forward all carry on.
  CHECK(eventually([&] {
    auto st = engine.status(1).stats;
    return st.datagrams_up + st.datagrams_dropped == 5;
  }));
  CHECK(engine.status(1).state == relay::forward_state::active);
  CHECK(engine.status(1).stats.connections_active == 1);
  CHECK(engine.status(1).stats.datagrams_down == 0);
  CHECK(ask(ok.get(), "still fine") == "still fine");
  // The ICMP errors are counted: the kernel keeps one per socket, so a burst counts at least once.
  CHECK(eventually([&] { return engine.status(1).stats.target_unreachable >= 1; }));
  CHECK(engine.status(1).stats.target_unreachable <= engine.status(1).stats.datagrams_up);
  CHECK(engine.status(2).stats.target_unreachable == 0);
  CHECK(engine.status(1).stats.connect_errors == 0);
  // One at a time, each datagram's error is counted. A forward of its own: the burst's errors may
  // still be arriving at the first one's session.
  auto one = start(engine, udp_spec(3, dead_port));
  auto d = udp_client(one.listen_port);
  for (std::uint64_t i = 1; i <= 3; ++i) {
    send_all(d.get(), std::string("one more"));
    CHECK(eventually([&] { return engine.status(3).stats.target_unreachable == i; }));
  }
  CHECK(engine.status(3).stats.datagrams_up == 3);
}

TEST_CASE("a name whose first address is unreachable: the session moves to the next and counts it", "[udp]") {
  REQUIRE(test_hosts::installed);
  // On 127.0.0.1 only, on a port below the ephemeral range: the name lists [::1] first, where
  // nothing listens (and no other process's socket is given that port by the kernel).
  udp_echo_server target("127.0.0.1", free_port());
  relay::engine engine(options());
  auto spec = udp_spec(1, target.port());
  test::only_target(spec).host = test_hosts::dual;
  auto s = start(engine, spec);
  auto c = udp_client(s.listen_port);
  send_all(c.get(), std::string("lost on [::1]"));
  REQUIRE(eventually([&] { return engine.status(1).stats.target_unreachable == 1; }));
  CHECK(ask(c.get(), "found") == "found");
  // A new client starts on the address that works: its first datagram is answered.
  auto d = udp_client(s.listen_port);
  CHECK(ask(d.get(), "first") == "first");
  REQUIRE(eventually([&] { return engine.status(1).stats.datagrams_down == 2; }));
  const auto st = engine.status(1).stats;
  CHECK(st.target_unreachable == 1);
  CHECK(st.connections_total == 2);
  CHECK(st.connections_active == 2);
  CHECK(st.datagrams_up == 3);
  CHECK(st.connect_errors == 0);
  CHECK(st.datagrams_dropped == 0);
  CHECK(target.distinct_peers() == 2);
}

TEST_CASE("when every address of the name fails the session stays and each error is counted", "[udp]") {
  REQUIRE(test_hosts::installed);
  // Below the ephemeral range: a port the kernel just gave back could go to any process's next
  // socket, and one bound there would take the datagrams meant to draw ICMP errors.
  const auto dead_port = free_port();
  relay::engine engine(options());
  auto spec = udp_spec(1, dead_port);
  test::only_target(spec).host = test_hosts::dual;
  auto s = start(engine, spec);
  auto c = udp_client(s.listen_port);
  for (std::uint64_t i = 1; i <= 4; ++i) {  // [::1], 127.0.0.1, [::1], 127.0.0.1
    send_all(c.get(), std::string("anyone?"));
    CHECK(eventually([&] { return engine.status(1).stats.target_unreachable == i; }));
  }
  const auto st = engine.status(1).stats;
  CHECK(st.connections_active == 1);
  CHECK(st.datagrams_up == 4);
  CHECK(engine.status(1).state == relay::forward_state::active);
}

TEST_CASE("a TCP and a UDP forward share a port number", "[udp][tcp]") {
  udp_echo_server udp_target;
  target_server tcp_target(target_server::echo);
  relay::engine engine(options());
  relay::forward_spec t;
  t.id = 2;
  t.listen_host = "127.0.0.1";
  test::only_target(t).host = "127.0.0.1";
  test::only_target(t).port = tcp_target.port();
  // The kernel picks the TCP port; a client socket of another test may hold that number for UDP,
  // so a few fresh tries are allowed. What must never happen is the TCP forward blocking the UDP one.
  relay::forward_spec u;
  bool paired = false;
  for (int attempt = 0; attempt < 20 && !paired; ++attempt) {
    t.listen_port = 0;
    t = start(engine, t);
    u = udp_spec(1, udp_target.port());
    u.listen_port = t.listen_port;
    auto p = engine.prepare(u);
    if (p) {
      engine.apply(u, std::move(p.value()));
      paired = true;
    } else {
      engine.remove(2);
    }
  }
  REQUIRE(paired);
  CHECK(echo_once(u.listen_port, "over tcp") == "over tcp");
  auto c = udp_client(u.listen_port);
  CHECK(ask(c.get(), "over udp") == "over udp");
  // But two UDP forwards cannot.
  auto clash = udp_spec(3, udp_target.port());
  clash.listen_port = u.listen_port;
  auto p = engine.prepare(clash);
  REQUIRE_FALSE(p);
  CHECK(p.error().code == std::errc::address_in_use);
}

TEST_CASE("a UDP forward reaches IPv6 and host-name targets", "[udp]") {
  udp_echo_server target6("::1");
  relay::engine engine(options());
  auto s = start(engine, udp_spec(1, target6.port(), "::1"));
  auto c = udp_client(s.listen_port, "::1");
  CHECK(ask(c.get(), "v6") == "v6");

  REQUIRE(test_hosts::installed);
  udp_echo_server target4;
  auto named = udp_spec(2, target4.port());
  test::only_target(named).host = test_hosts::v4_only;  // from /etc/hosts; resolved when the session starts
  auto n = start(engine, named);
  auto e = udp_client(n.listen_port);
  CHECK(ask(e.get(), "by name") == "by name");
  CHECK(engine.status(2).stats.connections_total == 1);
}

TEST_CASE("changing the target moves new sessions only", "[udp]") {
  udp_echo_server a, b;
  relay::engine engine(options());
  auto s = start(engine, udp_spec(1, a.port()));
  auto old_client = udp_client(s.listen_port);
  REQUIRE(ask(old_client.get(), "1") == "1");
  test::only_target(s).port = b.port();
  start(engine, s);
  auto new_client = udp_client(s.listen_port);
  REQUIRE(ask(new_client.get(), "2") == "2");
  REQUIRE(ask(old_client.get(), "3") == "3");
  CHECK(a.distinct_peers() == 1);
  CHECK(b.distinct_peers() == 1);
}
