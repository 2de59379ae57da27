// End to end against the built binary: CRUD, restarts, kill -9, conflicts, auth, flags, signals.
#include "e2e_support.hpp"
#include "read_only_file.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <functional>
#include <regex>

#include <sys/resource.h>

using namespace test;
using nlohmann::json;


namespace {
// Waits for a daemon that must refuse to start: its exit status is 1 and its log one line.
std::string refused_start(daemon_process& d) {
  auto st = d.wait_exit();
  REQUIRE(st);
  const auto log = d.log();
  INFO(log);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 1);
  CHECK(std::count(log.begin(), log.end(), '\n') == 1);
  CHECK(log.find("listening on") == std::string::npos);  // never reported ready
  return log;
}
}  // namespace

TEST_CASE("full CRUD with traffic, and lifecycle lines in the log", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  running d(args_for(dir));
  auto fwd = create(d.client, target.port());
  const int port = fwd["listen_port"];
  CHECK(echo_once(port, "hello") == "hello");
  CHECK(eventually([&] {
    auto j = json::parse(d.client.Get("/api/v1/forwards/1")->body);
    return j["stats"]["connections_total"] == 1 && j["stats"]["bytes_down"] == 5 &&
           j["stats"]["connections_active"] == 0;
  }));

  auto patched = d.client.Patch("/api/v1/forwards/1", R"({"name":"renamed"})", "application/json");
  REQUIRE(patched);
  CHECK(patched->status == 200);
  CHECK(json::parse(patched->body)["name"] == "renamed");

  auto list = json::parse(d.client.Get("/api/v1/forwards")->body);
  REQUIRE(list.size() == 1);
  CHECK(list[0]["name"] == "renamed");

  CHECK(d.client.Delete("/api/v1/forwards/1")->status == 204);
  CHECK(echo_once(port, "gone") == "<refused>");
  d.proc.signal(SIGTERM);
  CHECK(exited_cleanly(d.proc));
  auto log = d.proc.log();
  CHECK(log.find("forward 1 created") != std::string::npos);
  CHECK(log.find("forward 1 changed") != std::string::npos);
  CHECK(log.find("forward 1 deleted") != std::string::npos);
  // Ordinary traffic and changes never log at warning or error level.
  CHECK(log.find("Z error ") == std::string::npos);
  CHECK(log.find("Z warning ") == std::string::npos);
}

TEST_CASE("a restart restores every forward with its id and port - disabled ones stay closed", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  int active_port = 0, disabled_id = 0;
  {
    running d(args_for(dir));
    active_port = create(d.client, target.port())["listen_port"];
    disabled_id = create(d.client, target.port(), false)["id"];
    d.proc.signal(SIGTERM);
    REQUIRE(exited_cleanly(d.proc));
  }
  running d(args_for(dir));
  auto list = json::parse(d.client.Get("/api/v1/forwards")->body);
  REQUIRE(list.size() == 2);
  CHECK(list[0]["id"] == 1);
  CHECK(list[0]["listen_port"] == active_port);
  CHECK(list[0]["state"] == "active");
  CHECK(list[1]["id"] == disabled_id);
  CHECK(list[1]["state"] == "disabled");
  CHECK(echo_once(active_port, "back") == "back");
  // Ids are never reused across restarts either.
  CHECK(create(d.client, target.port())["id"] == 3);
}

TEST_CASE("kill -9 right after a 201 loses nothing", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  int port = 0;
  {
    running d(args_for(dir));
    port = create(d.client, target.port())["listen_port"];
    d.proc.signal(SIGKILL);
    REQUIRE(d.proc.wait_exit());
  }
  running d(args_for(dir));
  auto list = json::parse(d.client.Get("/api/v1/forwards")->body);
  REQUIRE(list.size() == 1);
  CHECK(list[0]["listen_port"] == port);
  CHECK(echo_once(port, "durable") == "durable");
}

TEST_CASE("a port conflict is a 409 and nothing is persisted", "[e2e]") {
  temp_dir dir;
  std::uint16_t taken = 0;
  auto other = listen_on(taken);
  {
    running d(args_for(dir));
    auto r = d.client.Post("/api/v1/forwards",
                           json{{"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", taken},
                                {"target_host", "127.0.0.1"}, {"target_port", 9}}
                               .dump(),
                           "application/json");
    REQUIRE(r);
    CHECK(r->status == 409);
    CHECK(json::parse(r->body)["error"]["code"] == "address_in_use");
    d.proc.signal(SIGKILL);
    REQUIRE(d.proc.wait_exit());
  }
  running d(args_for(dir));
  CHECK(json::parse(d.client.Get("/api/v1/forwards")->body).empty());
}

TEST_CASE("a stored forward whose port is taken at start is in error - the daemon serves the rest", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  int blocked_port = 0, fine_port = 0;
  {
    running d(args_for(dir));
    blocked_port = create(d.client, target.port())["listen_port"];
    fine_port = create(d.client, target.port())["listen_port"];
    d.proc.signal(SIGTERM);
    REQUIRE(exited_cleanly(d.proc));
  }
  std::uint16_t p = static_cast<std::uint16_t>(blocked_port);
  auto squatter = listen_on(p);
  running d(args_for(dir));
  auto list = json::parse(d.client.Get("/api/v1/forwards")->body);
  CHECK(list[0]["state"] == "error");
  CHECK(list[0]["error"].get<std::string>().find("in use") != std::string::npos);
  CHECK(list[1]["state"] == "active");
  CHECK(echo_once(fine_port, "alive") == "alive");
  CHECK(d.proc.log().find("forward 1 failed to bind") != std::string::npos);
}

TEST_CASE("token auth from a file, surrounding whitespace ignored", "[e2e]") {
  temp_dir dir;
  const auto token_file = (dir.path / "token").string();
  std::ofstream(token_file) << "  tok-123 \n";
  running d(args_for(dir, {"--token-file", token_file}));
  CHECK(d.client.Get("/healthz")->status == 200);
  CHECK(d.client.Get("/api/v1/forwards")->status == 401);
  CHECK(d.client.Get("/api/v1/forwards", {{"Authorization", "Bearer tok-123"}})->status == 200);
  CHECK(d.client.Get("/api/v1/forwards", {{"Authorization", "Bearer  tok-123 "}})->status == 401);
}

namespace {
std::vector<std::string> files_in(const temp_dir& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}
}  // namespace

TEST_CASE("one daemon per database - a second one exits 1 naming the file and the holder", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  running first(args_for(dir));
  const std::uint16_t port = create(first.client, target.port())["listen_port"];
  const auto before = files_in(dir);

  daemon_process second(args_for(dir));  // the same --db, another API port
  const auto log = refused_start(second);
  CHECK(log.find((dir.path / "e2e.db").string()) != std::string::npos);
  CHECK(log.find("pid " + std::to_string(first.proc.pid())) != std::string::npos);
  CHECK(files_in(dir) == before);  // no -wal, -shm or anything else of its own

  // The first daemon never noticed: it serves, relays, and its forward is intact.
  auto list = json::parse(first.client.Get("/api/v1/forwards")->body);
  REQUIRE(list.size() == 1);
  CHECK(list[0]["state"] == "active");
  CHECK(echo_once(port, "still mine") == "still mine");

  // The kernel drops the lock with its holder: after kill -9 the next daemon starts at once.
  first.proc.signal(SIGKILL);
  REQUIRE(first.proc.wait_exit());
  running third(args_for(dir));
  CHECK(json::parse(third.client.Get("/api/v1/forwards")->body).size() == 1);
}

TEST_CASE("a daemon that fails to start leaves no file behind", "[e2e]") {
  temp_dir dir;
  std::uint16_t taken = 0;
  auto holder = listen_on(taken, "127.0.0.1");
  daemon_process d({"--db", (dir.path / "fresh.db").string(), "--api", "127.0.0.1:" + std::to_string(taken)});
  auto st = d.wait_exit();
  REQUIRE(st);
  INFO(d.log());
  CHECK(WEXITSTATUS(*st) == 1);
  CHECK(d.log().find("API: bind 127.0.0.1:" + std::to_string(taken) + ": Address already in use") != std::string::npos);
  CHECK(files_in(dir).empty());
}

TEST_CASE("an API off loopback without a token is refused at start", "[e2e]") {
  temp_dir dir;
  daemon_process d({"--db", (dir.path / "x.db").string(), "--api", "0.0.0.0:0"});
  auto st = d.wait_exit();
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) != 0);
  CHECK(d.log().find("refusing to serve the API on 0.0.0.0") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir.path / "x.db"));
}

TEST_CASE("bad flags give one line and exit 2 - --help and --version exit 0", "[e2e]") {
  for (auto args : std::vector<std::vector<std::string>>{
           {"--frobnicate"}, {"--workers", "zero"}, {"--api", "nowhere"}, {"--log-level", "chatty"},
           {"--token-file", "/nonexistent/token"}}) {
    daemon_process d(args);
    auto st = d.wait_exit();
    REQUIRE(st);
    const auto log = d.log();
    INFO(log);
    CHECK(WEXITSTATUS(*st) == 2);
    CHECK(std::count(log.begin(), log.end(), '\n') == 1);
    CHECK(log.find(args[0]) != std::string::npos);
  }
  daemon_process help({"--help"});
  CHECK(help.wait_exit() == 0);
  CHECK(help.log().find("usage: portrelay") != std::string::npos);
  daemon_process version({"--version"});
  CHECK(version.wait_exit() == 0);
  CHECK(version.log().find("portrelay ") == 0);
}

TEST_CASE("the accept loop survives running out of file descriptors", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  // The daemon inherits a small descriptor limit, so a burst of clients exhausts it.
  rlimit saved{};
  getrlimit(RLIMIT_NOFILE, &saved);
  rlimit low{64, saved.rlim_max};
  setrlimit(RLIMIT_NOFILE, &low);
  running d(args_for(dir));
  setrlimit(RLIMIT_NOFILE, &saved);
  const int port = create(d.client, target.port())["listen_port"];

  std::vector<fd> burst;
  for (int i = 0; i < 60; ++i) burst.push_back(connect_to(port));  // queued by the kernel even when not accepted
  // Whichever call meets the limit first (the accept, or the socket to the target) says so in the log.
  CHECK(eventually([&] { return d.proc.log().find(": Too many open files") != std::string::npos; }));
  burst.clear();
  INFO(d.proc.log());
  // Once descriptors are free again, the same listener serves new clients.
  CHECK(eventually([&] { return echo_once(port, "recovered") == "recovered"; }));
  CHECK_FALSE(d.proc.exited());
}

TEST_CASE("every failure class gets its status and JSON error from the binary", "[e2e]") {
  temp_dir dir;
  running d(args_for(dir));
  std::uint16_t taken = 0;
  auto other = listen_on(taken);
  const auto body = [](json j) { return j.dump(); };
  const json good{{"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                  {"target_host", "127.0.0.1"}, {"target_port", 9}};
  struct probe {
    const char* what;
    std::function<httplib::Result()> send;
    int status;
    const char* code;
  };
  auto with = [&](const char* key, json value) {
    auto j = good;
    j[key] = std::move(value);
    return body(j);
  };
  const probe probes[] = {
      {"malformed JSON", [&] { return d.client.Post("/api/v1/forwards", "{", "application/json"); }, 400,
       "invalid_json"},
      {"not an object", [&] { return d.client.Post("/api/v1/forwards", "[]", "application/json"); }, 400,
       "invalid_body"},
      {"unknown field", [&] { return d.client.Post("/api/v1/forwards", with("x", 1), "application/json"); }, 400,
       "unknown_field"},
      {"wrong type", [&] { return d.client.Post("/api/v1/forwards", with("listen_port", "80"), "application/json"); },
       400, "invalid_field"},
      {"out of range", [&] { return d.client.Post("/api/v1/forwards", with("target_port", 0), "application/json"); },
       400, "invalid_field"},
      {"bad UDP setting",
       [&] { return d.client.Post("/api/v1/forwards", with("udp_idle_timeout_s", 0), "application/json"); }, 400,
       "invalid_field"},
      {"unknown id", [&] { return d.client.Get("/api/v1/forwards/77"); }, 404, "not_found"},
      {"unknown path", [&] { return d.client.Get("/nowhere"); }, 404, "not_found"},
      {"bad method", [&] { return d.client.Put("/api/v1/forwards", "{}", "application/json"); }, 405,
       "method_not_allowed"},
      {"port in use", [&] { return d.client.Post("/api/v1/forwards", with("listen_port", taken), "application/json"); },
       409, "address_in_use"},
      {"too large",
       [&] { return d.client.Post("/api/v1/forwards", std::string(200 * 1024, ' '), "application/json"); }, 413,
       "payload_too_large"},
      {"not JSON", [&] { return d.client.Post("/api/v1/forwards", body(good), "text/plain"); }, 415,
       "unsupported_media_type"},
      {"foreign Host", [&] { return d.client.Get("/api/v1/forwards", {{"Host", "rebind.example"}}); }, 403,
       "host_not_allowed"},
  };
  for (const auto& p : probes) {
    INFO(p.what);
    auto r = p.send();
    REQUIRE(r);
    CHECK(r->status == p.status);
    auto j = json::parse(r->body, nullptr, false);
    REQUIRE(j.is_object());
    CHECK(j["error"]["code"] == p.code);
    CHECK_FALSE(j["error"]["message"].get<std::string>().empty());
  }
  CHECK(json::parse(d.client.Get("/api/v1/forwards")->body).empty());
  CHECK_FALSE(d.proc.exited());
}

TEST_CASE("a UDP forward relays, and a restart restores it with its settings", "[e2e][udp]") {
  udp_echo_server target;
  temp_dir dir;
  const json udp{{"protocol", "udp"},         {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                 {"target_host", "127.0.0.1"}, {"target_port", target.port()}, {"udp_idle_timeout_s", 30},
                 {"udp_max_sessions", 7}};
  int port = 0;
  {
    running d(args_for(dir, {"--drain-timeout", "0"}));  // the live session would hold a drain open
    auto r = d.client.Post("/api/v1/forwards", udp.dump(), "application/json");
    REQUIRE(r);
    INFO(r->body);
    REQUIRE(r->status == 201);
    auto fwd = json::parse(r->body);
    CHECK(fwd["udp_idle_timeout_s"] == 30);
    CHECK(fwd["udp_max_sessions"] == 7);
    port = fwd["listen_port"];
    auto c = udp_client(static_cast<std::uint16_t>(port));
    send_all(c.get(), std::string("dns?"));
    CHECK(recv_datagram(c.get()) == "dns?");
    CHECK(eventually([&] {
      auto stats = json::parse(d.client.Get("/api/v1/forwards/1")->body)["stats"];
      return stats["datagrams_up"] == 1 && stats["datagrams_down"] == 1 && stats["connections_active"] == 1;
    }));
    auto bad = d.client.Patch("/api/v1/forwards/1", R"({"udp_max_sessions":0})", "application/json");
    CHECK(bad->status == 400);
    d.proc.signal(SIGTERM);
    REQUIRE(exited_cleanly(d.proc));
  }
  running d(args_for(dir));
  auto fwd = json::parse(d.client.Get("/api/v1/forwards/1")->body);
  CHECK(fwd["protocol"] == "udp");
  CHECK(fwd["listen_port"] == port);
  CHECK(fwd["udp_idle_timeout_s"] == 30);
  CHECK(fwd["udp_max_sessions"] == 7);
  CHECK(fwd["state"] == "active");
  auto c = udp_client(static_cast<std::uint16_t>(port));
  send_all(c.get(), std::string("again"));
  CHECK(recv_datagram(c.get()) == "again");
  // And a TCP forward on the same port number (another test's client may hold that number for TCP;
  // then a fresh UDP port is tried).
  bool paired = false;
  for (int attempt = 0; attempt < 20 && !paired; ++attempt) {
    auto tcp = d.client.Post("/api/v1/forwards",
                             json{{"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", port},
                                  {"target_host", "127.0.0.1"}, {"target_port", 9}}
                                 .dump(),
                             "application/json");
    REQUIRE(tcp);
    paired = tcp->status == 201;
    if (!paired) {
      auto next = d.client.Post("/api/v1/forwards", udp.dump(), "application/json");
      REQUIRE(next);
      port = json::parse(next->body)["listen_port"];
    }
  }
  CHECK(paired);
}

TEST_CASE("UDP sessions expire and the daemon's descriptor count returns to its baseline", "[e2e][udp]") {
  udp_echo_server target;
  temp_dir dir;
  running d(args_for(dir));
  auto r = d.client.Post("/api/v1/forwards",
                         json{{"protocol", "udp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                              {"target_host", "127.0.0.1"}, {"target_port", target.port()}, {"udp_idle_timeout_s", 1}}
                             .dump(),
                         "application/json");
  REQUIRE(r);
  REQUIRE(r->status == 201);
  const std::uint16_t port = json::parse(r->body)["listen_port"];
  const auto fd_dir = "/proc/" + std::to_string(d.proc.pid()) + "/fd";
  auto daemon_fds = [&] {
    return std::distance(std::filesystem::directory_iterator(fd_dir), std::filesystem::directory_iterator{});
  };
  // The API's own connection may still be closing when a count is taken, so the counts are compared
  // with that slack: the baseline is an upper bound, and the sessions must account for 50 at least.
  const auto baseline = daemon_fds();
  long with_sessions = 0;
  {
    std::vector<fd> clients;
    for (int i = 0; i < 50; ++i) {
      clients.push_back(udp_client(port));
      send_all(clients.back().get(), std::string("ping"));
      REQUIRE(recv_datagram(clients.back().get()) == "ping");
    }
    with_sessions = daemon_fds();
    CHECK(with_sessions >= baseline + 50 - 1);  // one upstream socket per session
  }
  CHECK(eventually([&] { return daemon_fds() <= with_sessions - 50 && daemon_fds() <= baseline; }));
  CHECK(json::parse(d.client.Get("/api/v1/forwards/1")->body)["stats"]["connections_active"] == 0);
}

// ---- start-up database checks, input checks and the descriptor limit (issue 12, parts 5 and 6) ----

TEST_CASE("a read-only database is refused at start, in one line naming the file, exit 1", "[e2e]") {
  temp_dir dir;
  const auto db = (dir.path / "e2e.db").string();
  {
    running first(args_for(dir));
    create(first.client, 9, false);
    first.proc.signal(SIGTERM);
    REQUIRE(exited_cleanly(first.proc));
  }
  read_only_file ro(db);
  if (!ro.ok()) {
    WARN("this file system has no immutable attribute; a read-only file cannot be made for root");
    return;
  }
  daemon_process d(args_for(dir));
  const auto log = refused_start(d);
  CHECK(log.find("database " + db + ": the file is read-only") != std::string::npos);
}

TEST_CASE("a file that is not a database is refused at start, naming the file", "[e2e]") {
  temp_dir dir;
  const auto db = (dir.path / "e2e.db").string();
  std::ofstream(db) << "not a database, but long enough to be read as a header of one\n";
  daemon_process d(args_for(dir));
  const auto log = refused_start(d);
  CHECK(log.find("database " + db + ": sqlite: file is not a database") != std::string::npos);
}

TEST_CASE("duplicate keys, control characters in hosts and bidi controls in names are 400s", "[e2e]") {
  temp_dir dir;
  running d(args_for(dir));
  const std::string good = R"("protocol": "tcp", "listen_host": "127.0.0.1", "listen_port": 0, "target_port": 9)";
  struct bad_body {
    std::string body;
    const char* code;
    const char* field;
  };
  const std::vector<bad_body> cases{
      {"{" + good + R"(, "target_host": "127.0.0.1", "target_port": 0})", "duplicate_key", "target_port"},
      {"{" + good + R"(, "target_host": "127.0.0.1\u0000evil"})", "invalid_field", "target_host"},
      {R"({"protocol": "tcp", "listen_host": "127.0.0.1\u0000evil", "listen_port": 0, "target_host": "a",)"
       R"( "target_port": 9})", "invalid_field", "listen_host"},
      {"{" + good + R"(, "target_host": "a", "name": "abc\u202Egpj.exe"})", "invalid_field", "name"},
  };
  for (const auto& c : cases) {
    INFO(c.body);
    auto r = d.client.Post("/api/v1/forwards", c.body, "application/json");
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 400);
    const auto error = json::parse(r->body)["error"];
    CHECK(error["code"] == c.code);
    CHECK(error["field"] == c.field);
  }
  // The same checks on a PATCH, and nothing was stored or changed by any of them.
  const auto id = create(d.client, 9, false)["id"].get<int>();
  auto r = d.client.Patch("/api/v1/forwards/" + std::to_string(id), R"({"name": "a", "name": "b"})",
                          "application/json");
  REQUIRE(r);
  CHECK(r->status == 400);
  auto list = json::parse(d.client.Get("/api/v1/forwards")->body);
  REQUIRE(list.size() == 1);
  CHECK(list[0]["name"] == "");
}

namespace {
// The daemon limited to 64 descriptors, with one UDP forward to an echo target, and its API
// connection made while descriptors are free and kept for every request after.
struct udp_at_64 {
  udp_echo_server target;
  temp_dir dir;
  std::unique_ptr<running> d;
  nlohmann::json forward;
  udp_at_64() {
    rlimit saved{};
    getrlimit(RLIMIT_NOFILE, &saved);
    const rlimit low{64, saved.rlim_max};
    setrlimit(RLIMIT_NOFILE, &low);
    d = std::make_unique<running>(args_for(dir));
    setrlimit(RLIMIT_NOFILE, &saved);
    forward = create(d->client, target.port(), true, 0, "udp");
    d->client.set_keep_alive(true);
    REQUIRE(d->client.Get("/healthz"));
  }
};
}  // namespace

TEST_CASE("out of descriptors, /metrics counts them exactly and a POST is a 503, not the client's fault", "[e2e]") {
  udp_at_64 setup;
  auto& d = *setup.d;
  const std::uint16_t port = setup.forward["listen_port"];

  // Each new client source costs the daemon one socket (its session's), until none is left: then
  // the datagram is dropped and the daemon sits at 64 of 64, steadily (sessions idle out after 60 s).
  // The daemon's descriptors as /proc lists them, from outside: all of them, and those below the
  // limit of 64 (a descriptor the daemon inherited from whatever ran the tests may be numbered above).
  const auto listed = [&](bool below_limit = false) {
    std::size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(d.proc.pid()) + "/fd")) {
      n += !below_limit || std::stoi(e.path().filename().string()) < 64;
    }
    return n;
  };
  std::vector<fd> clients;
  bool api_kept = true;
  std::string why;
  REQUIRE(eventually([&] {
    clients.push_back(udp_client(port));
    send_all(clients.back().get(), std::string("x"));
    // A request now and then, so the server never closes the connection as idle: a new one could
    // not be accepted any more.
    if (api_kept) {
      auto r = d.client.Get("/healthz");
      if (!r) why = httplib::to_string(r.error()) + " after " + std::to_string(clients.size()) + " clients";
      api_kept = static_cast<bool>(r);
    }
    return !api_kept || listed(true) == 64;
  }));
  INFO(why << "\n" << d.proc.log());
  REQUIRE(api_kept);
  for (int i = 0; i < 7; ++i) {
    auto r = d.client.Get("/metrics");
    INFO("scrape " << i << ": " << httplib::to_string(r.error()) << "\n" << d.proc.log());
    REQUIRE(r);
    INFO(r->body);
    REQUIRE(r->status == 200);
    std::smatch m;
    const std::regex open_fds(R"(\nprocess_open_fds (\d+)\n)");
    REQUIRE(std::regex_search(r->body, m, open_fds));
    CHECK(std::stoul(m[1]) == listed());
    CHECK(listed(true) == 64);
  }
  auto post = d.client.Post("/api/v1/forwards",
                            json{{"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                                 {"target_host", "127.0.0.1"}, {"target_port", 9}}.dump(),
                            "application/json");
  REQUIRE(post);
  INFO(post->body);
  CHECK(post->status == 503);
  CHECK(json::parse(post->body)["error"]["code"] == "resource_exhausted");
  CHECK_FALSE(d.proc.exited());
}

TEST_CASE("a UDP session that cannot open its socket drops the datagram, and the daemon lives", "[e2e][udp]") {
  udp_at_64 setup;
  auto& d = *setup.d;
  const auto& forward = setup.forward;
  const std::string path = "/api/v1/forwards/" + std::to_string(forward["id"].get<int>());
  // Far more new clients than descriptors. co_spawn runs a new session inline up to its first
  // wait, so one whose socket cannot be opened is closed before its first datagram is handled:
  // that datagram used to be queued on the freed session (a crash).
  std::vector<fd> clients;
  for (int i = 0; i < 100; ++i) {
    clients.push_back(udp_client(forward["listen_port"].get<std::uint16_t>()));
    send_all(clients.back().get(), std::string("x"));
  }
  json stats;
  CHECK(eventually([&] {
    auto got = d.client.Get(path);
    if (!got) return false;
    stats = json::parse(got->body)["stats"];
    return stats["datagrams_up"].get<int>() + stats["datagrams_dropped"].get<int>() == 100;
  }));
  INFO(stats.dump() << "\n" << d.proc.log());
  CHECK(stats["datagrams_dropped"] > 0);
  CHECK(stats["connect_errors"] == stats["datagrams_dropped"]);
  CHECK_FALSE(d.proc.exited());
}

TEST_CASE("no forward leads into the daemon's own API - a forged Host through one never gets a 200", "[e2e]") {
  temp_dir dir;
  running d(args_for(dir));
  const std::string api = "127.0.0.1:" + std::to_string(d.port);
  // What any client that reaches the forward could send: the API trusts loopback and this Host.
  auto forged_through = [&](std::uint16_t forward_port) {
    auto c = connect_to(forward_port, "127.0.0.2");
    if (!c) return std::string("<refused>");
    send_all(c.get(), "GET /api/v1/forwards HTTP/1.1\r\nHost: " + api + "\r\nConnection: close\r\n\r\n");
    return recv_all(c.get());
  };
  auto post = [&](const std::string& target_host) {
    return d.client.Post("/api/v1/forwards",
                         json{{"protocol", "tcp"}, {"listen_host", "127.0.0.2"}, {"listen_port", 0},
                              {"target_host", target_host}, {"target_port", d.port}}
                             .dump(),
                         "application/json");
  };
  auto literal = post("127.0.0.1");
  REQUIRE(literal);
  INFO(literal->body);
  CHECK(literal->status == 400);
  if (literal->status == 201) {  // the daemon without this check: one POST put the API on 127.0.0.2
    const auto reply = forged_through(json::parse(literal->body)["listen_port"]);
    CHECK(reply.rfind("HTTP/1.1 200", 0) != 0);
  } else {
    CHECK(json::parse(literal->body)["error"]["code"] == "target_is_api");
    CHECK(json::parse(literal->body)["error"]["field"] == "target_port");
  }
  // A host name is resolved per connection: the forward is created, each connection through it is reset.
  auto named = post("localhost");
  REQUIRE(named);
  REQUIRE(named->status == 201);
  const auto f = json::parse(named->body);
  CHECK(forged_through(f["listen_port"]).empty());
  const auto path = "/api/v1/forwards/" + std::to_string(f["id"].get<int>());
  CHECK(eventually([&] { return json::parse(d.client.Get(path.c_str())->body)["stats"]["loops_refused"] == 1; }));
  CHECK(eventually([&] { return d.proc.log().find("is this daemon's API (" + api + ")") != std::string::npos; }));
}
