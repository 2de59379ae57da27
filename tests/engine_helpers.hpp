// engine_helpers: driving the engine in tests the way the controller does, and the options and
// sockets the engine tests share.
#pragma once

#include "relay/engine.hpp"
#include "spec_helpers.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <string>
#include <vector>

namespace test {

// prepare + apply; returns the spec with its bound port.
inline relay::forward_spec start(relay::engine& e, relay::forward_spec s) {
  auto p = e.prepare(s);
  REQUIRE(p);
  s.listen_port = p.value().port;
  e.apply(s, std::move(p.value()));
  return s;
}

// Timeouts are far above what any real work here takes, so that a slow machine (or a sanitizer
// build) never turns a busy peer into a connect error or a live transfer into an idle one. Only the
// tests of a timeout itself shorten it, and their peers are idle for real.
inline relay::engine_options fast_options(std::chrono::milliseconds connect_timeout = 30s,
                                          relay::datapath path = relay::datapath::splice) {
  relay::engine_options o;
  o.workers = 2;
  o.connect_timeout = connect_timeout;
  o.half_close_timeout = 60s;
  o.datapath = path;
  return o;
}

// The tests of what must hold for every byte run on every TCP datapath: forced splice, forced
// copy, and the automatic switching between them.
inline relay::engine_options each_datapath() {
  const auto path = GENERATE(relay::datapath::splice, relay::datapath::copy, relay::datapath::automatic);
  UNSCOPED_INFO("datapath: " << (path == relay::datapath::splice ? "splice"
                                 : path == relay::datapath::copy ? "copy" : "automatic"));
  return fast_options(30s, path);
}

inline relay::forward_spec spec_for(std::int64_t id, std::uint16_t target_port, std::uint16_t listen_port = 0) {
  relay::forward_spec s;
  s.id = id;
  s.listen_host = "127.0.0.1";
  s.listen_port = listen_port;
  test::only_target(s).host = "127.0.0.1";
  test::only_target(s).port = target_port;
  return s;
}

// The next connection on `listener`, or an empty fd when none comes within the timeout.
inline fd accept_within(const fd& listener) {
  pollfd p{listener.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(io_timeout).count())) != 1) return fd();
  fd s(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (s) set_timeouts(s.get());
  return s;
}

// A listener whose accept queue is full: it drops further SYNs, so connecting to it hangs.
struct unanswering_listener {
  std::uint16_t port = 0;
  fd listener = listen_on(port, "127.0.0.1", 0);
  std::vector<fd> fillers;
  unanswering_listener() {
    for (int i = 0; i < 4; ++i) {
      socklen_t len;
      auto ss = make_addr("127.0.0.1", port, len);
      fd f(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ::connect(f.get(), reinterpret_cast<sockaddr*>(&ss), len);
      fillers.push_back(std::move(f));
    }
  }
};

// Gives up on the connection with a reset (SO_LINGER of zero), as a client that times out does.
inline void reset(fd& s) {
  const linger abort{1, 0};
  setsockopt(s.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  s.reset();
}

// Bytes sent on `s` that its peer has not acknowledged yet (SIOCOUTQ).
inline int unacknowledged(int s) {
  int queued = -1;
  ::ioctl(s, SIOCOUTQ, &queued);
  return queued;
}

// What a reader gets: the bytes, then how the stream ended (0 for EOF, else the errno: ECONNRESET
// for a reset, EAGAIN when the receive timeout passed first).
struct stream_end {
  std::string bytes;
  int error = 0;
};

inline stream_end read_to_end(int s) {
  stream_end end;
  char buf[65536];
  for (;;) {
    const auto r = ::recv(s, buf, sizeof buf, 0);
    if (r <= 0) {
      end.error = r == 0 ? 0 : errno;
      return end;
    }
    end.bytes.append(buf, static_cast<std::size_t>(r));
  }
}

}  // namespace test
