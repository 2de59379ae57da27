// ctl: the client's output, its files and its requests, in-process against a stand-in API that answers
// the documented shapes (the real daemon is in test_ctl_e2e.cpp).
#include "api/ctl.hpp"
#include "api/ctl_client.hpp"
#include "api/ctl_document.hpp"
#include "api/ctl_output.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>
#include <httplib.h>

#include <fstream>
#include <sstream>

using namespace api;
using test::temp_dir;

namespace {

// An httplib server on a kernel-chosen loopback port, serving what a test routes.
struct fake_api {
  httplib::Server server;
  int port = 0;
  std::thread thread;
  fake_api() = default;
  void start() {
    port = server.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server.listen_after_bind(); });
    // bound and listening already: a client that comes first waits in the backlog
  }
  ~fake_api() {
    server.stop();
    if (thread.joinable()) thread.join();
  }
};

struct ctl_run {
  int status;
  std::string out, err;
};

ctl_run ctl(const fake_api& f, std::vector<std::string> args) {
  ::unsetenv("PORTRELAY_API");
  ::unsetenv("PORTRELAY_TOKEN");
  args.insert(args.begin(), {"--api", "127.0.0.1:" + std::to_string(f.port)});
  std::ostringstream out, err;
  const int status = run_ctl(args, out, err);
  return {status, out.str(), err.str()};
}

}  // namespace

TEST_CASE("ctl human units, state marks and tables aligned by characters", "[cli]") {
  CHECK(human_bytes(0) == "0 B");
  CHECK(human_bytes(1023) == "1023 B");
  CHECK(human_bytes(1024) == "1.0 KiB");
  CHECK(human_bytes(1536) == "1.5 KiB");
  CHECK(human_bytes(1048575) == "1.0 MiB");
  CHECK(human_bytes(3ull << 30) == "3.0 GiB");
  CHECK(human_duration(0.45) == "0.4s");
  CHECK(human_duration(12.7) == "12s");
  CHECK(human_duration(185) == "3m05s");
  CHECK(human_duration(7380) == "2h03m");
  CHECK(human_duration(352800) == "4d02h");
  CHECK(state_mark("error") == "✖ error");
  text_table t({"ID", "STATE", "UP"}, {true, false, true});
  t.add({"7", "● active", "1.0 KiB"});
  t.add({"12", "○ disabled", "0 B"});
  CHECK(t.str() ==
        "ID  STATE            UP\n"
        " 7  ● active    1.0 KiB\n"
        "12  ○ disabled      0 B\n");
}

TEST_CASE("ctl reads the API address in every documented form", "[cli]") {
  CHECK(endpoint_url(*parse_endpoint("127.0.0.1:7410")) == "http://127.0.0.1:7410");
  CHECK(endpoint_url(*parse_endpoint("http://127.0.0.1:8000/")) == "http://127.0.0.1:8000");
  CHECK(endpoint_url(*parse_endpoint("[::1]:9")) == "http://[::1]:9");
  CHECK(endpoint_url(*parse_endpoint("http://[::1]:9")) == "http://[::1]:9");
  CHECK(parse_endpoint("[::1]:9")->host == "::1");
  CHECK(endpoint_url(*parse_endpoint("localhost:7410")) == "http://localhost:7410");
  // A port alone or a host alone is refused (a bare 7420 would read as the IPv4 address 0.0.28.252).
  for (const char* bad : {"7420", "127.0.0.1", "localhost", "http://127.0.0.1", "", "::1:9", "[::1", "[::1]x", "host:", "host:0", "host:65536", "https://h:1", "h:1:2", "a b:1"}) {
    INFO(bad);
    CHECK_FALSE(parse_endpoint(bad));
  }
}

TEST_CASE("ctl YAML reads as the JSON it means and an export in YAML reads back the same", "[cli]") {
  const auto doc = yaml_to_json(
      "forwards:\n"
      "  - name: \"8080\"\n"
      "    listen_port: 8080\n"
      "    enabled: false\n"
      "    health_check: ~\n"
      "    weight: 1.5\n"
      "    allow: []\n"
      "    host: 'true'\n"
      "    note: plain words\n");
  CHECK(doc == ctl_json::parse(R"({"forwards":[{"name":"8080","listen_port":8080,"enabled":false,"health_check":null,
    "weight":1.5,"allow":[],"host":"true","note":"plain words"}]})"));
  CHECK_THROWS_WITH(yaml_to_json("a: 1\na: 2\n"), Catch::Contains("line 2") && Catch::Contains("'a' given twice"));
  CHECK_THROWS_WITH(yaml_to_json("a: [1\n"), Catch::Contains("line"));

  const auto tricky = ctl_json::parse(R"({"forwards":[{"name":"80","a":"true","b":"null","c":"","d":"a: b","e":"- x",
    "f":"héllo ✔","g":"~","h":"1e3","i":-5,"j":0.25,"k":null,"l":{},"m":[],"n":[{"host":"::1","port":1}],"o":"#x"}]})");
  CHECK(yaml_to_json(json_to_yaml(tricky)) == tricky);
  CHECK(document_body(" {\"a\":1, \"a\":2}", "x.conf") == " {\"a\":1, \"a\":2}");  // JSON goes as written
  CHECK(document_body("a: 1\n", "x.conf") == R"({"a":1})");
  CHECK(document_body("{a: 1}", "x.yml") == R"({"a":1})");
}

TEST_CASE("ctl plan text: creates, each changed field, deletes, unchanged and errors", "[cli]") {
  const auto plan = ctl_json::parse(R"({"create":["web"],"update":[{"name":"db","changes":{"listen_port":[5432,5433],
    "name":["a","b"]}}],"delete":["old"],"unchanged":3,"errors":[{"name":"web","field":"listen_port","message":"taken"}]})");
  CHECK(plan_text(plan) ==
        "+ web (create)\n"
        "~ db: listen_port 5432 -> 5433\n"
        "~ db: name \"a\" -> \"b\"\n"
        "- old (delete)\n"
        "= 3 unchanged\n"
        "✖ web: listen_port: taken\n");
}

TEST_CASE("ctl conns follows next through every page and kill sends the id or the prefix", "[cli]") {
  fake_api f;
  std::vector<std::string> seen;
  f.server.Get("/api/v1/forwards/3/connections", [&](const httplib::Request& req, httplib::Response& res) {
    seen.push_back(req.get_param_value("limit") + "/" + req.get_param_value("after"));
    const auto entry = [](int id) {
      return ctl_json{{"id", id}, {"protocol", "tcp"}, {"client", "127.0.0.1:4000" + std::to_string(id)},
                      {"listen", "127.0.0.1:9000"}, {"target", "127.0.0.1:9001"}, {"state", "relaying"},
                      {"started_at", "2026-12-01T03:04:05Z"}, {"idle_s", 1.5}, {"bytes_up", 2048}, {"bytes_down", 10}};
    };
    ctl_json page = req.has_param("after") ? ctl_json{{"connections", {entry(5)}}, {"next", nullptr}}
                                           : ctl_json{{"connections", {entry(1), entry(2)}}, {"next", "2"}};
    res.set_content(page.dump(), "application/json");
  });
  f.server.Get("/api/v1/forwards/4/connections", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content("[1]", "application/json");  // not the API's shape: an error, not a crash
  });
  std::string deleted;
  f.server.Delete(R"(/api/v1/forwards/3/connections/(\d+))", [&](const httplib::Request& req, httplib::Response& res) {
    deleted = req.matches[1];
    res.status = deleted == "5" ? 204 : 404;
    if (res.status == 404) res.set_content(R"({"error":{"code":"not_found","message":"no connection 6"}})", "application/json");
  });
  f.server.Delete("/api/v1/forwards/3/connections", [&](const httplib::Request& req, httplib::Response& res) {
    deleted = req.get_param_value("client");
    res.set_content(R"({"closed":2})", "application/json");
  });
  f.start();

  const auto table = ctl(f, {"conns", "3", "--limit", "2"});
  INFO(table.err);
  CHECK(table.status == 0);
  CHECK(seen == std::vector<std::string>{"2/", "2/2"});
  CHECK(std::count(table.out.begin(), table.out.end(), '\n') == 4);
  CHECK(table.out.find("127.0.0.1:40005  127.0.0.1:9000  127.0.0.1:9001  relaying") != std::string::npos);
  CHECK(table.out.find("1.5s  2.0 KiB  10 B") != std::string::npos);
  const auto js = ctl(f, {"conns", "3", "--json"});
  const auto all = ctl_json::parse(js.out);
  CHECK(all["next"].is_null());
  CHECK(all["connections"].size() == 3);
  CHECK(all["connections"][2]["id"] == 5);

  const auto odd = ctl(f, {"conns", "4"});
  CHECK(odd.status == 1);
  CHECK(odd.err.starts_with("portrelay ctl: unexpected answer from the API: "));

  CHECK(ctl(f, {"kill", "3", "5"}).out == "closed connection 5\n");
  CHECK(deleted == "5");
  const auto gone = ctl(f, {"kill", "3", "6"});
  CHECK(gone.status == 1);
  CHECK(gone.err == "portrelay ctl: no connection 6 (404 not_found)\n");
  CHECK(ctl(f, {"kill", "3", "--client", "10.0.0.0/8"}).out == "closed 2 connections\n");
  CHECK(deleted == "10.0.0.0/8");
  CHECK(ctl(f, {"kill", "3", "--client", "::/0", "--json"}).out == "{\"closed\":2}\n");
}

TEST_CASE("ctl export writes JSON or YAML and apply sends the file as JSON with If-Match, a dry run as a diff", "[cli]") {
  fake_api f;
  const auto config = ctl_json::parse(R"({"forwards":[{"name":"web","protocol":"tcp","listen_port":8080,
    "targets":[{"host":"10.0.0.1","port":80,"weight":1,"backup":false}],"allow":[]}]})");
  f.server.Get("/api/v1/config", [&](const httplib::Request&, httplib::Response& res) {
    res.set_header("ETag", "\"abc123\"");
    res.set_content(config.dump(), "application/json");
  });
  std::string body, if_match, dry_run;
  f.server.Put("/api/v1/config", [&](const httplib::Request& req, httplib::Response& res) {
    body = req.body;
    if_match = req.get_header_value("If-Match");
    dry_run = req.get_param_value("dry_run");
    if (if_match == "\"stale\"") {
      res.status = 412;
      res.set_content(R"({"error":{"code":"precondition_failed","message":"the configuration has changed"}})", "application/json");
      return;
    }
    const bool errors = ctl_json::parse(body)["forwards"].size() > 1;
    ctl_json plan = {{"create", ctl_json::array()}, {"update", {{{"name", "web"}, {"changes", {{"listen_port", {8080, 8081}}}}}}},
                     {"delete", ctl_json::array()}, {"unchanged", 0}, {"errors", ctl_json::array()}};
    if (errors) plan["errors"].push_back({{"name", "x"}, {"field", "listen_port"}, {"message", "in use"}});
    res.set_header("ETag", "\"def456\"");
    res.set_content(plan.dump(), "application/json");
  });
  f.start();
  temp_dir dir;
  const auto json_file = (dir.path / "c.json").string(), yaml_file = (dir.path / "c.yaml").string();

  const auto exported = ctl(f, {"export", json_file});
  CHECK(exported.out == "exported 1 forwards to " + json_file + " (ETag \"abc123\")\n");
  std::ifstream in(json_file);
  CHECK(ctl_json::parse(in) == config);
  CHECK(ctl_json::parse(ctl(f, {"export"}).out) == config);
  CHECK(ctl(f, {"export", yaml_file}).status == 0);
  std::ifstream yin(yaml_file);
  CHECK(yaml_to_json(std::string(std::istreambuf_iterator<char>(yin), {})) == config);
  CHECK(yaml_to_json(ctl(f, {"export", "--yaml"}).out) == config);

  const auto dry = ctl(f, {"apply", yaml_file, "--dry-run", "--if-match", "abc123"});
  INFO(dry.err);
  CHECK(dry.status == 0);
  CHECK(dry.out == "~ web: listen_port 8080 -> 8081\n= 0 unchanged\ndry run: nothing was changed\n");
  CHECK(ctl_json::parse(body) == config);
  CHECK(if_match == "\"abc123\"");
  CHECK(dry_run == "true");

  const auto applied = ctl(f, {"apply", json_file});
  CHECK(applied.out == "~ web: listen_port 8080 -> 8081\n= 0 unchanged\napplied (ETag \"def456\")\n");
  CHECK(if_match.empty());
  CHECK(dry_run.empty());

  std::ofstream(yaml_file) << "forwards:\n  - name: a\n  - name: x\n";
  const auto failing = ctl(f, {"apply", yaml_file, "--dry-run", "--json"});
  CHECK(failing.status == 1);
  CHECK(ctl_json::parse(failing.out)["errors"][0]["name"] == "x");
  const auto stale = ctl(f, {"apply", json_file, "--if-match", "\"stale\""});
  CHECK(stale.status == 1);
  CHECK(stale.err == "portrelay ctl: the configuration has changed (412 precondition_failed)\n");
  std::ofstream(yaml_file) << "forwards: [\n";
  CHECK(ctl(f, {"apply", yaml_file}).status == 1);
  CHECK(ctl(f, {"apply", (dir.path / "missing.json").string()}).err.find("cannot read") != std::string::npos);
}
