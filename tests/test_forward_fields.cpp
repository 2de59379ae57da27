// forward_fields: every writable field, walked from the one declaration (relay/forward_fields), so a
// new field is covered here without editing this file: POST, GET, restart, GET, PATCH, its refused
// values and its wrong protocol, through the real controller, store file and engine.
#include "api/controller.hpp"
#include "api_fixture.hpp"
#include "relay/forward_fields.hpp"

#include <catch2/catch.hpp>

#include <memory>

using namespace test;
using api::json;

namespace {

// A daemon's state that can be stopped and started again on the same file.
struct daemon_state {
  temp_dir dir;
  std::string path = (dir.path / "fields.db").string();
  std::unique_ptr<store::forward_store> store;
  std::unique_ptr<relay::engine> engine;
  std::unique_ptr<api::controller> ctl;

  daemon_state() { start(); }
  void start() {
    store = std::make_unique<store::forward_store>(path);
    engine = std::make_unique<relay::engine>(test_engine_options());
    ctl = std::make_unique<api::controller>(*store, *engine);
    ctl->restore();
  }
  void restart() {
    ctl.reset();
    engine.reset();
    store.reset();
    start();
  }
};

json base_body(relay::protocol p) {
  return json{{"protocol", relay::to_string(p)}, {"listen_host", "127.0.0.1"}, {"listen_port", free_port()},
              {"target_host", "127.0.0.1"}, {"target_port", 9}};
}

// The values a field takes in the walk: its examples, or for the listen port two free ports.
std::vector<json> values_of(const relay::forward_field& f) {
  if (f.name == "listen_port") return {free_port(), free_port()};
  return {f.examples.begin(), f.examples.end()};
}

// Whether something listens on the forward's address now: binding it ourselves fails.
bool address_taken(const json& forward) {
  const bool udp = forward["protocol"] == "udp";
  socklen_t len;
  auto ss = make_addr(forward["listen_host"].get<std::string>(), forward["listen_port"].get<std::uint16_t>(), len);
  fd s(::socket(ss.ss_family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0));
  return ::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno == EADDRINUSE;
}

}  // namespace

TEST_CASE("every writable field: POST, GET, restart, PATCH, refused values and wrong protocol are 400s naming it",
          "[api][store]") {
  const relay::forward_spec defaults;
  for (const auto& field : relay::forward_fields()) {
    for (const auto protocol : {relay::protocol::tcp, relay::protocol::udp}) {
      if (!field.applies_to(protocol)) continue;
      if (field.name == "protocol" && protocol == relay::protocol::udp) continue;  // its example is udp
      INFO("field " << field.name << " on a " << relay::to_string(protocol) << " forward");
      const auto values = values_of(field);
      REQUIRE(!values.empty());
      const auto first = values.front();
      REQUIRE(first != field.write(defaults));
      daemon_state d;

      auto body = base_body(protocol);
      body[field.name] = first;
      auto created = d.ctl->create(body);
      INFO(created.body.dump());
      REQUIRE(created.status == 201);
      const auto id = created.body["id"].get<std::int64_t>();
      CHECK(created.body[field.name] == first);
      CHECK(d.ctl->get(id).body[field.name] == first);
      if (field.effect == relay::change_effect::rebind || field.effect == relay::change_effect::enable) {
        CHECK(address_taken(created.body) == created.body["enabled"].get<bool>());
      }

      d.restart();
      auto restored = d.ctl->get(id);
      CHECK(restored.body[field.name] == first);
      CHECK(restored.body["state"] == (restored.body["enabled"].get<bool>() ? "active" : "disabled"));

      // PATCH to the next example, or back to the default.
      const auto second = values.size() > 1 ? values[1] : json(field.write(defaults));
      auto patched = d.ctl->patch(id, json{{field.name, second}});
      INFO(patched.body.dump());
      REQUIRE(patched.status == 200);
      CHECK(patched.body[field.name] == second);
      CHECK(d.ctl->get(id).body[field.name] == second);
      if (field.effect == relay::change_effect::rebind || field.effect == relay::change_effect::enable) {
        // The live forward moved: its new address is held, the old one given back.
        CHECK(address_taken(patched.body) == patched.body["enabled"].get<bool>());
        if (patched.body["listen_port"] != restored.body["listen_port"] ||
            patched.body["listen_host"] != restored.body["listen_host"] ||
            patched.body["protocol"] != restored.body["protocol"]) {
          CHECK_FALSE(address_taken(restored.body));
        }
      }
      if (field.effect == relay::change_effect::reconfigure) {
        // What the engine is told: the change reaches the live forward through configure().
        relay::forward_spec a, b;
        REQUIRE_FALSE(relay::from_document(json{{field.name, first}}, a));
        REQUIRE_FALSE(relay::from_document(json{{field.name, second}}, b));
        CHECK(relay::changes(a, b, relay::change_effect::reconfigure));
      }
      d.restart();
      CHECK(d.ctl->get(id).body[field.name] == second);

      // Refused values: a 400 naming the field, in POST and PATCH, and nothing changes.
      for (const auto& bad : field.refused) {
        INFO("refused value " << bad.dump());
        auto post = base_body(protocol);
        post[field.name] = bad;
        auto r = d.ctl->create(post);
        CHECK(r.status == 400);
        CHECK(r.body["error"]["field"] == field.name);
        auto p = d.ctl->patch(id, json{{field.name, bad}});
        CHECK(p.status == 400);
        CHECK(p.body["error"]["field"] == field.name);
        CHECK(d.ctl->get(id).body[field.name] == second);
      }
      CHECK(d.ctl->list().body.size() == 1);
    }
  }
}

TEST_CASE("a value for a field that does not apply to the forward's protocol is a 400 naming it - null is fine",
          "[api]") {
  for (const auto& field : relay::forward_fields()) {
    for (const auto protocol : {relay::protocol::tcp, relay::protocol::udp}) {
      if (field.applies_to(protocol)) continue;
      INFO("field " << field.name << " on a " << relay::to_string(protocol) << " forward");
      daemon_state d;
      auto body = base_body(protocol);
      body[field.name] = field.examples.front();
      auto r = d.ctl->create(body);
      CHECK(r.status == 400);
      CHECK(r.body["error"]["code"] == "invalid_field");
      CHECK(r.body["error"]["field"] == field.name);
      CHECK(r.body["error"]["message"].get<std::string>().find("applies only to") != std::string::npos);
      CHECK(d.ctl->list().body.empty());
      // What GET shows for it, null, may be sent back.
      body[field.name] = nullptr;
      auto created = d.ctl->create(body);
      REQUIRE(created.status == 201);
      CHECK(created.body[field.name].is_null());
      const auto id = created.body["id"].get<std::int64_t>();
      auto p = d.ctl->patch(id, json{{field.name, field.examples.front()}});
      CHECK(p.status == 400);
      CHECK(p.body["error"]["field"] == field.name);
      CHECK(d.ctl->patch(id, json{{field.name, nullptr}}).status == 200);
      // Moving the forward to a protocol the field applies to takes the field with it.
      const auto other = protocol == relay::protocol::tcp ? "udp" : "tcp";
      auto moved = d.ctl->patch(id, json{{"protocol", other}, {field.name, field.examples.front()}});
      INFO(moved.body.dump());
      CHECK(moved.status == 200);
      CHECK(moved.body[field.name] == field.examples.front());
    }
  }
}
