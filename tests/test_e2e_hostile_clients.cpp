// End to end against the built binary: API clients that are slow, idle or flooding at scale.
#include "e2e_support.hpp"

#include <catch2/catch.hpp>

#include <fstream>

#include <sys/resource.h>

using namespace test;

namespace {

// 1,000 clients here and 1,000 connections in the daemon (which inherits the limit): the usual soft
// limit of 1,024 descriptors would run out first.
bool raise_descriptor_limit() {
  rlimit l{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &l) == 0);
  if (l.rlim_max < 4096) return false;
  l.rlim_cur = l.rlim_max;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &l) == 0);
  return true;
}

std::size_t resident_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  }
  FAIL("no VmRSS for " << pid);
  return 0;
}

}  // namespace

TEST_CASE("a thousand idle or slowly sent API connections from one source or many do not keep the operator out",
          "[e2e]") {
  if (!raise_descriptor_limit()) {
    WARN("the hard descriptor limit is below 4,096: not enough for 1,000 connections on each side");
    return;
  }
  const bool slow = GENERATE(false, true);
  const bool many_sources = GENERATE(false, true);
  INFO((slow ? "slow" : "idle") << " connections from " << (many_sources ? "1,000 sources" : "one source"));
  temp_dir dir;
  running d(args_for(dir));

  // From one source, all but the newest 128 are closed as they come (the per-source cap): what is
  // left holding the API is the cap, and the operator's connection must still get in.
  std::vector<fd> held;
  for (int i = 0; i < 1000; ++i) {
    const auto source = many_sources ? "127.0." + std::to_string(1 + i / 250) + "." + std::to_string(2 + i % 250)
                                     : std::string("127.0.0.1");
    held.push_back(connect_from(d.port, source));
    REQUIRE(held.back());
    if (slow) REQUIRE(send_all(held.back().get(), "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "));
  }
  // The slow ones go on sending a byte a second each, as long as the operator waits.
  std::atomic<bool> answered{false};
  std::thread trickle([&] {
    while (slow && !answered) {
      for (auto& c : held) ::send(c.get(), "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      for (int i = 0; i < 20 && !answered; ++i) std::this_thread::sleep_for(50ms);
    }
  });
  const auto asked = std::chrono::steady_clock::now();
  auto r = d.client.Get("/healthz");
  const auto waited = std::chrono::steady_clock::now() - asked;
  answered = true;
  trickle.join();
  REQUIRE(r);
  CHECK(r->status == 200);
  // Not a verdict (it depends on the machine): what the operator waited, for the test log.
  WARN("GET /healthz answered in "
       << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() << " ms");
}

TEST_CASE("a request head that never ends is a 431 at 64 KiB before the token and memory stays flat", "[e2e]") {
  const bool with_token = GENERATE(false, true);
  INFO((with_token ? "with" : "without") << " a token");
  temp_dir dir;
  const auto token_file = (dir.path / "token").string();
  std::ofstream(token_file) << "tok-123\n";
  running d(args_for(dir, with_token ? std::vector<std::string>{"--token-file", token_file} : std::vector<std::string>{}));
  const auto before = resident_kib(d.proc.pid());

  auto c = connect_to(d.port);
  REQUIRE(c);
  constexpr std::size_t flood_limit = 256u * 1024 * 1024;
  std::atomic<std::size_t> sent{0};
  std::thread flood([&] {
    const std::string line = "X-Pad: " + std::string(8 * 1024 - 9, 'p') + "\r\n";
    if (!send_all(c.get(), "GET /api/v1/forwards HTTP/1.1\r\nHost: 127.0.0.1\r\n")) return;
    while (sent < flood_limit && send_all(c.get(), line)) sent += line.size();
  });
  const auto answer = recv_http_answer(c.get());
  flood.join();
  INFO(answer);
  CHECK(answer.rfind("HTTP/1.1 431 ", 0) == 0);
  CHECK(answer.find("\"code\":\"request_header_fields_too_large\"") != std::string::npos);
  CHECK(sent < flood_limit);  // the daemon ended the connection; it did not read on
  const auto after = resident_kib(d.proc.pid());
  INFO("resident " << before << " KiB before, " << after << " KiB after");
  CHECK(after < before + 16 * 1024);
  // And the API is as it was.
  httplib::Headers auth;
  if (with_token) auth.emplace("Authorization", "Bearer tok-123");
  auto r = d.client.Get("/api/v1/forwards", auth);
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("the siblings of the header flood each get their status and end the connection", "[e2e]") {
  temp_dir dir;
  running d(args_for(dir));
  const std::string post = "POST /api/v1/forwards HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
  std::string many_fields = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (int i = 0; i < 101; ++i) many_fields += "X-" + std::to_string(i) + ": v\r\n";
  const std::vector<std::pair<std::string, std::string>> cases{
      {many_fields + "\r\n", "HTTP/1.1 431 "},
      {"GET /" + std::string(70 * 1024, 'a'), "HTTP/1.1 431 "},
      {post + "Content-Length: 10000000000\r\n\r\n", "HTTP/1.1 413 "},
      {post + "Transfer-Encoding: chunked\r\n\r\n" + std::string(2000, ' '), "HTTP/1.1 400 "},
      {post + "Transfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 501 "},
      {post + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n", "HTTP/1.1 400 "},
  };
  for (const auto& [request, status] : cases) {
    INFO(request.substr(0, 200));
    auto c = connect_to(d.port);
    REQUIRE(c);
    send_all(c.get(), request);
    const auto answer = recv_http_answer(c.get());
    CHECK(answer.rfind(status, 0) == 0);
    CHECK(answer.find("Content-Type: application/json") != std::string::npos);
    CHECK(answer.find("Connection: close") != std::string::npos);
    ::shutdown(c.get(), SHUT_WR);
    CHECK(closed_by_peer(c.get()));
  }
}
