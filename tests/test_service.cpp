// The binary as systemd runs it: the notify protocol on a test-owned socket, journald priorities,
// the token as a credential, and the graceful SIGTERM drain.
#include "e2e_support.hpp"

#include <catch2/catch.hpp>

#include <sys/un.h>

#include <fstream>

using namespace test;
using nlohmann::json;

namespace {

// A datagram socket standing in for systemd's notify socket: a path, or "@name" for an abstract one.
class notify_socket {
 public:
  explicit notify_socket(std::string address) : address_(std::move(address)) {
    sock_ = fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::copy(address_.begin(), address_.end(), a.sun_path);
    if (address_[0] == '@') a.sun_path[0] = '\0';
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
    if (::bind(sock_.get(), reinterpret_cast<sockaddr*>(&a), len) != 0) throw std::runtime_error("notify bind");
  }
  std::string env() const { return "NOTIFY_SOCKET=" + address_; }

  // The next message, or "" when none comes within the limit.
  std::string next(std::chrono::milliseconds limit = 30s) {
    auto m = recv_datagram(sock_.get(), limit);
    if (!m.empty()) messages_.push_back(m);
    return m;
  }
  // Reads messages until one contains `text`; false when none does within the limit.
  bool wait_for(const std::string& text, std::chrono::milliseconds limit = 30s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      if (next(std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()))
              .find(text) != std::string::npos) {
        return true;
      }
    }
    return false;
  }
  const std::vector<std::string>& messages() const { return messages_; }

 private:
  std::string address_;
  fd sock_;
  std::vector<std::string> messages_;
};

bool log_has(daemon_process& p, const std::string& text) {
  return eventually([&] { return p.log().find(text) != std::string::npos; });
}

// A connection through the forward on `port` to an echo target, proven live by one round trip.
fd held_connection(std::uint16_t port) {
  auto c = connect_to(port);
  REQUIRE(c);
  send_all(c.get(), std::string("x"));
  REQUIRE(recv_exact(c.get(), 1) == "x");
  return c;
}

const std::string drain_started = "no new connections are accepted";

std::size_t index_of(const std::vector<std::string>& messages, const std::string& text) {
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].find(text) != std::string::npos) return i;
  }
  return messages.size();
}

}  // namespace

TEST_CASE("READY, STATUS, WATCHDOG and STOPPING reach NOTIFY_SOCKET in order", "[e2e]") {
  temp_dir dir;
  target_server target(target_server::echo);
  {  // A stored forward, so READY can be seen to follow its restore.
    running d(args_for(dir));
    create(d.client, target.port());
    d.proc.signal(SIGTERM);
    REQUIRE(exited_cleanly(d.proc));
  }
  for (const std::string& address : {(dir.path / "notify.sock").string(),
                                     "@portrelay-test-" + std::to_string(::getpid()) + "-notify"}) {
    INFO("NOTIFY_SOCKET=" << address);
    notify_socket ns(address);
    running d(args_for(dir), {{ns.env(), "WATCHDOG_USEC=200000"}});
    const auto first = ns.next();
    INFO(first);
    REQUIRE(first.find("READY=1") != std::string::npos);
    CHECK(first.find("STATUS=1 forwards active, 0 in error") != std::string::npos);
    // READY means the API answers and the restored forward serves.
    CHECK(d.client.Get("/healthz")->status == 200);
    const int port = json::parse(d.client.Get("/api/v1/forwards/1")->body)["listen_port"];
    CHECK(echo_once(static_cast<std::uint16_t>(port), "up") == "up");
    // WatchdogSec=0.2 s: fed every 100 ms while the workers answer.
    for (int i = 0; i < 3; ++i) CHECK(ns.wait_for("WATCHDOG=1"));
    // STATUS= follows changes made through the API.
    d.client.Patch("/api/v1/forwards/1", R"({"enabled":false})", "application/json");
    CHECK(ns.wait_for("STATUS=0 forwards active, 0 in error, 1 disabled"));
    d.client.Patch("/api/v1/forwards/1", R"({"enabled":true})", "application/json");
    CHECK(ns.wait_for("STATUS=1 forwards active, 0 in error, 0 disabled"));
    d.proc.signal(SIGTERM);
    CHECK(ns.wait_for("STOPPING=1"));
    CHECK(exited_cleanly(d.proc));
    const auto& m = ns.messages();
    const auto ready = index_of(m, "READY=1"), watchdog = index_of(m, "WATCHDOG=1"), stopping = index_of(m, "STOPPING=1");
    CHECK(ready == 0);
    CHECK(ready < watchdog);
    CHECK(watchdog < stopping);
    CHECK(stopping < m.size());
    CHECK(std::count_if(m.begin(), m.end(), [](auto& s) { return s.find("READY=1") != std::string::npos; }) == 1);
  }
}

TEST_CASE("without WATCHDOG_USEC no watchdog messages are sent", "[e2e]") {
  temp_dir dir;
  notify_socket ns((dir.path / "notify.sock").string());
  running d(args_for(dir), {{ns.env()}});
  CHECK(ns.next().find("READY=1") != std::string::npos);
  d.proc.signal(SIGTERM);
  CHECK(ns.wait_for("STOPPING=1"));
  const auto st = d.proc.wait_exit();
  INFO(d.proc.log());
  REQUIRE(st);
  INFO("wait status " << *st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  for (const auto& m : ns.messages()) CHECK(m.find("WATCHDOG") == std::string::npos);
}

TEST_CASE("with JOURNAL_STREAM on stderr, lines carry syslog priorities and no timestamps", "[e2e]") {
  temp_dir dir;
  std::uint16_t taken_port = 0;
  {
    running d(args_for(dir));
    taken_port = create(d.client, 9)["listen_port"];
    d.proc.signal(SIGTERM);
    REQUIRE(exited_cleanly(d.proc));
  }
  fd squatter = listen_on(taken_port);  // the stored forward's port: a warning at start
  target_server refused(target_server::echo);
  const auto closed_port = free_port();
  {
    running d(args_for(dir, {"--log-level", "debug"}), {{}, true});
    const int port = create(d.client, closed_port)["listen_port"];
    CHECK(echo_once(static_cast<std::uint16_t>(port), "x").empty());  // a refused target: a debug line
    CHECK(log_has(d.proc, "<7>"));
    d.proc.signal(SIGTERM);
    REQUIRE(exited_cleanly(d.proc));
    const auto log = d.proc.log();
    INFO(log);
    std::istringstream lines(log);
    std::string line;
    int count = 0;
    while (std::getline(lines, line)) {
      ++count;
      CHECK(std::regex_search(line, std::regex("^<[0-7]>")));
      CHECK_FALSE(std::regex_search(line, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d)")));
    }
    CHECK(count >= 4);
    CHECK(log.find("<6>portrelay ") != std::string::npos);
    CHECK(log.find("<4>forward 1") != std::string::npos);  // could not bind at start
  }
  // JOURNAL_STREAM naming some other file (inherited from a parent) changes nothing.
  running d(args_for(dir), {{"JOURNAL_STREAM=1:1"}});
  d.proc.signal(SIGTERM);
  REQUIRE(exited_cleanly(d.proc));
  CHECK(std::regex_search(d.proc.log(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info portrelay)")));
}

TEST_CASE("the token comes from $CREDENTIALS_DIRECTORY/token unless --token-file is given", "[e2e]") {
  temp_dir dir;
  const auto creds = dir.path / "creds";
  std::filesystem::create_directory(creds);
  std::ofstream(creds / "token") << "cred-token\n";
  {
    running d(args_for(dir), {{"CREDENTIALS_DIRECTORY=" + creds.string()}});
    CHECK(d.client.Get("/api/v1/forwards")->status == 401);
    CHECK(d.client.Get("/metrics")->status == 401);
    CHECK(d.client.Get("/api/v1/forwards", {{"Authorization", "Bearer cred-token"}})->status == 200);
    CHECK(d.client.Get("/metrics", {{"Authorization", "Bearer cred-token"}})->status == 200);
  }
  {
    std::ofstream(dir.path / "file-token") << "file-token";
    running d(args_for(dir, {"--token-file", (dir.path / "file-token").string()}),
              {{"CREDENTIALS_DIRECTORY=" + creds.string()}});
    CHECK(d.client.Get("/api/v1/forwards", {{"Authorization", "Bearer cred-token"}})->status == 401);
    CHECK(d.client.Get("/api/v1/forwards", {{"Authorization", "Bearer file-token"}})->status == 200);
  }
  {  // A credentials directory without a token: no token, loopback only as always.
    std::filesystem::remove(creds / "token");
    running d(args_for(dir), {{"CREDENTIALS_DIRECTORY=" + creds.string()}});
    CHECK(d.client.Get("/api/v1/forwards")->status == 200);
  }
}

TEST_CASE("in a drain a transfer in flight completes intact while new connections are refused", "[e2e]") {
  std::uint16_t target_port = 0;
  fd target_listener = listen_on(target_port);
  set_timeouts(target_listener.get());
  temp_dir dir;
  notify_socket ns((dir.path / "notify.sock").string());
  running d(args_for(dir, {"--drain-timeout", "120"}), {{ns.env()}});
  const std::uint16_t port = create(d.client, target_port)["listen_port"];
  auto client = connect_to(port);
  REQUIRE(client);
  fd target(::accept4(target_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  REQUIRE(target);
  set_timeouts(target.get());
  const auto first = random_bytes(1 << 20, 1), rest = random_bytes(16 << 20, 2);
  REQUIRE(send_all(target.get(), first));
  REQUIRE(recv_exact(client.get(), first.size()) == first);

  const auto sigterm = std::chrono::steady_clock::now();
  d.proc.signal(SIGTERM);
  CHECK(ns.wait_for("STOPPING=1"));
  REQUIRE(log_has(d.proc, drain_started));
  CHECK_FALSE(connect_to(port));          // the listener is closed: refused
  CHECK(d.client.Get("/healthz") == nullptr);  // and the API has stopped
  // Both directions still flow on the live connection.
  REQUIRE(send_all(client.get(), std::string("still here")));
  CHECK(recv_exact(target.get(), 10) == "still here");
  std::thread sender([&] {
    send_all(target.get(), rest);
    ::shutdown(target.get(), SHUT_WR);
  });
  bool eof = false;
  const auto got = recv_all(client.get(), &eof);
  sender.join();
  CHECK(eof);
  CHECK(got.size() == rest.size());
  CHECK(digest(got) == digest(rest));
  CHECK_FALSE(d.proc.exited());  // the client has not closed its side: the connection is still live
  client.reset();
  CHECK(exited_cleanly(d.proc));
  CHECK(std::chrono::steady_clock::now() - sigterm < 120s);
  CHECK(d.proc.log().find("drained: no live connections left") != std::string::npos);  // not the timeout
}

TEST_CASE("what a drain leaves open at --drain-timeout is closed, and the exit is 0", "[e2e]") {
  for (int seconds : {1, 0}) {  // 0: no drain at all
    INFO("--drain-timeout " << seconds);
    target_server target(target_server::echo);
    temp_dir dir;
    running d(args_for(dir, {"--drain-timeout", std::to_string(seconds)}));
    const std::uint16_t port = create(d.client, target.port())["listen_port"];
    auto c = held_connection(port);
    const auto t0 = std::chrono::steady_clock::now();
    d.proc.signal(SIGTERM);
    CHECK(closed_by_peer(c.get()));
    const auto closed_after = std::chrono::steady_clock::now() - t0;
    CHECK(exited_cleanly(d.proc));
    CHECK(closed_after >= seconds * 1000ms - 100ms);  // it waited for the drain
    CHECK(std::chrono::steady_clock::now() - t0 < seconds * 1s + 20s);  // the connection is held for good
    if (seconds > 0) {
      CHECK(d.proc.log().find("drain timeout reached: closing 1 live connections") != std::string::npos);
    }
  }
}

TEST_CASE("a second SIGTERM or SIGINT in a drain stops at once", "[e2e]") {
  for (int second : {SIGTERM, SIGINT}) {
    target_server target(target_server::echo);
    temp_dir dir;
    running d(args_for(dir, {"--drain-timeout", "60"}));
    const std::uint16_t port = create(d.client, target.port())["listen_port"];
    auto c = held_connection(port);
    d.proc.signal(SIGTERM);
    REQUIRE(log_has(d.proc, drain_started));
    const auto t0 = std::chrono::steady_clock::now();
    d.proc.signal(second);
    CHECK(closed_by_peer(c.get()));
    CHECK(exited_cleanly(d.proc));
    CHECK(std::chrono::steady_clock::now() - t0 < 30s);  // the drain would take 60 s
    CHECK(d.proc.log().find(second == SIGTERM ? "received SIGTERM while draining" : "received SIGINT while draining") !=
          std::string::npos);
  }
}

TEST_CASE("an idle UDP session ends the drain early, and the first signal says how to stop at once", "[e2e][udp]") {
  // Sessions in use keeping their replies, and new clients refused, are engine tests (test_udp_forward).
  udp_echo_server target;
  temp_dir dir;
  running d(args_for(dir, {"--drain-timeout", "60"}));
  const std::uint16_t port = create(d.client, target.port(), true, 0, "udp")["listen_port"];
  auto a = udp_client(port);
  send_all(a.get(), std::string("before"));
  REQUIRE(recv_datagram(a.get()) == "before");
  d.proc.signal(SIGTERM);
  REQUIRE(log_has(d.proc, drain_started));
  CHECK(d.proc.log().find("a second SIGINT or SIGTERM stops at once") != std::string::npos);
  // The client sends nothing more: its session ends a second later, and with it the drain, long
  // before the drain's 60 s.
  CHECK(exited_cleanly(d.proc));
  CHECK(d.proc.log().find("drained: no live connections left") != std::string::npos);
}
