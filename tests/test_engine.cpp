// Engine tests over real loopback sockets: relaying, half-close, lifecycle, PATCH, scale.
#include "engine_helpers.hpp"
#include "hosts.hpp"
#include "relay/engine.hpp"
#include "relay/error_wake.hpp"
#include "relay/tcp_session.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

using namespace test;

namespace {

// Sends `text` and reads as many bytes back, leaving the connection open.
std::string exchange(int s, const std::string& text) {
  send_all(s, text);
  return recv_exact(s, text.size());
}

// Sends until a send makes no progress for a second: the peer reads nothing, so every buffer on the
// way to it is full. (A slow relay may end this sooner; the caller then waits for it to stop moving.)
std::size_t fill_until_blocked(int s) {
  timeval tv{1, 0};
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const std::string chunk(64 * 1024, 'x');
  std::size_t sent = 0;
  while (sent < (256u << 20)) {
    const auto w = ::send(s, chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (w <= 0) break;
    sent += static_cast<std::size_t>(w);
  }
  return sent;
}

// True once `moved()` has stayed the same for about a second (2 ms polls): the relay is blocked.
template <class Counter>
bool stops_moving(Counter moved) {
  std::uint64_t seen = moved();
  int still = 0;
  return eventually([&] {
    const auto now = moved();
    still = now == seen ? still + 1 : 0;
    seen = now;
    return still >= 500;
  });
}

// Forward 1's `sender` fills every buffer up to `reader`, which reads nothing, until the relay waits
// only for `reader` to take bytes (`moved` stops); then `sender` resets. The relay must see that
// whatever it was waiting for, and pass it on once `reader` has taken nothing for
// `reset_delivery_stall`: not counted any more, and `reader` sees a reset after the bytes that were
// on their way.
template <class Counter>
void reset_while_stalled(relay::engine& engine, fd& sender, const fd& reader, Counter moved) {
  CHECK(fill_until_blocked(sender.get()) > 0);
  REQUIRE(stops_moving(moved));
  REQUIRE(engine.status(1).stats.connections_active == 1);
  reset(sender);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  INFO("the reset was acted on after " << took.count() << " ms");
  CHECK(took < io_timeout);
  CHECK(read_to_end(reader.get()).error == ECONNRESET);
}

}  // namespace

TEST_CASE("a forward relays bytes both ways and counts them") {
  target_server target(target_server::echo);
  relay::engine engine(each_datapath());
  auto s = start(engine, spec_for(1, target.port()));
  CHECK(s.listen_port != 0);
  CHECK(echo_once(s.listen_port, "hello through the relay") == "hello through the relay");
  REQUIRE(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  auto st = engine.status(1);
  CHECK(st.state == relay::forward_state::active);
  CHECK(st.stats.connections_total == 1);
  CHECK(st.stats.bytes_up == 23);
  CHECK(st.stats.bytes_down == 23);
  CHECK(st.stats.connect_errors == 0);
}

TEST_CASE("a forward listens only on its listen_host") {
  target_server target(target_server::echo);
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, target.port()));
  CHECK(echo_once(s.listen_port, "x") == "x");
  CHECK_FALSE(connect_to(s.listen_port, "127.0.0.2"));
}

TEST_CASE("32 MiB pass intact with half-close, and the counters are exact") {
  target_server target(target_server::echo);
  relay::engine engine(each_datapath());
  auto s = start(engine, spec_for(1, target.port()));
  const auto data = random_bytes(32 << 20, 42);
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  std::string back;
  bool eof = false;
  std::thread reader([&] { back = recv_all(c.get(), &eof); });
  CHECK(send_all(c.get(), data));
  ::shutdown(c.get(), SHUT_WR);  // the target replies in full only after it sees this EOF
  reader.join();
  CHECK(eof);
  CHECK(back.size() == data.size());
  CHECK(digest(back) == digest(data));
  REQUIRE(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  CHECK(engine.status(1).stats.bytes_up == data.size());
  CHECK(engine.status(1).stats.bytes_down == data.size());
}

TEST_CASE("half-close from the target: the client keeps sending after the reply ended") {
  std::atomic<std::size_t> received{0};
  target_server target([&](int fd) {
    send_all(fd, std::string("banner"));
    ::shutdown(fd, SHUT_WR);
    received = recv_all(fd).size();
  });
  relay::engine engine(each_datapath());
  auto s = start(engine, spec_for(1, target.port()));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  bool eof = false;
  CHECK(recv_all(c.get(), &eof) == "banner");
  CHECK(eof);
  const auto data = random_bytes(1 << 20, 7);
  CHECK(send_all(c.get(), data));
  ::shutdown(c.get(), SHUT_WR);
  CHECK(eventually([&] { return received == data.size(); }));
}

TEST_CASE("a slow reader holds back a fast sender: memory stays bounded") {
  // The target reads nothing until released. The relay may hold one small buffer per direction;
  // everything else must stay in kernel buffers, so the client's sends stop long before 64 MiB.
  std::atomic<bool> release{false};
  std::atomic<std::size_t> received{0};
  target_server target([&](int fd) {
    eventually([&] { return release.load(); });
    received = recv_all(fd).size();
  });
  relay::engine engine(each_datapath());
  auto s = start(engine, spec_for(1, target.port()));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  // A send that makes no progress for a second is blocked. A slow machine only ends the loop
  // sooner, which the verdicts below do not depend on.
  timeval tv{1, 0};
  setsockopt(c.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const std::string chunk(64 * 1024, 'x');
  std::size_t sent = 0;
  while (sent < (64u << 20)) {
    auto w = ::send(c.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (w <= 0) break;  // blocked: backpressure reached the client
    sent += static_cast<std::size_t>(w);
  }
  CHECK(sent < (64u << 20));
  // Held back, not lost: once the target reads, every byte sent arrives.
  release = true;
  ::shutdown(c.get(), SHUT_WR);
  CHECK(eventually([&] { return received.load() == sent; }));
  CHECK(engine.status(1).stats.bytes_up == sent);
}

TEST_CASE("a refused target closes the client promptly and counts a connect error") {
  const auto dead_port = free_port();
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, dead_port));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  CHECK(closed_by_peer(c.get()));
  CHECK(eventually([&] { return engine.status(1).stats.connect_errors == 1; }));
  CHECK(engine.status(1).stats.connections_active == 0);
}

TEST_CASE("a target that never answers the handshake times out") {
  unanswering_listener target;
  relay::engine engine(fast_options(300ms));
  auto s = start(engine, spec_for(1, target.port));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(closed_by_peer(c.get()));
  CHECK(std::chrono::steady_clock::now() - t0 < 20s);  // without the timeout: the kernel gives up after about 127 s
  CHECK(eventually([&] { return engine.status(1).stats.connect_errors == 1; }));
}

TEST_CASE("a half-closed connection that goes idle is closed") {
  std::atomic<bool> release{false};
  target_server target([&](int fd) {
    recv_all(fd);  // sees the client's EOF, then neither writes nor closes
    eventually([&] { return release.load(); });
  });
  auto options = each_datapath();
  options.half_close_timeout = 300ms;  // the target is idle for good: no work races this
  relay::engine engine(options);
  auto s = start(engine, spec_for(1, target.port()));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  ::shutdown(c.get(), SHUT_WR);
  CHECK(closed_by_peer(c.get()));
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  release = true;
}

TEST_CASE("a half-closed connection blocked on a slow reader is not idle") {
  // The target sends a large reply at once; the client reads none of it, so the reply waits in the
  // relay and in kernel buffers. Only then does the client half-close: from that moment the open
  // direction is blocked on a slow reader, for far longer than the half-close timeout, and all of
  // the reply must still arrive once the client reads.
  const auto reply = random_bytes(16 << 20, 9);
  target_server target([&](int fd) {
    // The whole reply in the target's send queue at once (root may exceed wmem_max): once the
    // client reads, only the kernel and the relay move it, never a target thread that a loaded
    // machine may not run for longer than the timeout (which would be idle for real).
    const int all = 2 * static_cast<int>(reply.size());
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &all, sizeof all) != 0) {
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &all, sizeof all);
    }
    send_all(fd, reply);
    recv_all(fd);
  });
  auto options = each_datapath();
  options.half_close_timeout = 200ms;
  relay::engine engine(options);
  auto s = start(engine, spec_for(1, target.port()));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  // The relay has moved bytes and then stopped moving them: the client's receive buffer is full
  // and the rest is pending in the relay.
  REQUIRE(eventually([&] { return engine.status(1).stats.bytes_down > 0; }));
  std::uint64_t seen = 0;
  int still = 0;
  REQUIRE(eventually([&] {
    const auto now = engine.status(1).stats.bytes_down;
    still = now == seen ? still + 1 : 0;
    seen = now;
    return still >= 500;  // about a second (2 ms polls) without progress
  }));
  CHECK(seen < reply.size());
  ::shutdown(c.get(), SHUT_WR);
  // Many timeouts pass. (On a slow machine fewer may pass, which only weakens this step.)
  std::this_thread::sleep_for(1s);
  CHECK(engine.status(1).stats.connections_active == 1);
  bool eof = false;
  const auto back = recv_all(c.get(), &eof);
  CHECK(eof);
  CHECK(back.size() == reply.size());
  CHECK(digest(back) == digest(reply));
}

TEST_CASE("a half-closed connection is not idle while the target has not taken what the client sent") {
  // The client sends a request and half-closes; the relay has passed it all on, but it waits in the
  // kernel's send queue towards a target that reads nothing yet (its receive buffer is small). The
  // connection must outlive many half-close timeouts and carry the target's late answer. (Once the
  // target has taken everything, the relay cannot tell a slow target from a gone one.)
  std::uint16_t port = 0;
  fd listener = listen_on(port);
  // A small receive buffer (the accepted socket inherits it), but not below the 64 KiB loopback
  // MSS: a window smaller than one segment is reopened only by zero-window probes, whose backoff
  // makes the transfer after the release take tens of seconds. The request is several windows
  // larger, and far below the relay's send buffer, which loopback sizes to about 1 MiB and more.
  const int small = 64 * 1024;
  setsockopt(listener.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  const auto request = random_bytes(512 * 1024, 5);
  std::atomic<bool> release{false};
  std::string received;
  std::thread target([&] {
    fd s(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!s) return;
    set_timeouts(s.get());
    eventually([&] { return release.load(); });
    // The answer first: once the target has read everything the connection is idle for real, and
    // the relay may rightly close it before a slow target gets round to answering.
    send_all(s.get(), std::string("done"));
    received = recv_all(s.get());
  });
  auto options = each_datapath();
  options.half_close_timeout = 200ms;
  relay::engine engine(options);
  auto st = start(engine, spec_for(1, port));
  auto c = connect_to(st.listen_port);
  REQUIRE(c);
  REQUIRE(send_all(c.get(), request));
  ::shutdown(c.get(), SHUT_WR);
  // Everything has left the relay (so nothing is pending in it), and the up direction is finished.
  REQUIRE(eventually([&] { return engine.status(1).stats.bytes_up == request.size(); }));
  // Many timeouts pass. (On a slow machine fewer may pass, which only weakens this step.)
  std::this_thread::sleep_for(1s);
  CHECK(engine.status(1).stats.connections_active == 1);
  release = true;
  bool eof = false;
  CHECK(recv_all(c.get(), &eof) == "done");
  CHECK(eof);
  target.join();
  CHECK(received == request);
}

TEST_CASE("a client's reset ends the connection while the relay waits on a target that reads nothing") {
  // The target accepts and never reads. The client fills every buffer up to it, so the relay is
  // waiting only for the target to take bytes and reads nothing from the client; then the client
  // gives up with a reset. The relay must notice that at once, not when the target next moves.
  std::uint16_t port = 0;
  fd listener = listen_on(port);
  const int small = 64 * 1024;  // at least one loopback segment: see the test above
  setsockopt(listener.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  relay::engine engine(each_datapath());
  auto st = start(engine, spec_for(1, port));
  auto c = connect_to(st.listen_port);
  REQUIRE(c);
  setsockopt(c.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  fd target = accept_within(listener);
  REQUIRE(target);
  reset_while_stalled(engine, c, target, [&] { return engine.status(1).stats.bytes_up; });
}

TEST_CASE("a target's reset ends the connection while the relay waits on a client that reads nothing") {
  // The mirror case: the client reads nothing, the target fills every buffer up to it, so the relay
  // waits only for the client to take bytes; then the target resets.
  std::uint16_t port = 0;
  fd listener = listen_on(port);
  relay::engine engine(each_datapath());
  auto st = start(engine, spec_for(1, port));
  auto c = connect_to(st.listen_port);
  REQUIRE(c);
  const int small = 64 * 1024;
  setsockopt(c.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  fd target = accept_within(listener);
  REQUIRE(target);
  setsockopt(target.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  reset_while_stalled(engine, target, c, [&] { return engine.status(1).stats.bytes_down; });
}

TEST_CASE("a client's reset after its EOF ends the connection while the target is silent") {
  // The client sends a request and half-closes; the target takes it all, sees the end and then
  // works on its answer for a long time. Nothing reads the client's socket any more, yet the
  // client's giving up must end the connection at once, not after the half-close timeout.
  std::atomic<bool> saw_end{false}, release{false};
  target_server target([&](int fd) {
    recv_all(fd);
    saw_end = true;
    // Longer than the test waits: the target's own end must not end the connection first.
    eventually([&] { return release.load(); }, 2 * io_timeout);
  });
  relay::engine engine(each_datapath());  // a half-close timeout of 60 s, beyond the waits below
  auto s = start(engine, spec_for(1, target.port()));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  REQUIRE(send_all(c.get(), std::string("request")));
  ::shutdown(c.get(), SHUT_WR);
  REQUIRE(eventually([&] { return saw_end.load(); }));
  reset(c);
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  release = true;
}

TEST_CASE("what wakes an error wait: a reset ends the connection - urgent data or an orderly end does not") {
  std::uint16_t port = 0;
  fd listener = listen_on(port);
  auto a = connect_to(port);
  REQUIRE(a);
  fd b = accept_within(listener);
  REQUIRE(b);
  auto shows = [&](short event) {
    return eventually([&] {
      pollfd p{b.get(), POLLPRI, 0};
      return ::poll(&p, 1, 0) == 1 && (p.revents & event) != 0;
    });
  };

  SECTION("a reset is the socket's pending error") {
    reset(a);
    REQUIRE(shows(POLLERR));
    const auto woke = relay::check_error_wake(b.get());
    CHECK(woke.error == asio::error::connection_reset);
    CHECK_FALSE(woke.wait_again);
  }
  SECTION("urgent data is dropped, the stream is untouched and the wait goes on") {
    REQUIRE(send_all(a.get(), std::string("ab")));
    REQUIRE(::send(a.get(), "!", 1, MSG_OOB) == 1);
    REQUIRE(send_all(a.get(), std::string("cd")));
    REQUIRE(shows(POLLPRI));
    const auto woke = relay::check_error_wake(b.get());
    CHECK_FALSE(woke.error);
    CHECK(woke.wait_again);  // no longer urgent: a new wait would not wake at once
    ::shutdown(a.get(), SHUT_WR);
    CHECK(recv_all(b.get()) == "abcd");
  }
  SECTION("an orderly end both ways: the unread bytes stay, and there is nothing left to wait for") {
    REQUIRE(send_all(a.get(), std::string("tail")));
    ::shutdown(a.get(), SHUT_WR);
    ::shutdown(b.get(), SHUT_WR);
    REQUIRE(shows(POLLHUP));
    const auto woke = relay::check_error_wake(b.get());
    CHECK_FALSE(woke.error);
    CHECK_FALSE(woke.wait_again);  // EPOLLHUP stays: a new wait would wake at once, again and again
    CHECK(recv_all(b.get()) == "tail");
  }
  SECTION("nothing to see: the wait goes on") {
    const auto woke = relay::check_error_wake(b.get());
    CHECK_FALSE(woke.error);
    CHECK(woke.wait_again);
  }
}

TEST_CASE("removing or disabling a forward closes its listener and live connections at once") {
  target_server target(target_server::echo);
  relay::engine engine(each_datapath());
  auto s = start(engine, spec_for(1, target.port()));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  CHECK(exchange(c.get(), "ping") == "ping");

  SECTION("delete") {
    engine.remove(1);
    CHECK(engine.status(1).state == relay::forward_state::error);
  }
  SECTION("disable") {
    auto off = s;
    off.enabled = false;
    auto p = engine.prepare(off);
    REQUIRE(p);
    engine.apply(off, std::move(p.value()));
    CHECK(engine.status(1).state == relay::forward_state::disabled);
  }
  CHECK(closed_by_peer(c.get()));
  CHECK_FALSE(connect_to(s.listen_port));
}

TEST_CASE("re-enabling a disabled forward serves again on its port") {
  target_server target(target_server::echo);
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, target.port()));
  s.enabled = false;
  start(engine, s);
  CHECK_FALSE(connect_to(s.listen_port));
  s.enabled = true;
  start(engine, s);
  CHECK(echo_once(s.listen_port, "again") == "again");
}

TEST_CASE("changing the target: new connections go to the new one, live ones stay") {
  auto tagged = [](char tag) {
    return [tag](int fd) {
      send_all(fd, std::string(1, tag));
      target_server::echo(fd);
    };
  };
  target_server a(tagged('A')), b(tagged('B'));
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, a.port()));
  auto live = connect_to(s.listen_port);
  REQUIRE(live);
  CHECK(recv_exact(live.get(), 1) == "A");

  s.target_port = b.port();
  start(engine, s);
  auto fresh = connect_to(s.listen_port);
  REQUIRE(fresh);
  CHECK(recv_exact(fresh.get(), 1) == "B");
  CHECK(exchange(live.get(), "still here") == "still here");
  CHECK(exchange(fresh.get(), "new") == "new");
}

TEST_CASE("changing the listen port binds the new one before releasing the old") {
  target_server target(target_server::echo);
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, target.port()));
  const auto old_port = s.listen_port;
  auto live = connect_to(old_port);
  REQUIRE(live);

  SECTION("to a free port: the new port serves, the old one is closed, live connections carry on") {
    s.listen_port = 0;
    s = start(engine, s);
    CHECK(s.listen_port != old_port);
    CHECK(echo_once(s.listen_port, "moved") == "moved");
    CHECK_FALSE(connect_to(old_port));
    CHECK(exchange(live.get(), "live") == "live");
  }
  SECTION("to a port in use: the change fails and the old address keeps serving") {
    std::uint16_t taken = 0;
    auto other = listen_on(taken);
    auto next = s;
    next.listen_port = taken;
    auto p = engine.prepare(next);
    REQUIRE_FALSE(p);
    CHECK(p.error().code == std::errc::address_in_use);
    CHECK(p.error().message.find("bind 127.0.0.1:" + std::to_string(taken)) == 0);
    CHECK(echo_once(old_port, "still") == "still");
    CHECK(engine.status(1).state == relay::forward_state::active);
  }
}

TEST_CASE("two forwards cannot share a listen address") {
  target_server target(target_server::echo);
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, target.port()));
  auto dup = spec_for(0, target.port(), s.listen_port);
  auto p = engine.prepare(dup);
  REQUIRE_FALSE(p);
  CHECK(p.error().code == std::errc::address_in_use);
}

TEST_CASE("IPv6 listeners and targets") {
  target_server target(target_server::echo, "::1");
  relay::engine engine(fast_options());
  auto spec = spec_for(1, target.port());
  spec.listen_host = "::1";
  spec.target_host = "::1";
  auto s = start(engine, spec);
  auto c = connect_to(s.listen_port, "::1");
  REQUIRE(c);
  send_all(c.get(), std::string("six"));
  ::shutdown(c.get(), SHUT_WR);
  CHECK(recv_all(c.get()) == "six");
}

TEST_CASE("a host name target is resolved for each connection") {
  target_server target(target_server::echo);
  relay::engine engine(fast_options());
  auto spec = spec_for(1, target.port());
  spec.target_host = "localhost";  // may resolve to ::1 first; each address is tried in turn
  auto s = start(engine, spec);
  CHECK(echo_once(s.listen_port, "by name") == "by name");
}

TEST_CASE("200 concurrent connections each get their own bytes back") {
  target_server target(target_server::echo);
  relay::engine engine(each_datapath());
  auto s = start(engine, spec_for(1, target.port()));
  std::vector<fd> clients;
  for (int i = 0; i < 200; ++i) {
    clients.push_back(connect_to(s.listen_port));
    REQUIRE(clients.back());
  }
  for (int i = 0; i < 200; ++i) REQUIRE(send_all(clients[i].get(), random_bytes(1000, i)));
  for (int i = 0; i < 200; ++i) CHECK(recv_exact(clients[i].get(), 1000) == random_bytes(1000, i));
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 200; }));
  clients.clear();
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  CHECK(engine.status(1).stats.connections_total == 200);
}

TEST_CASE("closed connections leave no descriptors behind, beyond a bounded pool of pipes") {
  target_server target(target_server::echo);
  auto options = each_datapath();
  const auto baseline = open_fds();
  {
    relay::engine engine(options);
    auto s = start(engine, spec_for(1, target.port()));
    std::size_t settled = 0;  // after the first round: each worker's reactor exists from then on
    for (int round = 0; round < 4; ++round) {
      std::vector<fd> clients;
      for (int i = 0; i < 100; ++i) {
        clients.push_back(connect_to(s.listen_port));
        REQUIRE(clients.back());
        REQUIRE(send_all(clients.back().get(), random_bytes(100000, i)));
      }
      for (int i = 0; i < 100; ++i) CHECK(recv_exact(clients[i].get(), 100000) == random_bytes(100000, i));
      clients.clear();
      REQUIRE(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
      if (round == 0) {
        REQUIRE(eventually([&] { return open_fds() <= baseline + 2 + 3 * options.workers + 2 *
                                        relay::max_idle_pipes_per_worker * options.workers; }));
        settled = open_fds();
        continue;
      }
      // Each connection's two sockets (and the target's end) are gone. What may stay open is the
      // workers' pools of empty pipes, two descriptors each, within their bound.
      const std::size_t pool_bound =
          options.datapath != relay::datapath::copy ? 2 * relay::max_idle_pipes_per_worker * options.workers : 0;
      CHECK(eventually([&] { return open_fds() <= settled + pool_bound; }));
    }
    CHECK(engine.status(1).stats.bytes_up == 4 * 100 * 100000);
    CHECK(engine.status(1).stats.bytes_down == 4 * 100 * 100000);
  }
  CHECK(eventually([&] { return open_fds() <= baseline; }));  // the engine's end closes the pools too
}

TEST_CASE("a forward that could not start is reported with its reason") {
  relay::engine engine(fast_options());
  auto s = spec_for(5, 80, 1);
  engine.fail(s, "bind 127.0.0.1:1: Permission denied");
  auto st = engine.status(5);
  CHECK(st.state == relay::forward_state::error);
  CHECK(st.error == "bind 127.0.0.1:1: Permission denied");
}

TEST_CASE("worker liveness: a stuck worker leaves the watchdog's ping unanswered until it runs again") {
  std::promise<void> entered, release;  // declared first: they outlive the pool, which joins its threads
  auto released = release.get_future();
  relay::worker_pool pool(2);
  const auto first = pool.ping();
  CHECK(eventually([&] { return pool.answered(first); }));

  asio::post(pool.context(1), [&] {
    entered.set_value();
    released.wait();  // worker 1 is busy: a handler that never returns, as a bug would be
  });
  entered.get_future().wait();
  const auto second = pool.ping();
  CHECK_FALSE(eventually([&] { return pool.answered(second); }, 300ms));
  release.set_value();
  CHECK(eventually([&] { return pool.answered(second); }));
}

// Targets that lead back into the daemon, found when a connection is about to connect: host names
// (resolved per connection) and what no controller checked (a forward restored from the store).
namespace {

// Connects to a forward and sends a byte: true when the forward answers with a reset (which may
// come before the byte is sent).
bool reset_on_connect(std::uint16_t port, const std::string& host = "127.0.0.1") {
  auto c = connect_to(port, host);
  if (!c) return false;
  char byte = 'x';
  if (::send(c.get(), &byte, 1, MSG_NOSIGNAL) < 0) return errno == ECONNRESET;
  return ::recv(c.get(), &byte, 1, 0) < 0 && errno == ECONNRESET;
}

// Points forward `s` at `host`:`port` (a PATCH of its target, without the controller's check).
relay::forward_spec retarget(relay::engine& engine, relay::forward_spec s, const std::string& host,
                             std::uint16_t port) {
  s.target_host = host;
  s.target_port = port;
  return start(engine, s);
}

}  // namespace

TEST_CASE("a target that is the forward's own listener is reset and counted, not connected") {
  relay::engine engine(fast_options());
  const auto listen_host = GENERATE(as<std::string>{}, "127.0.0.1", "0.0.0.0");
  const auto target_host = GENERATE(as<std::string>{}, "localhost", "127.0.0.1");
  INFO(listen_host << " -> " << target_host);
  auto s = spec_for(1, 9);
  s.listen_host = listen_host;
  s = start(engine, s);
  s = retarget(engine, s, target_host, s.listen_port);
  CHECK(reset_on_connect(s.listen_port));
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  const auto st = engine.status(1).stats;
  CHECK(st.loops_refused == 1);
  CHECK(st.connections_total == 1);  // no connection came back round
  CHECK(st.connect_errors == 0);
}

TEST_CASE("a host-name target that reaches the API is reset and counted - the API sees nothing") {
  target_server api(target_server::echo);
  relay::engine engine(fast_options());
  engine.set_api_endpoints({"127.0.0.1"}, api.port());
  auto s = start(engine, spec_for(1, 9));
  s = retarget(engine, s, "localhost", api.port());
  CHECK(reset_on_connect(s.listen_port));
  CHECK(eventually([&] { return engine.status(1).stats.loops_refused == 1; }));
  CHECK(api.accepted() == 0);
}

TEST_CASE("a cycle through another forward is refused where a host-name target closes it") {
  relay::engine engine(fast_options());
  auto a = start(engine, spec_for(1, 9));
  auto b = start(engine, spec_for(2, a.listen_port));  // B -> A
  a = retarget(engine, a, "localhost", b.listen_port);    // A -> (localhost) B -> A
  CHECK(reset_on_connect(a.listen_port));
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  CHECK(engine.status(1).stats.loops_refused == 1);
  CHECK(engine.status(1).stats.connections_total == 1);
  CHECK(engine.status(2).stats.connections_total == 0);
  // Entering the cycle at B: B's literal target A is let through, and A refuses to go on to B.
  auto c = connect_to(b.listen_port);
  REQUIRE(c);
  send_all(c.get(), std::string("x"));
  CHECK(closed_by_peer(c.get()));  // B's target reset it, so B ends the connection
  CHECK(eventually([&] { return engine.status(1).stats.loops_refused == 2; }));
  CHECK(eventually([&] { return engine.status(2).stats.connections_active == 0; }));
  CHECK(engine.status(2).stats.connections_total == 1);
}

TEST_CASE("udp: a session that moves to a name's next address is refused there when it leads back") {
  REQUIRE(test_hosts::installed);
  relay::engine engine(fast_options());
  auto s = spec_for(1, 9);
  s.protocol = relay::protocol::udp;
  s.listen_host = "0.0.0.0";
  s = start(engine, s);
  // [::1]:P first, where nothing listens (the forward is IPv4 only), then 127.0.0.1:P, itself.
  s = retarget(engine, s, test_hosts::dual, s.listen_port);
  auto c = udp_client(s.listen_port);
  send_all(c.get(), std::string("round and round"));
  CHECK(eventually([&] { return engine.status(1).stats.loops_refused == 1; }));
  CHECK(eventually([&] { return engine.status(1).stats.connections_active == 0; }));
  const auto st = engine.status(1).stats;
  CHECK(st.target_unreachable == 1);
  CHECK(st.connections_total == 1);
  CHECK(st.datagrams_up == 1);
}

TEST_CASE("udp: a target that is the forward's own listener drops the datagram and counts the session") {
  relay::engine engine(fast_options());
  const auto target_host = GENERATE(as<std::string>{}, test_hosts::v4_only, "127.0.0.1");
  INFO(target_host);
  REQUIRE(test_hosts::installed);
  auto s = spec_for(1, 9);
  s.protocol = relay::protocol::udp;
  s.listen_host = "0.0.0.0";
  s = start(engine, s);
  s = retarget(engine, s, target_host, s.listen_port);
  auto c = udp_client(s.listen_port);
  send_all(c.get(), std::string("round and round"));
  // The session is closed before the datagram that opened it is counted as dropped: wait for both.
  CHECK(eventually([&] {
    const auto st = engine.status(1).stats;
    return st.loops_refused == 1 && st.connections_active == 0 && st.datagrams_dropped == 1;
  }));
  const auto st = engine.status(1).stats;
  CHECK(st.connections_total == 1);
  CHECK(st.datagrams_up == 0);
}
