// controller policy: a forward's allow and deny lists, connection limits and bandwidth limit through
// the real controller, store file and engine: the canonical forms GET shows, every value refused as a
// 400 naming the field and the entry (with nothing applied), PATCH of one field, restarts, and the
// refused counters in stats. What the policy does to traffic is tested with the engine.
#include "daemon_state.hpp"

#include <catch2/catch.hpp>

#include <string_view>

using namespace test;
using api::json;

namespace {

json body_for(const std::string& protocol) {
  return json{{"protocol", protocol}, {"listen_host", "127.0.0.1"}, {"listen_port", 0}, {"target_host", "127.0.0.1"},
              {"target_port", 9}};
}

// A body with every policy field set, in the spellings a person might type.
json policed_body(const std::string& protocol) {
  auto body = body_for(protocol);
  body["allow"] = json::array({"192.0.2.7", "2001:DB8::/32", "10.0.0.0/8"});
  body["deny"] = json::array({"10.9.0.0/16", "::1"});
  body["max_connections"] = 100;
  body["max_connections_per_source"] = 4;
  body["bandwidth_limit"] = json{{"up_bytes_per_s", 1048576}, {"down_bytes_per_s", nullptr}, {"burst_bytes", 262144}};
  return body;
}

// The policy fields as GET shows policed_body's.
const json policed_allow = json::array({"192.0.2.7/32", "2001:db8::/32", "10.0.0.0/8"});
const json policed_deny = json::array({"10.9.0.0/16", "::1/128"});
const json policed_limit = json{{"up_bytes_per_s", 1048576}, {"down_bytes_per_s", nullptr}, {"burst_bytes", 262144}};

const char* const policy_fields[] = {"allow", "deny", "max_connections", "max_connections_per_source",
                                     "bandwidth_limit"};

json policy_of(const json& forward) {
  json out;
  for (const auto* name : policy_fields) out[name] = forward[name];
  return out;
}

json created(const api::reply& r) {
  INFO(r.body.dump());
  REQUIRE(r.status == 201);
  return r.body;
}

std::int64_t id_of(const json& f) { return f["id"].get<std::int64_t>(); }

// A 400 invalid_field naming `field` whose message holds `words`.
void check_refused(const api::reply& r, const std::string& field, const std::string& words) {
  INFO(r.body.dump());
  CHECK(r.status == 400);
  CHECK(r.body["error"]["code"] == "invalid_field");
  CHECK(r.body["error"]["field"] == field);
  CHECK(r.body["error"]["message"].get<std::string>().find(words) != std::string::npos);
}

// `n` distinct /24 prefixes, in canonical form.
json many_prefixes(std::size_t n) {
  json out = json::array();
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back("10." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".0/24");
  }
  return out;
}

struct bad_value {
  const char* what;
  json value;
  std::string words;  // the message holds these; for a list, after the field's name
};

// Refuses each value for `field` on POST (TCP and UDP) and on PATCH of both forwards, and checks
// that the refused PATCH left each forward as it was, in the engine's view and in the file.
void check_all_refused(daemon_state& d, const std::string& field, const std::vector<bad_value>& cases) {
  const auto before = d.ctl->list().body.size();
  const auto tcp = created(d.ctl->create(policed_body("tcp")));
  const auto udp = created(d.ctl->create(policed_body("udp")));
  for (const auto& c : cases) {
    INFO(field << ": " << c.what << ": " << c.value.dump().substr(0, 200));
    const auto words = c.words.starts_with('[') ? field + c.words : c.words;  // "allow[1] ..."
    for (const char* protocol : {"tcp", "udp"}) {
      auto post = policed_body(protocol);
      post[field] = c.value;
      check_refused(d.ctl->create(post), field, words);
    }
    for (const auto& f : {tcp, udp}) check_refused(d.ctl->patch(id_of(f), json{{field, c.value}}), field, words);
  }
  d.restart();
  for (const auto& f : {tcp, udp}) {
    const auto got = d.ctl->get(id_of(f)).body;
    INFO(got.dump());
    CHECK(policy_of(got) == policy_of(f));
    CHECK(got["state"] == "active");
  }
  CHECK(d.ctl->list().body.size() == before + 2);
}

}  // namespace

TEST_CASE("allow and deny come back in canonical form and every policy field has its default", "[api]") {
  daemon_state d;
  for (const char* protocol : {"tcp", "udp"}) {
    INFO(protocol);
    const auto plain = created(d.ctl->create(body_for(protocol)));
    CHECK(plain["allow"] == json::array());
    CHECK(plain["deny"] == json::array());
    CHECK(plain["max_connections"] == 0);
    CHECK(plain["max_connections_per_source"] == 0);
    CHECK(plain["bandwidth_limit"].is_null());

    const auto f = created(d.ctl->create(policed_body(protocol)));
    for (const auto& view : {f, d.ctl->get(id_of(f)).body}) {
      INFO(view.dump());
      CHECK(view["allow"] == policed_allow);
      CHECK(view["deny"] == policed_deny);
      CHECK(view["max_connections"] == 100);
      CHECK(view["max_connections_per_source"] == 4);
      CHECK(view["bandwidth_limit"] == policed_limit);
      // The engine's part counts refusals; through the API they start at zero.
      CHECK(view["stats"]["refused_acl"] == 0);
      CHECK(view["stats"]["refused_limit"] == 0);
      CHECK(view["stats"]["refused_acl"].is_number_unsigned());
      CHECK(view["stats"]["refused_limit"].is_number_unsigned());
    }
  }

  // More spellings of one prefix; the order given is kept.
  const auto f = created(d.ctl->create(body_for("tcp")));
  const std::pair<const char*, const char*> spellings[] = {
      {"2001:0DB8:0000::/32", "2001:db8::/32"}, {"::ffff:192.0.2.0/120", "192.0.2.0/24"},
      {"0.0.0.0/0", "0.0.0.0/0"},               {"::/0", "::/0"},
      {"fe80::1", "fe80::1/128"},               {"192.0.2.255/32", "192.0.2.255/32"},
  };
  json given = json::array(), shown = json::array();
  for (const auto& [in, out] : spellings) given.push_back(in), shown.push_back(out);
  auto r = d.ctl->patch(id_of(f), json{{"deny", given}});
  INFO(r.body.dump());
  REQUIRE(r.status == 200);
  CHECK(r.body["deny"] == shown);
  // What GET shows is accepted back as it is, and a list may be emptied again.
  CHECK(d.ctl->patch(id_of(f), json{{"deny", shown}}).body["deny"] == shown);
  CHECK(d.ctl->patch(id_of(f), json{{"deny", json::array()}}).body["deny"] == json::array());

  // 1,024 entries are the most.
  r = d.ctl->patch(id_of(f), json{{"allow", many_prefixes(1024)}, {"deny", many_prefixes(1024)}});
  REQUIRE(r.status == 200);
  CHECK(r.body["allow"].size() == 1024);
  CHECK(r.body["deny"] == many_prefixes(1024));
}

TEST_CASE("every bad allow or deny entry is a 400 naming the entry - host bits give the prefix meant", "[api][store]") {
  const auto list = [](std::initializer_list<json> entries) { return json(std::vector<json>(entries)); };
  const json with_nul = list({"10.0.0.0/8", std::string("10.0.0.1\0junk", 13)});
  for (const std::string field : {"allow", "deny"}) {
    const std::vector<bad_value> cases = {
        {"host bits", list({"192.0.2.0/24", "10.1.2.3/8"}),
         "[1] '10.1.2.3/8' has host bits set: the prefix is 10.0.0.0/8"},
        {"host bits in IPv6", list({"2001:db8::1/32"}), "[0] '2001:db8::1/32' has host bits set: the prefix is 2001:db8::/32"},
        {"host bits past a byte", list({"192.0.2.128/25", "192.0.2.130/25"}),
         "[1] '192.0.2.130/25' has host bits set: the prefix is 192.0.2.128/25"},
        {"/33", list({"10.0.0.0/8", "10.0.0.0/33"}), "[1] '10.0.0.0/33': an IPv4 prefix length must be from 0 to 32"},
        {"/129", list({"::/129"}), "[0] '::/129': an IPv6 prefix length must be from 0 to 128"},
        {"garbage", list({"nonsense"}), "[0] 'nonsense' is not an IP address or a CIDR prefix"},
        {"a host name", list({"localhost"}), "[0] 'localhost' is not an IP address"},
        {"three octets", list({"10.0.0/24"}), "[0] '10.0.0/24' is not an IP address"},
        {"a leading zero", list({"010.0.0.0/8"}), "[0] '010.0.0.0/8' is not an IP address"},
        {"no length", list({"10.0.0.0/"}), "[0] '10.0.0.0/' is not an IP address"},
        {"a signed length", list({"10.0.0.0/+8"}), "[0] '10.0.0.0/+8' is not an IP address"},
        {"a space", list({" 10.0.0.0/8"}), "[0] ' 10.0.0.0/8' is not an IP address"},
        {"an empty string", list({""}), "[0] '' is not an IP address"},
        {"a NUL inside", with_nul, "[1] '10.0.0.1\xEF\xBF\xBDjunk' is not an IP address"},
        {"a zone", list({"fe80::1%lo"}), "[0] 'fe80::1%lo' has a zone"},
        {"a number", list({"10.0.0.0/8", 7}), "[1] must be a string such as \"192.0.2.0/24\""},
        {"an object", list({json::object()}), "[0] must be a string"},
        {"a repeat", list({"192.0.2.7", "10.0.0.0/8", "192.0.2.7/32"}), "[2] repeats " + field + "[0] (192.0.2.7/32)"},
        {"a repeat in IPv6", list({"2001:db8::/32", "2001:DB8:0::/32"}), "[1] repeats " + field + "[0] (2001:db8::/32)"},
        {"a repeat IPv4-mapped", list({"127.0.0.2", "::ffff:127.0.0.2"}), "[1] repeats " + field + "[0] (127.0.0.2/32)"},
        {"1,025 entries", many_prefixes(1025), field + " must be an array of at most 1024 IP addresses or CIDR prefixes"},
        {"null", nullptr, field + " must be an array"},
        {"a string", "10.0.0.0/8", field + " must be an array"},
        {"an object for the list", json{{"allow", "10.0.0.0/8"}}, field + " must be an array"},
    };
    daemon_state d;
    check_all_refused(d, field, cases);
  }
}

TEST_CASE("max_connections and max_connections_per_source take 0 to 1000000 - 0 is no limit", "[api][store]") {
  for (const std::string field : {"max_connections", "max_connections_per_source"}) {
    INFO(field);
    daemon_state d;
    const auto f = created(d.ctl->create(body_for("udp")));
    for (const int n : {1000000, 1, 0}) {
      const auto r = d.ctl->patch(id_of(f), json{{field, n}});
      INFO(r.body.dump());
      CHECK(r.status == 200);
      CHECK(r.body[field] == n);
    }
    const std::string range = field + " must be from 0 to 1000000";
    const std::string integer = field + " must be an integer from 0 to 1000000";
    check_all_refused(d, field,
                      {{"-1", -1, range},
                       {"1000001", 1000001, range},
                       {"past 64 bits", json(18446744073709551615ULL), range},
                       {"a string", "5", integer},
                       {"a fraction", 1.5, integer},
                       {"true", true, integer},
                       {"null", nullptr, integer}});
  }
}

TEST_CASE("bandwidth_limit is null or an object of two rates and a burst - each member may be null", "[api][store]") {
  daemon_state d;
  const auto f = created(d.ctl->create(body_for("tcp")));
  const auto limit = [](json up, json down, json burst) {
    return json{{"up_bytes_per_s", std::move(up)}, {"down_bytes_per_s", std::move(down)}, {"burst_bytes", std::move(burst)}};
  };
  struct good_value {
    json given;
    json shown;
  };
  const good_value accepted[] = {
      {json{{"up_bytes_per_s", 1024}}, limit(1024, nullptr, nullptr)},
      {json{{"down_bytes_per_s", 100000000000LL}}, limit(nullptr, 100000000000LL, nullptr)},
      {limit(2048, 4096, 65536), limit(2048, 4096, 65536)},
      {limit(nullptr, 1048576, 100000000000LL), limit(nullptr, 1048576, 100000000000LL)},
      {nullptr, nullptr},
      // No rate limits nothing: shown as null, not as an object that looks like a limit.
      {json::object(), nullptr},
      {limit(nullptr, nullptr, 131072), nullptr},
  };
  for (const auto& a : accepted) {
    INFO(a.given.dump());
    const auto r = d.ctl->patch(id_of(f), json{{"bandwidth_limit", a.given}});
    INFO(r.body.dump());
    CHECK(r.status == 200);
    CHECK(r.body["bandwidth_limit"] == a.shown);
    CHECK(d.ctl->get(id_of(f)).body["bandwidth_limit"] == a.shown);
  }
  // A PATCH gives the whole object: a member it leaves out is not limited any more.
  REQUIRE(d.ctl->patch(id_of(f), json{{"bandwidth_limit", limit(4096, 8192, 131072)}}).status == 200);
  CHECK(d.ctl->patch(id_of(f), json{{"bandwidth_limit", json{{"down_bytes_per_s", 2048}}}}).body["bandwidth_limit"] ==
        limit(nullptr, 2048, nullptr));

  check_all_refused(
      d, "bandwidth_limit",
      {{"an unknown key", json{{"up_bytes_per_sec", 2048}}, "bandwidth_limit has an unknown key 'up_bytes_per_sec'"},
       {"a rate below 1024", json{{"up_bytes_per_s", 1023}}, "bandwidth_limit.up_bytes_per_s must be from 1024 to 100000000000"},
       {"a rate of 0", json{{"down_bytes_per_s", 0}}, "bandwidth_limit.down_bytes_per_s must be from 1024 to 100000000000"},
       {"a rate above 10^11", json{{"down_bytes_per_s", 100000000001LL}},
        "bandwidth_limit.down_bytes_per_s must be from 1024 to 100000000000"},
       {"a burst below 65536", limit(4096, nullptr, 65535), "bandwidth_limit.burst_bytes must be from 65536 to 100000000000"},
       {"a burst above 10^11", json{{"burst_bytes", 100000000001LL}}, "bandwidth_limit.burst_bytes must be from 65536"},
       {"a negative rate", json{{"up_bytes_per_s", -1}}, "bandwidth_limit.up_bytes_per_s must be from 1024"},
       {"a fraction", json{{"up_bytes_per_s", 1024.5}}, "bandwidth_limit.up_bytes_per_s must be an integer"},
       {"a rate as text", json{{"up_bytes_per_s", "1M"}}, "bandwidth_limit.up_bytes_per_s must be an integer"},
       {"text", "1M", "bandwidth_limit must be null or an object of up_bytes_per_s, down_bytes_per_s and burst_bytes"},
       {"an array", json::array({1024}), "bandwidth_limit must be null or an object"},
       {"true", true, "bandwidth_limit must be null or an object"}});
}

TEST_CASE("a PATCH of one policy field keeps the others and a refused PATCH applies nothing", "[api][store]") {
  daemon_state d;
  for (const char* protocol : {"tcp", "udp"}) {
    INFO(protocol);
    const auto f = created(d.ctl->create(policed_body(protocol)));
    auto expected = policy_of(f);
    const std::pair<const char*, json> changes[] = {
        {"allow", json::array({"198.51.100.0/24"})},
        {"deny", json::array()},
        {"max_connections", 0},
        {"max_connections_per_source", 1000000},
        {"bandwidth_limit", nullptr},
        {"allow", json::array()},
    };
    for (const auto& [field, value] : changes) {
      INFO(field << " = " << value.dump());
      const auto r = d.ctl->patch(id_of(f), json{{field, value}});
      REQUIRE(r.status == 200);
      expected[field] = value;
      CHECK(policy_of(r.body) == expected);
      CHECK(r.body["targets"] == f["targets"]);
      CHECK(r.body["listen_port"] == f["listen_port"]);
    }
    // Good values beside one bad one: none is applied, in the engine's view or in the file.
    check_refused(d.ctl->patch(id_of(f), json{{"allow", json::array({"192.0.2.0/24"})},
                                              {"max_connections", 5},
                                              {"bandwidth_limit", json{{"up_bytes_per_s", 4096}}},
                                              {"deny", json::array({"192.0.2.7", "192.0.2.1/24"})}}),
                  "deny", "deny[1] '192.0.2.1/24' has host bits set: the prefix is 192.0.2.0/24");
    CHECK(policy_of(d.ctl->get(id_of(f)).body) == expected);
    d.restart();
    CHECK(policy_of(d.ctl->get(id_of(f)).body) == expected);
  }
}

TEST_CASE("the policy fields survive a restart - on enabled and disabled forwards", "[api][store]") {
  daemon_state d;
  std::vector<json> made;
  for (const char* protocol : {"tcp", "udp"}) {
    for (const bool enabled : {true, false}) {
      auto body = policed_body(protocol);
      body["enabled"] = enabled;
      body["allow"] = many_prefixes(1024);
      made.push_back(created(d.ctl->create(body)));
    }
  }
  d.restart();
  for (const auto& f : made) {
    const auto got = d.ctl->get(id_of(f)).body;
    INFO(got.dump().substr(0, 400));
    CHECK(policy_of(got) == policy_of(f));
    CHECK(got["allow"] == many_prefixes(1024));
    CHECK(got["state"] == (f["enabled"] == true ? "active" : "disabled"));
    CHECK(got["stats"]["refused_acl"] == 0);
    CHECK(got["stats"]["refused_limit"] == 0);
  }
  // And back to the defaults, which also survive.
  const json defaults{{"allow", json::array()}, {"deny", json::array()}, {"max_connections", 0},
                      {"max_connections_per_source", 0}, {"bandwidth_limit", nullptr}};
  REQUIRE(d.ctl->patch(id_of(made[0]), defaults).status == 200);
  d.restart();
  CHECK(policy_of(d.ctl->get(id_of(made[0])).body) == defaults);
}

TEST_CASE("over HTTP a bad entry is the JSON error shape naming the field", "[api]") {
  api_fixture fx;
  auto body = body_for("tcp");
  body["allow"] = json::array({"192.0.2.0/24", "10.1.2.3/8"});
  const auto r = fx.client.Post("/api/v1/forwards", body.dump(), "application/json");
  REQUIRE(r);
  CHECK(r->status == 400);
  const auto e = body_of(r);
  INFO(e.dump());
  CHECK(e == json{{"error",
                   {{"code", "invalid_field"},
                    {"message", "allow[1] '10.1.2.3/8' has host bits set: the prefix is 10.0.0.0/8"},
                    {"field", "allow"}}}});
  const auto list = fx.client.Get("/api/v1/forwards");
  REQUIRE(list);
  CHECK(body_of(list) == json::array());
}
