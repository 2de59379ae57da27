// controller: the answers of create and patch when the host runs out of descriptors, and the
// start-up restore of a store whose rows a hand edit made invalid.
#include "api/controller.hpp"
#include "spec_helpers.hpp"
#include "api/metrics.hpp"
#include "api_fixture.hpp"
#include "descriptor_limit.hpp"
#include "metrics_support.hpp"

#include <catch2/catch.hpp>

using namespace test;
using api::json;

namespace {

json tcp_body(std::uint16_t listen_port) {
  return json{{"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", listen_port},
              {"target_host", "127.0.0.1"}, {"target_port", 9}};
}

// Runs `sql` on the file with the schema's CHECK constraints off, as a hand edit might; `text` is
// bound as ?1 byte for byte.
void hand_edit(const std::string& path, const std::string& sql, const std::string& text = {}) {
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
  REQUIRE(sqlite3_exec(raw, "PRAGMA ignore_check_constraints = ON", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(raw, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
  if (sqlite3_bind_parameter_count(stmt) > 0) {
    sqlite3_bind_text(stmt, 1, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  INFO(sqlite3_errmsg(raw));
  CHECK(sqlite3_step(stmt) == SQLITE_DONE);
  sqlite3_finalize(stmt);
  sqlite3_close(raw);
}

}  // namespace

TEST_CASE("a create or a rebind at the descriptor limit is a 503 naming the resource, not a 400", "[api]") {
  temp_dir dir;
  store::forward_store store((dir.path / "c.db").string());
  relay::engine engine(test_engine_options());
  api::controller ctl(store, engine);
  auto first = ctl.create(tcp_body(0));
  REQUIRE(first.status == 201);
  const auto id = first.body["id"].get<std::int64_t>();
  const auto port = first.body["listen_port"].get<std::uint16_t>();

  api::reply created, rebound, zoned;
  auto on_lo = tcp_body(0);
  on_lo["listen_host"] = "fe80::1%lo";  // looking the interface up takes a descriptor too
  {
    descriptors_exhausted full;
    REQUIRE(full.refused_with() == EMFILE);
    created = ctl.create(tcp_body(0));
    rebound = ctl.patch(id, json{{"listen_port", 0}});
    zoned = ctl.create(on_lo);
  }
  for (const auto* r : {&created, &rebound, &zoned}) {
    INFO(r->body.dump());
    CHECK(r->status == 503);
    CHECK(r->body["error"]["code"] == "resource_exhausted");
    CHECK(r->body["error"]["message"].get<std::string>().find("file descriptors") != std::string::npos);
    CHECK_FALSE(r->body["error"].contains("field"));  // nothing the client sent is at fault
  }
  // Nothing changed: the forward keeps its port and serves; with descriptors free, a create works.
  auto kept = ctl.get(id);
  CHECK(kept.body["listen_port"] == port);
  CHECK(kept.body["state"] == "active");
  CHECK(ctl.list().body.size() == 1);
  CHECK(ctl.create(tcp_body(0)).status == 201);
}

TEST_CASE("restore puts a stored forward that fails the API's checks in error, and nothing "
          "invalid reaches the list or /metrics",
          "[api]") {
  temp_dir dir;
  const auto path = (dir.path / "restore.db").string();
  std::vector<std::uint16_t> ports;
  {
    store::forward_store seed(path);
    for (int i = 0; i < 7; ++i) {
      relay::forward_spec s;
      s.name = "row" + std::to_string(i + 1);
      s.listen_host = "127.0.0.1";
      s.listen_port = free_port();
      test::only_target(s).host = "127.0.0.1";
      test::only_target(s).port = 9;
      ports.push_back(s.listen_port);
      seed.insert(s);
    }
  }
  // Row 1 stays valid. The others as a hand edit left them:
  hand_edit(path, "UPDATE forwards SET spec = json_set(spec, '$.protocol', 'sctp') WHERE id = 2");
  hand_edit(path, "UPDATE forwards SET spec = json_set(spec, '$.target_host', '') WHERE id = 3");
  hand_edit(path, "UPDATE forwards SET spec = json_set(spec, '$.name', ?1) WHERE id = 4", "a\xff\xfe\xe2\x80\xae" "b");
  // SQLite's JSON functions end text at a NUL, so the edit writes the escape itself.
  hand_edit(path, "UPDATE forwards SET spec = json_set(spec, '$.listen_host', json('\"127.0.0.1\\u0000evil\"')) "
                  "WHERE id = 5");
  hand_edit(path, "UPDATE forwards SET spec = json_set(spec, '$.enabled', json('false'), '$.target_port', 0) WHERE id = 6");
  hand_edit(path, "UPDATE forwards SET spec = json_set(spec, '$.udp_idle_timeout_s', 4294967297) WHERE id = 7");

  store::forward_store store(path);
  relay::engine engine(test_engine_options());
  api::controller ctl(store, engine);
  ctl.restore();

  const auto list = ctl.list().body;
  std::string dumped;
  REQUIRE_NOTHROW(dumped = list.dump());  // nlohmann refuses to write invalid UTF-8
  INFO(dumped);
  REQUIRE(list.size() == 7);
  CHECK(list[0]["state"] == "active");
  const std::vector<std::pair<int, std::string>> reasons{
      {1, "protocol"}, {2, "target_host"}, {3, "name must contain only printable characters"}, {4, "control characters"},
      {5, "target_port"}, {6, "udp_idle_timeout_s"}};
  for (const auto& [row, reason] : reasons) {
    INFO("row " << row + 1);
    CHECK(list[row]["state"] == "error");
    const auto error = list[row]["error"].get<std::string>();
    CHECK(error.find("stored forward is invalid: ") == 0);
    CHECK(error.find(reason) != std::string::npos);
    // Not listening: the port it names is free (sctp did not become TCP, the NUL did not cut a host).
    CHECK_NOTHROW(listen_on(ports[row]));
  }
  CHECK(list[3]["name"] == "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "b");  // each bad byte and the U+202E
  CHECK(list[4]["listen_host"] == "127.0.0.1\xEF\xBF\xBD" "evil");

  auto scraped = api::render_metrics(engine);
  REQUIRE(scraped);
  const auto text = scraped.value();
  INFO(text);
  const auto check = metrics_check(text, dir);
  INFO(check.output);
  CHECK(check.status == 0);
  CHECK(samples(text).at(R"(portrelay_forwards{state="error"})") == 6);
  CHECK(text.find("\xe2\x80\xae") == std::string::npos);

  // A PATCH that leaves the invalid field as it is is a 400 naming it; one that fixes it serves.
  const std::vector<std::tuple<std::int64_t, json, const char*>> fixes{
      {2, json{{"protocol", "tcp"}}, "protocol"},      {3, json{{"target_host", "127.0.0.1"}}, "target_host"},
      {4, json{{"name", "row4"}}, "name"},             {5, json{{"listen_host", "127.0.0.1"}}, "listen_host"},
      {7, json{{"udp_idle_timeout_s", nullptr}}, "udp_idle_timeout_s"}};
  for (const auto& [id, fix, field] : fixes) {
    INFO("forward " << id);
    auto refused = ctl.patch(id, json{{"enabled", true}});
    CHECK(refused.status == 400);
    CHECK(refused.body["error"]["field"] == field);
    auto fixed = ctl.patch(id, fix);
    INFO(fixed.body.dump());
    CHECK(fixed.status == 200);
    CHECK(fixed.body["state"] == "active");
  }
  CHECK(ctl.get(2).body["protocol"] == "tcp");  // as the PATCH said, not as a default
}

