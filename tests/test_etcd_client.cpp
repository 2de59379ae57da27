// The etcd client against real etcd members (Debian's etcd-server): keys, transactions, leases,
// the watch stream, the unix socket, failover, a cluster losing its leader, and authentication.
#include "etcd_process.hpp"

#include "store/etcd_client.hpp"

#include <catch2/catch.hpp>

#include <condition_variable>
#include <functional>

using namespace test;
namespace etcd = store::etcd;

namespace {

etcd::options options_for(const std::string& endpoints, std::string user = {}, std::string password = {}) {
  std::string error;
  auto parsed = etcd::parse_endpoints(endpoints, error);
  if (!parsed) throw std::runtime_error(error);
  etcd::options o;
  o.endpoints = std::move(*parsed);
  o.user = std::move(user);
  o.password = std::move(password);
  return o;
}

// A watch() on a thread of its own, recording what it was given and how it ended.
class watcher {
 public:
  watcher(etcd::client& c, std::string key, std::string range_end, std::int64_t start_revision) : client_(c) {
    thread_ = std::thread([this, key, range_end, start_revision] {
      try {
        client_.watch(key, range_end, start_revision, [this](const std::vector<etcd::watch_event>& events, std::int64_t revision) {
          std::lock_guard lock(mutex_);
          for (const auto& e : events) events_.push_back(e);
          revisions_.push_back(revision);
        });
      } catch (...) {
        std::lock_guard lock(mutex_);
        failure_ = std::current_exception();
      }
      ended_ = true;
    });
  }
  ~watcher() {
    client_.stop_watch();
    thread_.join();
  }

  std::vector<etcd::watch_event> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }
  std::vector<std::int64_t> revisions() {
    std::lock_guard lock(mutex_);
    return revisions_;
  }
  bool ended() const { return ended_; }
  // Puts `value` at `key` (a key it watches) until the watch reports an event, which tells it is
  // established (a watch from now misses a put made before etcd created it); bounded.
  bool established(etcd::client& c, const std::string& key, const std::string& value) {
    return eventually([&] {
      c.put(key, value);
      return !events().empty() || ended();
    }, io_timeout);
  }
  // The exception watch() ended with, rethrown; nothing when it returned normally.
  void rethrow() {
    std::lock_guard lock(mutex_);
    if (failure_) std::rethrow_exception(failure_);
  }

 private:
  etcd::client& client_;
  std::mutex mutex_;
  std::vector<etcd::watch_event> events_;
  std::vector<std::int64_t> revisions_;
  std::exception_ptr failure_;
  std::atomic<bool> ended_{false};
  std::thread thread_;
};

// Puts until one succeeds (a cluster electing a leader answers "no leader" meanwhile), bounded.
bool put_eventually(etcd::client& c, const std::string& key, const std::string& value) {
  return eventually([&] {
    try {
      c.put(key, value);
      return true;
    } catch (const etcd::error&) {
      return false;
    }
  }, io_timeout);
}

// Runs `request`, which etcd must refuse: an etcd::error that is not an outage to wait out, with a
// message that says `says` when one is given. `taken` is the test's failure when it is taken.
void check_refused(const std::function<void()>& request, const char* taken, const std::string& says = {}) {
  try {
    request();
    FAIL(taken);
  } catch (const etcd::error& e) {
    CHECK_FALSE(e.unreachable());
    if (!says.empty()) CHECK(std::string(e.what()).find(says) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("parse_endpoints reads http, https, [IPv6] and unix endpoints and names the one that is wrong", "[store]") {
  std::string error;
  const auto list = etcd::parse_endpoints("http://127.0.0.1:2379, https://[::1]:2380,unix:///run/etcd/localhost:2379,https://etcd.example:443/", error);
  REQUIRE(list);
  REQUIRE(list->size() == 4);
  CHECK((*list)[0].scheme == etcd::endpoint::kind::http);
  CHECK((*list)[0].host == "127.0.0.1");
  CHECK((*list)[0].port == 2379);
  CHECK((*list)[1].scheme == etcd::endpoint::kind::https);
  CHECK((*list)[1].host == "::1");
  CHECK((*list)[1].port == 2380);
  CHECK((*list)[2].scheme == etcd::endpoint::kind::unix_socket);
  CHECK((*list)[2].socket_path == "/run/etcd/localhost:2379");
  CHECK((*list)[3].host == "etcd.example");
  CHECK((*list)[3].text == "https://etcd.example:443/");

  for (const std::string bad : {"", " ", "127.0.0.1:2379", "http://127.0.0.1", "http://127.0.0.1:0", "http://127.0.0.1:65536",
                                "http://:2379", "http://::1:2379", "http://[::1]2379", "unix://relative/path",
                                "ftp://host:21", "http://host:2379/v3", "http://a:1,,http://b:2"}) {
    INFO(bad);
    error.clear();
    CHECK_FALSE(etcd::parse_endpoints(bad, error));
    CHECK_FALSE(error.empty());
  }
  CHECK_FALSE(etcd::parse_endpoints("http://a:1,ftp://b:2", error));
  CHECK(error.find("ftp://b:2") != std::string::npos);
  CHECK_FALSE(etcd::parse_endpoints("unix://" + std::string(120, 'x'), error));
}

TEST_CASE("prefix_end is the smallest key after every key with the prefix", "[store]") {
  CHECK(etcd::prefix_end("/a/") == "/a0");
  CHECK(etcd::prefix_end("a\xff") == "b");
  CHECK(etcd::prefix_end("\xff\xff") == std::string(1, '\0'));
  CHECK(etcd::prefix_end("") == std::string(1, '\0'));
}

TEST_CASE("etcd keys: put, range of one key and of a prefix, at a past revision, delete, bytes stay bytes", "[store]") {
  etcd_node node;
  etcd::client c(options_for(node.endpoint()));

  const std::string binary("k\0\xff\x01=", 5), value("v\0\x80\xfe", 4);
  const auto r1 = c.put("/p/a", "1");
  const auto r2 = c.put("/p/b", "2");
  const auto r3 = c.put(binary, value);
  c.put("/q", "outside");
  CHECK(r1 > 0);
  CHECK(r2 == r1 + 1);
  CHECK(r3 == r2 + 1);

  const auto one = c.range("/p/a");
  REQUIRE(one.kvs.size() == 1);
  CHECK(one.kvs[0].key == "/p/a");
  CHECK(one.kvs[0].value == "1");
  CHECK(one.kvs[0].create_revision == r1);
  CHECK(one.kvs[0].mod_revision == r1);
  CHECK(one.kvs[0].version == 1);
  CHECK(one.kvs[0].lease == 0);
  CHECK(one.revision == r3 + 1);

  const auto bytes = c.range(binary);
  REQUIRE(bytes.kvs.size() == 1);
  CHECK(bytes.kvs[0].key == binary);
  CHECK(bytes.kvs[0].value == value);

  const auto prefix = c.range("/p/", etcd::prefix_end("/p/"));
  REQUIRE(prefix.kvs.size() == 2);
  CHECK(prefix.kvs[0].key == "/p/a");
  CHECK(prefix.kvs[1].key == "/p/b");
  CHECK(c.range("/nothing").kvs.empty());

  const auto r5 = c.put("/p/a", "changed");
  const auto now = c.range("/p/a");
  CHECK(now.kvs.at(0).version == 2);
  CHECK(now.kvs.at(0).create_revision == r1);
  CHECK(now.kvs.at(0).mod_revision == r5);
  const auto before = c.range("/p/a", {}, r2);
  CHECK(before.kvs.at(0).value == "1");

  CHECK(c.delete_range("/p/", etcd::prefix_end("/p/")) == 2);
  CHECK(c.range("/p/", etcd::prefix_end("/p/")).kvs.empty());
  CHECK(c.delete_range("/p/a") == 0);
  CHECK(c.range("/q").kvs.size() == 1);

  // A revision etcd has not reached is etcd's error, not a compaction and not unreachability.
  check_refused([&] { c.range("/q", {}, 1000000); }, "a future revision was read", "future revision");
}

TEST_CASE("etcd txn: compares on create_revision 0 (absent), mod_revision, value and a whole range, either branch runs", "[store]") {
  etcd_node node;
  etcd::client c(options_for(node.endpoint()));
  using cmp = etcd::compare;
  using op = etcd::operation;

  const cmp absent{"/t/a", cmp::target::create_revision, cmp::result::equal, 0, {}, {}};
  const auto created = c.txn({absent}, {op{op::kind::put, "/t/a", "first", 0, {}}}, {op{op::kind::range, "/t/a", {}, 0, {}}});
  CHECK(created.succeeded);
  CHECK(created.ranges.empty());
  const auto again = c.txn({absent}, {op{op::kind::put, "/t/a", "second", 0, {}}}, {op{op::kind::range, "/t/a", {}, 0, {}}});
  CHECK_FALSE(again.succeeded);
  REQUIRE(again.ranges.size() == 1);
  REQUIRE(again.ranges[0].kvs.size() == 1);
  CHECK(again.ranges[0].kvs[0].value == "first");
  CHECK(again.ranges[0].kvs[0].mod_revision == created.revision);

  // Compare-and-swap on mod_revision: the writer that read the current revision wins, a stale one loses.
  const cmp current{"/t/a", cmp::target::mod_revision, cmp::result::equal, created.revision, {}, {}};
  const auto swapped = c.txn({current}, {op{op::kind::put, "/t/a", "swapped", 0, {}}, op{op::kind::put, "/t/b", "b", 0, {}}});
  CHECK(swapped.succeeded);
  CHECK(swapped.revision == created.revision + 1);
  CHECK_FALSE(c.txn({current}, {op{op::kind::put, "/t/a", "stale", 0, {}}}).succeeded);
  CHECK(c.range("/t/a").kvs.at(0).value == "swapped");

  const cmp is_swapped{"/t/a", cmp::target::value, cmp::result::equal, 0, "swapped", {}};
  const cmp not_first{"/t/a", cmp::target::value, cmp::result::not_equal, 0, "first", {}};
  const auto by_value = c.txn({is_swapped, not_first}, {op{op::kind::delete_range, "/t/b", {}, 0, {}},
                                                         op{op::kind::range, "/t/", {}, 0, etcd::prefix_end("/t/")}});
  CHECK(by_value.succeeded);
  REQUIRE(by_value.ranges.size() == 1);
  REQUIRE(by_value.ranges[0].kvs.size() == 1);  // the delete ran before the range
  CHECK(by_value.ranges[0].kvs[0].key == "/t/a");

  // Over [key, range_end): every key in the range must hold; one newer key fails it.
  const auto before_any_change = by_value.revision + 1;
  const cmp range_unchanged{"/t/", cmp::target::mod_revision, cmp::result::less, before_any_change, {}, etcd::prefix_end("/t/")};
  CHECK(c.txn({range_unchanged}, {}).succeeded);
  c.put("/t/c", "newer");
  CHECK_FALSE(c.txn({range_unchanged}, {}).succeeded);
  const cmp few_versions{"/t/", cmp::target::version, cmp::result::greater, 0, {}, etcd::prefix_end("/t/")};
  CHECK(c.txn({few_versions}, {}).succeeded);
}

TEST_CASE("etcd leases: keepalive renews, an unrenewed lease expires with its key, revoke deletes at once", "[store]") {
  etcd_node node;
  etcd::client c(options_for(node.endpoint()));

  // 5 s: the put and the read between the grant and the keepalive take milliseconds, and have
  // that long even on a loaded sanitizer build; the wait for the expiry allows 30 s.
  const auto short_lease = c.lease_grant(5);
  CHECK(short_lease != 0);
  c.put("/lease/short", "x", short_lease);
  CHECK(c.range("/lease/short").kvs.at(0).lease == short_lease);
  CHECK(c.lease_keepalive(short_lease) == 5);
  CHECK(eventually([&] { return c.range("/lease/short").kvs.empty(); }, io_timeout));
  CHECK(c.lease_keepalive(short_lease) == 0);

  const auto long_lease = c.lease_grant(60);
  c.put("/lease/long", "y", long_lease);
  CHECK(c.lease_keepalive(long_lease) == 60);
  c.lease_revoke(long_lease);
  CHECK(c.range("/lease/long").kvs.empty());
  CHECK(c.lease_keepalive(long_lease) == 0);
  c.lease_revoke(long_lease);  // already gone: no error
  check_refused([&] { c.put("/lease/gone", "z", long_lease); }, "a put under a revoked lease was taken", "lease not found");
}

TEST_CASE("etcd watch: every change from a past revision on, in order, with its revision, stop_watch ends it promptly", "[store]") {
  etcd_node node;
  etcd::client c(options_for(node.endpoint()));

  const auto first = c.put("/w/a", "1");
  c.put("/outside", "x");
  c.put("/w/b", "2");
  watcher w(c, "/w/", etcd::prefix_end("/w/"), first);
  c.delete_range("/w/a");
  const auto last = c.put("/w/b", "3");
  REQUIRE(eventually([&] { return w.events().size() == 4 || w.ended(); }, io_timeout));
  const auto events = w.events();
  REQUIRE(events.size() == 4);
  CHECK(events[0].type == etcd::watch_event::kind::put);
  CHECK(events[0].kv.key == "/w/a");
  CHECK(events[0].kv.value == "1");
  CHECK(events[0].kv.mod_revision == first);
  CHECK(events[1].kv.key == "/w/b");
  CHECK(events[1].kv.mod_revision == first + 2);
  CHECK(events[2].type == etcd::watch_event::kind::delete_);
  CHECK(events[2].kv.key == "/w/a");
  CHECK(events[2].kv.mod_revision == first + 3);
  CHECK(events[3].kv.value == "3");
  CHECK(events[3].kv.version == 2);
  CHECK(events[3].kv.mod_revision == last);
  const auto revisions = w.revisions();
  CHECK(std::is_sorted(revisions.begin(), revisions.end()));
  CHECK(revisions.back() == last);

  const auto asked = std::chrono::steady_clock::now();
  c.stop_watch();
  REQUIRE(eventually([&] { return w.ended(); }, io_timeout));
  CHECK(std::chrono::steady_clock::now() - asked < 1s);
  w.rethrow();  // returned normally

  // Stopped stays stopped until reset: the next watch returns at once.
  const auto start = std::chrono::steady_clock::now();
  c.watch("/w/", etcd::prefix_end("/w/"), 0, [](const auto&, std::int64_t) {});
  CHECK(std::chrono::steady_clock::now() - start < 1s);
  c.reset_watch();

  // A watch stopped from inside its own callback returns too.
  int calls = 0;
  c.watch("/w/", etcd::prefix_end("/w/"), first, [&](const auto&, std::int64_t) {
    ++calls;
    c.stop_watch();
  });
  CHECK(calls == 1);
}

TEST_CASE("etcd watch and range at a compacted revision throw compacted with the compaction's revision", "[store]") {
  etcd_node node;
  etcd::client c(options_for(node.endpoint()));
  const auto first = c.put("/k", "1");
  c.put("/k", "2");
  const auto third = c.put("/k", "3");
  const auto compact = etcdctl(node.endpoint(), {"compact", std::to_string(third)});
  REQUIRE(compact.status == 0);

  try {
    c.watch("/k", {}, first, [](const auto&, std::int64_t) {});
    FAIL("the watch returned");
  } catch (const etcd::compacted& e) {
    CHECK(e.compact_revision() == third);
  }
  try {
    c.range("/k", {}, first);
    FAIL("a compacted revision was read");
  } catch (const etcd::compacted& e) {
    CHECK(e.compact_revision() == third);
  }
  CHECK(c.range("/k", {}, third).kvs.at(0).value == "3");
}

TEST_CASE("etcd watch: etcd killed under a running watch ends it with an unreachable error", "[store]") {
  etcd_node node;
  etcd::client c(options_for(node.endpoint()));
  watcher w(c, "/k", {}, 0);
  REQUIRE(w.established(c, "/k", "v"));
  REQUIRE_FALSE(w.ended());
  node.kill();
  REQUIRE(eventually([&] { return w.ended(); }, io_timeout));
  try {
    w.rethrow();
    FAIL("the watch returned normally");
  } catch (const etcd::error& e) {
    CHECK(e.unreachable());
  }
  // A new watch finds nobody.
  try {
    c.watch("/k", {}, 0, [](const auto&, std::int64_t) {});
    FAIL("a watch ran without etcd");
  } catch (const etcd::error& e) {
    CHECK(e.unreachable());
  }
}

TEST_CASE("etcd over its unix socket: requests and a watch", "[store]") {
  etcd_node node;
  etcd::client c(options_for(node.unix_endpoint()));
  c.put("/u", "over the socket");
  CHECK(etcd::client(options_for(node.endpoint())).range("/u").kvs.at(0).value == "over the socket");
  watcher w(c, "/u", {}, 0);
  REQUIRE(w.established(c, "/u", "again"));
  CHECK(w.events().at(0).kv.value == "again");
  CHECK(c.current_endpoint() == node.unix_endpoint());
}

TEST_CASE("etcd failover: a dead first endpoint is passed over, and with none alive the error is unreachable", "[store]") {
  etcd_node node;
  const auto dead = "http://127.0.0.1:" + std::to_string(free_port());
  etcd::client c(options_for(dead + "," + node.endpoint()));
  c.put("/f", "1");
  CHECK(c.current_endpoint() == node.endpoint());
  CHECK(c.range("/f").kvs.at(0).value == "1");

  node.kill();
  etcd::options o = options_for(dead + "," + node.endpoint() + "," + node.unix_endpoint());
  etcd::client none(o);
  for (const auto& request : std::vector<std::function<void()>>{[&] { none.range("/f"); }, [&] { none.put("/f", "2"); },
                                                                [&] { none.lease_grant(5); }}) {
    try {
      request();
      FAIL("a request was answered with etcd down");
    } catch (const etcd::error& e) {
      CHECK(e.unreachable());
      CHECK(std::string(e.what()).find(node.endpoint()) != std::string::npos);
    }
  }
}

TEST_CASE("etcd cluster: with its leader killed, writes go on through the other members", "[store]") {
  etcd_cluster cluster;
  const auto leader = cluster.leader();
  // The leader first, so that the client is using it when it dies.
  std::string endpoints = cluster.member(leader).endpoint();
  for (std::size_t i = 0; i < etcd_cluster::size; ++i) {
    if (i != leader) endpoints += "," + cluster.member(i).endpoint();
  }
  etcd::client c(options_for(endpoints));
  c.put("/c", "before");
  CHECK(c.current_endpoint() == cluster.member(leader).endpoint());

  cluster.kill(leader);
  REQUIRE(put_eventually(c, "/c", "after"));
  CHECK(c.current_endpoint() != cluster.member(leader).endpoint());
  CHECK(cluster.leader() != leader);
  for (std::size_t i = 0; i < etcd_cluster::size; ++i) {
    if (i == leader) continue;
    etcd::client member(options_for(cluster.member(i).endpoint()));
    CHECK(member.range("/c").kvs.at(0).value == "after");
  }

  cluster.start(leader);
  etcd::client rejoined(options_for(cluster.member(leader).endpoint()));
  CHECK(eventually([&] {
    try {
      const auto kvs = rejoined.range("/c").kvs;
      return !kvs.empty() && kvs[0].value == "after";
    } catch (const etcd::error&) {
      return false;
    }
  }, io_timeout));
}

TEST_CASE("etcd auth: the user's token is fetched and fetched again when etcd forgot it, a wrong password is no outage", "[store]") {
  etcd_node node;
  REQUIRE(etcdctl(node.endpoint(), {"user", "add", "root:pw"}).status == 0);
  REQUIRE(etcdctl(node.endpoint(), {"auth", "enable"}).status == 0);

  etcd::client c(options_for(node.endpoint(), "root", "pw"));
  c.put("/a", "1");
  CHECK(c.range("/a").kvs.at(0).value == "1");

  // etcd keeps simple tokens in memory: after a restart the client's token is invalid.
  node.stop();
  node.start();
  REQUIRE(node.wait_ready());
  CHECK(c.range("/a").kvs.at(0).value == "1");
  node.stop();
  node.start();
  REQUIRE(node.wait_ready());
  watcher w(c, "/a", {}, 0);
  REQUIRE(w.established(c, "/a", "2"));
  CHECK_FALSE(w.ended());

  for (auto [user, password] : std::vector<std::pair<std::string, std::string>>{{"root", "wrong"}, {"nobody", "pw"}, {"", ""}}) {
    INFO(user << ":" << password);
    etcd::client refused(options_for(node.endpoint(), user, password));
    check_refused([&] { refused.range("/a"); }, "read without the right credentials");
  }
}

TEST_CASE("etcd over https: the server's certificate checked against the CA file, a client certificate when asked for", "[store]") {
  ::signal(SIGPIPE, SIG_IGN);  // as portrelay's main() does: see etcd::options' TLS files
  const etcd_certificates certs;
  etcd_node node(etcd_tls{certs.ca(), certs.cert(), certs.key(), true});
  REQUIRE(node.endpoint().starts_with("https://"));

  auto o = options_for(node.endpoint());
  o.ca_file = certs.ca().string();
  o.cert_file = certs.cert().string();
  o.key_file = certs.key().string();
  etcd::client c(o);
  c.put("/tls", "1");
  CHECK(c.range("/tls").kvs.at(0).value == "1");
  watcher w(c, "/tls", {}, 0);
  REQUIRE(w.established(c, "/tls", "2"));
  CHECK(w.events().at(0).kv.value == "2");

  // The system's CAs do not know this one: refused, and not an outage to wait out.
  auto untrusted = o;
  untrusted.ca_file.clear();
  check_refused([&] { etcd::client(untrusted).range("/tls"); }, "an untrusted certificate was accepted", "certificate");

  auto anonymous = o;
  anonymous.cert_file.clear();
  anonymous.key_file.clear();
  CHECK_THROWS_AS(etcd::client(anonymous).range("/tls"), etcd::error);

  // Files that cannot be read are a configuration error, not an outage.
  auto no_ca = o;
  no_ca.ca_file = (certs.dir.path / "missing.crt").string();
  auto no_key = o;
  no_key.key_file = (certs.dir.path / "missing.key").string();
  for (const auto& broken : {no_ca, no_key}) {
    check_refused([&] { etcd::client(broken).put("/tls", "3"); }, "a request went out without its TLS files");
  }
}
