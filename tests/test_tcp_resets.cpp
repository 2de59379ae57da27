// Abortive ends through the relay: a reset on one side reaches the other after the bytes sent
// before it, and a target that cannot be reached resets the client; orderly ends stay orderly.
#include "engine_helpers.hpp"
#include "relay/engine.hpp"
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

}  // namespace

TEST_CASE("a reset reaches the other side after every byte sent before it") {
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

TEST_CASE("a target's reset after the client's EOF reaches the client after the answer") {
  relayed r(each_datapath());
  const auto answer = payload();
  REQUIRE(send_all(r.client.get(), std::string("request")));
  ::shutdown(r.client.get(), SHUT_WR);
  CHECK(read_to_end(r.target.get()).bytes == "request");  // and EOF: the half-close got there
  std::atomic<bool> was_reset{false};
  std::jthread target([&] { send_then_reset(r.target, answer, was_reset); });
  check_bytes_then_reset(read_to_end(r.client.get()), answer);
}

TEST_CASE("orderly ends stay orderly both ways through a reset-aware relay") {
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

TEST_CASE("a target that cannot be reached resets the client: never an orderly end") {
  auto options = fast_options(300ms);  // the timeout's own case; the others fail at once
  auto spec = spec_for(1, free_port());  // nothing listens there: refused
  std::unique_ptr<unanswering_listener> unanswering;
  SECTION("refused") {}
  SECTION("no address of a host name accepts") { spec.target_host = "localhost"; }
  SECTION("a host name that does not resolve") { spec.target_host = "no-such-host.invalid"; }
  SECTION("the handshake times out") {
    unanswering = std::make_unique<unanswering_listener>();
    spec.target_port = unanswering->port;
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
