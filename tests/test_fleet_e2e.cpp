// Fleet mode end to end (issue 19): portrelay hosts as real processes, each in a network namespace of
// its own, sharing one set of forwards in etcd run by the test (one member, or a 3-member cluster).
#include "fleet_support.hpp"

#include <catch2/catch.hpp>

#include <barrier>
#include <map>
#include <mutex>
#include <regex>

using namespace test;
using nlohmann::json;

namespace {

const std::string prefix = "/portrelay/e2e";

// One etcd member, and hosts a, b and c on it.
struct one_member_fleet {
  etcd_node etcd;
  fleet hosts{std::vector<std::string>(3, etcd.unix_endpoint())};
};

// Requires `ok`, with every host's log as the message when it does not hold.
void require_that(bool ok, const std::string& what, const fleet& f) {
  INFO(what);
  INFO(f.logs());
  REQUIRE(ok);
}

// How long `pred` took to hold, or nothing when it did not within `limit`.
template <class Pred>
std::optional<std::chrono::milliseconds> time_until(Pred pred, std::chrono::milliseconds limit) {
  const auto from = std::chrono::steady_clock::now();
  if (!eventually(pred, limit)) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - from);
}

// host -> state in a forward's `hosts`, in the order listed.
std::vector<std::pair<std::string, std::string>> host_states(const json& forward) {
  std::vector<std::pair<std::string, std::string>> states;
  if (!forward.is_object() || !forward.contains("hosts") || !forward["hosts"].is_array()) return states;
  for (const auto& h : forward["hosts"]) states.emplace_back(h.value("host", ""), h.value("state", ""));
  return states;
}

using states = std::vector<std::pair<std::string, std::string>>;
const states all_active{{"a", "active"}, {"b", "active"}, {"c", "active"}};

// N of a Portrelay-Store header "<store>; revision=N", or -1 when the header is not of that store.
long long revision_in(const api_answer& r, const std::string& store) {
  static const std::regex form(R"(^(etcd|local-copy); revision=(\d+)$)");
  std::smatch m;
  const auto value = r.header("Portrelay-Store");
  if (!std::regex_match(value, m, form) || m[1] != store) return -1;
  return std::stoll(m[2]);
}

std::vector<std::string> fleet_host_names(const api_answer& r) {
  std::vector<std::string> names;
  if (r.body.is_object() && r.body.contains("hosts")) {
    for (const auto& h : r.body["hosts"]) names.push_back(h.value("host", ""));
  }
  return names;
}

// The revision etcd is at now.
long long etcd_revision(etcd_node& etcd) {
  const auto body = etcd_http(etcd.client_port(), "POST", "/v3/maintenance/status", "{}");
  const auto status = json::parse(body, nullptr, false);
  if (!status.is_object() || !status.contains("header")) return -1;
  return std::stoll(status["header"].value("revision", "-1"));  // int64 as a string in the gateway's JSON
}

// What etcd holds for forward `id` (etcdctl's output: the document and a newline, or nothing).
etcdctl_result stored_document(etcd_node& etcd, int id) {
  return etcdctl(etcd.endpoint(), {"get", prefix + "/forwards/" + std::to_string(id), "--print-value-only"});
}

// A port free in every host's namespace, below the ephemeral range.
std::uint16_t port_free_everywhere(fleet& f) {
  for (;;) {
    const auto port = in_netns(f[0].ns(), free_port);
    bool free = true;
    for (auto& h : f.hosts) free = free && h->occupy(port);
    if (free) return port;
  }
}

json named(json forward, const std::string& name) {
  forward["name"] = name;
  return forward;
}

std::string forward_path(int id) { return "/api/v1/forwards/" + std::to_string(id); }

struct forward_ref {
  int id;
  std::uint16_t port;
};

// POSTs `body` through `via` and requires a 201: the new forward's id and listen port.
forward_ref create_through(fleet& f, fleet_host& via, const json& body) {
  const auto r = via.post("/api/v1/forwards", body);
  require_that(r.status == 201, "POST through " + via.name() + ": " + r.text, f);
  return {r.body["id"].get<int>(), r.body["listen_port"].get<std::uint16_t>()};
}

// Requires that host `on` lists every host active on forward `id` within a bounded wait.
void require_active_everywhere(fleet& f, fleet_host& on, int id) {
  api_answer r;
  const bool listed = eventually([&] {
    r = on.get(forward_path(id));
    return host_states(r.body) == all_active;
  }, 30s);
  require_that(listed, "hosts of forward " + std::to_string(id) + " on " + on.name() + ": " + r.text, f);
}

}  // namespace

TEST_CASE("fleet: a forward created through a relays on a, b and c, each host's status listed", "[e2e]") {
  one_member_fleet f;
  auto& h = f.hosts;
  const auto [id, port] = create_through(h, h[0], tcp_forward(h.echo_port));
  REQUIRE(port != 0);  // resolved by a, and stored

  // Every host relays within a bounded wait; the delay each took is logged, not judged (the claim
  // of one second is for an unloaded machine).
  const auto posted = std::chrono::steady_clock::now();
  std::vector<std::optional<std::chrono::milliseconds>> delay(3);
  eventually([&] {
    for (std::size_t i = 0; i < 3; ++i) {
      if (!delay[i] && h[i].echo(port, "x") == "x") {
        delay[i] = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - posted);
      }
    }
    return delay[0] && delay[1] && delay[2];
  }, 30s);
  const auto shown = [](const auto& d) { return d ? std::to_string(d->count()) + " ms" : std::string("never"); };
  WARN("relaying after the 201: a " << shown(delay[0]) << ", b " << shown(delay[1]) << ", c " << shown(delay[2]));
  require_that(delay[0] && delay[1] && delay[2], "every host relays", h);

  // Each host lists every host's state, sorted by host, all at the same applied revision.
  for (auto& host : h.hosts) {
    require_active_everywhere(h, *host, id);
    const auto r = host->get(forward_path(id));
    const long long applied = r.body["hosts"][0]["applied_revision"];
    CHECK(applied > 0);
    for (const auto& entry : r.body["hosts"]) {
      CHECK(entry["applied_revision"] == applied);
      CHECK(entry["error"].is_null());
    }
    CHECK(r.body["listen_port"] == port);
    CHECK(revision_in(r, "etcd") >= applied);
  }

  const auto fleet_view = h[1].get("/api/v1/fleet");
  REQUIRE(fleet_view.status == 200);
  CHECK(fleet_view.body["store"] == "etcd");
  CHECK(fleet_view.body["host"] == "b");
  CHECK(fleet_view.body["prefix"] == prefix);
  CHECK(fleet_view.body["reachable"] == true);
  CHECK(fleet_host_names(fleet_view) == std::vector<std::string>{"a", "b", "c"});

  // The document in etcd is the forward's, under the prefix, as SQLite keeps it (the target a pool).
  const auto stored = stored_document(f.etcd, id);
  REQUIRE(stored.status == 0);
  const auto document = json::parse(stored.output, nullptr, false);
  CHECK(document.value("listen_port", 0) == port);
  CHECK(document["targets"] == json::array({{{"host", "127.0.0.1"}, {"port", h.echo_port}, {"weight", 1}, {"backup", false}}}));
}

TEST_CASE("fleet: a PATCH and a DELETE through b reach every host", "[e2e]") {
  one_member_fleet f;
  auto& h = f.hosts;
  const auto [id, old_port] = create_through(h, h[0], tcp_forward(h.echo_port));
  require_that(eventually([&] {
    for (auto& host : h.hosts) if (host->echo(old_port, "x") != "x") return false;
    return true;
  }), "relaying before the PATCH", h);

  const auto new_port = port_free_everywhere(h);
  const auto patched = h[1].patch(forward_path(id), {{"listen_port", new_port}, {"name", "moved"}});
  require_that(patched.status == 200, patched.text, h);
  CHECK(patched.body["listen_port"] == new_port);
  for (auto& host : h.hosts) {
    const bool moved = eventually([&] {
      return host->echo(new_port, "x") == "x" && host->echo(old_port, "x") == "<refused>" &&
             host->get(forward_path(id)).body.value("name", "") == "moved";
    }, 30s);
    require_that(moved, "the PATCH on " + host->name(), h);
  }

  const auto deleted = h[1].del(forward_path(id));
  require_that(deleted.status == 204, deleted.text, h);
  for (auto& host : h.hosts) {
    const bool gone = eventually([&] {
      return host->echo(new_port, "x") == "<refused>" && host->get(forward_path(id)).status == 404;
    }, 30s);
    require_that(gone, "the DELETE on " + host->name(), h);
  }
  const auto stored = stored_document(f.etcd, id);
  CHECK(stored.status == 0);
  CHECK(stored.output.empty());
}

TEST_CASE("fleet: PATCHes through a and b at once - one is a 409 conflict, the 200's document stays", "[e2e]") {
  one_member_fleet f;
  auto& h = f.hosts;
  const int id = create_through(h, h[0], named(tcp_forward(h.echo_port), "start")).id;
  std::string current = "start";
  const auto name_on = [&](fleet_host& host) { return host.get(forward_path(id)).body.value("name", ""); };

  bool conflict_seen = false;
  int round = 1;
  for (; round <= 30 && !conflict_seen; ++round) {
    // Both start from the same, current document.
    require_that(eventually([&] { return name_on(h[0]) == current && name_on(h[1]) == current; }, 30s),
                 "both hosts at '" + current + "'", h);
    const std::string names[2] = {"a-" + std::to_string(round), "b-" + std::to_string(round)};
    api_answer answers[2];
    std::barrier together(2);
    std::vector<std::thread> patchers;
    for (int i = 0; i < 2; ++i) {
      patchers.emplace_back([&, i] {
        together.arrive_and_wait();
        answers[i] = h[static_cast<std::size_t>(i)].patch(forward_path(id), {{"name", names[i]}});
      });
    }
    for (auto& t : patchers) t.join();
    INFO("round " << round << ": a " << answers[0].status << " " << answers[0].text << ", b " << answers[1].status
                  << " " << answers[1].text);
    for (const auto& a : answers) {
      CHECK((a.status == 200 || a.status == 409));
      if (a.status == 409) CHECK(a.error_code() == "conflict");
    }
    REQUIRE((answers[0].status == 200 || answers[1].status == 200));  // one of them always wins

    std::vector<std::string> allowed;
    for (int i = 0; i < 2; ++i) {
      if (answers[i].status == 200) allowed.push_back(names[i]);
    }
    // Every host settles on one document: the 200's, or when both were 200s, one of them.
    std::string settled;
    const bool agreed = eventually([&] {
      settled = name_on(h[0]);
      return name_on(h[1]) == settled && name_on(h[2]) == settled &&
             (settled == names[0] || settled == names[1]);
    }, 30s);
    require_that(agreed, "the hosts agree after round " + std::to_string(round) + " (a says '" + settled + "')", h);
    CHECK(std::find(allowed.begin(), allowed.end(), settled) != allowed.end());
    current = settled;
    conflict_seen = allowed.size() == 1;
  }
  WARN(round - 1 << " rounds of concurrent PATCHes until a 409");
  CHECK(conflict_seen);
}

TEST_CASE("fleet: a port taken on host c is an error on c only, and a clash within the set a 409", "[e2e]") {
  one_member_fleet f;
  auto& h = f.hosts;
  const auto port = port_free_everywhere(h);
  auto blocker = h[2].occupy(port);
  REQUIRE(blocker);

  // Taken on the host that takes the write: still a 201, in error there.
  const int id = create_through(h, h[2], tcp_forward(h.echo_port, port)).id;
  for (auto& host : h.hosts) {
    api_answer r;
    const bool listed = eventually([&] {
      r = host->get(forward_path(id));
      return host_states(r.body) == states{{"a", "active"}, {"b", "active"}, {"c", "error"}};
    }, 30s);
    require_that(listed, "hosts on " + host->name() + ": " + r.text, h);
    CHECK(r.body["hosts"][2]["error"].is_string());
    CHECK(r.body["hosts"][0]["error"].is_null());
  }
  CHECK(h[0].echo(port, "on a") == "on a");
  CHECK(h[1].echo(port, "on b") == "on b");

  // Another forward of the set on the same address is refused, whichever host takes it.
  const auto clash = h[1].post("/api/v1/forwards", tcp_forward(h.echo_port, port));
  CHECK(clash.status == 409);
  CHECK(clash.error_code() == "address_in_use");
}

TEST_CASE("fleet: a host killed with -9 leaves the hosts lists when its lease ends, and comes back", "[e2e]") {
  one_member_fleet f;
  auto& h = f.hosts;
  const auto [id, port] = create_through(h, h[0], tcp_forward(h.echo_port));
  require_active_everywhere(h, h[0], id);

  h[1].kill();
  const auto left = time_until([&] {
    return host_states(h[0].get(forward_path(id)).body) == states{{"a", "active"}, {"c", "active"}} &&
           fleet_host_names(h[2].get("/api/v1/fleet")) == std::vector<std::string>{"a", "c"};
  }, 30s);
  require_that(left.has_value(), "b gone from the lists", h);
  WARN("b left the hosts lists " << left->count() << " ms after its kill -9 (lease TTL 10 s)");
  CHECK(h[0].echo(port, "a") == "a");
  CHECK(h[2].echo(port, "c") == "c");

  REQUIRE(h[1].start());
  require_active_everywhere(h, h[0], id);  // b back in the lists
  CHECK(h[1].echo(port, "b") == "b");
}

TEST_CASE("fleet: while etcd is down hosts relay and read their local copy and refuse writes - after it nothing bounced", "[e2e]") {
  one_member_fleet f;
  auto& h = f.hosts;
  const auto [id, port] = create_through(h, h[0], tcp_forward(h.echo_port));
  const int other = create_through(h, h[0], tcp_forward(h.echo_port)).id;
  require_active_everywhere(h, h[2], other);
  auto held = h[1].connect(port);
  REQUIRE(held);
  REQUIRE(send_all(held.get(), "before"));
  REQUIRE(recv_exact(held.get(), 6) == "before");

  f.etcd.stop();
  for (auto& host : h.hosts) {
    api_answer r;
    const bool local = eventually([&] {
      r = host->get("/api/v1/forwards");
      return r.status == 200 && revision_in(r, "local-copy") > 0;
    }, 30s);
    require_that(local, host->name() + " reads its local copy: " + r.header("Portrelay-Store") + " " + r.text, h);
    CHECK(r.body.size() == 2);
    CHECK(host->echo(port, "down") == "down");
    CHECK(host->get("/api/v1/fleet").body.value("reachable", true) == false);
  }
  const api_answer writes[] = {h[0].post("/api/v1/forwards", tcp_forward(h.echo_port)),
                               h[1].patch(forward_path(other), {{"name", "refused"}}), h[2].del(forward_path(other))};
  for (const auto& w : writes) {
    INFO(w.text);
    CHECK(w.status == 503);
    CHECK(w.error_code() == "store_unreachable");
  }

  f.etcd.start();
  REQUIRE(f.etcd.wait_ready());
  // A PATCH is the same whether it is taken once or again: repeated until etcd takes writes again.
  api_answer patched;
  require_that(eventually([&] {
    patched = h[1].patch(forward_path(other), {{"name", "after"}});
    return patched.status == 200;
  }, 30s), "writes again: " + patched.text, h);
  const auto new_port = create_through(h, h[2], tcp_forward(h.echo_port)).port;
  for (auto& host : h.hosts) {
    const bool back = eventually([&] {
      const auto r = host->get(forward_path(other));
      return revision_in(r, "etcd") > 0 && r.body.value("name", "") == "after" && host->echo(new_port, "x") == "x";
    }, 30s);
    require_that(back, host->name() + " back on etcd", h);
  }
  // The connection opened before the outage was never cut.
  CHECK(send_all(held.get(), "after"));
  CHECK(recv_exact(held.get(), 5) == "after");
  CHECK(h[1].get(forward_path(id)).body["stats"]["connections_active"] == 1);
}

TEST_CASE("fleet: a host restarted while etcd is down serves its local copy", "[e2e]") {
  one_member_fleet f;
  auto& h = f.hosts;
  const auto [id, port] = create_through(h, h[0], tcp_forward(h.echo_port));
  require_active_everywhere(h, h[0], id);

  f.etcd.stop();
  require_that(h[1].stop(), "b stopped cleanly", h);
  require_that(h[1].start(), "b started without etcd", h);
  const auto r = h[1].get("/api/v1/forwards");
  CHECK(r.status == 200);
  CHECK(revision_in(r, "local-copy") > 0);
  REQUIRE(r.body.size() == 1);
  CHECK(r.body[0]["listen_port"] == port);
  CHECK(h[1].echo(port, "local") == "local");
  CHECK(h[1].get("/api/v1/fleet").body.value("reachable", true) == false);

  f.etcd.start();
  REQUIRE(f.etcd.wait_ready());
  require_that(eventually([&] {
    const auto view = h[1].get(forward_path(id));
    return revision_in(view, "etcd") > 0 && host_states(view.body) == all_active;
  }, 30s), "b back on etcd", h);
}

TEST_CASE("fleet: killing the etcd leader during writes loses no acknowledged write", "[e2e]") {
  etcd_cluster cluster;
  fleet h(std::vector<std::string>(3, unix_endpoints(cluster)));

  // Creates through a and b until told to stop; every 201's id and name is kept.
  std::mutex mutex;
  std::map<int, std::string> acknowledged;
  std::map<int, int> answers;  // status -> how many
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (std::size_t w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      for (int n = 0; !stop; ++n) {
        const auto name = h[w].name() + "-" + std::to_string(n);
        const auto r = h[w].post("/api/v1/forwards", named(tcp_forward(h.echo_port), name));
        std::lock_guard lock(mutex);
        ++answers[r.status];
        if (r.status == 201) acknowledged[r.body["id"].get<int>()] = name;
      }
    });
  }
  const auto acked = [&] {
    std::lock_guard lock(mutex);
    return acknowledged.size();
  };
  const bool before = eventually([&] { return acked() >= 6; }, 60s);
  const auto leader = before ? cluster.leader() : 0;
  if (before) cluster.kill(leader);
  const auto at_kill = acked();
  const bool after = before && eventually([&] { return acked() >= at_kill + 6; }, 60s);
  stop = true;
  for (auto& t : writers) t.join();
  {
    std::lock_guard lock(mutex);
    std::string counts;
    for (const auto& [status, n] : answers) counts += " " + std::to_string(status) + ":" + std::to_string(n);
    WARN("member m" << leader << " (the leader) killed after " << at_kill << " acknowledged creates; "
                    << acknowledged.size() << " in all; answers" << counts);
  }
  require_that(before, "writes acknowledged before the kill", h);
  require_that(after, "writes acknowledged after the kill", h);

  for (auto& host : h.hosts) {
    std::string missing;
    const bool all_there = eventually([&] {
      const auto r = host->get("/api/v1/forwards");
      if (r.status != 200) return false;
      std::map<int, std::string> listed;
      for (const auto& fwd : r.body) listed[fwd["id"].get<int>()] = fwd.value("name", "");
      missing.clear();
      for (const auto& [id, name] : acknowledged) {
        if (!listed.count(id) || listed[id] != name) missing += " " + std::to_string(id) + "(" + name + ")";
      }
      return missing.empty();
    }, 30s);
    require_that(all_there, "acknowledged but not on " + host->name() + ":" + missing, h);
  }
}

TEST_CASE("fleet: a host cut off from etcd during changes and a compaction resyncs without bouncing the rest", "[e2e]") {
  etcd_node etcd;
  temp_dir dir;
  etcd_link link(dir.path / "c-etcd.sock", etcd.socket_path());
  fleet h({etcd.unix_endpoint(), etcd.unix_endpoint(), link.endpoint()});
  auto& c = h[2];

  // The first stays unchanged, the second is moved and the third deleted while c is cut off.
  std::vector<forward_ref> forwards;
  for (int i = 0; i < 3; ++i) forwards.push_back(create_through(h, h[0], tcp_forward(h.echo_port)));
  for (const auto& fwd : forwards) require_active_everywhere(h, c, fwd.id);
  auto held = c.connect(forwards[0].port);  // on the forward that stays unchanged
  REQUIRE(held);
  REQUIRE(send_all(held.get(), "before"));
  REQUIRE(recv_exact(held.get(), 6) == "before");

  link.cut();
  require_that(eventually([&] { return revision_in(c.get("/api/v1/forwards"), "local-copy") > 0; }, 30s),
               "c noticed the cut", h);
  const auto moved_to = port_free_everywhere(h);
  const auto patched = h[0].patch(forward_path(forwards[1].id), {{"listen_port", moved_to}});
  const auto deleted = h[1].del(forward_path(forwards[2].id));
  require_that(patched.status == 200 && deleted.status == 204, patched.text + deleted.text, h);
  const auto new_port = create_through(h, h[0], tcp_forward(h.echo_port)).port;
  const auto revision = etcd_revision(etcd);
  REQUIRE(revision > 0);
  const auto compacted = etcdctl(etcd.endpoint(), {"compact", std::to_string(revision)});
  INFO(compacted.output);
  REQUIRE(compacted.status == 0);
  CHECK(c.echo(moved_to, "x") == "<refused>");  // c has seen none of it yet

  link.restore();
  const bool resynced = eventually([&] {
    return revision_in(c.get("/api/v1/forwards"), "etcd") >= revision && c.echo(moved_to, "x") == "x" &&
           c.echo(forwards[1].port, "x") == "<refused>" && c.echo(forwards[2].port, "x") == "<refused>" &&
           c.echo(new_port, "x") == "x";
  }, 30s);
  require_that(resynced, "c resynced after the compaction", h);
  CHECK(send_all(held.get(), "after"));
  CHECK(recv_exact(held.get(), 5) == "after");
  const auto unchanged = c.get(forward_path(forwards[0].id));
  CHECK(unchanged.body["stats"]["connections_active"] == 1);
  CHECK(unchanged.body["stats"]["connections_total"] == 1);
}
