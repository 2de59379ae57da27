// forward_json: every field's validation and the JSON shape of a forward.
#include "api/forward_json.hpp"
#include "spec_helpers.hpp"

#include <catch2/catch.hpp>

#include <net/if.h>

using api::json;

namespace {
json valid() { return json{{"protocol", "tcp"}, {"listen_port", 8080}, {"target_host", "example.com"}, {"target_port", 80}}; }

std::string create_error(const json& body) {
  relay::forward_spec s;
  auto e = api::parse_create(body, s);
  return e ? e->code + ": " + e->message : "";
}
}  // namespace

TEST_CASE("a minimal body takes the defaults", "[api]") {
  relay::forward_spec s;
  REQUIRE_FALSE(api::parse_create(valid(), s));
  CHECK(s.name.empty());
  CHECK(s.protocol == relay::protocol::tcp);
  CHECK(s.listen_host == "0.0.0.0");
  CHECK(s.listen_port == 8080);
  CHECK(test::only_target(s).host == "example.com");
  CHECK(test::only_target(s).port == 80);
  CHECK(s.enabled);
}

TEST_CASE("all writable fields are read", "[api]") {
  auto body = valid();
  body["name"] = "db";
  body["listen_host"] = "::0001";
  body["enabled"] = false;
  relay::forward_spec s;
  REQUIRE_FALSE(api::parse_create(body, s));
  CHECK(s.name == "db");
  CHECK(s.listen_host == "::1");
  CHECK_FALSE(s.enabled);
}

TEST_CASE("each bad value class is a 400 naming the field", "[api]") {
  struct bad_case {
    const char* field;
    json value;
    const char* code;
  };
  const bad_case cases[] = {
      {"listen_port", "80", "invalid_field"},      {"listen_port", 80.5, "invalid_field"},
      {"listen_port", -1, "invalid_field"},        {"listen_port", 65536, "invalid_field"},
      {"listen_port", true, "invalid_field"},      {"listen_port", nullptr, "invalid_field"},
      {"listen_port", 18446744073709551615ull, "invalid_field"},
      {"target_port", 0, "invalid_field"},         {"target_port", 70000, "invalid_field"},
      {"target_port", json::array(), "invalid_field"},
      {"target_host", "", "invalid_field"},        {"target_host", 5, "invalid_field"},
      {"target_host", "bad host", "invalid_field"}, {"target_host", std::string(254, 'a'), "invalid_field"},
      {"listen_host", "localhost", "invalid_field"}, {"listen_host", 1, "invalid_field"},
      {"name", std::string(65, 'n'), "invalid_field"}, {"name", "a\nb", "invalid_field"},
      {"name", 3, "invalid_field"},                {"enabled", "true", "invalid_field"},
      {"enabled", 1, "invalid_field"},             {"protocol", "sctp", "invalid_field"},
      {"udp_idle_timeout_s", 0, "invalid_field"},  {"udp_idle_timeout_s", 86401, "invalid_field"},
      {"udp_idle_timeout_s", "60", "invalid_field"}, {"udp_max_sessions", 0, "invalid_field"},
      {"udp_max_sessions", 1000001, "invalid_field"}, {"udp_max_sessions", 1.5, "invalid_field"},
      {"udp_max_sessions", -5, "invalid_field"},   {"id", 7, "read_only_field"},
      {"state", "active", "read_only_field"},      {"stats", json::object(), "read_only_field"},
      {"colour", "blue", "unknown_field"},
  };
  for (const auto& c : cases) {
    auto body = valid();
    body[c.field] = c.value;
    INFO(c.field << " = " << c.value.dump());
    const auto err = create_error(body);
    CHECK(err.rfind(c.code, 0) == 0);
    if (std::string(c.code) != "unknown_field") CHECK(err.find(c.field) != std::string::npos);
  }
}

TEST_CASE("an unknown field names the known one it resembles, when one clearly does", "[api]") {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"targt_port", "unknown_field: unknown field 'targt_port' (did you mean 'target_port'?)"},
      {"tagret_host", "unknown_field: unknown field 'tagret_host' (did you mean 'target_host'?)"},
      {"Protocol", "unknown_field: unknown field 'Protocol' (did you mean 'protocol'?)"},
      {"listen_prot", "unknown_field: unknown field 'listen_prot' (did you mean 'listen_port'?)"},
      {"udp_max_session", "unknown_field: unknown field 'udp_max_session' (did you mean 'udp_max_sessions'?)"},
      {"colour", "unknown_field: unknown field 'colour'"},
      {"nmae", "unknown_field: unknown field 'nmae' (did you mean 'name'?)"},
      {"port", "unknown_field: unknown field 'port'"},                // nothing within two edits
      {"target_hort", "unknown_field: unknown field 'target_hort'"},  // target_host or target_port: no guess
      {std::string(5000, 'x'), "unknown_field: unknown field '" + std::string(5000, 'x') + "'"},
  };
  for (const auto& [key, message] : cases) {
    auto body = valid();
    body[key] = 1;
    CHECK(create_error(body) == message);
  }
}

TEST_CASE("UDP settings: defaults, limits, and null for TCP forwards", "[api]") {
  auto body = valid();
  body["protocol"] = "udp";
  relay::forward_spec s;
  REQUIRE_FALSE(api::parse_create(body, s));
  CHECK(s.protocol == relay::protocol::udp);
  CHECK(s.udp_idle_timeout_s == 60);
  CHECK(s.udp_max_sessions == 4096);
  body["udp_idle_timeout_s"] = 86400;
  body["udp_max_sessions"] = 1000000;
  REQUIRE_FALSE(api::parse_create(body, s));
  CHECK(s.udp_idle_timeout_s == 86400);
  CHECK(s.udp_max_sessions == 1000000);

  store::stored_forward f{s, "t", "t"};
  relay::forward_status st{relay::forward_state::active, "",
                          {.connections_active = 1, .connections_total = 2, .bytes_up = 3, .bytes_down = 4,
                           .datagrams_up = 5, .datagrams_down = 6, .datagrams_dropped = 7, .sessions_evicted = 8,
                           .target_unreachable = 9},
                          {}};
  auto j = api::to_json(f, st);
  CHECK(j["udp_idle_timeout_s"] == 86400);
  CHECK(j["udp_max_sessions"] == 1000000);
  CHECK(j["stats"]["datagrams_up"] == 5);
  CHECK(j["stats"]["datagrams_down"] == 6);
  CHECK(j["stats"]["datagrams_dropped"] == 7);
  CHECK(j["stats"]["sessions_evicted"] == 8);
  CHECK(j["stats"]["target_unreachable"] == 9);
  f.spec.protocol = relay::protocol::tcp;
  j = api::to_json(f, st);
  CHECK(j["udp_idle_timeout_s"].is_null());
  CHECK(j["udp_max_sessions"].is_null());
  CHECK_FALSE(j["stats"].contains("datagrams_up"));
  CHECK_FALSE(j["stats"].contains("target_unreachable"));
}

TEST_CASE("missing required fields and non-object bodies", "[api]") {
  for (const char* field : {"protocol", "listen_port", "target_host", "target_port"}) {
    auto body = valid();
    body.erase(field);
    INFO(field);
    CHECK(create_error(body) == std::string("missing_field: field '") + field + "' is required");
  }
  CHECK(create_error(json::array()).rfind("invalid_body", 0) == 0);
  CHECK(create_error(json("text")).rfind("invalid_body", 0) == 0);
  CHECK(create_error(json(nullptr)).rfind("invalid_body", 0) == 0);
}

TEST_CASE("a patch changes only what it names and nothing on error", "[api]") {
  relay::forward_spec s;
  REQUIRE_FALSE(api::parse_create(valid(), s));
  REQUIRE_FALSE(api::apply_patch(json{{"target_port", 81}, {"name", "x"}}, s));
  CHECK(test::only_target(s).port == 81);
  CHECK(s.name == "x");
  CHECK(s.listen_port == 8080);
  auto before = s;
  auto e = api::apply_patch(json{{"target_port", 82}, {"listen_port", "bad"}}, s);
  REQUIRE(e);
  CHECK(e->status == 400);
  CHECK(s == before);
  REQUIRE_FALSE(api::apply_patch(json::object(), s));
  CHECK(s == before);
}

TEST_CASE("a forward renders with its status and stats", "[api]") {
  store::stored_forward f;
  f.spec.id = 3;
  f.spec.name = "n";
  f.spec.listen_host = "127.0.0.1";
  f.spec.listen_port = 1000;
  test::only_target(f.spec).host = "t";
  test::only_target(f.spec).port = 2000;
  f.created_at = "2026-01-01T00:00:00Z";
  f.updated_at = "2026-01-02T00:00:00Z";
  relay::forward_status st{relay::forward_state::error, "bind failed",
                          {.connections_active = 1, .connections_total = 2, .bytes_up = 3, .bytes_down = 4,
                           .connect_errors = 5},
                          {}};
  auto j = api::to_json(f, st);
  CHECK(j["id"] == 3);
  CHECK(j["protocol"] == "tcp");
  CHECK(j["state"] == "error");
  CHECK(j["error"] == "bind failed");
  CHECK(j["created_at"] == "2026-01-01T00:00:00Z");
  CHECK(j["stats"]["connections_active"] == 1);
  CHECK(j["stats"]["connections_total"] == 2);
  CHECK(j["stats"]["bytes_up"] == 3);
  CHECK(j["stats"]["bytes_down"] == 4);
  CHECK(j["stats"]["connect_errors"] == 5);
  st.error.clear();
  CHECK(api::to_json(f, st)["error"].is_null());
}

TEST_CASE("stats.targets follows targets - the engine's figures by host and port - unchecked zeros where it has none",
          "[api]") {
  store::stored_forward f;
  f.spec.id = 4;
  f.spec.targets = {{"a.example", 80}, {"::1", 81, 2, true}, {"10.0.0.3", 82}};
  f.created_at = "2026-01-01T00:00:00Z";
  f.updated_at = "2026-01-02T03:04:05Z";
  // 2026-03-04T05:06:07Z: what the engine saw.
  const auto at = std::chrono::system_clock::time_point(std::chrono::seconds(1772600767));
  relay::forward_status st{relay::forward_state::active, "", {}, {}};
  // Not in the spec's order; the third target is missing (a PATCH added it a moment ago) and one the
  // spec no longer has is left over.
  const auto seen = [&](std::string host, std::uint16_t port, relay::target_health health) {
    relay::target_stats t;
    t.host = std::move(host);
    t.port = port;
    t.health = health;
    t.since = at;
    return t;
  };
  st.targets = {seen("::1", 81, relay::target_health::down), seen("gone.example", 80, relay::target_health::up),
                seen("a.example", 80, relay::target_health::up)};
  st.targets[0].last_error = "connect: Connection refused";
  st.targets[0].connections_total = 7;
  st.targets[0].bytes_up = 1;
  st.targets[0].bytes_down = 2;
  st.targets[0].connect_errors = 3;
  st.targets[2].connections_active = 4;
  st.targets[2].connections_total = 5;
  st.targets[2].bytes_up = 600;
  st.targets[2].bytes_down = 700;
  const auto rows = api::to_json(f, st)["stats"]["targets"];
  INFO(rows.dump());
  REQUIRE(rows.size() == 3);
  CHECK(rows[0] == json{{"host", "a.example"}, {"port", 80}, {"health", "up"}, {"since", "2026-03-04T05:06:07Z"},
                        {"last_error", nullptr}, {"connections_active", 4}, {"connections_total", 5},
                        {"bytes_up", 600}, {"bytes_down", 700}, {"connect_errors", 0}});
  CHECK(rows[1] == json{{"host", "::1"}, {"port", 81}, {"health", "down"}, {"since", "2026-03-04T05:06:07Z"},
                        {"last_error", "connect: Connection refused"}, {"connections_active", 0},
                        {"connections_total", 7}, {"bytes_up", 1}, {"bytes_down", 2}, {"connect_errors", 3}});
  CHECK(rows[2] == json{{"host", "10.0.0.3"}, {"port", 82}, {"health", "unchecked"}, {"since", "2026-01-02T03:04:05Z"},
                        {"last_error", nullptr}, {"connections_active", 0}, {"connections_total", 0},
                        {"bytes_up", 0}, {"bytes_down", 0}, {"connect_errors", 0}});
  // A forward with no live pool (disabled, or in error): every target unchecked, zero counters.
  const auto idle = api::to_json(f, relay::forward_status{relay::forward_state::disabled, "", {}, {}})["stats"]["targets"];
  REQUIRE(idle.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(idle[i]["host"] == f.spec.targets[i].host);
    CHECK(idle[i]["health"] == "unchecked");
    CHECK(idle[i]["connections_total"] == 0);
    CHECK(idle[i]["since"] == f.updated_at);
  }
  // The shorthand is null for a pool, given for one target.
  CHECK(api::to_json(f, st)["target_host"].is_null());
  f.spec.targets.resize(1);
  CHECK(api::to_json(f, st)["target_host"] == "a.example");
  CHECK(api::to_json(f, st)["stats"]["targets"].size() == 1);
}

// ---- input that is not what it seems (issue 12, part 6) ----

namespace {
std::optional<api::api_error> create_failure(const std::string& field, const std::string& value) {
  auto body = valid();
  body[field] = value;
  relay::forward_spec s;
  return api::parse_create(body, s);
}
}  // namespace

TEST_CASE("a control character anywhere in a host field is a 400 naming the field", "[api]") {
  const std::vector<std::string> hosts{std::string("127.0.0.1\0evil", 14), std::string("\0", 1), "127.0.0.1\n",
                                       "\t127.0.0.1", "example.com\r", "exa\x7fmple.com", "::1\xc2\x85",
                                       "\x1b[31mexample.com"};
  for (const char* field : {"listen_host", "target_host"}) {
    for (const auto& host : hosts) {
      INFO(field << " = " << json(host).dump());
      auto e = create_failure(field, host);
      REQUIRE(e);
      CHECK(e->status == 400);
      CHECK(e->code == "invalid_field");
      CHECK(e->field == field);
      CHECK(e->message == std::string(field) + " must not contain control characters");
    }
  }
  // What the checks took before still passes.
  CHECK_FALSE(create_failure("listen_host", "127.0.0.1"));
  CHECK_FALSE(create_failure("target_host", "db-1.example.com."));
}

TEST_CASE("names refuse the bidirectional controls and keep emoji sequences", "[api]") {
  for (const char* bidi : {"\u200E", "\u200F", "\u202A", "\u202B", "\u202C", "\u202D", "\u202E", "\u2066",
                           "\u2067", "\u2068", "\u2069"}) {
    INFO(json(bidi).dump());
    auto e = create_failure("name", std::string("web") + bidi + "gpj.exe");
    REQUIRE(e);
    CHECK(e->field == "name");
    CHECK(e->message.find("bidirectional") != std::string::npos);
  }
  // C0, DEL and C1 controls are refused as before; malformed UTF-8 (bytes nlohmann would keep in a
  // string built in code, as a stored row is) as well, overlong forms and surrogates included.
  for (std::string bad : {std::string("a\0b", 3), std::string("a\x7f"), std::string("a\xc2\x9b"),
                          std::string("\xc0\xae"), std::string("\xe0\x80\xae"), std::string("\xed\xa0\x80"),
                          std::string("\xf4\x90\x80\x80"), std::string("\xff")}) {
    INFO(json(bad).dump(-1, ' ', false, json::error_handler_t::replace));
    auto e = create_failure("name", bad);
    REQUIRE(e);
    CHECK(e->field == "name");
  }
  // A family emoji (joined by U+200D), a flag, accents and CJK are names people use.
  for (const char* fine :
       {"\U0001F469\u200D\U0001F469\u200D\U0001F467", "\U0001F1E9\U0001F1EA", "café", "数据库"}) {
    INFO(fine);
    CHECK_FALSE(create_failure("name", fine));
  }
}

TEST_CASE("a key given twice in one object is a 400 at any depth", "[api]") {
  json out;
  auto e = api::parse_body(R"({"listen_port": 70000, "target_host": "a", "listen_port": 8080})", out);
  REQUIRE(e);
  CHECK(e->status == 400);
  CHECK(e->code == "duplicate_key");
  CHECK(e->field == "listen_port");
  CHECK(e->message.find("'listen_port'") != std::string::npos);

  e = api::parse_body(R"({"a": {"b": 1, "c": [{"d": 1, "d": 2}]}})", out);
  REQUIRE(e);
  CHECK(e->code == "duplicate_key");
  CHECK(e->field.empty());  // not a field of the forward
  CHECK(e->message.find("'d'") != std::string::npos);

  // The same key in different objects is no duplicate.
  REQUIRE_FALSE(api::parse_body(R"({"a": {"b": 1}, "c": {"b": 2}, "d": [{"b": 1}, {"b": 1}]})", out));
  CHECK(out["c"]["b"] == 2);
  REQUIRE_FALSE(api::parse_body(R"({"protocol": "tcp"})", out));
  CHECK(out == json{{"protocol", "tcp"}});

  e = api::parse_body(R"({"a": 1,)", out);
  REQUIRE(e);
  CHECK(e->code == "invalid_json");
}

TEST_CASE("a stored spec is judged by the checks a request must pass", "[api]") {
  relay::forward_spec s;
  REQUIRE_FALSE(api::parse_create(valid(), s));
  CHECK_FALSE(api::check_spec(s));
  auto bad = s;
  test::only_target(bad).host.clear();
  REQUIRE(api::check_spec(bad));
  CHECK(api::check_spec(bad)->field == "targets");
  CHECK(api::check_spec(bad)->message.find("targets[0].host") == 0);
  bad = s;
  bad.name = "\xff";
  CHECK(api::check_spec(bad)->field == "name");
  bad = s;
  bad.udp_max_sessions = 0;
  CHECK(api::check_spec(bad)->field == "udp_max_sessions");
}

TEST_CASE("a zone in listen_host is kept as typed and must name an interface that exists now", "[api]") {
  const std::string lo = std::to_string(if_nametoindex("lo"));
  auto body = valid();
  body["enabled"] = false;  // a disabled forward binds nothing, yet its interface is checked
  body["listen_host"] = "FE80::0001%lo";
  body["target_host"] = "fe80::2%nosuchif0";  // a target's interface may appear later
  relay::forward_spec s;
  REQUIRE_FALSE(api::parse_create(body, s));
  CHECK(s.listen_host == "fe80::1%lo");
  CHECK(test::only_target(s).host == "fe80::2%nosuchif0");
  body["listen_host"] = "fe80::1%" + lo;
  REQUIRE_FALSE(api::parse_create(body, s));
  CHECK(s.listen_host == "fe80::1%" + lo);  // by number, not turned into the name

  body["listen_host"] = "fe80::1%nosuchif0";
  relay::forward_spec refused;
  auto e = api::parse_create(body, refused);
  REQUIRE(e);
  CHECK(e->status == 400);
  CHECK(e->code == "invalid_field");
  CHECK(e->field == "listen_host");
  CHECK(e->message == "unknown network interface 'nosuchif0'");

  const auto before = s;
  e = api::apply_patch(json{{"listen_host", "fe80::1%nosuchif0"}}, s);
  REQUIRE(e);
  CHECK(e->field == "listen_host");
  CHECK(e->message.find("'nosuchif0'") != std::string::npos);
  CHECK(s == before);

  // One stored earlier whose interface has gone is not refused for it: binding it tells.
  auto stored = s;
  stored.listen_host = "fe80::1%gone0";
  CHECK_FALSE(api::check_spec(stored));
  CHECK_FALSE(api::apply_patch(json{{"name", "renamed"}}, stored));
  CHECK(stored.listen_host == "fe80::1%gone0");
}

TEST_CASE("strings that fail the checks render as U+FFFD, so the page gets valid UTF-8", "[api]") {
  store::stored_forward f;
  f.spec.name = "a\xff\u202E" "b";
  f.spec.listen_host = std::string("127.0.0.1\0x", 11);
  test::only_target(f.spec).host = "t\x01";
  auto j = api::to_json(f, relay::forward_status{relay::forward_state::error, "stored forward is invalid", {}, {}});
  std::string text;
  REQUIRE_NOTHROW(text = j.dump());
  CHECK(j["name"] == "a\uFFFD\uFFFD" "b");
  CHECK(j["listen_host"] == "127.0.0.1\uFFFDx");
  CHECK(j["target_host"] == "t\uFFFD");
}

TEST_CASE("an unknown key is echoed printable in the message", "[api]") {
  auto body = valid();
  body["x\u202Ey"] = 1;
  relay::forward_spec s;
  auto e = api::parse_create(body, s);
  REQUIRE(e);
  CHECK(e->code == "unknown_field");
  CHECK(e->message == "unknown field 'x\uFFFDy'");
}
