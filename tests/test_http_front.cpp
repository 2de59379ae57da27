// http_front: what slow, idle, flooding and non-reading clients can make the API's connections hold.
#include "api/http_front.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <asio/ip/address.hpp>

using namespace test;

namespace {

// Answers each request with its own bytes as the body; "/big" with `big_size` bytes; "/throw" throws.
api::http_answer echo(const api::http_exchange& ex, std::size_t big_size = 0) {
  if (ex.request.rfind("GET /throw ", 0) == 0) throw std::runtime_error("handler failed");
  const std::string body = ex.request.rfind("GET /big ", 0) == 0 ? std::string(big_size, 'b') : ex.request;
  return {"HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body, false};
}

std::string error_answer(int status) {
  return "HTTP/1.1 " + std::to_string(status) + " Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
}

struct front_fixture {
  api::http_front front;
  std::uint16_t port;

  explicit front_fixture(api::front_limits limits, std::size_t big_size = 0)
      : front(limits, [big_size](const api::http_exchange& ex) { return echo(ex, big_size); }, error_answer),
        port(front.listen({asio::ip::make_address("127.0.0.1"), 0}).port()) {
    front.start();
  }

  // Waits until the front holds `n` connections, so that what follows finds them all admitted.
  void wait_open(std::size_t n) const {
    REQUIRE(eventually([&] { return front.counts().open == n; }));
  }
};

const std::string get_request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

// One request on a new connection from `source`; the answer, or empty.
std::string ask(std::uint16_t port, const std::string& request = get_request, const std::string& source = "127.0.0.1") {
  auto c = connect_from(port, source);
  REQUIRE(c);
  REQUIRE(send_all(c.get(), request));
  return recv_http_answer(c.get());
}

bool still_open(int s) {
  pollfd p{s, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;  // nothing to read: no EOF, no reset
}

}  // namespace

TEST_CASE("front: idle connections and half-sent requests hold no handler thread") {
  api::front_limits limits;
  limits.handler_threads = 1;
  front_fixture f(limits);
  std::vector<fd> idle;
  for (int i = 0; i < 100; ++i) {
    idle.push_back(connect_to(f.port));
    REQUIRE(idle.back());
    if (i % 2) REQUIRE(send_all(idle.back().get(), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "));
  }
  f.wait_open(100);
  // One handler thread, 100 connections ahead of this one, none of them done: it is answered at once.
  const auto answer = ask(f.port);
  CHECK(answer.rfind("HTTP/1.1 200 OK", 0) == 0);
  CHECK(answer.find(get_request) != std::string::npos);
  for (auto& c : idle) CHECK(still_open(c.get()));
}

TEST_CASE("front: a request must arrive whole within the request deadline, however steadily it trickles") {
  api::front_limits limits;
  limits.request_timeout = 500ms;
  front_fixture f(limits);
  auto c = connect_to(f.port);
  REQUIRE(c);
  REQUIRE(send_all(c.get(), "GET / HTTP/1.1\r\nX-Slow: "));
  // One byte every 50 ms, each well inside any per-read timeout, until the answer comes.
  std::atomic<bool> answered{false};
  std::thread trickle([&] {
    while (!answered && send_all(c.get(), "a")) std::this_thread::sleep_for(50ms);
  });
  const auto answer = recv_http_answer(c.get());
  answered = true;
  trickle.join();
  CHECK(answer.rfind("HTTP/1.1 408 ", 0) == 0);
  CHECK(closed_by_peer(c.get()));
  CHECK(f.front.counts().timed_out == 1);
}

TEST_CASE("front: an idle connection ends without an answer at its deadline") {
  api::front_limits limits;
  limits.request_timeout = 300ms;     // before the first request
  limits.keep_alive_timeout = 300ms;  // between requests
  front_fixture f(limits);
  auto fresh = connect_to(f.port);
  auto kept = connect_to(f.port);
  REQUIRE(send_all(kept.get(), get_request));
  REQUIRE_FALSE(recv_http_answer(kept.get()).empty());
  for (auto* c : {&fresh, &kept}) {
    bool eof = false;
    CHECK(recv_all(c->get(), &eof).empty());  // no 408 for a client that never began a request
    CHECK(eof);
  }
  CHECK(f.front.counts().timed_out == 0);
}

TEST_CASE("front: at a cap the quietest connection makes room - at the per-source cap one of that source") {
  const bool per_source = GENERATE(true, false);
  INFO((per_source ? "per-source" : "total") << " cap");
  api::front_limits limits;
  (per_source ? limits.max_connections_per_source : limits.max_connections) = 3;
  front_fixture f(limits);
  fd elsewhere;  // quieter than all the others, but from another source
  if (per_source) {
    elsewhere = connect_from(f.port, "127.0.0.9");
    f.wait_open(1);
  }
  std::vector<fd> held;  // admitted one after the other, so the first is the quietest of them
  for (int i = 0; i < 3; ++i) {
    held.push_back(connect_from(f.port, per_source ? "127.0.0.1" : "127.0.0." + std::to_string(2 + i)));
    f.wait_open(held.size() + (per_source ? 1 : 0));
  }
  CHECK(ask(f.port, get_request, per_source ? "127.0.0.1" : "127.0.0.5").rfind("HTTP/1.1 200 OK", 0) == 0);
  if (per_source) CHECK(still_open(elsewhere.get()));
  CHECK(closed_by_peer(held[0].get()));
  for (std::size_t i = 1; i < held.size(); ++i) CHECK(still_open(held[i].get()));
  CHECK(f.front.counts().evicted == 1);
}

TEST_CASE("front: an answer the client does not read holds no thread and ends at the send deadline") {
  api::front_limits limits;
  limits.handler_threads = 1;
  limits.send_timeout = 500ms;
  front_fixture f(limits, 64 * 1024 * 1024);  // far more than both sockets' buffers hold
  auto stalled = connect_to(f.port);
  int small = 4096;
  setsockopt(stalled.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  REQUIRE(send_all(stalled.get(), "GET /big HTTP/1.1\r\n\r\n"));
  CHECK(ask(f.port).rfind("HTTP/1.1 200 OK", 0) == 0);  // the one handler thread is free
  REQUIRE(eventually([&] { return f.front.counts().timed_out == 1; }));
  CHECK(eventually([&] { return f.front.counts().open == 0; }));
}

TEST_CASE("front: Expect 100-continue gets its interim answer, pipelined requests their answers in order") {
  front_fixture f(api::front_limits{});
  auto c = connect_to(f.port);
  REQUIRE(send_all(c.get(), "POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"));
  const std::string interim = "HTTP/1.1 100 Continue\r\n\r\n";
  CHECK(recv_exact(c.get(), interim.size()) == interim);
  REQUIRE(send_all(c.get(), "body"));
  const auto answer = recv_http_answer(c.get());
  CHECK(answer.find("POST /p HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody") != std::string::npos);  // no Expect

  const std::string first = "GET /1 HTTP/1.1\r\n\r\n", second = "POST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
  REQUIRE(send_all(c.get(), first + second));
  CHECK(recv_http_answer(c.get()).find(first) != std::string::npos);
  CHECK(recv_http_answer(c.get()).find(second) != std::string::npos);
}

TEST_CASE("front: a head that never ends is refused at its limit and nothing more of it is kept") {
  front_fixture f(api::front_limits{});
  auto c = connect_to(f.port);
  std::atomic<std::size_t> sent{0};
  std::thread flood([&] {
    const std::string line = "X-Pad: " + std::string(8000, 'p') + "\r\n";
    if (!send_all(c.get(), "GET / HTTP/1.1\r\n")) return;
    while (sent < 64u * 1024 * 1024 && send_all(c.get(), line)) sent += line.size();
  });
  const auto answer = recv_http_answer(c.get());
  ::shutdown(c.get(), SHUT_RD);
  flood.join();
  CHECK(answer.rfind("HTTP/1.1 431 ", 0) == 0);
  CHECK(f.front.counts().refused == 1);
  CHECK(eventually([&] { return f.front.counts().open == 0; }));  // dropped after the lingering close
}

TEST_CASE("front: a handler that throws is a 500 that ends the connection") {
  front_fixture f(api::front_limits{});
  auto c = connect_to(f.port);
  REQUIRE(send_all(c.get(), "GET /throw HTTP/1.1\r\n\r\n"));
  CHECK(recv_http_answer(c.get()).rfind("HTTP/1.1 500 ", 0) == 0);
  CHECK(closed_by_peer(c.get()));
}
