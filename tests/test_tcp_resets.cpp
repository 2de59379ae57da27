// Abortive ends through tcp_session: a reset on one side reaches the other after the bytes sent
// before it, and is noticed even while the relay waits on the other side (error_wake); a target
// that cannot be reached resets the client; orderly ends stay orderly.
#include "engine_helpers.hpp"
#include "spec_helpers.hpp"
#include "relay/engine.hpp"
#include "relay/error_wake.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <memory>
#include <thread>

using namespace test;

namespace {

// `from` sends `bytes`, waits until its peer (the relay) has acknowledged them all, so that the
// reset drops none of them, then resets; `was_reset` is set once it has.
void send_then_reset(fd& from, const std::string& bytes, std::atomic<bool>& was_reset) {
  send_all(from.get(), bytes);
  eventually([&] { return unacknowledged(from.get()) == 0; });
  reset(from);
  was_reset = true;
}

// Both ends of one relayed connection: the client's socket and the target's.
struct relayed {
  fd listener;
  relay::engine engine;
  fd client;
  fd target;
  explicit relayed(relay::engine_options options) : engine(options) {
    std::uint16_t port = 0;
    listener = listen_on(port);
    const auto s = start(engine, spec_for(1, port));
    client = connect_to(s.listen_port);
    REQUIRE(client);
    target = accept_within(listener);
    REQUIRE(target);
  }
};

// 1,019 bytes move by copy on every datapath; 1 MiB makes the splice paths splice.
std::string payload() {
  const auto size = GENERATE(as<std::size_t>{}, 1019, 1 << 20);
  UNSCOPED_INFO("bytes: " << size);
  return random_bytes(size, size);
}

// The reader reads as the bytes come, or only once the sender has reset: then they wait in the
// relay (pipe, copy buffer, socket queues) when the reset arrives there.
bool read_late() {
  const bool late = GENERATE(false, true);
  UNSCOPED_INFO((late ? "reads after the reset" : "reads as the bytes come"));
  return late;
}

void check_bytes_then_reset(const stream_end& end, const std::string& sent) {
  CHECK(end.bytes.size() == sent.size());
  CHECK(digest(end.bytes) == digest(sent));
  CHECK(end.error == ECONNRESET);  // not 0: a clean EOF would make the truncated stream look complete
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

TEST_CASE("a reset reaches the other side after every byte sent before it", "[tcp]") {
  relayed r(each_datapath());
  const auto sent = payload();
  const bool late = read_late();
  const bool by_target = GENERATE(true, false);
  UNSCOPED_INFO((by_target ? "the target resets" : "the client resets"));
  auto& sender = by_target ? r.target : r.client;
  const auto& reader = by_target ? r.client : r.target;
  std::atomic<bool> was_reset{false};
  std::jthread resetting([&] { send_then_reset(sender, sent, was_reset); });
  if (late) REQUIRE(eventually([&] { return was_reset.load(); }));
  check_bytes_then_reset(read_to_end(reader.get()), sent);
  CHECK(eventually([&] { return r.engine.status(1).stats.connections_active == 0; }));
}

TEST_CASE("a target's reset after the client's EOF reaches the client after the answer", "[tcp]") {
  relayed r(each_datapath());
  const auto answer = payload();
  REQUIRE(send_all(r.client.get(), std::string("request")));
  ::shutdown(r.client.get(), SHUT_WR);
  CHECK(read_to_end(r.target.get()).bytes == "request");  // and EOF: the half-close got there
  std::atomic<bool> was_reset{false};
  std::jthread target([&] { send_then_reset(r.target, answer, was_reset); });
  check_bytes_then_reset(read_to_end(r.client.get()), answer);
}

TEST_CASE("orderly ends stay orderly both ways through a reset-aware relay", "[tcp]") {
  relayed r(each_datapath());
  const auto sent = payload();
  std::jthread target([&] {
    send_all(r.target.get(), sent);
    ::shutdown(r.target.get(), SHUT_WR);
  });
  const auto down = read_to_end(r.client.get());
  CHECK(down.bytes.size() == sent.size());
  CHECK(down.error == 0);
  std::jthread client([&] {  // the other direction still flows after the EOF
    send_all(r.client.get(), sent);
    ::shutdown(r.client.get(), SHUT_WR);
  });
  const auto up = read_to_end(r.target.get());
  CHECK(digest(up.bytes) == digest(sent));
  CHECK(up.error == 0);
}

TEST_CASE("a target that cannot be reached resets the client: never an orderly end", "[tcp]") {
  auto options = fast_options(300ms);  // the timeout's own case; the others fail at once
  auto spec = spec_for(1, free_port());  // nothing listens there: refused
  std::unique_ptr<unanswering_listener> unanswering;
  SECTION("refused") {}
  SECTION("no address of a host name accepts") { test::only_target(spec).host = "localhost"; }
  SECTION("a host name that does not resolve") { test::only_target(spec).host = "no-such-host.invalid"; }
  SECTION("the handshake times out") {
    unanswering = std::make_unique<unanswering_listener>();
    test::only_target(spec).port = unanswering->port;
  }
  relay::engine engine(options);
  const auto s = start(engine, spec);
  auto c = connect_to(s.listen_port);
  REQUIRE(c);
  const auto end = read_to_end(c.get());
  CHECK(end.bytes.empty());
  CHECK(end.error == ECONNRESET);
  CHECK(eventually([&] { return engine.status(1).stats.connect_errors == 1; }));
}

TEST_CASE("a client's reset ends the connection while the relay waits on a target that reads nothing", "[tcp]") {
  // The target accepts and never reads. The client fills every buffer up to it, so the relay is
  // waiting only for the target to take bytes and reads nothing from the client; then the client
  // gives up with a reset. The relay must notice that at once, not when the target next moves.
  std::uint16_t port = 0;
  fd listener = listen_on(port);
  // At least one loopback segment: see test_tcp_session.cpp, a half-closed connection whose target
  // has not taken what the client sent.
  const int small = 64 * 1024;
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

TEST_CASE("a target's reset ends the connection while the relay waits on a client that reads nothing", "[tcp]") {
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

TEST_CASE("a client's reset after its EOF ends the connection while the target is silent", "[tcp]") {
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

TEST_CASE("what wakes an error wait: a reset ends the connection - urgent data or an orderly end does not", "[tcp]") {
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
