// `portrelay ctl` as a user runs it: the real binary against a real daemon, output and exit status.
#include "ctl_process.hpp"
#include "e2e_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

using namespace test;
using nlohmann::json;

namespace {

// The column (in characters) at which `needle` starts in `line`, or npos.
std::size_t column_of(const std::string& line, const std::string& needle) {
  const auto at = line.find(needle);
  if (at == std::string::npos) return at;
  return static_cast<std::size_t>(std::count_if(line.begin(), line.begin() + static_cast<long>(at),
                                                [](char c) { return (c & 0xC0) != 0x80; }));
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string api_of(const running& d) { return "127.0.0.1:" + std::to_string(d.port); }

json api_get(running& d, const std::string& path) {
  auto r = d.client.Get(path.c_str());
  REQUIRE(r);
  REQUIRE(r->status == 200);
  return json::parse(r->body);
}

}  // namespace

TEST_CASE("ctl add list get set enable disable and rm drive the daemon - tables with units and --json as the API's", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  running d(args_for(dir));
  const auto api = api_of(d);
  const auto target_at = "127.0.0.1:" + std::to_string(target.port());

  auto added = run_ctl({"--api", api, "add", "--name", "web", "--listen", "127.0.0.1:0", "--target", target_at,
                        "--set", "max_connections_per_source=7"});
  INFO(added.out << added.err);
  REQUIRE(added.status == 0);
  CHECK(added.out.find("● active") != std::string::npos);
  const auto created = api_get(d, "/api/v1/forwards/1");
  CHECK(created["name"] == "web");
  CHECK(created["listen_host"] == "127.0.0.1");
  CHECK(created["max_connections_per_source"] == 7);
  const int port = created["listen_port"];

  CHECK(echo_once(port, std::string(3000, 'x')) == std::string(3000, 'x'));
  REQUIRE(eventually([&] {
    const auto f = api_get(d, "/api/v1/forwards/1");
    return f["stats"]["bytes_down"] == 3000 && f["stats"]["connections_active"] == 0;
  }));
  const auto list = run_ctl({"--api", api, "list"});
  INFO(list.out << list.err);
  REQUIRE(list.status == 0);
  const auto rows = lines_of(list.out);
  REQUIRE(rows.size() == 2);
  for (const char* column : {"NAME", "LISTEN", "STATE", "TARGETS"}) CHECK(column_of(rows[0], column) != std::string::npos);
  CHECK(column_of(rows[1], "web") == column_of(rows[0], "NAME"));
  CHECK(column_of(rows[1], "● active") == column_of(rows[0], "STATE"));
  CHECK(column_of(rows[1], target_at) == column_of(rows[0], "TARGETS"));
  CHECK(rows[1].find("2.9 KiB  2.9 KiB") != std::string::npos);  // 3000 bytes up and down

  const auto list_json = run_ctl({"list", "--json", "--api", api});
  REQUIRE(list_json.status == 0);
  CHECK(json::parse(list_json.out) == api_get(d, "/api/v1/forwards"));
  const auto get_json = run_ctl({"--api", api, "--json", "get", "1"});
  REQUIRE(get_json.status == 0);
  CHECK(json::parse(get_json.out) == api_get(d, "/api/v1/forwards/1"));
  const auto get = run_ctl({"--api", api, "get", "1"});
  CHECK(get.status == 0);
  CHECK(get.out.find("2.9 KiB up, 2.9 KiB down") != std::string::npos);

  const auto set = run_ctl({"--api", api, "set", "1", "name=renamed", "max_connections=5", R"(allow=["127.0.0.0/8"])"});
  INFO(set.err);
  CHECK(set.status == 0);
  const auto changed = api_get(d, "/api/v1/forwards/1");
  CHECK(changed["name"] == "renamed");
  CHECK(changed["max_connections"] == 5);
  CHECK(changed["allow"] == json::array({"127.0.0.0/8"}));

  const auto off = run_ctl({"--api", api, "disable", "1"});
  CHECK(off.status == 0);
  CHECK(off.out == "forward 1 (renamed): ○ disabled\n");
  CHECK(api_get(d, "/api/v1/forwards/1")["state"] == "disabled");
  CHECK(echo_once(port, "x") == "<refused>");
  const auto on = run_ctl({"--api", api, "enable", "1"});
  CHECK(on.out == "forward 1 (renamed): ● active\n");
  CHECK(echo_once(port, "again") == "again");

  const auto rm = run_ctl({"--api", api, "rm", "1"});
  CHECK(rm.status == 0);
  CHECK(rm.out == "deleted forward 1\n");
  CHECK(run_ctl({"--api", api, "list"}).out == "no forwards\n");
  CHECK(run_ctl({"--api", api, "list", "--json"}).out == "[]\n");
}

TEST_CASE("ctl exit status - the API's message and 1, an unreachable API 3, a usage error 2", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  running d(args_for(dir));
  const auto api = api_of(d);
  create(d.client, target.port());

  const auto missing = run_ctl({"--api", api, "get", "99"});
  CHECK(missing.status == 1);
  CHECK(missing.out.empty());
  CHECK(missing.err == "portrelay ctl: there is no forward with id 99 (404 not_found)\n");
  const auto bad = run_ctl({"--api", api, "set", "1", "max_connections=many"});
  CHECK(bad.status == 1);
  CHECK(bad.err == "portrelay ctl: max_connections must be an integer from 0 to 1000000 (400 invalid_field, field "
                   "max_connections)\n");

  const auto nobody = std::to_string(free_port());
  const auto unreachable = run_ctl({"--api", "127.0.0.1:" + nobody, "list"});
  CHECK(unreachable.status == 3);
  CHECK(unreachable.err.find("cannot connect to the API at http://127.0.0.1:" + nobody) != std::string::npos);

  for (const auto& args : std::vector<std::vector<std::string>>{
           {}, {"frobnicate"}, {"get", "abc"}, {"get", "0"}, {"add", "--protocol", "sctp"}, {"--api", "a:b:c", "list"},
           {"add", "--target", "no-port"}, {"set", "1", "novalue"}, {"kill", "1"}, {"kill", "1", "2", "--client", "::/0"},
           {"conns", "1", "--limit", "0"}, {"apply"}}) {
    auto full = args;
    full.insert(full.begin(), {"--api", api});
    const auto r = run_ctl(full);
    INFO(r.out << r.err);
    CHECK(r.status == 2);
    CHECK(r.err.starts_with("portrelay ctl: "));
  }
  CHECK(run_ctl({"list"}, {"PORTRELAY_API=not an address"}).status == 2);
  // A port alone or a host alone is a usage error, never a request to 0.0.28.252 or a guessed port.
  for (const std::string bare : {"7420", "127.0.0.1"}) {
    INFO(bare);
    CHECK(run_ctl({"--api", bare, "list"}).status == 2);
    CHECK(run_ctl({"list"}, {"PORTRELAY_API=" + bare}).status == 2);
  }
  const auto unknown = run_ctl({"--api", api, "lst"});
  CHECK(unknown.status == 2);
  CHECK(unknown.err.find("unknown command 'lst' (commands: list, get, add,") != std::string::npos);
  // get shows the counters beyond connections and bytes, so a refused client is seen.
  CHECK(run_ctl({"--api", api, "get", "1"}).out.find("refused_acl 0") != std::string::npos);
  CHECK(run_ctl({"--api", api, "--token-file", (dir.path / "none").string(), "list"}).status == 2);
  CHECK(api_get(d, "/api/v1/forwards")[0]["max_connections"] == 0);  // nothing was sent

  const auto help = run_ctl({"--help"});
  CHECK(help.status == 0);
  for (const char* sub : {"list", "get", "add", "set", "rm", "enable", "disable", "conns", "kill", "export", "apply"}) {
    CHECK(help.out.find(std::string("\n  ") + sub + " ") != std::string::npos);
  }
  const auto add_help = run_ctl({"add", "--help"});
  CHECK(add_help.status == 0);
  CHECK(add_help.out.find("--target") != std::string::npos);
}

TEST_CASE("ctl takes the token from --token-file or PORTRELAY_TOKEN and the address from PORTRELAY_API in both forms", "[e2e]") {
  temp_dir dir;
  const auto token_file = (dir.path / "token").string();
  std::ofstream(token_file) << "tok-123\n";
  const auto wrong_file = (dir.path / "wrong").string();
  std::ofstream(wrong_file) << "wrong\n";
  running d(args_for(dir, {"--token-file", token_file}));
  const auto api = api_of(d);
  const auto nobody = "127.0.0.1:" + std::to_string(free_port());

  const auto refused = run_ctl({"--api", api, "list"});
  CHECK(refused.status == 1);
  CHECK(refused.err.find("(401 ") != std::string::npos);
  CHECK(refused.err.find("--token-file") != std::string::npos);
  CHECK(refused.err.find("PORTRELAY_TOKEN holding the token itself") != std::string::npos);
  const auto wrong = run_ctl({"--api", api, "list"}, {"PORTRELAY_TOKEN=wrong"});
  CHECK(wrong.status == 1);
  CHECK(wrong.err.find("the token given (--token-file, else PORTRELAY_TOKEN) was refused") != std::string::npos);
  CHECK(run_ctl({"--api", api, "--token-file", token_file, "list"}).out == "no forwards\n");
  CHECK(run_ctl({"--api", api, "list"}, {"PORTRELAY_TOKEN=tok-123"}).out == "no forwards\n");
  CHECK(run_ctl({"--api", api, "--token-file", token_file, "list"}, {"PORTRELAY_TOKEN=wrong"}).status == 0);
  CHECK(run_ctl({"--api", api, "--token-file", wrong_file, "list"}, {"PORTRELAY_TOKEN=tok-123"}).status == 1);

  CHECK(run_ctl({"list"}, {"PORTRELAY_API=" + api, "PORTRELAY_TOKEN=tok-123"}).status == 0);
  CHECK(run_ctl({"list"}, {"PORTRELAY_API=http://" + api, "PORTRELAY_TOKEN=tok-123"}).status == 0);
  CHECK(run_ctl({"list"}, {"PORTRELAY_API=http://" + api + "/", "PORTRELAY_TOKEN=tok-123"}).status == 0);
  CHECK(run_ctl({"--api", api, "list"}, {"PORTRELAY_API=" + nobody, "PORTRELAY_TOKEN=tok-123"}).status == 0);
  CHECK(run_ctl({"list"}, {"PORTRELAY_API=" + nobody, "PORTRELAY_TOKEN=tok-123"}).status == 3);
}

TEST_CASE("ctl conns lists every live connection through pages and kill closes one or a whole prefix", "[e2e][tcp]") {
  target_server target(target_server::echo);
  temp_dir dir;
  running d(args_for(dir));
  const auto api = api_of(d);
  const int port = create(d.client, target.port())["listen_port"];
  std::vector<fd> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(connect_to(static_cast<std::uint16_t>(port)));
    REQUIRE(send_all(clients.back().get(), "ping"));
    REQUIRE(recv_exact(clients.back().get(), 4) == "ping");  // relaying: the target answered through it
  }

  const auto listed = run_ctl({"--api", api, "conns", "1", "--limit", "2"});
  INFO(listed.out << listed.err);
  REQUIRE(listed.status == 0);
  const auto rows = lines_of(listed.out);
  REQUIRE(rows.size() == 6);
  CHECK(column_of(rows[0], "CLIENT") != std::string::npos);
  for (std::size_t i = 1; i < rows.size(); ++i) {
    CHECK(column_of(rows[i], "127.0.0.1:") == column_of(rows[0], "CLIENT"));
    CHECK(rows[i].find("relaying") != std::string::npos);
    CHECK(rows[i].find("4 B") != std::string::npos);
  }
  const auto listed_json = run_ctl({"--api", api, "conns", "1", "--limit", "2", "--json"});
  REQUIRE(listed_json.status == 0);
  const auto all = json::parse(listed_json.out);
  const auto one_page = api_get(d, "/api/v1/forwards/1/connections?limit=1000");
  REQUIRE(all["connections"].size() == 5);
  CHECK(all["next"].is_null());
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK(all["connections"][i]["id"] == one_page["connections"][i]["id"]);
    CHECK(all["connections"][i]["client"] == one_page["connections"][i]["client"]);
  }

  const auto first = all["connections"][0]["id"].dump();
  const auto killed = run_ctl({"--api", api, "kill", "1", first});
  CHECK(killed.status == 0);
  CHECK(killed.out == "closed connection " + first + "\n");
  CHECK(closed_by_peer(clients[0].get()));
  REQUIRE(send_all(clients[1].get(), "still"));
  CHECK(recv_exact(clients[1].get(), 5) == "still");  // the others carry on
  const auto again = run_ctl({"--api", api, "kill", "1", first});
  CHECK(again.status == 1);
  CHECK(again.err.find("(404 not_found)") != std::string::npos);

  CHECK(run_ctl({"--api", api, "kill", "1", "--client", "10.0.0.0/8"}).out == "closed 0 connections\n");
  const auto cut = run_ctl({"--api", api, "kill", "1", "--client", "127.0.0.0/8"});
  CHECK(cut.out == "closed 4 connections\n");
  for (std::size_t i = 1; i < clients.size(); ++i) CHECK(closed_by_peer(clients[i].get()));
  CHECK(eventually([&] { return run_ctl({"--api", api, "conns", "1"}).out == "no connections\n"; }));
}

TEST_CASE("ctl export and apply round trip in JSON and YAML - an edited file's dry run is a diff and changes nothing", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  running d(args_for(dir));
  const auto api = api_of(d);
  const auto post = [&](const json& body) {
    auto r = d.client.Post("/api/v1/forwards", body.dump(), "application/json");
    REQUIRE(r);
    REQUIRE(r->status == 201);
    return json::parse(r->body);
  };
  const json targets = json::array({{{"host", "127.0.0.1"}, {"port", target.port()}}});
  const int web_port = post({{"name", "web"}, {"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                             {"targets", targets}})["listen_port"];
  post({{"name", "db"}, {"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0}, {"targets", targets}});
  const auto json_file = (dir.path / "portrelay.json").string(), yaml_file = (dir.path / "portrelay.yaml").string();

  const auto exported = run_ctl({"--api", api, "export", json_file});
  INFO(exported.out << exported.err);
  REQUIRE(exported.status == 0);
  CHECK(exported.out.starts_with("exported 2 forwards to " + json_file + " (ETag \""));
  std::ifstream in(json_file);
  CHECK(json::parse(in) == api_get(d, "/api/v1/config"));
  CHECK(run_ctl({"--api", api, "apply", json_file, "--dry-run"}).out == "= 2 unchanged\ndry run: nothing was changed\n");
  REQUIRE(run_ctl({"--api", api, "export", yaml_file}).status == 0);
  CHECK(run_ctl({"--api", api, "apply", yaml_file, "--dry-run"}).out == "= 2 unchanged\ndry run: nothing was changed\n");

  const auto port_line = "    listen_port: " + std::to_string(web_port) + "\n";
  const auto target_lines = "    targets:\n      - host: 127.0.0.1\n        port: " + std::to_string(target.port()) + "\n";
  std::ofstream(yaml_file) << "forwards:\n"
                           << "  - name: web\n    protocol: tcp\n    listen_host: 127.0.0.1\n" << port_line << target_lines
                           << "    max_connections: 100\n"
                           << "  - name: extra\n    protocol: tcp\n    listen_host: 127.0.0.1\n    listen_port: 0\n"
                           << target_lines;
  const auto before = api_get(d, "/api/v1/forwards");
  const auto dry = run_ctl({"--api", api, "apply", yaml_file, "--dry-run"});
  CHECK(dry.status == 0);
  CHECK(dry.out ==
        "+ extra (create)\n"
        "~ web: max_connections 0 -> 100\n"
        "- db (delete)\n"
        "= 0 unchanged\n"
        "dry run: nothing was changed\n");
  CHECK(api_get(d, "/api/v1/forwards") == before);

  const auto stale = run_ctl({"--api", api, "apply", yaml_file, "--if-match", "\"0\""});
  CHECK(stale.status == 1);
  CHECK(stale.err.find("(412 precondition_failed") != std::string::npos);
  // A JSON file with a syntax error is told with its line and column, and nothing is sent.
  const auto broken = (dir.path / "broken.json").string();
  std::ofstream(broken) << "{\"forwards\": [\n  {\"name\": \"web\",,}\n]}\n";
  const auto syntax = run_ctl({"--api", api, "apply", broken});
  CHECK(syntax.status == 1);
  CHECK(syntax.err.find("broken.json: not valid JSON: parse error at line 2, column 18") != std::string::npos);
  const auto applied = run_ctl({"--api", api, "apply", yaml_file, "--if-match", "*"});  // "*": whatever it holds
  INFO(applied.err);
  CHECK(applied.status == 0);
  CHECK(applied.out.find("applied (ETag \"") != std::string::npos);
  const auto after = api_get(d, "/api/v1/config")["forwards"];
  REQUIRE(after.size() == 2);
  CHECK(after[0]["name"] == "extra");
  CHECK(after[1]["name"] == "web");
  CHECK(after[1]["max_connections"] == 100);
  CHECK(echo_once(static_cast<std::uint16_t>(web_port), "kept") == "kept");

  // A dry run whose bind would fail lists the error and exits 1; --json prints the API's plan.
  std::uint16_t taken = 0;
  auto holder = listen_on(taken);
  std::ofstream(yaml_file) << "forwards:\n  - name: web\n    protocol: tcp\n    listen_host: 127.0.0.1\n"
                           << "    listen_port: " << taken << "\n" << target_lines;
  const auto failing = run_ctl({"--api", api, "apply", yaml_file, "--dry-run"});
  CHECK(failing.status == 1);
  CHECK(failing.out.find("✖ web: listen_port: ") != std::string::npos);
  const auto failing_json = run_ctl({"--api", api, "apply", yaml_file, "--dry-run", "--json"});
  CHECK(failing_json.status == 1);
  CHECK(json::parse(failing_json.out)["errors"][0]["name"] == "web");
  CHECK(api_get(d, "/api/v1/config")["forwards"] == after);
}
