// The PROXY protocol on real loopback sockets: the headers a forward sends its targets (TCP v1 and
// v2, UDP v2 per datagram), read here by a reader of the test's own and compared byte for byte with
// headers built here; the headers a forward accepts from its clients (the carried address admitted by
// the allow list and passed on), and the ones it refuses; and HAProxy from Debian reading the header.
#include "engine_helpers.hpp"
#include "relay/engine.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace test;

namespace {

const std::string v2_signature("\r\n\r\n\0\r\nQUIT\n", 12);

// An address and port as a test socket sees it.
struct endpoint {
  std::string host;
  std::uint16_t port = 0;
};

endpoint endpoint_of(const sockaddr_storage& ss) {
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    ::inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
    return {text, ntohs(a.sin6_port)};
  }
  const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
  ::inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
  return {text, ntohs(a.sin_port)};
}

endpoint local_of(int s) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&ss), &len);
  return endpoint_of(ss);
}

endpoint peer_of(int s) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getpeername(s, reinterpret_cast<sockaddr*>(&ss), &len);
  return endpoint_of(ss);
}

// The headers as the specification (HAProxy's doc/proxy-protocol.txt) spells them, built here
// without the daemon's code.
std::string v1_header(const endpoint& source, const endpoint& destination) {
  const bool v6 = source.host.find(':') != std::string::npos;
  return std::string("PROXY ") + (v6 ? "TCP6 " : "TCP4 ") + source.host + " " + destination.host + " " +
         std::to_string(source.port) + " " + std::to_string(destination.port) + "\r\n";
}

std::string v2_header(const endpoint& source, const endpoint& destination, bool dgram = false) {
  const bool v6 = source.host.find(':') != std::string::npos;
  std::string out = v2_signature;
  out += '\x21';  // version 2, PROXY
  out += static_cast<char>((v6 ? 0x20 : 0x10) | (dgram ? 0x2 : 0x1));
  const int family = v6 ? AF_INET6 : AF_INET;
  const std::size_t size = v6 ? 16 : 4;
  const std::size_t length = 2 * size + 4;
  out += static_cast<char>(length >> 8);
  out += static_cast<char>(length & 0xff);
  for (const auto* e : {&source, &destination}) {
    unsigned char bytes[16];
    REQUIRE(::inet_pton(family, e->host.c_str(), bytes) == 1);
    out.append(reinterpret_cast<const char*>(bytes), size);
  }
  for (const auto* e : {&source, &destination}) {
    out += static_cast<char>(e->port >> 8);
    out += static_cast<char>(e->port & 0xff);
  }
  return out;
}

// Reads one PROXY header from the front of a stream, by its own framing: v1 up to its CRLF (107
// bytes at most), v2 its 16 fixed bytes and then its length. Empty when neither comes.
std::string read_header(int s) {
  std::string head = recv_exact(s, 1);
  if (head == "P") {
    while (head.size() < 107 && head.find("\r\n") == std::string::npos) {
      const auto c = recv_exact(s, 1);
      if (c.empty()) return {};
      head += c;
    }
    return head.find("\r\n") == head.size() - 2 ? head : std::string();
  }
  if (head != "\r") return {};
  head += recv_exact(s, 15);
  if (head.size() != 16 || head.compare(0, 12, v2_signature) != 0) return {};
  const std::size_t length = static_cast<unsigned char>(head[14]) << 8 | static_cast<unsigned char>(head[15]);
  head += recv_exact(s, length);
  return head.size() == 16 + length ? head : std::string();
}

// A TCP target that reads each connection's PROXY header (kept for the test), then echoes the rest.
struct header_target {
  std::mutex mutex;
  std::vector<std::string> headers;
  target_server server{[this](int s) {
    auto header = read_header(s);
    {
      std::lock_guard lock(mutex);
      headers.push_back(std::move(header));
    }
    target_server::echo(s);
  }};

  std::uint16_t port() const { return server.port(); }
  int accepted() const { return server.accepted(); }
  std::string header(std::size_t i) {
    std::lock_guard lock(mutex);
    return i < headers.size() ? headers[i] : std::string("<none>");
  }
};

relay::forward_spec proxy_spec(std::uint16_t target_port, std::uint8_t version, const std::string& listen_host) {
  auto s = spec_for(1, target_port);
  s.listen_host = listen_host;
  s.proxy_protocol = version;
  return s;
}

std::vector<relay::ip_prefix> prefixes(std::initializer_list<const char*> texts) {
  std::vector<relay::ip_prefix> out;
  for (const auto* t : texts) out.push_back(std::get<relay::ip_prefix>(relay::parse_prefix(t)));
  return out;
}

// Sends `bytes` and half-closes; what comes back up to the end, and how it ended.
stream_end exchange(int s, const std::string& bytes) {
  send_all(s, bytes);
  ::shutdown(s, SHUT_WR);
  return read_to_end(s);
}

}  // namespace

TEST_CASE("TCP proxy_protocol v1 and v2 - the header is byte-exact for an IPv4 and an IPv6 client and comes before the payload",
          "[tcp]") {
  const auto options = each_datapath();
  const std::uint8_t version = GENERATE(1, 2);
  const auto [listen_host, source] = GENERATE(std::pair<std::string, std::string>{"127.0.0.1", "127.0.0.2"},
                                              std::pair<std::string, std::string>{"::1", "::1"});
  INFO("v" << int(version) << ", client " << source);
  header_target target;
  relay::engine e(options);
  const auto s = start(e, proxy_spec(target.port(), version, listen_host));
  auto c = connect_from(s.listen_port, source, listen_host);
  REQUIRE(c);
  const auto expected = version == 1 ? v1_header(local_of(c.get()), peer_of(c.get()))
                                     : v2_header(local_of(c.get()), peer_of(c.get()));
  const auto payload = random_bytes(200'000, 17);
  const auto back = exchange(c.get(), payload);
  CHECK(target.header(0) == expected);
  CHECK(back.error == 0);
  CHECK(back.bytes.size() == payload.size());
  CHECK(digest(back.bytes) == digest(payload));  // the header went to the target only, before every byte
  CHECK(e.status(1).stats.bytes_down == payload.size());
}

TEST_CASE("TCP proxy_protocol - a target that resets at once is passed on to the client as a reset", "[tcp]") {
  const auto options = each_datapath();
  target_server target([](int s) {  // closed with a reset when the handler returns, header unread
    const linger abort{1, 0};
    ::setsockopt(s, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  });
  relay::engine e(options);
  const auto s = start(e, proxy_spec(target.port(), GENERATE(1, 2), "127.0.0.1"));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  const auto end = read_to_end(c.get());
  CHECK(end.bytes.empty());
  CHECK(end.error == ECONNRESET);
}

TEST_CASE("UDP proxy_protocol v2 - each datagram to the target carries a DGRAM header, replies are untouched", "[udp]") {
  std::uint16_t target_port = 0;
  socklen_t len;
  auto target_address = make_addr("127.0.0.1", 0, len);
  fd target(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  set_timeouts(target.get());
  REQUIRE(::bind(target.get(), reinterpret_cast<sockaddr*>(&target_address), len) == 0);
  target_port = local_of(target.get()).port;

  relay::engine e(fast_options());
  auto spec = proxy_spec(target_port, 2, "127.0.0.1");
  spec.protocol = relay::protocol::udp;
  spec = start(e, spec);

  socklen_t to_len, from_len;
  auto to = make_addr("127.0.0.1", spec.listen_port, to_len);
  auto from = make_addr("127.0.0.2", 0, from_len);
  fd c(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  set_timeouts(c.get());
  REQUIRE(::bind(c.get(), reinterpret_cast<sockaddr*>(&from), from_len) == 0);
  REQUIRE(::connect(c.get(), reinterpret_cast<sockaddr*>(&to), to_len) == 0);
  const auto header = v2_header(local_of(c.get()), peer_of(c.get()), true);
  REQUIRE(header.size() == 28);

  const std::string first = "first datagram", second(1400, 's');
  REQUIRE(::send(c.get(), first.data(), first.size(), 0) == static_cast<ssize_t>(first.size()));
  REQUIRE(::send(c.get(), second.data(), second.size(), 0) == static_cast<ssize_t>(second.size()));
  sockaddr_storage session{};
  socklen_t session_len = sizeof session;
  std::string got(65536, '\0');
  for (const auto* sent : {&first, &second}) {
    const auto n = ::recvfrom(target.get(), got.data(), got.size(), 0, reinterpret_cast<sockaddr*>(&session), &session_len);
    REQUIRE(n > 0);
    CHECK(got.substr(0, static_cast<std::size_t>(n)) == header + *sent);
  }
  const std::string reply = "reply, as the target sent it";
  REQUIRE(::sendto(target.get(), reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&session), session_len) > 0);
  CHECK(recv_datagram(c.get()) == reply);

  // The largest datagram has no room left for a header: it is dropped and counted, never cut.
  const std::string largest(65507, 'l');
  const auto dropped = e.status(1).stats.datagrams_dropped;
  REQUIRE(::send(c.get(), largest.data(), largest.size(), 0) == static_cast<ssize_t>(largest.size()));
  CHECK(eventually([&] { return e.status(1).stats.datagrams_dropped == dropped + 1; }));
  CHECK(e.status(1).stats.datagrams_up == 2);
}

TEST_CASE("TCP accept_proxy_protocol - v1 and v2 headers name the client for the allow list and the header sent on",
          "[tcp]") {
  const auto options = each_datapath();
  const std::uint8_t sent_version = GENERATE(1, 2);
  header_target target;
  relay::engine e(options);
  auto spec = proxy_spec(target.port(), sent_version, "127.0.0.1");
  spec.accept_proxy_protocol = true;
  spec.allow = prefixes({"192.0.2.0/24", "2001:db8::/32", "127.0.0.3"});
  spec = start(e, spec);
  const auto expect = [&](const endpoint& source, const endpoint& destination) {
    return sent_version == 1 ? v1_header(source, destination) : v2_header(source, destination);
  };
  const std::string payload = "the client's first bytes, right after its header";

  // v1 from an allowed carried address, with the payload in the same segment as the header.
  {
    auto c = connect_to(spec.listen_port);
    REQUIRE(c);
    const auto back = exchange(c.get(), "PROXY TCP4 192.0.2.10 198.51.100.1 40000 443\r\n" + payload);
    CHECK(back.bytes == payload);
    CHECK(target.header(0) == expect({"192.0.2.10", 40000}, {"198.51.100.1", 443}));
  }
  // v2 with an unknown TLV after the addresses (skipped), from an allowed IPv6 address.
  {
    auto header = v2_header({"2001:db8::7", 5555}, {"2001:db8::1", 80});
    header[15] = static_cast<char>(header[15] + 5);
    header += std::string("\xEE\x00\x02zz", 5);
    auto c = connect_to(spec.listen_port);
    REQUIRE(c);
    const auto back = exchange(c.get(), header + payload);
    CHECK(back.bytes == payload);
    CHECK(target.header(1) == expect({"2001:db8::7", 5555}, {"2001:db8::1", 80}));
  }
  // v2 LOCAL: the connection's own addresses, which the allow list admits for 127.0.0.3.
  {
    auto c = connect_from(spec.listen_port, "127.0.0.3");
    REQUIRE(c);
    const auto real = expect(local_of(c.get()), peer_of(c.get()));
    const auto back = exchange(c.get(), v2_signature + std::string("\x20\x00\x00\x00", 4) + payload);
    CHECK(back.bytes == payload);
    CHECK(target.header(2) == real);
  }
  CHECK(target.accepted() == 3);
  CHECK(e.status(1).stats.refused_acl == 0);
  // Carried addresses the list does not admit, by v1 and by v2 (an IPv4-mapped one matches as IPv4):
  // reset, counted in refused_acl, and no connection to the target. The real client, 127.0.0.1, is
  // not what is judged.
  for (const auto& header : {std::string("PROXY TCP4 203.0.113.5 198.51.100.1 40000 443\r\n"),
                             v2_header({"::ffff:203.0.113.6", 1}, {"::1", 2})}) {
    auto c = connect_to(spec.listen_port);
    REQUIRE(c);
    const auto back = exchange(c.get(), header + payload);
    CHECK(back.bytes.empty());
    CHECK(back.error == ECONNRESET);
  }
  CHECK(e.status(1).stats.refused_acl == 2);
  CHECK(e.status(1).stats.proxy_errors == 0);
  CHECK(target.accepted() == 3);
}

namespace {

// A forward (id 1) that accepts PROXY headers, in front of an echo that counts what reaches it.
struct accepting_forward {
  target_server target{target_server::echo};
  relay::engine engine{fast_options()};
  std::uint16_t port = 0;

  accepting_forward() {
    auto spec = spec_for(1, target.port());
    spec.accept_proxy_protocol = true;
    port = start(engine, spec).listen_port;
  }
  relay::stats_snapshot stats() { return engine.status(1).stats; }
};

}  // namespace

// Bytes the relay has not read yet on its end (local port `relay_port`) of a loopback TCP connection
// from `client_port`, from the kernel's table: -1 while that end has no socket of its own yet.
long unread_at(std::uint16_t relay_port, std::uint16_t client_port) {
  std::ifstream table("/proc/self/net/tcp");
  std::string line;
  std::getline(table, line);  // the column names
  while (std::getline(table, line)) {
    unsigned local_address, local_port, remote_address, remote_port, state;
    unsigned long tx, rx;
    if (std::sscanf(line.c_str(), " %*d: %8X:%4X %8X:%4X %2X %8lX:%8lX", &local_address, &local_port, &remote_address,
                    &remote_port, &state, &tx, &rx) == 7 &&
        local_port == relay_port && remote_port == client_port) {
      return static_cast<long>(rx);
    }
  }
  return -1;
}

TEST_CASE("TCP accept_proxy_protocol - a change of the lists reaches a client still sending its header", "[tcp]") {
  target_server target(target_server::echo);
  relay::engine e(fast_options());
  auto spec = spec_for(1, target.port());
  spec.accept_proxy_protocol = true;
  spec.allow = prefixes({"192.0.2.0/24"});
  spec = start(e, spec);
  auto c = connect_to(spec.listen_port);
  REQUIRE(c);
  REQUIRE(send_all(c.get(), std::string("PROXY TCP4 192.0.2.10 198.51.100.1 40000 443")));
  // The relay has accepted it and read what came of its header: it is in its header phase.
  REQUIRE(eventually([&] { return unread_at(spec.listen_port, local_of(c.get()).port) == 0; }));
  spec.allow = prefixes({"203.0.113.0/24"});
  spec = start(e, spec);  // as a PATCH does
  const auto back = exchange(c.get(), "\r\npayload");
  CHECK(back.bytes.empty());
  CHECK(back.error == ECONNRESET);
  CHECK(e.status(1).stats.refused_acl == 1);
  CHECK(target.accepted() == 0);
}

TEST_CASE("TCP accept_proxy_protocol - clients still sending their header count in max_connections", "[tcp]") {
  target_server target(target_server::echo);
  relay::engine e(fast_options());
  auto spec = spec_for(1, target.port());
  spec.accept_proxy_protocol = true;
  spec.max_connections = 2;
  spec.max_connections_per_source = 1;
  spec = start(e, spec);
  // Two silent clients hold both slots: a third is reset at once, counted as refused by a limit,
  // not held until its header times out (which would count a proxy error 3 s later).
  auto a = connect_to(spec.listen_port);
  auto b = connect_to(spec.listen_port);
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(eventually([&] { return unread_at(spec.listen_port, local_of(b.get()).port) == 0; }));
  auto c = connect_to(spec.listen_port);
  REQUIRE(c);
  const auto refused = read_to_end(c.get());
  CHECK(refused.bytes.empty());
  CHECK(refused.error == ECONNRESET);
  CHECK(e.status(1).stats.refused_limit == 1);
  CHECK(e.status(1).stats.proxy_errors == 0);
  // Once named, the per-source limit judges the carried client: a's header names 192.0.2.10 and is
  // relayed (and stays open); b's names it too and is over max_connections_per_source.
  REQUIRE(send_all(a.get(), std::string("PROXY TCP4 192.0.2.10 198.51.100.1 40000 443\r\nping")));
  CHECK(recv_exact(a.get(), 4) == "ping");
  const auto second = exchange(b.get(), "PROXY TCP4 192.0.2.10 198.51.100.1 40001 443\r\nping");
  CHECK(second.bytes.empty());
  CHECK(second.error == ECONNRESET);
  CHECK(e.status(1).stats.refused_limit == 2);
  CHECK(e.status(1).stats.connections_total == 1);
  // b's slot is free again: a client from another address gets in.
  auto d = connect_to(spec.listen_port);
  REQUIRE(d);
  CHECK(exchange(d.get(), "PROXY TCP4 192.0.2.11 198.51.100.1 40002 443\r\npong").bytes == "pong");
}

TEST_CASE("TCP accept_proxy_protocol - malformed partial oversized and missing headers are refused and counted", "[tcp]") {
  accepting_forward f;
  const std::vector<std::pair<const char*, std::string>> bad{
      {"no header", "GET / HTTP/1.1\r\n\r\n"},
      {"malformed v1", "PROXY TCP4 192.0.2.300 198.51.100.1 1 2\r\npayload"},
      {"partial v1", "PROXY TCP4 192.0.2.1 198.51.100.1"},
      {"partial v2", v2_header({"192.0.2.1", 1}, {"192.0.2.2", 2}).substr(0, 20)},
      {"oversized v1", "PROXY UNKNOWN " + std::string(120, 'x') + "\r\n"},
      {"oversized v2", v2_signature + std::string("\x21\x11\x10\x00", 4) + std::string(4096, '\0')},
      {"v2 DGRAM on TCP", v2_header({"192.0.2.1", 1}, {"192.0.2.2", 2}, true) + "payload"},
  };
  std::uint64_t errors = 0;
  for (const auto& [what, bytes] : bad) {
    INFO(what);
    auto c = connect_to(f.port);
    REQUIRE(c);
    const auto back = exchange(c.get(), bytes);
    CHECK(back.bytes.empty());
    CHECK(back.error == ECONNRESET);
    CHECK(f.stats().proxy_errors == ++errors);
  }
  CHECK(f.target.accepted() == 0);
  CHECK(f.stats().connections_total == 0);
  CHECK(f.stats().connections_active == 0);
}

TEST_CASE("TCP accept_proxy_protocol - a silent client and one sending its header a byte at a time are cut 3 s after the accept",
          "[tcp]") {
  accepting_forward f;
  const bool trickle = GENERATE(false, true);
  INFO((trickle ? "a byte every 300 ms" : "silent"));
  auto c = connect_to(f.port);
  REQUIRE(c);
  const auto start_time = std::chrono::steady_clock::now();
  // A slowloris: a valid line, a byte every 300 ms (it would take 14 s). The pace is the attacker's,
  // not a wait for the relay: what the test waits on is the connection's end.
  std::atomic<bool> done{false};
  std::atomic<int> send_error{0};
  std::thread slow([&] {
    const std::string line = "PROXY TCP4 192.0.2.1 198.51.100.1 40000 443\r\n";
    for (char ch : line) {
      if (!trickle || done) return;
      if (::send(c.get(), &ch, 1, MSG_NOSIGNAL) != 1) {
        send_error = errno;
        return;
      }
      std::this_thread::sleep_for(300ms);
    }
  });
  const auto end = read_to_end(c.get());
  const auto elapsed = std::chrono::steady_clock::now() - start_time;
  done = true;
  slow.join();
  CHECK(end.bytes.empty());
  // The reset is reported once per socket: to the reader, or to the trickling sender when its send
  // comes first (the reader then sees an end of stream).
  CHECK((end.error == ECONNRESET || (end.error == 0 && send_error == ECONNRESET)));
  CHECK(elapsed >= 2900ms);
  CHECK(elapsed < 10s);
  CHECK(f.stats().proxy_errors == 1);
  CHECK(f.target.accepted() == 0);
}

namespace {

// HAProxy from Debian (scripts/deps.sh installs it), in the foreground, serving HTTP on a listening
// socket the test made (the kernel's port, handed over as descriptor 3: `bind fd@3`) with
// `accept-proxy`: it reads portrelay's header and answers every request with the client address and
// port it took from it.
class haproxy_peer {
 public:
  haproxy_peer() {
    listener_ = listen_on(port_);
    config_ = dir_.path / "haproxy.cfg";
    std::ofstream(config_) << "global\n"
                              "  maxconn 100\n"
                              "defaults\n"
                              "  mode http\n"
                              "  timeout connect 30s\n"
                              "  timeout client 30s\n"
                              "  timeout server 30s\n"
                              "frontend seen\n"
                              "  bind fd@3 accept-proxy\n"
                              "  http-request return status 200 content-type text/plain lf-string \"%[src] %[src_port]\"\n";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, listener_.get(), 3);
    posix_spawn_file_actions_addclosefrom_np(&fa, 4);
    const std::string cfg = config_.string();
    std::vector<char*> argv{const_cast<char*>("/usr/sbin/haproxy"), const_cast<char*>("-db"), const_cast<char*>("-f"),
                            const_cast<char*>(cfg.c_str()), nullptr};
    char* envp[] = {nullptr};
    const int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("cannot start /usr/sbin/haproxy (scripts/deps.sh installs it)");
  }
  ~haproxy_peer() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  std::uint16_t port() const { return port_; }

 private:
  temp_dir dir_;
  std::filesystem::path config_;
  std::uint16_t port_ = 0;
  fd listener_;
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("TCP proxy_protocol v1 and v2 - HAProxy with accept-proxy sees the client's address and port", "[tcp]") {
  const std::uint8_t version = GENERATE(1, 2);
  INFO("v" << int(version));
  haproxy_peer haproxy;
  relay::engine e(fast_options());
  const auto s = start(e, proxy_spec(haproxy.port(), version, "127.0.0.1"));
  auto c = connect_from(s.listen_port, "127.0.0.2");
  REQUIRE(c);
  const auto client = local_of(c.get());
  REQUIRE(send_all(c.get(), std::string("GET / HTTP/1.1\r\nHost: seen\r\nConnection: close\r\n\r\n")));
  const auto answer = recv_all(c.get());
  INFO(answer);
  CHECK(answer.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(answer.substr(answer.find("\r\n\r\n") + 4) == "127.0.0.2 " + std::to_string(client.port));
}
