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
