// controller pools: a forward's targets, balance and health_check through the real controller,
// store file and engine: what POST and PATCH accept, what they refuse (a 400 naming the field, with
// nothing applied), what GET shows, and what survives a restart or comes from an older store.
#include "daemon_state.hpp"

#include <catch2/catch.hpp>

#include <sqlite3.h>

using namespace test;
using api::json;

namespace {

json target(const std::string& host, std::uint16_t port, int weight = 1, bool backup = false) {
  return json{{"host", host}, {"port", port}, {"weight", weight}, {"backup", backup}};
}

json pool_body(const std::string& protocol, json targets) {
  return json{{"protocol", protocol}, {"listen_host", "127.0.0.1"}, {"listen_port", 0}, {"targets", std::move(targets)}};
}

json shorthand_body(std::uint16_t port) {
  return json{{"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0}, {"target_host", "127.0.0.1"},
              {"target_port", port}};
}

json created(const api::reply& r) {
  INFO(r.body.dump());
  REQUIRE(r.status == 201);
  return r.body;
}

// A 400 naming `field` whose message holds `words`.
void check_refused(const api::reply& r, const std::string& field, const std::string& words) {
  INFO(r.body.dump());
  CHECK(r.status == 400);
  CHECK(r.body["error"]["field"] == field);
  CHECK(r.body["error"]["message"].get<std::string>().find(words) != std::string::npos);
}

std::int64_t id_of(const json& f) { return f["id"].get<std::int64_t>(); }

// The spec column of forward `id` as stored, read (or, with `replace`, written) behind the store's back.
std::string stored_document(const std::string& path, std::int64_t id, const std::string& replace = {}) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  const std::string sql = replace.empty() ? "SELECT spec FROM forwards WHERE id = ?" : "UPDATE forwards SET spec = ? WHERE id = ?";
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
  int at = 1;
  if (!replace.empty()) sqlite3_bind_text(s, at++, replace.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, at, id);
  const int rc = sqlite3_step(s);
  std::string out;
  if (rc == SQLITE_ROW) out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
  CHECK((rc == SQLITE_ROW || rc == SQLITE_DONE));
  sqlite3_finalize(s);
  sqlite3_close(db);
  return out;
}

}  // namespace

TEST_CASE("a pool: POST fills each target's defaults and GET shows the pool - the shorthand only for one target",
          "[api]") {
  daemon_state d;
  auto f = created(d.ctl->create(pool_body("tcp", json::array({json{{"host", "127.0.0.1"}, {"port", 9}},
                                                               target("localhost", 10, 5, true)}))));
  const auto got = d.ctl->get(id_of(f)).body;
  for (const auto& view : {f, got}) {
    INFO(view.dump());
    CHECK(view["targets"] == json::array({target("127.0.0.1", 9), target("localhost", 10, 5, true)}));
    CHECK(view["target_host"].is_null());
    CHECK(view["target_port"].is_null());
    CHECK(view["balance"] == "round_robin");
    CHECK(view["health_check"].is_null());
    // stats.targets follows targets, one row each, in their order.
    const auto rows = view["stats"]["targets"];
    REQUIRE(rows.size() == 2);
    CHECK(rows[0]["host"] == "127.0.0.1");
    CHECK(rows[0]["port"] == 9);
    CHECK(rows[1]["host"] == "localhost");
    CHECK(rows[1]["port"] == 10);
    for (const auto& row : rows) {
      CHECK((row["health"] == "up" || row["health"] == "down" || row["health"] == "unchecked"));
      CHECK(row["since"].get<std::string>().size() == std::string("2026-01-01T00:00:00Z").size());
      CHECK(row["since"].get<std::string>().back() == 'Z');
      for (const char* counter : {"connections_active", "connections_total", "bytes_up", "bytes_down", "connect_errors"}) {
        CHECK(row[counter].is_number_unsigned());
      }
      CHECK((row["last_error"].is_null() || row["last_error"].is_string()));
    }
  }

  // A health check's missing values take their defaults; one target shows the shorthand too.
  auto body = shorthand_body(9);
  body["health_check"] = json{{"interval_s", 10}};
  body["balance"] = "first";
  auto one = created(d.ctl->create(body));
  CHECK(one["targets"] == json::array({target("127.0.0.1", 9)}));
  CHECK(one["target_host"] == "127.0.0.1");
  CHECK(one["target_port"] == 9);
  CHECK(one["balance"] == "first");
  CHECK(one["health_check"] == json{{"interval_s", 10}, {"timeout_s", 2}, {"rise", 2}, {"fall", 3}, {"port", nullptr}});
  CHECK(one["stats"]["targets"].size() == 1);

  // 64 targets are the most.
  json many = json::array();
  for (std::uint16_t p = 1; p <= 64; ++p) many.push_back(target("127.0.0.1", p));
  CHECK(d.ctl->create(pool_body("tcp", many)).status == 201);
  many.push_back(target("127.0.0.1", 65));
  check_refused(d.ctl->create(pool_body("tcp", many)), "targets", "1 to 64");
  CHECK(d.ctl->list().body.size() == 3);
}

TEST_CASE("every rule between pool fields is a 400 naming the field - on POST and on PATCH - with nothing applied",
          "[api]") {
  daemon_state d;
  const auto two = json::array({target("127.0.0.1", 9), target("127.0.0.2", 9)});
  auto tcp_body = pool_body("tcp", two);
  tcp_body["health_check"] = json{{"interval_s", 5}};  // port-less: fine on TCP
  tcp_body["balance"] = "least_conn";
  const auto tcp = created(d.ctl->create(tcp_body));
  const auto one = created(d.ctl->create(shorthand_body(9)));
  struct bad_case {
    const char* what;
    json body;
    const char* field;
    const char* words;
  };
  const bad_case cases[] = {
      {"the same host and port twice", json{{"targets", json::array({target("127.0.0.1", 9), target("127.0.0.1", 9)})}},
       "targets", "targets[1] repeats targets[0] (127.0.0.1:9)"},
      {"one IPv6 address spelt two ways", json{{"targets", json::array({target("::1", 9), target("0:0::0001", 9)})}},
       "targets", "repeats targets[0]"},
      {"one name in two cases", json{{"targets", json::array({target("db.example", 9), target("DB.Example", 9)})}},
       "targets", "repeats targets[0]"},
      {"backups only", json{{"targets", json::array({target("127.0.0.1", 9, 1, true), target("127.0.0.2", 9, 1, true)})}},
       "targets", "at least one target that is not a backup"},
      {"no targets", json{{"targets", json::array()}}, "targets", "array of 1 to 64"},
      {"a target without port", json{{"targets", json::array({json{{"host", "127.0.0.1"}}})}}, "targets",
       "targets[0].port is required"},
      {"a misspelt key", json{{"targets", json::array({json{{"host", "127.0.0.1"}, {"port", 9}, {"wieght", 2}}})}},
       "targets", "targets[0] has an unknown key 'wieght'"},
      {"a bad host", json{{"targets", json::array({target("127.0.0.1", 9), target("bad host", 9)})}}, "targets",
       "targets[1].host"},
      {"a weight past 1000", json{{"targets", json::array({target("127.0.0.1", 9, 1001)})}}, "targets",
       "targets[0].weight must be from 1 to 1000"},
      {"timeout over the interval", json{{"health_check", json{{"interval_s", 2}, {"timeout_s", 3}}}}, "health_check",
       "timeout_s must be at most health_check.interval_s"},
      {"timeout over the default interval", json{{"health_check", json{{"timeout_s", 6}}}}, "health_check",
       "timeout_s must be at most"},
      {"a misspelt check key", json{{"health_check", json{{"intervall_s", 5}}}}, "health_check", "'intervall_s'"},
      {"an unknown policy", json{{"balance", "random"}}, "balance", "\"round_robin\", \"least_conn\""},
      {"shorthand and targets", json{{"target_port", 9}, {"targets", two}}, "targets", "not both"},
  };
  for (const auto& c : cases) {
    INFO(c.what << ": " << c.body.dump());
    auto post = tcp_body;
    for (const auto& [k, v] : c.body.items()) post[k] = v;
    if (c.body.contains("target_port")) post = shorthand_body(9), post["targets"] = two;
    check_refused(d.ctl->create(post), c.field, c.words);
    check_refused(d.ctl->patch(id_of(tcp), c.body), c.field, c.words);
    check_refused(d.ctl->patch(id_of(one), c.body), c.field, c.words);
  }

  // The shorthand edits only a forward with one target: on a pool it says what to PATCH instead.
  check_refused(d.ctl->patch(id_of(tcp), json{{"target_port", 10}}), "target_port", "PATCH targets");
  check_refused(d.ctl->patch(id_of(tcp), json{{"target_host", "127.0.0.3"}}), "target_host", "PATCH targets");
  // A UDP health check needs a port, whether the forward is made UDP or the check is given to one.
  auto udp = pool_body("udp", two);
  udp["health_check"] = json{{"interval_s", 5}};
  check_refused(d.ctl->create(udp), "health_check", "needs a port");
  check_refused(d.ctl->patch(id_of(tcp), json{{"protocol", "udp"}}), "health_check", "needs a port");
  udp["health_check"]["port"] = 9;
  const auto udp_forward = created(d.ctl->create(udp));
  check_refused(d.ctl->patch(id_of(udp_forward), json{{"health_check", json{{"port", nullptr}}}}), "health_check",
                "needs a port");
  // POST needs a pool: targets, or both halves of the shorthand.
  auto bare = shorthand_body(9);
  bare.erase("target_host");
  bare.erase("target_port");
  check_refused(d.ctl->create(bare), "targets", "'targets' (or 'target_host' and 'target_port') is required");
  bare["target_host"] = "127.0.0.1";
  check_refused(d.ctl->create(bare), "target_port", "required");

  // A body with good and bad values applies none of them; the live forward and the file keep theirs.
  check_refused(d.ctl->patch(id_of(tcp), json{{"balance", "first"}, {"targets", json::array({target("127.0.0.5", 9)})},
                                              {"health_check", json{{"rise", 0}}}}),
                "health_check", "rise");
  d.restart();
  CHECK(d.ctl->get(id_of(tcp)).body["balance"] == "least_conn");
  CHECK(d.ctl->get(id_of(tcp)).body["targets"] == two);
  CHECK(d.ctl->get(id_of(tcp)).body["protocol"] == "tcp");
  CHECK(d.ctl->get(id_of(tcp)).body["state"] == "active");
  CHECK(d.ctl->get(id_of(one)).body["targets"] == json::array({target("127.0.0.1", 9)}));
  CHECK(d.ctl->get(id_of(udp_forward)).body["health_check"]["port"] == 9);
  CHECK(d.ctl->list().body.size() == 3);
}

TEST_CASE("PATCH targets turns a one-target forward into a pool and back - the shorthand follows", "[api]") {
  target_server a(target_server::echo), b(target_server::echo);
  daemon_state d;
  const auto f = created(d.ctl->create(shorthand_body(a.port())));
  const auto port = f["listen_port"].get<std::uint16_t>();
  CHECK(echo_once(port, "x") == "x");

  auto r = d.ctl->patch(id_of(f), json{{"targets", json::array({target("127.0.0.1", a.port()), target("127.0.0.1", b.port(), 2)})},
                                       {"balance", "source_hash"}});
  INFO(r.body.dump());
  REQUIRE(r.status == 200);
  CHECK(r.body["target_host"].is_null());
  CHECK(r.body["target_port"].is_null());
  CHECK(r.body["stats"]["targets"].size() == 2);
  CHECK(r.body["listen_port"] == port);  // the listener stays
  CHECK(echo_once(port, "y") == "y");

  r = d.ctl->patch(id_of(f), json{{"targets", json::array({target("127.0.0.1", b.port(), 2)})}});
  REQUIRE(r.status == 200);
  CHECK(r.body["target_host"] == "127.0.0.1");
  CHECK(r.body["target_port"] == b.port());
  CHECK(r.body["balance"] == "source_hash");
  CHECK(r.body["stats"]["targets"].size() == 1);
  // One target again: the shorthand edits it, keeping its weight.
  r = d.ctl->patch(id_of(f), json{{"target_port", a.port()}});
  REQUIRE(r.status == 200);
  CHECK(r.body["targets"] == json::array({target("127.0.0.1", a.port(), 2)}));
  CHECK(echo_once(port, "z") == "z");
}

TEST_CASE("targets balance and health_check survive a restart", "[api][store]") {
  daemon_state d;
  auto body = pool_body("udp", json::array({target("127.0.0.1", 9, 3), target("::1", 10, 1, true)}));
  body["balance"] = "least_conn";
  body["health_check"] = json{{"interval_s", 30}, {"timeout_s", 5}, {"rise", 4}, {"fall", 6}, {"port", 11}};
  body["enabled"] = false;
  const auto f = created(d.ctl->create(body));
  d.restart();
  const auto got = d.ctl->get(id_of(f)).body;
  INFO(got.dump());
  CHECK(got["targets"] == body["targets"]);
  CHECK(got["balance"] == "least_conn");
  CHECK(got["health_check"] == body["health_check"]);
  CHECK(got["state"] == "disabled");
  // A disabled forward has no live pool: each target shows unchecked with zero counters.
  REQUIRE(got["stats"]["targets"].size() == 2);
  for (const auto& row : got["stats"]["targets"]) {
    CHECK(row["health"] == "unchecked");
    CHECK(row["connections_total"] == 0);
    CHECK(row["last_error"].is_null());
  }
  // PATCH back to passive checking, and it stays so.
  REQUIRE(d.ctl->patch(id_of(f), json{{"health_check", nullptr}}).status == 200);
  d.restart();
  CHECK(d.ctl->get(id_of(f)).body["health_check"].is_null());
}

TEST_CASE("a store from before pools reads as one-target forwards with no migration", "[api][store]") {
  target_server echo(target_server::echo);
  daemon_state d;
  const auto f = created(d.ctl->create(shorthand_body(9)));
  d.stop();
  // The document portrelay wrote at schema 3 before pools: the target as target_host and target_port.
  const json old_document{{"name", "old"}, {"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", free_port()},
                          {"target_host", "127.0.0.1"}, {"target_port", echo.port()}, {"enabled", true},
                          {"udp_idle_timeout_s", 60}, {"udp_max_sessions", 4096}};
  stored_document(d.path, id_of(f), old_document.dump());
  d.start();
  CHECK(d.store->schema_version() == store::forward_store::latest_schema_version());
  const auto got = d.ctl->get(id_of(f)).body;
  INFO(got.dump());
  CHECK(got["state"] == "active");
  CHECK(got["targets"] == json::array({target("127.0.0.1", echo.port())}));
  CHECK(got["target_host"] == "127.0.0.1");
  CHECK(got["target_port"] == echo.port());
  CHECK(got["balance"] == "round_robin");
  CHECK(got["health_check"].is_null());
  CHECK(echo_once(got["listen_port"].get<std::uint16_t>(), "old") == "old");
  // Nothing rewrote the row; the next change stores the pool.
  CHECK(json::parse(stored_document(d.path, id_of(f))) == old_document);
  REQUIRE(d.ctl->patch(id_of(f), json{{"name", "new"}}).status == 200);
  const auto now = json::parse(stored_document(d.path, id_of(f)));
  CHECK(now["targets"] == got["targets"]);
  CHECK_FALSE(now.contains("target_host"));
}

TEST_CASE("what GET shows can be sent back - the shorthand beside targets repeats it and is accepted", "[api]") {
  daemon_state d;
  const auto pool = created(d.ctl->create(pool_body("tcp", json::array({target("127.0.0.1", 9), target("127.0.0.2", 9)}))));
  const auto one = created(d.ctl->create(shorthand_body(9)));
  for (const auto& f : {pool, one}) {
    INFO(f.dump());
    auto body = d.ctl->get(id_of(f)).body;
    for (const auto* ro : {"id", "state", "error", "created_at", "updated_at", "stats"}) body.erase(ro);
    auto p = d.ctl->patch(id_of(f), body);
    INFO(p.body.dump());
    CHECK(p.status == 200);
    body["listen_port"] = 0;  // a copy of it elsewhere
    CHECK(d.ctl->create(body).status == 201);
    // A shorthand that says something else than targets is still refused.
    body["target_port"] = 10;
    check_refused(d.ctl->create(body), "targets", "target_port differs from targets");
  }
}

TEST_CASE("one target in other spellings is a repeat and a short check interval brings its timeout down", "[api]") {
  daemon_state d;
  const auto body = [](json targets) { return pool_body("tcp", std::move(targets)); };
  check_refused(d.ctl->create(body(json::array({target("127.0.0.1", 9), target("::ffff:127.0.0.1", 9)}))), "targets",
                "targets[1] repeats targets[0]");
  check_refused(d.ctl->create(body(json::array({target("db.example", 9), target("db.example.", 9)}))), "targets",
                "targets[1] repeats targets[0]");
  CHECK(d.ctl->create(body(json::array({target("db.example", 9), target("db.example", 10)}))).status == 201);
  // interval_s alone, under the default timeout_s of 2: the timeout is the interval.
  auto check = body(json::array({target("127.0.0.1", 9)}));
  check["health_check"] = json{{"interval_s", 1}};
  const auto f = created(d.ctl->create(check));
  CHECK(f["health_check"]["timeout_s"] == 1);
  CHECK(f["health_check"]["interval_s"] == 1);
}
