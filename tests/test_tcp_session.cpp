// tcp_session over real loopback sockets: bytes both ways and their counts, half-close, backpressure,
// connecting (refused, timed out, IPv6, host names), idle half-closed connections, many connections
// at once and the descriptors they leave. The byte-carrying tests run on every datapath.
#include "engine_helpers.hpp"
#include "spec_helpers.hpp"
#include "relay/engine.hpp"
#include "relay/tcp_session.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

using namespace test;

TEST_CASE("a forward relays bytes both ways and counts them", "[tcp]") {
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

TEST_CASE("32 MiB pass intact with half-close, and the counters are exact", "[tcp]") {
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

TEST_CASE("half-close from the target: the client keeps sending after the reply ended", "[tcp]") {
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

TEST_CASE("a slow reader holds back a fast sender: memory stays bounded", "[tcp]") {
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

TEST_CASE("a refused target closes the client promptly and counts a connect error", "[tcp]") {
  const auto dead_port = free_port();
  relay::engine engine(fast_options());
  auto s = start(engine, spec_for(1, dead_port));
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  CHECK(closed_by_peer(c.get()));
  CHECK(eventually([&] { return engine.status(1).stats.connect_errors == 1; }));
  CHECK(engine.status(1).stats.connections_active == 0);
}

TEST_CASE("a target that never answers the handshake times out", "[tcp]") {
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

TEST_CASE("a half-closed connection that goes idle is closed", "[tcp]") {
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

TEST_CASE("a half-closed connection blocked on a slow reader is not idle", "[tcp]") {
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

TEST_CASE("a half-closed connection is not idle while the target has not taken what the client sent", "[tcp]") {
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

TEST_CASE("IPv6 listeners and targets", "[tcp]") {
  target_server target(target_server::echo, "::1");
  relay::engine engine(fast_options());
  auto spec = spec_for(1, target.port());
  spec.listen_host = "::1";
  test::only_target(spec).host = "::1";
  auto s = start(engine, spec);
  auto c = connect_to(s.listen_port, "::1");
  REQUIRE(c);
  send_all(c.get(), std::string("six"));
  ::shutdown(c.get(), SHUT_WR);
  CHECK(recv_all(c.get()) == "six");
}

TEST_CASE("a host name target is resolved for each connection", "[tcp]") {
  target_server target(target_server::echo);
  relay::engine engine(fast_options());
  auto spec = spec_for(1, target.port());
  test::only_target(spec).host = "localhost";  // may resolve to ::1 first; each address is tried in turn
  auto s = start(engine, spec);
  CHECK(echo_once(s.listen_port, "by name") == "by name");
}

TEST_CASE("200 concurrent connections each get their own bytes back", "[tcp]") {
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

TEST_CASE("closed connections leave no descriptors behind, beyond a bounded pool of pipes", "[tcp]") {
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
