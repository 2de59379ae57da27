// Fleet mode's controller against a real etcd, in-process and without the watch thread: what this
// host's view holds changes only when a write of its own reads the set again (or the test calls
// resync), so another host's change can be made to land "meanwhile" deterministically.
#include "api_fixture.hpp"
#include "etcd_process.hpp"

#include "relay/forward_fields.hpp"
#include "store/etcd_client.hpp"

#include <catch2/catch.hpp>

#include <limits>

using namespace test;
using api::json;
namespace etcd = store::etcd;

namespace {

const std::string prefix = "/portrelay/test";

etcd::options etcd_options(const etcd_node& node) {
  std::string error;
  etcd::options o;
  o.endpoints = *etcd::parse_endpoints(node.unix_endpoint(), error);
  o.request_timeout = std::chrono::milliseconds(10000);  // a loaded machine under a sanitizer
  return o;
}

struct fleet_fixture {
  etcd_node node;
  temp_dir dir;
  store::forward_store store{(dir.path / "copy.db").string()};
  relay::engine engine{test_engine_options()};
  api::controller controller{store, engine};
  api::fleet fleet{api::fleet::options{etcd_options(node), prefix, "host-a", 10}};
  etcd::client other{etcd_options(node)};  // "another host": writes straight to etcd

  fleet_fixture() {
    controller.join(fleet);
    controller.resync();
  }

  json document(std::int64_t id) {
    const auto r = other.range(prefix + "/forwards/" + std::to_string(id));
    return r.kvs.empty() ? json() : json::parse(r.kvs.front().value);
  }
  std::int64_t next_id() {
    const auto r = other.range(prefix + "/next_id");
    return r.kvs.empty() ? 0 : std::stoll(r.kvs.front().value);
  }
  // Another host's change, as its controller would commit it: the forward and the guard together.
  void change_elsewhere(std::int64_t id, const json& doc) {
    const auto guard = other.range(prefix + "/next_id").kvs.at(0);
    auto r = other.txn({etcd::compare{prefix + "/next_id", etcd::compare::target::mod_revision,
                                      etcd::compare::result::equal, guard.mod_revision, {}, {}}},
                       {{etcd::operation::kind::put, prefix + "/next_id", guard.value, 0, {}},
                        {etcd::operation::kind::put, prefix + "/forwards/" + std::to_string(id), doc.dump(), 0, {}}});
    REQUIRE(r.succeeded);
  }
};

json tcp_forward(std::uint16_t listen_port, std::uint16_t target_port, const std::string& name = "web") {
  return json{{"name", name}, {"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", listen_port},
              {"target_host", "127.0.0.1"}, {"target_port", target_port}};
}

}  // namespace

TEST_CASE("fleet: a POST is one key in etcd holding the stored document, its id from next_id, port 0 resolved once", "[api]") {
  fleet_fixture f;
  target_server echo(target_server::echo);
  const auto r = f.controller.create(tcp_forward(0, echo.port()));
  REQUIRE(r.status == 201);
  const auto id = r.body["id"].get<std::int64_t>();
  CHECK(id == 1);
  CHECK(f.next_id() == 2);
  const auto doc = f.document(id);
  REQUIRE(doc.is_object());
  const auto port = doc["listen_port"].get<std::uint16_t>();
  CHECK(port != 0);  // every host listens on the port this one chose
  CHECK(r.body["listen_port"] == port);
  CHECK(r.body["state"] == "active");
  auto stored = f.store.get(id);
  REQUIRE(stored);
  CHECK(relay::to_document(stored->spec) == doc);  // the local copy holds the same document
  CHECK(stored->mod_revision > 0);
  CHECK(f.store.mirrored_revision() == stored->mod_revision);
  CHECK(echo_once(port, "through the fleet's forward") == "through the fleet's forward");
  REQUIRE(r.body["hosts"].size() == 1);
  CHECK(r.body["hosts"][0]["host"] == "host-a");
  CHECK(r.body["hosts"][0]["applied_revision"] == stored->mod_revision);

  // A second POST takes the next id; the ids are never given twice, even after a delete.
  CHECK(f.controller.remove(id).status == 204);
  CHECK(f.document(id).is_null());
  const auto again = f.controller.create(tcp_forward(0, echo.port(), "web2"));
  REQUIRE(again.status == 201);
  CHECK(again.body["id"] == 2);
}

TEST_CASE("fleet: a PATCH of a forward another host changed meanwhile is a 409 conflict and writes nothing", "[api]") {
  fleet_fixture f;
  const auto created = f.controller.create(tcp_forward(0, 9));
  REQUIRE(created.status == 201);
  auto theirs = f.document(1);
  theirs["name"] = "renamed-elsewhere";
  f.change_elsewhere(1, theirs);  // this host has not seen it: no watch runs here

  const auto r = f.controller.patch(1, json{{"max_connections", 7}});
  CHECK(r.status == 409);
  CHECK(r.body["error"]["code"] == "conflict");
  CHECK(r.body["error"]["message"].get<std::string>().find("changed by another host") != std::string::npos);
  CHECK(f.document(1)["name"] == "renamed-elsewhere");
  CHECK(f.document(1)["max_connections"] == 0);
  // The refusal brought the view up to date: the same PATCH now applies on top of their change.
  const auto retry = f.controller.patch(1, json{{"max_connections", 7}});
  REQUIRE(retry.status == 200);
  CHECK(retry.body["name"] == "renamed-elsewhere");
  CHECK(f.document(1)["max_connections"] == 7);
}

TEST_CASE("fleet: a write that loses the race to another host's change of another forward is retried, not refused", "[api]") {
  fleet_fixture f;
  REQUIRE(f.controller.create(tcp_forward(0, 9, "a")).status == 201);
  REQUIRE(f.controller.create(tcp_forward(0, 9, "b")).status == 201);
  auto theirs = f.document(2);
  theirs["max_connections"] = 3;
  f.change_elsewhere(2, theirs);
  const auto r = f.controller.patch(1, json{{"max_connections", 5}});
  REQUIRE(r.status == 200);
  CHECK(f.document(1)["max_connections"] == 5);
  CHECK(f.document(2)["max_connections"] == 3);
  CHECK(f.controller.get(2).body["max_connections"] == 3);  // their change is in this host's view now
}

TEST_CASE("fleet: a resync touches only forwards whose document changed: a live connection survives it", "[api]") {
  fleet_fixture f;
  target_server echo(target_server::echo);
  const auto a = f.controller.create(tcp_forward(0, echo.port(), "kept"));
  const auto b = f.controller.create(tcp_forward(0, echo.port(), "changed"));
  REQUIRE(a.status == 201);
  REQUIRE(b.status == 201);
  const auto port = a.body["listen_port"].get<std::uint16_t>();
  auto live = connect_to(port);
  REQUIRE(live);
  REQUIRE(send_all(live.get(), "ping"));
  REQUIRE(recv_exact(live.get(), 4) == "ping");

  auto theirs = f.document(2);
  theirs["max_connections"] = 9;
  f.change_elsewhere(2, theirs);
  // A compaction past every revision this host applied, then a whole read, as after a reconnect.
  const auto revision = f.other.range(prefix + "/next_id").revision;
  REQUIRE(etcdctl(f.node.endpoint(), {"compact", std::to_string(revision)}).status == 0);
  CHECK(f.controller.resync() >= revision);

  CHECK(f.controller.get(2).body["max_connections"] == 9);
  REQUIRE(send_all(live.get(), "pong"));
  CHECK(recv_exact(live.get(), 4) == "pong");  // not bounced
  CHECK(f.controller.get(1).body["stats"]["connections_total"] == 1);
  CHECK(f.store.get(1)->mod_revision == a.body["hosts"][0]["applied_revision"].get<std::int64_t>());
}

TEST_CASE("fleet: a port taken on this host only is a 201 in state error here, a clash with the shared set is a 409", "[api]") {
  fleet_fixture f;
  std::uint16_t taken = 0;
  auto holder = listen_on(taken);
  const auto r = f.controller.create(tcp_forward(taken, 9));
  REQUIRE(r.status == 201);
  CHECK(r.body["state"] == "error");
  CHECK(r.body["hosts"][0]["state"] == "error");
  CHECK(f.document(1)["listen_port"] == taken);  // the shared set has it: other hosts serve it

  const auto clash = f.controller.create(tcp_forward(taken, 9, "second"));
  CHECK(clash.status == 409);
  CHECK(clash.body["error"]["code"] == "address_in_use");
  CHECK(clash.body["error"]["message"].get<std::string>().find("forward 1 (web)") != std::string::npos);
  CHECK(f.document(2).is_null());
}

TEST_CASE("fleet: a late event of a forward deleted since is ignored, never served again", "[api]") {
  fleet_fixture f;
  const auto r = f.controller.create(tcp_forward(0, 9));
  REQUIRE(r.status == 201);
  const auto doc = f.document(1).dump();
  const auto revision = f.store.get(1)->mod_revision;
  REQUIRE(f.controller.remove(1).status == 204);
  f.controller.converge(api::fleet_changes{{{1, doc, revision, false}}, {}, revision, false});
  CHECK(f.controller.get(1).status == 404);
  CHECK(f.engine.count().active == 0);
}

TEST_CASE("fleet: etcd unreachable: writes are a 503 store_unreachable and change nothing, reads are served", "[api]") {
  fleet_fixture f;
  REQUIRE(f.controller.create(tcp_forward(0, 9)).status == 201);
  f.node.kill();
  const auto created = f.controller.create(tcp_forward(0, 9, "b"));
  CHECK(created.status == 503);
  CHECK(created.body["error"]["code"] == "store_unreachable");
  CHECK(f.controller.patch(1, json{{"max_connections", 2}}).status == 503);
  CHECK(f.controller.remove(1).status == 503);
  const auto list = f.controller.list();
  REQUIRE(list.status == 200);
  REQUIRE(list.body.size() == 1);
  CHECK(list.body[0]["max_connections"] == 0);
  CHECK(f.controller.store_state().starts_with("local-copy; revision="));
}

TEST_CASE("fleet: status and host keys of the wrong types are ignored: the host still converges and answers", "[api]") {
  fleet_fixture f;
  REQUIRE(f.controller.create(tcp_forward(0, 9)).status == 201);
  f.other.put(prefix + "/status/1/by-hand", R"({"state":5,"error":[1],"applied_revision":"x"})");
  f.other.put(prefix + "/hosts/by-hand", R"({"started_at":5,"version":{"a":1}})");
  auto theirs = f.document(1);
  theirs["name"] = "renamed-elsewhere";
  f.change_elsewhere(1, theirs);
  REQUIRE_NOTHROW(f.controller.resync());
  const auto r = f.controller.get(1);
  REQUIRE(r.status == 200);
  CHECK(r.body["name"] == "renamed-elsewhere");
  const auto hosts = r.body["hosts"];
  REQUIRE(hosts.size() == 2);
  CHECK(hosts[0]["host"] == "by-hand");
  CHECK(hosts[0]["state"] == "error");
  CHECK(hosts[0]["applied_revision"] == 0);
  const auto info = f.controller.fleet_info();
  REQUIRE(info.status == 200);
  REQUIRE(info.body["hosts"].size() == 1);  // no lease thread runs here: only the hand-made entry
  CHECK(info.body["hosts"][0]["started_at"] == "");
}

TEST_CASE("fleet: a forward put by hand under an id deleted before is served, as on a host that never saw it", "[api]") {
  fleet_fixture f;
  REQUIRE(f.controller.create(tcp_forward(0, 9)).status == 201);
  const auto doc = f.document(1);
  const auto revision = f.store.get(1)->mod_revision;
  REQUIRE(f.controller.remove(1).status == 204);
  f.other.put(prefix + "/forwards/1", doc.dump());
  f.controller.resync();
  CHECK(f.controller.get(1).status == 200);
  // An event older than the delete is still ignored once the forward is gone again.
  REQUIRE(f.controller.remove(1).status == 204);
  f.controller.converge(api::fleet_changes{{{1, doc.dump(), revision, false}}, {}, revision, false});
  CHECK(f.controller.get(1).status == 404);
}

TEST_CASE("fleet: with next_id deleted, unreadable or behind a key made by hand, a POST takes an id never given", "[api]") {
  fleet_fixture f;
  REQUIRE(f.controller.create(tcp_forward(0, 9, "a")).status == 201);
  REQUIRE(f.controller.create(tcp_forward(0, 9, "b")).status == 201);
  REQUIRE(f.controller.remove(2).status == 204);

  f.other.delete_range(prefix + "/next_id");
  auto r = f.controller.create(tcp_forward(0, 9, "c"));
  REQUIRE(r.status == 201);
  CHECK(r.body["id"] == 3);
  CHECK(f.next_id() == 4);

  f.other.put(prefix + "/next_id", "not a number");
  r = f.controller.create(tcp_forward(0, 9, "d"));
  REQUIRE(r.status == 201);
  CHECK(r.body["id"] == 4);
  CHECK(f.next_id() == 5);

  auto by_hand = f.document(4);
  by_hand["name"] = "by-hand";
  by_hand["enabled"] = false;  // on forward 4's port
  f.other.put(prefix + "/forwards/5", by_hand.dump());
  r = f.controller.create(tcp_forward(0, 9, "e"));
  REQUIRE(r.status == 201);
  CHECK(r.body["id"] == 6);
  CHECK(f.next_id() == 7);
  CHECK(f.document(5)["name"] == "by-hand");

  f.other.put(prefix + "/next_id", "not a number");  // a PATCH rewrites it too, with the next id
  REQUIRE(f.controller.patch(1, json{{"name", "a2"}}).status == 200);
  CHECK(f.next_id() == 7);
}

TEST_CASE("fleet: ids near the largest one (next_id written by hand) are given to the last, then a 507, never an overflow", "[api]") {
  fleet_fixture f;
  constexpr auto largest = std::numeric_limits<std::int64_t>::max();
  f.other.put(prefix + "/next_id", std::to_string(largest - 1));
  auto r = f.controller.create(tcp_forward(0, 9, "last"));
  REQUIRE(r.status == 201);
  CHECK(r.body["id"] == largest - 1);
  CHECK(f.next_id() == largest);

  r = f.controller.create(tcp_forward(0, 9, "one-too-many"));
  CHECK(r.status == 507);
  CHECK(r.body["error"]["code"] == "ids_exhausted");
  auto doc = f.controller.config().body;
  doc["forwards"].push_back(tcp_forward(0, 9, "new"));
  r = f.controller.put_config(doc, false, std::nullopt);
  CHECK(r.status == 507);
  CHECK(r.body["error"]["code"] == "ids_exhausted");
  CHECK(f.next_id() == largest);  // nothing written
  CHECK(f.controller.list().body.size() == 1);
}

TEST_CASE("fleet: an invalid document put by hand over a live forward stops it here too, and a valid one serves it again", "[api]") {
  fleet_fixture f;
  REQUIRE(f.controller.create(tcp_forward(0, 9)).status == 201);
  const auto valid = f.document(1);
  REQUIRE(f.engine.status(1).state == relay::forward_state::active);

  f.other.put(prefix + "/forwards/1", json{{"garbage", true}}.dump());
  f.controller.resync();
  CHECK(f.controller.get(1).status == 404);  // as on a host started now, which never served it
  CHECK(f.controller.list().body.empty());
  CHECK(f.engine.status(1).error == "not loaded");  // its port is closed
  CHECK(f.document(1) == json{{"garbage", true}});  // not this host's to delete

  f.other.put(prefix + "/forwards/1", valid.dump());
  f.controller.resync();
  REQUIRE(f.controller.get(1).status == 200);
  CHECK(f.engine.status(1).state == relay::forward_state::active);
}

TEST_CASE("fleet: a PUT of the configuration never writes over a key made by hand where it creates a forward", "[api]") {
  fleet_fixture f;
  REQUIRE(f.controller.create(tcp_forward(0, 9)).status == 201);
  auto by_hand = f.document(1);
  by_hand["name"] = "by-hand";
  by_hand["enabled"] = false;
  f.other.put(prefix + "/forwards/2", by_hand.dump());  // at next_id, unseen here: no watch runs

  auto doc = f.controller.config().body;
  doc["forwards"].push_back(tcp_forward(0, 9, "new"));
  const auto refused = f.controller.put_config(doc, false, std::nullopt);
  CHECK(refused.status == 409);
  CHECK(refused.body["error"]["code"] == "conflict");
  CHECK(f.document(2)["name"] == "by-hand");

  doc = f.controller.config().body;  // read again: it has the forward made by hand now
  REQUIRE(doc["forwards"].size() == 2);
  doc["forwards"].push_back(tcp_forward(0, 9, "new"));
  REQUIRE(f.controller.put_config(doc, false, std::nullopt).status == 200);
  CHECK(f.document(2)["name"] == "by-hand");
  CHECK(f.document(3)["name"] == "new");
}

TEST_CASE("fleet: this host's keys deleted by hand (etcdctl del --prefix) are written again", "[api]") {
  fleet_fixture f;
  REQUIRE(f.controller.create(tcp_forward(0, 9)).status == 201);
  f.fleet.start(f.controller, f.store.mirrored_revision());
  const auto host_key = prefix + "/hosts/host-a";
  const auto status_key = prefix + "/status/1/host-a";
  const auto present = [&] { return !f.other.range(host_key).kvs.empty() && !f.other.range(status_key).kvs.empty(); };
  REQUIRE(eventually(present, io_timeout));
  f.other.delete_range(prefix + "/status/", etcd::prefix_end(prefix + "/status/"));
  f.other.delete_range(prefix + "/hosts/", etcd::prefix_end(prefix + "/hosts/"));
  CHECK(eventually(present, io_timeout));
  CHECK(eventually([&] { return f.controller.fleet_info().body["hosts"].size() == 1; }, io_timeout));

  f.other.delete_range(status_key);  // only the status of a forward it still serves
  CHECK(eventually([&] { return !f.other.range(status_key).kvs.empty(); }, io_timeout));
}

TEST_CASE("fleet: a text in another host's status is cut at 1 KiB, not repeated whole in every GET", "[api]") {
  fleet_fixture f;
  REQUIRE(f.controller.create(tcp_forward(0, 9)).status == 201);
  f.fleet.start(f.controller, f.store.mirrored_revision());
  const std::string huge(1 << 20, 'x');
  f.other.put(prefix + "/status/1/host-b", json{{"state", "error"}, {"error", huge}}.dump());
  const auto error_of_b = [&] {
    const auto body = f.controller.get(1).body;
    for (const auto& h : body["hosts"]) {
      if (h["host"] == "host-b") return h["error"].get<std::string>();
    }
    return std::string();
  };
  REQUIRE(eventually([&] { return !error_of_b().empty(); }, io_timeout));
  CHECK(error_of_b() == huge.substr(0, api::max_status_text));
}
