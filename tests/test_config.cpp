// Declarative configuration (GET and PUT /api/v1/config) through the real API, engine, store and
// loopback sockets: round trips, the dry run's plan, all-or-nothing binding, names, ETag/If-Match.
#include "api_fixture.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <initializer_list>
#include <map>
#include <string>
#include <thread>
#include <vector>

using namespace test;
using nlohmann::json;

namespace {

httplib::Result put_config(api_fixture& f, const json& doc, bool dry_run = false, const std::string& if_match = {}) {
  httplib::Headers headers;
  if (!if_match.empty()) headers.emplace("If-Match", if_match);
  return f.client.Put(dry_run ? "/api/v1/config?dry_run=true" : "/api/v1/config", headers, doc.dump(),
                      "application/json");
}

json config_of(api_fixture& f) {
  auto r = f.client.Get("/api/v1/config");
  REQUIRE(r);
  REQUIRE(r->status == 200);
  return body_of(r);
}

json create(api_fixture& f, json body) {
  auto r = f.client.Post("/api/v1/forwards", body.dump(), "application/json");
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 201);
  return body_of(r);
}

// A TCP forward on 127.0.0.1 (the kernel's port unless given) to `target_port`.
json tcp_entry(const std::string& name, std::uint16_t target_port, std::uint16_t listen_port = 0) {
  return json{{"name", name},         {"protocol", "tcp"},
              {"listen_host", "127.0.0.1"}, {"listen_port", listen_port},
              {"targets", json::array({json{{"host", "127.0.0.1"}, {"port", target_port}}})}};
}

// TCP forwards by name and target port, created through the API.
void create_tcp(api_fixture& f, std::initializer_list<std::pair<const char*, std::uint16_t>> forwards) {
  for (const auto& [name, target_port] : forwards) create(f, tcp_entry(name, target_port));
}

// The document's entries by name.
std::map<std::string, json> entries_of(const json& doc) {
  std::map<std::string, json> out;
  for (const auto& e : doc["forwards"]) out[e["name"].get<std::string>()] = e;
  return out;
}

std::uint16_t port_of(api_fixture& f, const std::string& name) {
  return entries_of(config_of(f)).at(name)["listen_port"].get<std::uint16_t>();
}

}  // namespace

TEST_CASE("config round trip: GET then PUT is an empty plan - a live connection survives", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  create(f, tcp_entry("web", target.port()));
  create(f, {{"protocol", "udp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0}, {"target_host", "127.0.0.1"},
             {"target_port", 9}});  // no name: exported as forward-2
  const auto port = port_of(f, "web");
  auto live = connect_to(port);
  REQUIRE(live);
  REQUIRE(send_all(live.get(), "before"));
  REQUIRE(recv_exact(live.get(), 6) == "before");

  auto got = f.client.Get("/api/v1/config");
  REQUIRE(got);
  const auto etag = got->get_header_value("ETag");
  CHECK(etag.size() == 18);
  const auto doc = body_of(got);
  REQUIRE(doc["forwards"].size() == 2);
  CHECK(doc["forwards"][0]["name"] == "forward-2");
  CHECK(doc["forwards"][1]["name"] == "web");
  CHECK_FALSE(doc["forwards"][1].contains("target_host"));  // one form: targets
  CHECK_FALSE(doc["forwards"][1].contains("udp_idle_timeout_s"));  // only what applies to TCP

  for (const bool dry_run : {true, false}) {
    auto r = put_config(f, doc, dry_run, etag);
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 200);
    CHECK(body_of(r) == json::parse(R"({"create":[],"update":[],"delete":[],"unchanged":2,"errors":[]})"));
    CHECK(r->get_header_value("ETag") == etag);
  }
  REQUIRE(send_all(live.get(), "after"));
  CHECK(recv_exact(live.get(), 5) == "after");
  CHECK(config_of(f) == doc);
}

TEST_CASE("config export names never collide - a real name like forward-N of another gives way", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  create(f, tcp_entry("", target.port()));           // 1: forward-1
  create(f, tcp_entry("forward-1", target.port()));  // 2: forward-1 is 1's, so forward-2
  create(f, tcp_entry("forward-2", target.port()));  // 3: forward-2 is now 2's, so forward-3
  create(f, tcp_entry("same", target.port()));       // 4 and 5 share a name: forward-4, forward-5
  create(f, tcp_entry("same", target.port()));
  create(f, tcp_entry("forward-9", target.port()));  // 6: no forward 9, so it keeps its name
  const auto doc = config_of(f);
  std::vector<std::string> names;
  for (const auto& e : doc["forwards"]) names.push_back(e["name"]);
  CHECK(names == std::vector<std::string>{"forward-1", "forward-2", "forward-3", "forward-4", "forward-5", "forward-9"});
  auto r = put_config(f, doc);
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == 200);
  CHECK(body_of(r)["unchanged"] == 6);
  CHECK(body_of(r)["update"].empty());
  CHECK(config_of(f) == doc);
}

TEST_CASE("config dry run: the plan exactly - and nothing changes", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  create_tcp(f, {{"keep", target.port()}, {"change", target.port()}, {"drop", target.port()}});
  auto got = f.client.Get("/api/v1/config");
  const auto before = body_of(got);
  auto doc = before;
  auto& forwards = doc["forwards"];
  forwards.erase(forwards.begin() + 1);  // drop (sorted: change, drop, keep)
  forwards[0]["max_connections"] = 10;
  forwards[0]["targets"][0]["weight"] = 3;
  forwards[0]["enabled"] = false;
  forwards.push_back(tcp_entry("new", target.port()));
  auto r = put_config(f, doc, true);
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == 200);
  const json targets_before = before["forwards"][0]["targets"];
  json targets_after = targets_before;
  targets_after[0]["weight"] = 3;
  const json expected{
      {"create", {"new"}},
      {"update", {{{"name", "change"},
                   {"changes", {{"targets", {targets_before, targets_after}},
                                {"max_connections", {0, 10}},
                                {"enabled", {true, false}}}}}}},
      {"delete", {"drop"}},
      {"unchanged", 1},
      {"errors", json::array()}};
  CHECK(body_of(r) == expected);
  CHECK(r->get_header_value("ETag") == got->get_header_value("ETag"));
  CHECK(config_of(f) == before);
  CHECK(echo_once(port_of(f, "drop"), "still") == "still");
  CHECK(echo_once(port_of(f, "change"), "still") == "still");
}

TEST_CASE("config PUT creates, changes and deletes at once - each relays or refuses afterwards", "[api]") {
  target_server target(target_server::echo);
  target_server other(target_server::echo);
  api_fixture f;
  create_tcp(f, {{"stay", target.port()}, {"move", target.port()}, {"gone", target.port()}});
  const auto gone_port = port_of(f, "gone");
  const auto moved_from = port_of(f, "move");
  auto doc = config_of(f);
  auto& forwards = doc["forwards"];
  forwards.erase(forwards.begin());  // gone
  forwards[0]["listen_port"] = 0;    // move: to another address, keeping its port, and another target
  forwards[0]["listen_host"] = "127.0.0.2";
  forwards[0]["targets"][0]["port"] = other.port();
  forwards.push_back(tcp_entry("born", other.port()));
  auto r = put_config(f, doc);
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  const auto plan = body_of(r);
  CHECK(plan["create"] == json{"born"});
  CHECK(plan["delete"] == json{"gone"});
  CHECK(plan["update"][0]["name"] == "move");
  CHECK(plan["update"][0]["changes"] ==
        json{{"listen_host", {"127.0.0.1", "127.0.0.2"}},
             {"targets", {{{{"host", "127.0.0.1"}, {"port", target.port()}, {"weight", 1}, {"backup", false}}},
                          {{{"host", "127.0.0.1"}, {"port", other.port()}, {"weight", 1}, {"backup", false}}}}}});
  CHECK(plan["unchanged"] == 1);
  CHECK(r->get_header_value("ETag") == f.client.Get("/api/v1/config")->get_header_value("ETag"));

  const auto now = entries_of(config_of(f));
  CHECK(now.size() == 3);
  CHECK(echo_once(port_of(f, "stay"), "a") == "a");
  CHECK(echo_once(port_of(f, "born"), "b") == "b");
  CHECK(now.at("move")["listen_port"] == moved_from);
  auto moved = connect_to(moved_from, "127.0.0.2");
  REQUIRE(moved);
  REQUIRE(send_all(moved.get(), "c"));
  ::shutdown(moved.get(), SHUT_WR);
  CHECK(recv_all(moved.get()) == "c");
  CHECK(other.accepted() == 2);
  CHECK(echo_once(gone_port, "d") == "<refused>");
  CHECK(echo_once(moved_from, "e") == "<refused>");
}

TEST_CASE("config PUT with one taken port changes nothing - 409 names forward and field, dry run lists it", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  create(f, tcp_entry("a", target.port()));
  create(f, tcp_entry("b", target.port()));
  std::uint16_t taken = 0;
  auto holder = listen_on(taken);
  REQUIRE(holder);
  auto got = f.client.Get("/api/v1/config");
  const auto before = body_of(got);
  auto doc = before;
  doc["forwards"].erase(doc["forwards"].begin());         // a goes
  doc["forwards"][0]["max_connections"] = 5;               // b changes
  doc["forwards"].push_back(tcp_entry("c", target.port(), port_of(f, "a")));  // takes a's port: a is released
  doc["forwards"].push_back(tcp_entry("d", target.port(), taken));   // cannot bind

  auto dry = put_config(f, doc, true);
  REQUIRE(dry);
  INFO(dry->body);
  CHECK(dry->status == 200);
  const auto errors = body_of(dry)["errors"];
  REQUIRE(errors.size() == 1);
  CHECK(errors[0]["name"] == "d");
  CHECK(errors[0]["field"] == "listen_port");

  auto r = put_config(f, doc);
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == 409);
  const auto error = body_of(r)["error"];
  CHECK(error["code"] == "address_in_use");
  CHECK(error["field"] == "listen_port");
  CHECK(error["forward"] == "d");
  CHECK(error["message"].get<std::string>().rfind("d: ", 0) == 0);
  CHECK(config_of(f) == before);
  CHECK(f.client.Get("/api/v1/config")->get_header_value("ETag") == got->get_header_value("ETag"));
  CHECK(echo_once(port_of(f, "a"), "a") == "a");
  CHECK(echo_once(port_of(f, "b"), "b") == "b");
  CHECK(body_of(f.client.Get("/api/v1/forwards")).size() == 2);
}

TEST_CASE("config PUT: a port freed by a deleted forward is taken by a created one - and two forwards swap ports", "[api]") {
  target_server target(target_server::echo);
  target_server other(target_server::echo);
  api_fixture f;
  create_tcp(f, {{"old", target.port()}, {"x", target.port()}, {"y", other.port()}});
  const auto old_port = port_of(f, "old"), x_port = port_of(f, "x"), y_port = port_of(f, "y");
  auto doc = config_of(f);
  auto& forwards = doc["forwards"];
  forwards.erase(forwards.begin());  // old
  forwards[0]["listen_port"] = y_port;
  forwards[1]["listen_port"] = x_port;
  forwards.push_back(tcp_entry("new", other.port(), old_port));
  auto r = put_config(f, doc);
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  CHECK(port_of(f, "new") == old_port);
  CHECK(port_of(f, "x") == y_port);
  CHECK(port_of(f, "y") == x_port);
  const auto before = other.accepted();
  CHECK(echo_once(old_port, "n") == "n");  // new, to other
  CHECK(echo_once(x_port, "y") == "y");    // y, to other
  CHECK(other.accepted() == before + 2);
  CHECK(echo_once(y_port, "x") == "x");    // x, to target
}

TEST_CASE("config PUT refuses bad names and documents with 400 naming the entry", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  create(f, tcp_entry("a", target.port()));
  const auto before = config_of(f);
  const auto refused = [&](const json& doc, const std::string& code, const std::string& field, const std::string& forward) {
    for (const bool dry_run : {true, false}) {
      auto r = put_config(f, doc, dry_run);
      REQUIRE(r);
      INFO(r->body);
      CHECK(r->status == 400);
      const auto e = body_of(r)["error"];
      CHECK(e["code"] == code);
      CHECK(e.value("field", "") == field);
      CHECK(e.value("forward", "") == forward);
      if (!forward.empty()) CHECK(e["message"].get<std::string>().rfind(forward + ": ", 0) == 0);
    }
  };
  auto unnamed = tcp_entry("b", target.port());
  unnamed.erase("name");
  refused({{"forwards", {tcp_entry("a", target.port()), unnamed}}}, "missing_field", "name", "forwards[1]");
  refused({{"forwards", {tcp_entry("", target.port())}}}, "invalid_field", "name", "forwards[0]");
  refused({{"forwards", {tcp_entry("a", target.port()), tcp_entry("a", target.port())}}}, "duplicate_name", "name", "a");
  auto bad_port = tcp_entry("c", target.port());
  bad_port["listen_port"] = 70000;
  refused({{"forwards", {bad_port}}}, "invalid_field", "listen_port", "c");
  refused({{"forwards", json::array()}, {"extra", 1}}, "unknown_field", "extra", "");
  refused({{"forward", json::array()}}, "unknown_field", "forward", "");
  auto query = f.client.Put("/api/v1/config?dry_run=yes", before.dump(), "application/json");
  REQUIRE(query);
  CHECK(query->status == 400);
  CHECK(body_of(query)["error"]["field"] == "dry_run");
  auto post = f.client.Post("/api/v1/config", before.dump(), "application/json");
  REQUIRE(post);
  CHECK(post->status == 405);
  CHECK(post->get_header_value("Allow") == "GET, HEAD, PUT");
  CHECK(config_of(f) == before);
}

TEST_CASE("config PUT with a misspelt or smuggled dry_run is a 400 - it never applies for real", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  create(f, tcp_entry("a", target.port()));
  const auto before = config_of(f);
  auto doc = before;
  doc["forwards"].push_back(tcp_entry("b", target.port()));
  for (const std::string query : {"dryrun=true", "dry-run=true", "Dry_run=true", "dry_run=true=false",
                                  "dry_run=true%26x=1", "dry_run=true&dry_run=true", "dry_run"}) {
    INFO(query);
    auto r = f.client.Put(("/api/v1/config?" + query).c_str(), doc.dump(), "application/json");
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(body_of(r)["error"]["code"] == "invalid_query");
  }
  CHECK(config_of(f) == before);
}

TEST_CASE("config PUT refuses a loop made of two entries", "[api]") {
  api_fixture f;
  std::uint16_t p1 = 0, p2 = 0;
  {
    auto a = listen_on(p1);
    auto b = listen_on(p2);
  }
  const json doc{{"forwards", {tcp_entry("one", p2, p1), tcp_entry("two", p1, p2)}}};
  for (const bool dry_run : {true, false}) {
    auto r = put_config(f, doc, dry_run);
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 400);
    CHECK(body_of(r)["error"]["code"] == "forward_loop");
    CHECK(body_of(r)["error"].contains("forward"));
  }
  CHECK(config_of(f)["forwards"].empty());
}

TEST_CASE("config PUT with a stale If-Match is a 412 - a star matches - of two at once with one ETag one wins", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  create(f, tcp_entry("a", target.port()));
  auto got = f.client.Get("/api/v1/config");
  const auto etag = got->get_header_value("ETag");
  auto doc = body_of(got);
  doc["forwards"][0]["max_connections"] = 3;
  auto first = put_config(f, doc, false, etag);
  REQUIRE(first);
  CHECK(first->status == 200);
  CHECK(first->get_header_value("ETag") != etag);
  doc["forwards"][0]["max_connections"] = 4;
  for (const auto& stale : {etag, std::string("W/") + etag, std::string("nonsense")}) {
    auto second = put_config(f, doc, false, stale);
    REQUIRE(second);
    CHECK(second->status == 412);
    CHECK(body_of(second)["error"]["code"] == "precondition_failed");
  }
  CHECK(config_of(f)["forwards"][0]["max_connections"] == 3);
  auto star = put_config(f, doc, false, "*");
  REQUIRE(star);
  CHECK(star->status == 200);
  auto listed = put_config(f, doc, true, "\"0000000000000000\", " + star->get_header_value("ETag"));
  REQUIRE(listed);
  CHECK(listed->status == 200);
  // The same list over two If-Match lines (RFC 9110: a list field's lines combine).
  auto lines = f.client.Put("/api/v1/config?dry_run=true",
                            {{"If-Match", "\"0000000000000000\""}, {"If-Match", star->get_header_value("ETag")}},
                            doc.dump(), "application/json");
  REQUIRE(lines);
  CHECK(lines->status == 200);

  // Two PUTs at once with one ETag: the check and the change are one step, so one of them is a 412.
  const auto etag_now = star->get_header_value("ETag");
  std::vector<int> statuses(2);
  std::vector<std::thread> senders;
  for (int i = 0; i < 2; ++i) {
    senders.emplace_back([&, i] {
      httplib::Client client("127.0.0.1", f.port);
      client.set_read_timeout(30);
      auto mine = doc;
      mine["forwards"][0]["max_connections"] = 10 + i;
      auto r = client.Put("/api/v1/config", {{"If-Match", etag_now}}, mine.dump(), "application/json");
      statuses[static_cast<std::size_t>(i)] = r ? r->status : -1;
    });
  }
  for (auto& t : senders) t.join();
  std::sort(statuses.begin(), statuses.end());
  CHECK(statuses == std::vector<int>{200, 412});
}

TEST_CASE("config PUT changes a forward in error that keeps its address, as PATCH does - it stays in error", "[api]") {
  api_fixture f;
  std::uint16_t taken = 0;
  auto holder = listen_on(taken);
  REQUIRE(holder);
  relay::forward_spec spec;
  spec.name = "held";
  spec.listen_host = "127.0.0.1";
  spec.listen_port = taken;
  spec.targets = {relay::target_spec{"127.0.0.1", 9}};
  f.store.insert(spec);
  f.controller.restore();
  REQUIRE(f.engine.status(1).state == relay::forward_state::error);
  auto doc = config_of(f);
  doc["forwards"][0]["max_connections"] = 7;
  auto dry = put_config(f, doc, true);
  REQUIRE(dry);
  INFO(dry->body);
  CHECK(body_of(dry)["errors"].empty());
  auto r = put_config(f, doc);
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == 200);
  const auto got = body_of(f.client.Get("/api/v1/forwards/1"));
  CHECK(got["max_connections"] == 7);
  CHECK(got["state"] == "error");
}
