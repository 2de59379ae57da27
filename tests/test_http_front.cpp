// http_front: what slow, idle, flooding and non-reading clients can make the API's connections hold.
#include "api/http_front.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <asio/ip/address.hpp>

#include <condition_variable>
#include <future>
#include <mutex>

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

  explicit front_fixture(api::front_limits limits, std::size_t big_size = 0, bool start = true)
      : front_fixture(limits, [big_size](const api::http_exchange& ex) { return echo(ex, big_size); }, start) {}

  front_fixture(api::front_limits limits, api::http_front::handler h, bool start = true)
      : front(limits, std::move(h), error_answer), port(front.listen({asio::ip::make_address("127.0.0.1"), 0}).port()) {
    if (start) front.start();
  }

  // Waits until the front holds `n` connections, so that what follows finds them all admitted.
  void wait_open(std::size_t n) const {
    const bool reached = eventually([&] { return front.counts().open == n; });
    INFO("open " << front.counts().open << ", accepted " << front.counts().accepted << ", evicted "
                 << front.counts().evicted << ", turned away " << front.counts().turned_away);
    REQUIRE(reached);
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

// Deadlines far beyond any test's length, for tests about something else.
api::front_limits patient() {
  api::front_limits limits;
  limits.request_timeout = limits.keep_alive_timeout = limits.send_timeout = std::chrono::minutes(10);
  return limits;
}

TEST_CASE("idle connections and half-sent requests hold no handler thread", "[api]") {
  auto limits = patient();
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

TEST_CASE("a request must arrive whole within the request deadline, however steadily it trickles", "[api]") {
  auto limits = patient();
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

TEST_CASE("an idle connection ends without an answer at its deadline", "[api]") {
  // Before its first request, the request deadline; between requests, the keep-alive one. Each case
  // has only the deadline it tests short, so nothing else can race it.
  auto before_first = patient();
  before_first.request_timeout = 300ms;
  auto between = patient();
  between.keep_alive_timeout = 300ms;
  front_fixture fresh_front(before_first), kept_front(between);
  auto fresh = connect_to(fresh_front.port);
  auto kept = connect_to(kept_front.port);
  REQUIRE(send_all(kept.get(), get_request));
  REQUIRE_FALSE(recv_http_answer(kept.get()).empty());
  for (auto* c : {&fresh, &kept}) {
    bool eof = false;
    CHECK(recv_all(c->get(), &eof).empty());  // no 408 for a client that never began a request
    CHECK(eof);
  }
  CHECK(fresh_front.front.counts().timed_out == 0);
  CHECK(kept_front.front.counts().timed_out == 0);
}

TEST_CASE("at a cap the quietest connection makes room - at the per-source cap one of that source", "[api]") {
  const bool per_source = GENERATE(true, false);
  INFO((per_source ? "per-source" : "total") << " cap");
  auto limits = patient();
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

// A client that asks for `path` and reads nothing of the answer: its receive buffer is set small
// before it connects, so that the window it offers stays small.
fd stalled_client(std::uint16_t port, const std::string& path) {
  fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int small = 4096;
  setsockopt(c.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  set_timeouts(c.get());
  socklen_t len;
  auto to = make_addr("127.0.0.1", port, len);
  REQUIRE(::connect(c.get(), reinterpret_cast<sockaddr*>(&to), len) == 0);
  REQUIRE(send_all(c.get(), "GET " + path + " HTTP/1.1\r\n\r\n"));
  return c;
}

TEST_CASE("an answer the client does not read holds no handler thread", "[api]") {
  auto limits = patient();  // the stalled answer cannot end by a deadline while this runs
  limits.handler_threads = 1;
  front_fixture f(limits, 64 * 1024 * 1024);  // far more than both sockets' buffers hold
  auto stalled = stalled_client(f.port, "/big");
  CHECK(ask(f.port).rfind("HTTP/1.1 200 OK", 0) == 0);  // the one handler thread is free
  CHECK(f.front.counts().timed_out == 0);
}

TEST_CASE("an answer the client does not read ends at the send deadline", "[api]") {
  auto limits = patient();
  limits.send_timeout = 500ms;  // the client never reads: nothing can race this deadline
  front_fixture f(limits, 64 * 1024 * 1024);
  auto stalled = stalled_client(f.port, "/big");
  REQUIRE(eventually([&] { return f.front.counts().timed_out == 1; }));
  CHECK(eventually([&] { return f.front.counts().open == 0; }));
}

TEST_CASE("stop() writes the answer of a request being handled, then returns", "[api]") {
  std::promise<void> entered, release;
  auto released = release.get_future().share();
  front_fixture f(patient(), [&, released](const api::http_exchange& ex) {
    entered.set_value();
    released.wait();
    return echo(ex);
  });
  auto busy = connect_to(f.port);
  auto idle = connect_to(f.port);
  REQUIRE(send_all(busy.get(), get_request));
  REQUIRE(entered.get_future().wait_for(io_timeout) == std::future_status::ready);
  std::thread stopping([&] { f.front.stop(); });
  CHECK(closed_by_peer(idle.get()));  // waiting for nothing: closed at once
  release.set_value();
  const auto answer = recv_http_answer(busy.get());
  CHECK(answer.rfind("HTTP/1.1 200 OK", 0) == 0);
  CHECK(answer.find(get_request) != std::string::npos);
  CHECK(closed_by_peer(busy.get()));
  stopping.join();
  CHECK_FALSE(connect_to(f.port));
}

TEST_CASE("stop() returns whether or not the front listened or started", "[api]") {
  for (const bool listens : {false, true}) {
    for (const bool starts : {false, true}) {
      INFO("listens " << listens << ", starts " << starts);
      api::http_front front(patient(), [](const api::http_exchange& ex) { return echo(ex); }, error_answer);
      if (listens) front.listen({asio::ip::make_address("127.0.0.1"), 0});
      if (starts) front.start();
      front.stop();
      front.stop();
    }
  }
  CHECK_THROWS_AS(api::http_front([] {
                    auto l = patient();
                    l.handler_threads = 0;
                    return l;
                  }(), [](const api::http_exchange& ex) { return echo(ex); }, error_answer),
                  std::invalid_argument);
}

TEST_CASE("pipelined requests that end with the client's EOF are all answered", "[api]") {
  front_fixture f(patient(), 0, false);
  auto c = connect_to(f.port);  // accepted by the kernel; the front reads it all in one go once started
  const std::string first = "GET /a HTTP/1.1\r\n\r\n", second = "GET /b HTTP/1.1\r\n\r\n";
  REQUIRE(send_all(c.get(), first + second));
  ::shutdown(c.get(), SHUT_WR);
  f.front.start();
  CHECK(recv_http_answer(c.get()).find(first) != std::string::npos);
  CHECK(recv_http_answer(c.get()).find(second) != std::string::npos);
  CHECK(closed_by_peer(c.get()));
}

TEST_CASE("Expect 100-continue gets its interim answer, pipelined requests their answers in order", "[api]") {
  front_fixture f(patient());
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

TEST_CASE("a head that never ends is refused at its limit and nothing more of it is kept", "[api]") {
  front_fixture f(patient());
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

TEST_CASE("a handler that throws is a 500 that ends the connection", "[api]") {
  front_fixture f(patient());
  auto c = connect_to(f.port);
  REQUIRE(send_all(c.get(), "GET /throw HTTP/1.1\r\n\r\n"));
  CHECK(recv_http_answer(c.get()).rfind("HTTP/1.1 500 ", 0) == 0);
  CHECK(closed_by_peer(c.get()));
}

namespace {

// Handlers that block on "GET /slow" until release(); every other request is answered at once.
struct gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  std::atomic<int> entered{0};

  api::http_answer handle(const api::http_exchange& ex) {
    if (ex.request.rfind("GET /slow ", 0) == 0) {
      ++entered;
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return open; });
    }
    return echo(ex);
  }
  void release() {
    {
      std::lock_guard lock(m);
      open = true;
    }
    cv.notify_all();
  }
};

const std::string slow_request = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";

// `n` connections from 127.0.0.2 on, each with a slow request; `run` is how many of them the
// handlers must have taken before the next one is sent.
std::vector<fd> slow_clients(std::uint16_t port, gate& g, int n, int run) {
  std::vector<fd> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(connect_from(port, "127.0.0." + std::to_string(2 + i)));
    REQUIRE(send_all(out.back().get(), slow_request));
    if (i < run) REQUIRE(eventually([&] { return g.entered == i + 1; }));
  }
  return out;
}

}  // namespace

TEST_CASE("at the total cap with every request being run, a new connection waits instead of being closed", "[api]") {
  auto limits = patient();
  limits.max_connections = 4;
  limits.handler_threads = 4;
  gate g;
  front_fixture f(limits, [&](const api::http_exchange& ex) { return g.handle(ex); });
  auto busy = slow_clients(f.port, g, 4, 4);  // all four being run: nothing may be closed to make room
  auto op = connect_to(f.port);
  REQUIRE(send_all(op.get(), get_request));
  g.release();
  CHECK(recv_http_answer(op.get()).rfind("HTTP/1.1 200 OK", 0) == 0);  // not a reset
  for (auto& c : busy) CHECK(recv_http_answer(c.get()).rfind("HTTP/1.1 200 OK", 0) == 0);
  CHECK(f.front.counts().turned_away == 0);
}

TEST_CASE("at the total cap a request still waiting for a thread makes room, never one being run", "[api]") {
  auto limits = patient();
  limits.max_connections = 4;
  limits.handler_threads = 1;
  gate g;
  front_fixture f(limits, [&](const api::http_exchange& ex) { return g.handle(ex); });
  auto busy = slow_clients(f.port, g, 4, 1);  // the first is run, the rest wait
  f.wait_open(4);
  auto op = connect_to(f.port);
  REQUIRE(send_all(op.get(), get_request));
  CHECK(closed_by_peer(busy[1].get()));  // the longest waiting, not the one being run
  g.release();
  CHECK(recv_http_answer(busy[0].get()).rfind("HTTP/1.1 200 OK", 0) == 0);
  CHECK(recv_http_answer(op.get()).rfind("HTTP/1.1 200 OK", 0) == 0);
  CHECK(f.front.counts().evicted == 1);
}

TEST_CASE("stop() runs no request that was still waiting for a handler thread", "[api]") {
  auto limits = patient();
  limits.handler_threads = 1;
  gate g;
  std::atomic<int> handled{0};
  front_fixture f(limits, [&](const api::http_exchange& ex) {
    ++handled;
    return g.handle(ex);
  });
  std::vector<fd> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(connect_to(f.port));
    REQUIRE(send_all(clients.back().get(), slow_request));
  }
  REQUIRE(eventually([&] { return g.entered == 1; }));
  f.wait_open(20);
  std::thread stopping([&] { f.front.stop(); });
  for (std::size_t i = 1; i < clients.size(); ++i) CHECK(closed_by_peer(clients[i].get()));
  g.release();
  stopping.join();
  CHECK(handled == 1);  // the one that was running; it got its answer
  CHECK(recv_http_answer(clients[0].get()).rfind("HTTP/1.1 200 OK", 0) == 0);
}

TEST_CASE("answers held for clients that do not read them are bounded in all", "[api]") {
  auto limits = patient();
  limits.max_answer_bytes = 20 * 1024 * 1024;
  front_fixture f(limits, 16 * 1024 * 1024);  // each answer far more than the sockets' buffers hold
  auto first = stalled_client(f.port, "/big");
  REQUIRE(eventually([&] { return f.front.counts().open == 1; }));
  auto second = stalled_client(f.port, "/big");  // 32 MiB held: the quieter one goes
  REQUIRE(eventually([&] { return f.front.counts().evicted == 1; }));
  CHECK(eventually([&] { return f.front.counts().open == 1; }));
}
