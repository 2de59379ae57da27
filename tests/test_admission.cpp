// Admission over real loopback sockets: allow and deny lists, connection limits per forward and per
// client address, refusal before any target is reached, and live changes, for TCP and UDP. Clients
// take 127.0.0.2, 127.0.0.3 ... as their source address.
#include "engine_helpers.hpp"
#include "relay/admission.hpp"
#include "relay/engine.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>

#include <string>
#include <vector>

using namespace test;

namespace {

std::vector<relay::ip_prefix> prefixes(std::initializer_list<const char*> texts) {
  std::vector<relay::ip_prefix> out;
  for (const auto* t : texts) out.push_back(std::get<relay::ip_prefix>(relay::parse_prefix(t)));
  return out;
}

// A client from `source` that the forward let through to the echoing target: it holds its connection
// (and its slot) until it goes. Empty when the relay did not carry a round trip.
fd through(std::uint16_t port, const std::string& source, const std::string& host = "127.0.0.1") {
  auto c = connect_from(port, source, host);
  if (!c || !send_all(c.get(), std::string("ping")) || recv_exact(c.get(), 4) != "ping") return fd();
  return c;
}

// A client from `source` whose connection the relay resets before it carries anything (the kernel
// completes the handshake before the relay accepts, so the connect itself succeeds).
bool reset_from(std::uint16_t port, const std::string& source, const std::string& host = "127.0.0.1") {
  auto c = connect_from(port, source, host);
  if (!c) return false;
  const auto end = read_to_end(c.get());  // a send first could take the reset's error itself
  return end.bytes.empty() && end.error == ECONNRESET;
}

// A held connection still carries a round trip.
bool echoed_tcp(int s) { return send_all(s, std::string("x")) && recv_exact(s, 1) == "x"; }

relay::forward_spec tcp_spec(std::uint16_t target_port) { return spec_for(1, target_port); }

relay::forward_spec udp_spec(std::uint16_t target_port) {
  auto s = spec_for(1, target_port);
  s.protocol = relay::protocol::udp;
  return s;
}

// A UDP client bound to `source`, connected to the forward (so it has its own source port).
fd udp_from(std::uint16_t port, const std::string& source) {
  socklen_t len, source_len;
  auto to = make_addr("127.0.0.1", port, len);
  auto from = make_addr(source, 0, source_len);
  fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  set_timeouts(s.get());
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&from), source_len) != 0 ||
      ::connect(s.get(), reinterpret_cast<sockaddr*>(&to), len) != 0) {
    throw std::runtime_error("udp client");
  }
  return s;
}

bool echoed(int s, const std::string& text) {
  send_all(s, text);
  return recv_datagram(s) == text;
}

// A forward (id 1) in front of an echoing target: `spec` is what apply() starts it with, or updates
// it to (as a PATCH does); `port` is where it listens.
template <class Target, relay::protocol P>
struct forward_case {
  Target target;
  relay::engine engine{fast_options()};
  relay::forward_spec spec = P == relay::protocol::tcp ? tcp_spec(target.port()) : udp_spec(target.port());
  std::uint16_t port = 0;

  void apply() {
    spec = start(engine, spec);
    port = spec.listen_port;
  }
  relay::stats_snapshot stats() { return engine.status(1).stats; }
};

struct echo_target : target_server {
  echo_target() : target_server(target_server::echo) {}
};
using tcp_case = forward_case<echo_target, relay::protocol::tcp>;
using udp_case = forward_case<udp_echo_server, relay::protocol::udp>;

// A target that accepts and never reads, until the relay closes its side (or 30 s pass): what a
// client sends stays in the relay and the kernels.
struct quiet_target : target_server {
  quiet_target()
      : target_server([](int s) {
          for (int i = 0; i < 1500; ++i) {
            pollfd p{s, POLLRDHUP, 0};
            if (::poll(&p, 1, 20) > 0) return;
          }
        }) {}
};

}  // namespace

// ---- The compiled rules themselves

TEST_CASE("the source filter lets deny win and matches IPv4-mapped addresses with IPv4 entries", "[engine]") {
  relay::forward_spec s;
  s.allow = prefixes({"10.0.0.0/8", "2001:db8::/32"});
  s.deny = prefixes({"10.1.0.0/16"});
  const relay::source_filter f(s);
  CHECK(f.admits(asio::ip::make_address("10.2.3.4")));
  CHECK(f.admits(asio::ip::make_address("::ffff:10.2.3.4")));
  CHECK(f.admits(asio::ip::make_address("2001:db8::7")));
  CHECK_FALSE(f.admits(asio::ip::make_address("10.1.2.3")));         // deny wins over allow
  CHECK_FALSE(f.admits(asio::ip::make_address("::ffff:10.1.2.3")));  // in the mapped form too
  CHECK_FALSE(f.admits(asio::ip::make_address("192.0.2.1")));        // not in allow
  CHECK(relay::make_filter(relay::forward_spec{}) == nullptr);      // no lists: nothing to read or match
}

TEST_CASE("the per-source count keeps one client as one key - IPv4 and its IPv4-mapped form", "[engine]") {
  relay::admission a;
  a.set_limits(0, 1);
  const auto v4 = asio::ip::make_address("192.0.2.7");
  const auto mapped = asio::ip::make_address("::ffff:192.0.2.7");
  auto first = a.admit(&v4);
  REQUIRE(first);
  CHECK_FALSE(a.admit(&mapped));
  first.reset();
  CHECK(a.live() == 0);
  CHECK(a.live_from(v4) == 0);
  CHECK(a.admit(&mapped));
}

// ---- TCP

TEST_CASE("TCP allow only - a listed source reaches the target and another is reset before any connection to it", "[tcp]") {
  tcp_case f;
  f.spec.allow = prefixes({"127.0.0.2"});
  f.apply();
  CHECK(reset_from(f.port, "127.0.0.3"));
  CHECK(reset_from(f.port, "127.0.0.1"));
  CHECK(f.target.accepted() == 0);  // refused right after accept: no connection to the target
  CHECK(f.stats().refused_acl == 2);
  CHECK(f.stats().connections_total == 0);
  auto c = through(f.port, "127.0.0.2");
  CHECK(c);
  CHECK(f.target.accepted() == 1);
  CHECK(f.stats().refused_acl == 2);
  CHECK(f.stats().refused_limit == 0);
}

TEST_CASE("TCP deny only - the denied source is reset and the others pass", "[tcp]") {
  tcp_case f;
  f.spec.deny = prefixes({"127.0.0.3"});
  f.apply();
  CHECK(reset_from(f.port, "127.0.0.3"));
  CHECK(f.target.accepted() == 0);
  CHECK(through(f.port, "127.0.0.2"));
  CHECK(through(f.port, "127.0.0.4"));
  CHECK(f.stats().refused_acl == 1);
}

TEST_CASE("TCP allow and deny - deny wins for a source both contain", "[tcp]") {
  tcp_case f;
  f.spec.allow = prefixes({"127.0.0.0/8"});
  f.spec.deny = prefixes({"127.0.0.3/32"});
  f.apply();
  CHECK(reset_from(f.port, "127.0.0.3"));
  CHECK(through(f.port, "127.0.0.2"));
  CHECK(f.stats().refused_acl == 1);
}

// The relay's listeners on "::" are IPv6-only (IPV6_V6ONLY), so no IPv4 client reaches one through
// the kernel as ::ffff:a.b.c.d; the mapped form (as a PROXY header may carry it) is matched by the
// filter case above. Here: IPv6 clients on "::" against IPv6 and IPv4 entries.
TEST_CASE("TCP lists on a :: listener - ::1 is matched by IPv6 entries and not by 127.0.0.0/8", "[tcp]") {
  tcp_case f;
  f.spec.listen_host = "::";
  f.spec.allow = prefixes({"127.0.0.0/8"});
  f.apply();
  CHECK(reset_from(f.port, "::1", "::1"));
  f.spec.allow = prefixes({"127.0.0.0/8", "::1/128"});
  f.apply();
  CHECK(through(f.port, "::1", "::1"));
  CHECK(f.target.accepted() == 1);
  CHECK(f.stats().refused_acl == 1);
}

TEST_CASE("TCP max_connections refuses with a reset past the limit and admits again once under it", "[tcp]") {
  tcp_case f;
  f.spec.max_connections = 2;
  f.apply();
  auto a = through(f.port, "127.0.0.2");
  auto b = through(f.port, "127.0.0.3");
  REQUIRE(a);
  REQUIRE(b);
  CHECK(reset_from(f.port, "127.0.0.4"));
  CHECK(f.target.accepted() == 2);
  CHECK(f.stats().refused_limit == 1);
  CHECK(f.stats().refused_acl == 0);
  a.reset();
  REQUIRE(eventually([&] { return f.stats().connections_active == 1; }));
  CHECK(through(f.port, "127.0.0.4"));
  CHECK(f.stats().refused_limit == 1);
}

TEST_CASE("TCP max_connections_per_source limits each client address and not the others", "[tcp]") {
  tcp_case f;
  f.spec.max_connections_per_source = 2;
  f.apply();
  auto a1 = through(f.port, "127.0.0.2");
  auto a2 = through(f.port, "127.0.0.2");
  REQUIRE(a1);
  REQUIRE(a2);
  CHECK(reset_from(f.port, "127.0.0.2"));
  auto b1 = through(f.port, "127.0.0.3");
  auto b2 = through(f.port, "127.0.0.3");
  CHECK(b1);
  CHECK(b2);
  CHECK(f.stats().refused_limit == 1);
  a1.reset();
  REQUIRE(eventually([&] { return f.stats().connections_active == 3; }));
  CHECK(through(f.port, "127.0.0.2"));
}

TEST_CASE("TCP lowering max_connections keeps the live connections and refuses new ones until under it", "[tcp]") {
  tcp_case f;
  f.apply();
  std::vector<fd> held;
  for (const char* source : {"127.0.0.2", "127.0.0.3", "127.0.0.4"}) {
    held.push_back(through(f.port, source));
    REQUIRE(held.back());
  }
  f.spec.max_connections = 1;
  f.apply();
  for (auto& c : held) CHECK(echoed_tcp(c.get()));
  CHECK(reset_from(f.port, "127.0.0.5"));
  held.pop_back();
  held.pop_back();
  REQUIRE(eventually([&] { return f.stats().connections_active == 1; }));
  CHECK(reset_from(f.port, "127.0.0.5"));  // at the limit, not under it
  held.clear();
  REQUIRE(eventually([&] { return f.stats().connections_active == 0; }));
  CHECK(through(f.port, "127.0.0.5"));
  CHECK(f.stats().refused_limit == 2);
}

TEST_CASE("TCP a per-source limit turned on counts the connections already live", "[tcp]") {
  tcp_case f;
  f.apply();
  auto a1 = through(f.port, "127.0.0.2");
  auto a2 = through(f.port, "127.0.0.2");
  REQUIRE(a1);
  REQUIRE(a2);
  f.spec.max_connections_per_source = 1;
  f.apply();
  CHECK(echoed_tcp(a1.get()));  // over the new limit, and kept
  CHECK(echoed_tcp(a2.get()));
  CHECK(reset_from(f.port, "127.0.0.2"));
  CHECK(through(f.port, "127.0.0.3"));
  a1.reset();
  a2.reset();
  REQUIRE(eventually([&] { return f.stats().connections_active == 0; }));
  CHECK(through(f.port, "127.0.0.2"));
  CHECK(f.stats().refused_limit == 1);
}

TEST_CASE("TCP an update that denies a connected source resets its connections before it returns and keeps the others", "[tcp]") {
  tcp_case f;
  f.apply();
  auto kept = through(f.port, "127.0.0.2");
  auto cut1 = through(f.port, "127.0.0.3");
  auto cut2 = through(f.port, "127.0.0.3");
  REQUIRE(kept);
  REQUIRE(cut1);
  REQUIRE(cut2);
  f.spec.deny = prefixes({"127.0.0.3"});
  f.apply();
  CHECK(f.stats().connections_active == 1);  // closed by the time the update returned
  CHECK(read_to_end(cut1.get()).error == ECONNRESET);
  CHECK(read_to_end(cut2.get()).error == ECONNRESET);
  CHECK(echoed_tcp(kept.get()));
  CHECK(reset_from(f.port, "127.0.0.3"));
  // A narrower allow list cuts off in the same way.
  f.spec.deny.clear();
  f.spec.allow = prefixes({"127.0.0.4"});
  f.apply();
  CHECK(f.stats().connections_active == 0);
  CHECK(read_to_end(kept.get()).error == ECONNRESET);
}

// ---- UDP

TEST_CASE("TCP an update that denies a source cuts its connection also once its client has reset", "[tcp]") {
  // Admitted when the forward had no lists, so nothing had asked for the client's address; the
  // client then resets with bytes the target has not taken, and the relay is passing them on.
  forward_case<quiet_target, relay::protocol::tcp> f;
  f.apply();
  auto c = connect_from(f.port, "127.0.0.2");
  REQUIRE(c);
  REQUIRE(eventually([&] { return f.target.accepted() == 1; }));
  const std::string block(64 * 1024, 'x');
  int fl = ::fcntl(c.get(), F_GETFL);
  ::fcntl(c.get(), F_SETFL, fl | O_NONBLOCK);
  for (int i = 0; i < 1024 && ::send(c.get(), block.data(), block.size(), MSG_NOSIGNAL) > 0; ++i) {
  }
  reset(c);
  f.spec.deny = prefixes({"127.0.0.2"});
  f.apply();
  // Cut off before the update returned, not after the reset's two-second delivery stall.
  CHECK(f.stats().connections_active == 0);
}

TEST_CASE("UDP a refused client's datagram creates no session and reaches nothing", "[udp]") {
  udp_case f;
  f.spec.deny = prefixes({"127.0.0.3"});
  f.apply();
  auto denied = udp_from(f.port, "127.0.0.3");
  send_all(denied.get(), std::string("one"));
  send_all(denied.get(), std::string("two"));
  REQUIRE(eventually([&] { return f.stats().refused_acl == 2; }));
  auto st = f.stats();
  CHECK(st.connections_total == 0);
  CHECK(st.connections_active == 0);
  CHECK(st.datagrams_dropped == 0);  // a refusal is counted once, as a refusal
  CHECK(f.target.distinct_peers() == 0);
  auto admitted = udp_from(f.port, "127.0.0.2");
  CHECK(echoed(admitted.get(), "hello"));
  CHECK(f.stats().connections_total == 1);
  CHECK(f.target.distinct_peers() == 1);
}

TEST_CASE("UDP allow only admits the listed source", "[udp]") {
  udp_case f;
  f.spec.allow = prefixes({"127.0.0.2"});
  f.apply();
  auto other = udp_from(f.port, "127.0.0.3");
  send_all(other.get(), std::string("x"));
  REQUIRE(eventually([&] { return f.stats().refused_acl == 1; }));
  auto listed = udp_from(f.port, "127.0.0.2");
  CHECK(echoed(listed.get(), "hello"));
  CHECK(f.target.distinct_peers() == 1);
}

TEST_CASE("UDP max_connections below udp_max_sessions refuses new sessions instead of evicting", "[udp]") {
  udp_case f;
  f.spec.max_connections = 1;
  f.apply();
  auto first = udp_from(f.port, "127.0.0.2");
  REQUIRE(echoed(first.get(), "a"));
  auto second = udp_from(f.port, "127.0.0.3");
  send_all(second.get(), std::string("b"));
  REQUIRE(eventually([&] { return f.stats().refused_limit == 1; }));
  CHECK(f.stats().sessions_evicted == 0);
  CHECK(echoed(first.get(), "c"));  // its session is still there
  CHECK(f.stats().connections_total == 1);
  // udp_max_sessions, as the lower cap, still evicts.
  f.spec.max_connections = 0;
  f.spec.udp_max_sessions = 1;
  f.apply();
  CHECK(echoed(second.get(), "d"));
  CHECK(f.stats().sessions_evicted == 1);
  CHECK(f.stats().refused_limit == 1);
}

TEST_CASE("UDP a datagram the limits refuse evicts no session - and equal caps evict", "[udp]") {
  udp_case f;
  f.spec.udp_max_sessions = 2;
  f.spec.max_connections = 2;
  f.spec.max_connections_per_source = 1;
  f.apply();
  auto other = udp_from(f.port, "127.0.0.3");
  REQUIRE(echoed(other.get(), "a"));
  auto first = udp_from(f.port, "127.0.0.2");
  REQUIRE(echoed(first.get(), "b"));
  // The table is full and 127.0.0.2 is at its limit: refused, and nobody is evicted for it.
  auto again = udp_from(f.port, "127.0.0.2");
  send_all(again.get(), std::string("c"));
  REQUIRE(eventually([&] { return f.stats().refused_limit == 1; }));
  CHECK(f.stats().sessions_evicted == 0);
  CHECK(f.stats().connections_active == 2);
  CHECK(f.stats().connections_total == 2);
  // A new client within the limits: with max_connections equal to udp_max_sessions, the least
  // recent session is evicted for it rather than the client refused.
  auto newcomer = udp_from(f.port, "127.0.0.4");
  CHECK(echoed(newcomer.get(), "d"));
  CHECK(f.stats().sessions_evicted == 1);
  CHECK(f.stats().refused_limit == 1);
  CHECK(f.stats().connections_active == 2);
}

TEST_CASE("UDP max_connections_per_source counts a client address across its ports", "[udp]") {
  udp_case f;
  f.spec.max_connections_per_source = 1;
  f.apply();
  auto a1 = udp_from(f.port, "127.0.0.2");
  REQUIRE(echoed(a1.get(), "a"));
  auto a2 = udp_from(f.port, "127.0.0.2");  // another port, the same address
  send_all(a2.get(), std::string("b"));
  REQUIRE(eventually([&] { return f.stats().refused_limit == 1; }));
  auto b = udp_from(f.port, "127.0.0.3");
  CHECK(echoed(b.get(), "c"));
  CHECK(f.stats().connections_active == 2);
}

TEST_CASE("UDP an update that denies a source closes its sessions before it returns and keeps the others", "[udp]") {
  udp_case f;
  f.apply();
  auto kept = udp_from(f.port, "127.0.0.2");
  auto cut = udp_from(f.port, "127.0.0.3");
  REQUIRE(echoed(kept.get(), "a"));
  REQUIRE(echoed(cut.get(), "b"));
  f.spec.deny = prefixes({"127.0.0.3"});
  f.apply();
  CHECK(f.stats().connections_active == 1);  // closed by the time the update returned
  send_all(cut.get(), std::string("c"));
  REQUIRE(eventually([&] { return f.stats().refused_acl == 1; }));
  CHECK(echoed(kept.get(), "d"));
  CHECK(f.stats().connections_total == 2);
}

TEST_CASE("UDP a per-source limit turned on counts the sessions already live", "[udp]") {
  udp_case f;
  f.apply();
  auto a1 = udp_from(f.port, "127.0.0.2");
  auto a2 = udp_from(f.port, "127.0.0.2");
  REQUIRE(echoed(a1.get(), "a"));
  REQUIRE(echoed(a2.get(), "b"));
  f.spec.max_connections_per_source = 2;
  f.apply();
  CHECK(echoed(a1.get(), "c"));  // at the new limit, and kept
  auto a3 = udp_from(f.port, "127.0.0.2");
  send_all(a3.get(), std::string("d"));
  REQUIRE(eventually([&] { return f.stats().refused_limit == 1; }));
  auto b = udp_from(f.port, "127.0.0.3");
  CHECK(echoed(b.get(), "e"));
  CHECK(f.stats().connections_active == 3);
}
