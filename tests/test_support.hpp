// test_support: loopback sockets with timeouts, scripted target servers and bounded waiting for tests.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace test {

using namespace std::chrono_literals;

// Every blocking step in a test is bounded by this. The bounds only end a test that has already
// failed: they are far above what the slowest build (TSan on a loaded 2-core machine) needs, so no
// verdict depends on the machine's speed.
constexpr auto io_timeout = 30s;

// Polls `pred` until it holds or `limit` passes; the answer is the last evaluation.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::milliseconds(30000)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

// An owned socket descriptor with send/receive timeouts.
class fd {
 public:
  fd() = default;
  explicit fd(int v) : v_(v) {}
  fd(fd&& o) noexcept : v_(o.v_) { o.v_ = -1; }
  fd& operator=(fd&& o) noexcept {
    if (this != &o) {
      reset();
      v_ = o.v_;
      o.v_ = -1;
    }
    return *this;
  }
  ~fd() { reset(); }
  int get() const { return v_; }
  explicit operator bool() const { return v_ >= 0; }
  void reset() {
    if (v_ >= 0) ::close(v_);
    v_ = -1;
  }

 private:
  int v_ = -1;
};

inline void set_timeouts(int s) {
  timeval tv{static_cast<time_t>(std::chrono::seconds(io_timeout).count()), 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

inline sockaddr_storage make_addr(const std::string& host, std::uint16_t port, socklen_t& len) {
  sockaddr_storage ss{};
  if (host.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, host.c_str(), &a->sin6_addr);
    len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, host.c_str(), &a->sin_addr);
    len = sizeof(sockaddr_in);
  }
  return ss;
}

// Connects or returns an empty fd (refused, or nothing listening).
inline fd connect_to(std::uint16_t port, const std::string& host = "127.0.0.1") {
  socklen_t len;
  auto ss = make_addr(host, port, len);
  fd s(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  set_timeouts(s.get());
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return fd();
  return s;
}

// Connects from a given local address (a source other than 127.0.0.1, for per-source limits), or
// returns an empty fd.
inline fd connect_from(std::uint16_t port, const std::string& source, const std::string& host = "127.0.0.1") {
  socklen_t len, source_len;
  auto ss = make_addr(host, port, len);
  auto from = make_addr(source, 0, source_len);
  fd s(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  set_timeouts(s.get());
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&from), source_len) != 0 ||
      ::connect(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return fd();
  }
  return s;
}

// A listening socket on a kernel-chosen port (or `port`), with the port it got.
inline fd listen_on(std::uint16_t& port, const std::string& host = "127.0.0.1", int backlog = 128) {
  socklen_t len;
  auto ss = make_addr(host, port, len);
  fd s(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int yes = 1;
  setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(s.get(), backlog) != 0) {
    throw std::runtime_error("test listener bind failed");
  }
  getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return s;
}

// A port free for TCP and UDP on every address, for a test that must name a port before anything
// listens on it (or a target where nothing listens). It is drawn from below the kernel's ephemeral
// range, which no port-0 bind and no outgoing connection of a parallel test ever takes, so the
// window in which another test could take it is only that of another test drawing the same one.
inline std::uint16_t free_port() {
  int low = 32768, high = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low >> high;
  static std::mt19937 pick(std::random_device{}());
  std::uniform_int_distribution<int> in(std::max(1024, low - 12000), std::max(1025, low - 1));
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const auto port = static_cast<std::uint16_t>(in(pick));
    bool free = true;
    for (int type : {SOCK_STREAM, SOCK_DGRAM}) {
      fd s(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
      socklen_t len;
      auto any = make_addr("0.0.0.0", port, len);
      free = free && ::bind(s.get(), reinterpret_cast<sockaddr*>(&any), len) == 0;
    }
    if (free) return port;
  }
  throw std::runtime_error("no free port below the ephemeral range");
}

// The first of `n` consecutive ports free for TCP and UDP, drawn as free_port() draws one.
inline std::uint16_t free_ports(std::uint16_t n) {
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const auto first = free_port();
    bool free = first + n - 1 <= 65535;
    for (std::uint16_t i = 1; free && i < n; ++i) {
      for (int type : {SOCK_STREAM, SOCK_DGRAM}) {
        fd s(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
        socklen_t len;
        auto any = make_addr("0.0.0.0", static_cast<std::uint16_t>(first + i), len);
        free = free && ::bind(s.get(), reinterpret_cast<sockaddr*>(&any), len) == 0;
      }
    }
    if (free) return first;
  }
  throw std::runtime_error("no free range of ports below the ephemeral range");
}

inline bool send_all(int s, const void* data, std::size_t n) {
  auto* p = static_cast<const char*>(data);
  while (n > 0) {
    auto w = ::send(s, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}
inline bool send_all(int s, const std::string& text) { return send_all(s, text.data(), text.size()); }

// Reads exactly n bytes, or fewer when the peer closes or the timeout passes.
inline std::string recv_exact(int s, std::size_t n) {
  std::string out;
  char buf[65536];
  while (out.size() < n) {
    auto r = ::recv(s, buf, std::min(sizeof buf, n - out.size()), 0);
    if (r <= 0) break;
    out.append(buf, static_cast<std::size_t>(r));
  }
  return out;
}

// Reads until EOF (or error/timeout); `eof` tells which.
inline std::string recv_all(int s, bool* eof = nullptr) {
  std::string out;
  char buf[65536];
  for (;;) {
    auto r = ::recv(s, buf, sizeof buf, 0);
    if (r <= 0) {
      if (eof) *eof = r == 0;
      return out;
    }
    out.append(buf, static_cast<std::size_t>(r));
  }
}

// Reads one HTTP/1.1 answer (head, and a body of its Content-Length); empty when the peer ends
// the connection first.
inline std::string recv_http_answer(int s) {
  std::string out;
  char c;
  while (out.find("\r\n\r\n") == std::string::npos) {
    if (::recv(s, &c, 1, 0) != 1) return {};
    out += c;
  }
  std::string lower = out;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  const auto at = lower.find("\r\ncontent-length:");
  if (at == std::string::npos) return out;
  const auto length = std::stoull(out.substr(at + 17));
  const auto body = recv_exact(s, length);
  return body.size() == length ? out + body : std::string();
}

// True when the peer ended the connection (EOF or reset) within the timeout.
inline bool closed_by_peer(int s) {
  char c;
  auto r = ::recv(s, &c, 1, 0);
  return r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE));
}

inline std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    auto v = rng();
    for (std::size_t k = 0; k < 8 && i + k < n; ++k) s[i + k] = static_cast<char>(v >> (8 * k));
  }
  return s;
}

inline std::uint64_t digest(const std::string& s) {  // FNV-1a: enough to tell any corruption apart
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Connects, sends `text`, half-closes and reads the reply to the end; "<refused>" when nothing listens.
inline std::string echo_once(std::uint16_t port, const std::string& text) {
  auto c = connect_to(port);
  if (!c) return "<refused>";
  send_all(c.get(), text);
  ::shutdown(c.get(), SHUT_WR);
  return recv_all(c.get());
}

// A directory of its own under /tmp, removed with everything in it.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    char tmpl[] = "/tmp/portrelay-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
};

// A target server on 127.0.0.1 (on `port`, or one the kernel picks): each connection runs `handler`
// on its own thread.
class target_server {
 public:
  using handler = std::function<void(int fd)>;
  explicit target_server(handler h, const std::string& host = "127.0.0.1", std::uint16_t port = 0)
      : handler_(std::move(h)), port_(port) {
    listener_ = listen_on(port_, host, SOMAXCONN);  // a burst of connects must not be dropped
    thread_ = std::thread([this] { run(); });
  }
  ~target_server() {
    stop_ = true;
    thread_.join();
    for (auto& t : workers_) t.join();
  }
  std::uint16_t port() const { return port_; }
  int accepted() const { return accepted_; }

  // Echoes until EOF, then closes its write side: a request/reply that needs half-close.
  static void echo(int s) {
    char buf[65536];
    for (;;) {
      auto r = ::recv(s, buf, sizeof buf, 0);
      if (r <= 0) break;
      if (!send_all(s, buf, static_cast<std::size_t>(r))) return;
    }
    ::shutdown(s, SHUT_WR);
  }

 private:
  void run() {
    while (!stop_) {
      pollfd p{listener_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      ++accepted_;
      set_timeouts(c);
      workers_.emplace_back([this, c] {
        fd owned(c);
        handler_(c);
      });
    }
  }

  handler handler_;
  std::uint16_t port_ = 0;
  fd listener_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread thread_;
  std::vector<std::thread> workers_;
};

// A socket bound to host:port (for TCP also listening), or an empty fd when the port is taken.
inline fd bound_on(const std::string& host, std::uint16_t port, bool udp) {
  socklen_t len;
  auto ss = make_addr(host, port, len);
  fd s(::socket(ss.ss_family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0));
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 || (!udp && ::listen(s.get(), 64) != 0)) return fd();
  return s;
}

// Bound sockets that answer on one thread: each datagram gets its socket's answer back; each TCP
// connection hears the answer and is closed, or, with `echo`, then gets back what it sends until
// EOF (on a thread of its own). With `tell_peer`, the answer is instead the address the client came
// from ("127.0.0.2").
class answering_sockets {
 public:
  struct socket_at {
    fd s;
    bool udp;
    std::string answer;
  };
  answering_sockets(std::vector<socket_at> sockets, bool echo, bool tell_peer = false)
      : sockets_(std::move(sockets)), echo_(echo), tell_peer_(tell_peer) {
    thread_ = std::thread([this] { run(); });
  }
  ~answering_sockets() {
    stop_ = true;
    thread_.join();
    for (auto& t : connections_) t.join();
  }

 private:
  void run() {
    std::vector<pollfd> polled;
    for (const auto& s : sockets_) polled.push_back({s.s.get(), POLLIN, 0});
    char buf[2048];
    while (!stop_) {
      if (::poll(polled.data(), polled.size(), 20) <= 0) continue;
      for (std::size_t i = 0; i < polled.size(); ++i) {
        if (!(polled[i].revents & POLLIN)) continue;
        const auto& s = sockets_[i];
        if (s.udp) {
          sockaddr_storage from{};
          socklen_t len = sizeof from;
          if (::recvfrom(s.s.get(), buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len) >= 0) {
            const auto answer = tell_peer_ ? address_of(from) : s.answer;
            ::sendto(s.s.get(), answer.data(), answer.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
          }
          continue;
        }
        sockaddr_storage from{};
        socklen_t len = sizeof from;
        fd c(::accept4(s.s.get(), reinterpret_cast<sockaddr*>(&from), &len, SOCK_CLOEXEC | (echo_ ? 0 : SOCK_NONBLOCK)));
        if (c.get() < 0) continue;
        const auto answer = tell_peer_ ? address_of(from) : s.answer;
        if (!echo_) {
          send_all(c.get(), answer);
          continue;
        }
        set_timeouts(c.get());
        connections_.emplace_back([c = std::make_shared<fd>(std::move(c)), answer] {
          if (send_all(c->get(), answer)) target_server::echo(c->get());
        });
      }
    }
  }

  static std::string address_of(const sockaddr_storage& a) {
    char text[INET6_ADDRSTRLEN] = "";
    const void* bytes = a.ss_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6&>(a).sin6_addr)
                                                : static_cast<const void*>(&reinterpret_cast<const sockaddr_in&>(a).sin_addr);
    ::inet_ntop(a.ss_family, bytes, text, sizeof text);
    return text;
  }

  std::vector<socket_at> sockets_;
  const bool echo_;
  const bool tell_peer_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<std::thread> connections_;
};

}  // namespace test

namespace test {

// A UDP socket "connected" to 127.0.0.1:port (or [::1]), so it has its own source port.
inline fd udp_client(std::uint16_t port, const std::string& host = "127.0.0.1") {
  socklen_t len;
  auto ss = make_addr(host, port, len);
  fd s(::socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  set_timeouts(s.get());
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) throw std::runtime_error("udp connect");
  return s;
}

// One datagram, or "" after the receive timeout.
inline std::string recv_datagram(int s, std::chrono::milliseconds timeout = std::chrono::seconds(io_timeout)) {
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string buf(65536, '\0');
  auto n = ::recv(s, buf.data(), buf.size(), 0);
  buf.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return buf;
}

inline std::size_t open_fds() {
  return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                                                std::filesystem::directory_iterator{}));
}

// A UDP target on loopback: each datagram goes back unchanged to the address it came from, and the
// distinct source ports it saw are counted (one per relay session). On `port`, or one the kernel
// picks (from the ephemeral range, which any other process's socket may take next).
class udp_echo_server {
 public:
  explicit udp_echo_server(const std::string& host = "127.0.0.1", std::uint16_t port = 0) {
    socklen_t len;
    auto ss = make_addr(host, port, len);
    sock_ = fd(::socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    int big = 4 << 20;
    setsockopt(sock_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    if (::bind(sock_.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) throw std::runtime_error("udp bind");
    getsockname(sock_.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~udp_echo_server() {
    stop_ = true;
    thread_.join();
  }
  std::uint16_t port() const { return port_; }
  std::size_t distinct_peers() {
    std::lock_guard lock(mutex_);
    return peers_.size();
  }

 private:
  void run() {
    std::string buf(65536, '\0');
    while (!stop_) {
      pollfd p{sock_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      sockaddr_storage from{};
      socklen_t len = sizeof from;
      auto n = ::recvfrom(sock_.get(), buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) continue;
      const auto peer_port = ntohs(from.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&from)->sin6_port
                                                              : reinterpret_cast<sockaddr_in*>(&from)->sin_port);
      {
        std::lock_guard lock(mutex_);
        peers_.insert(peer_port);
      }
      ::sendto(sock_.get(), buf.data(), static_cast<std::size_t>(n), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  }
  fd sock_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::set<std::uint16_t> peers_;
  std::thread thread_;
};

}  // namespace test
