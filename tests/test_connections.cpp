// The live connections API over real loopback connections: listing from every worker while data
// flows, paging, closing one, closing by client prefix, UDP sessions, and PROXY-carried clients.
#include "api_fixture.hpp"
#include "engine_helpers.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <regex>

using namespace test;
using nlohmann::json;

namespace {

constexpr const char* json_type = "application/json";

std::uint16_t local_port(int s) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&ss), &len);
  return ntohs(reinterpret_cast<sockaddr_in&>(ss).sin_port);
}

// A forward made over the API: its id and listen port.
struct made {
  std::int64_t id;
  std::uint16_t port;
};

made make_forward(api_fixture& fx, json body) {
  body.merge_patch(json{{"listen_host", "127.0.0.1"}, {"listen_port", 0}, {"target_host", "127.0.0.1"}});
  auto r = fx.client.Post("/api/v1/forwards", body.dump(), json_type);
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 201);
  const auto j = body_of(r);
  return {j["id"].get<std::int64_t>(), j["listen_port"].get<std::uint16_t>()};
}

std::string connections_path(std::int64_t id, const std::string& query = {}) {
  return "/api/v1/forwards/" + std::to_string(id) + "/connections" + (query.empty() ? "" : "?" + query);
}

json list(httplib::Client& c, std::int64_t id, const std::string& query = {}) {
  auto r = c.Get(connections_path(id, query).c_str());
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  return json::parse(r->body);
}

httplib::Result close_one(api_fixture& fx, std::int64_t id, std::uint64_t connection) {
  return fx.client.Delete(("/api/v1/forwards/" + std::to_string(id) + "/connections/" + std::to_string(connection)).c_str());
}

// DELETE ...?client=prefix: how many it closed.
std::uint64_t close_clients(api_fixture& fx, std::int64_t id, const std::string& prefix) {
  auto r = fx.client.Delete(connections_path(id, "client=" + prefix).c_str());
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  return body_of(r)["closed"].get<std::uint64_t>();
}

void check_invalid_query(const httplib::Result& r, const std::string& parameter) {
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == 400);
  const auto e = json::parse(r->body)["error"];
  CHECK(e["code"] == "invalid_query");
  CHECK(e["field"] == parameter);
  CHECK_FALSE(e["message"].get<std::string>().empty());
}

// The listed entry of the connection whose client port is `port` (null when none is).
json entry_for(const json& page, std::uint16_t port) {
  for (const auto& e : page["connections"]) {
    if (e["client"] == "127.0.0.1:" + std::to_string(port)) return e;
  }
  return nullptr;
}

// Waits until `n` connections are listed, all relaying: the relay has accepted and connected them.
json wait_relaying(api_fixture& fx, std::int64_t id, std::size_t n) {
  json page;
  const bool all = eventually([&] {
    page = list(fx.client, id);
    if (page["connections"].size() != n) return false;
    for (const auto& e : page["connections"]) {
      if (e["state"] != "relaying") return false;
    }
    return true;
  });
  INFO(page.dump());
  REQUIRE(all);
  return page;
}

// A full round trip through an echo target: the connection still carries.
bool echoes(int s) {
  return send_all(s, "ping") && recv_exact(s, 4) == "ping";
}

}  // namespace

TEST_CASE("connections are listed from every worker while 32 MiB pass intact", "[api][tcp]") {
  target_server target(target_server::echo);
  api_fixture fx;
  const auto fwd = make_forward(fx, {{"protocol", "tcp"}, {"target_port", target.port()}});
  constexpr std::size_t connections = 8;  // accepted by whichever worker wakes: both serve some
  constexpr std::size_t each = 4 << 20;   // 32 MiB in all, both ways
  std::vector<fd> clients;
  std::map<std::uint16_t, std::size_t> by_port;  // client port -> index
  for (std::size_t i = 0; i < connections; ++i) {
    clients.push_back(connect_to(fwd.port));
    REQUIRE(clients.back());
    by_port[local_port(clients.back().get())] = i;
  }
  wait_relaying(fx, fwd.id, connections);

  std::atomic<bool> go{false};
  std::atomic<std::size_t> finished{0};
  std::vector<std::uint64_t> sent(connections), echoed(connections);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < connections; ++i) {
    const int s = clients[i].get();
    threads.emplace_back([&, s, i] {
      const auto data = random_bytes(each, 1000 + i);
      sent[i] = digest(data);
      while (!go) std::this_thread::yield();
      send_all(s, data);
    });
    threads.emplace_back([&, s, i] {
      echoed[i] = digest(recv_exact(s, each));
      ++finished;
    });
  }

  // Listed over and over while the bytes move, each entry checked: the fields, and bytes that only grow.
  const std::regex rfc3339(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)");
  const auto listen = "127.0.0.1:" + std::to_string(fwd.port);
  const auto target_text = "127.0.0.1:" + std::to_string(target.port());
  std::map<std::uint64_t, std::uint64_t> up_seen;     // id -> bytes_up last listed
  std::map<std::uint64_t, std::uint64_t> up_first;    // id -> bytes_up first listed
  std::size_t listings = 0;
  std::string wrong;
  while ((finished < connections || listings < 300) && wrong.empty()) {
    const auto page = list(fx.client, fwd.id, "limit=1000");
    ++listings;
    go = true;  // after the first listing, so that one saw every connection before any byte
    if (page["connections"].size() != connections || !page["next"].is_null()) wrong = "listed: " + page.dump();
    for (const auto& e : page["connections"]) {
      const auto port = static_cast<std::uint16_t>(std::stoi(e["client"].get<std::string>().substr(10)));
      const auto id = e["id"].get<std::uint64_t>();
      const auto up = e["bytes_up"].get<std::uint64_t>();
      const bool right = e["protocol"] == "tcp" && e["client"].get<std::string>().rfind("127.0.0.1:", 0) == 0 &&
                         by_port.count(port) == 1 && e["listen"] == listen && e["target"] == target_text &&
                         e["state"] == "relaying" && std::regex_match(e["started_at"].get<std::string>(), rfc3339) &&
                         e["idle_s"].is_number() && e["idle_s"].get<double>() >= 0 && up <= each &&
                         e["bytes_down"].get<std::uint64_t>() <= up && up >= up_seen[id];
      if (!right) wrong = "entry: " + e.dump();
      up_seen[id] = up;
      up_first.try_emplace(id, up);
    }
  }
  for (auto& t : threads) t.join();
  INFO(wrong);
  CHECK(wrong.empty());
  CHECK(listings >= 300);
  CHECK(sent == echoed);  // listing took nothing from any transfer
  REQUIRE(up_first.size() == connections);
  for (const auto& [id, up] : up_first) CHECK(up == 0);  // first listed before any byte moved
  // Every byte counted on its connection, both ways.
  json last;
  CHECK(eventually([&] {
    last = list(fx.client, fwd.id);
    for (const auto& e : last["connections"]) {
      if (e["bytes_up"] != each || e["bytes_down"] != each) return false;
    }
    return last["connections"].size() == connections;
  }));
  INFO(last.dump());
}

TEST_CASE("connections are paged by an opaque cursor in ascending id order", "[api][tcp]") {
  target_server target(target_server::echo);
  api_fixture fx;
  const auto fwd = make_forward(fx, {{"protocol", "tcp"}, {"target_port", target.port()}});
  std::vector<fd> clients;
  for (int i = 0; i < 7; ++i) {
    clients.push_back(connect_to(fwd.port));
    REQUIRE(clients.back());
  }
  wait_relaying(fx, fwd.id, 7);

  std::vector<std::uint64_t> ids;
  std::vector<std::size_t> sizes;
  std::string query = "limit=3";
  for (int page = 0; page < 10; ++page) {
    const auto j = list(fx.client, fwd.id, query);
    sizes.push_back(j["connections"].size());
    for (const auto& e : j["connections"]) ids.push_back(e["id"].get<std::uint64_t>());
    if (j["next"].is_null()) break;
    REQUIRE(j["next"].is_string());
    query = "limit=3&after=" + j["next"].get<std::string>();
  }
  CHECK(sizes == std::vector<std::size_t>{3, 3, 1});
  REQUIRE(ids.size() == 7);
  CHECK(std::is_sorted(ids.begin(), ids.end()));
  CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());  // each once
  const auto whole = list(fx.client, fwd.id);  // the default limit takes them all
  CHECK(whole["connections"].size() == 7);
  CHECK(whole["next"].is_null());
  CHECK(list(fx.client, fwd.id, "after=" + std::to_string(ids.back())) == json{{"connections", json::array()}, {"next", nullptr}});

  for (const auto* bad : {"limit=0", "limit=1001", "limit=x", "limit=", "limit=-1", "limit=1&limit=2"}) {
    INFO(bad);
    check_invalid_query(fx.client.Get(connections_path(fwd.id, bad).c_str()), "limit");
  }
  for (const auto* bad : {"after=x", "after=", "after=-1", "after=1.5", "after=18446744073709551616"}) {
    INFO(bad);
    check_invalid_query(fx.client.Get(connections_path(fwd.id, bad).c_str()), "after");
  }
  CHECK(list(fx.client, fwd.id, "limit=1000")["connections"].size() == 7);

  // An unknown forward is a 404 on every route; a stored forward that does not serve has none.
  std::vector<httplib::Result> unknown;
  unknown.push_back(fx.client.Get(connections_path(999).c_str()));
  unknown.push_back(fx.client.Delete(connections_path(999, "client=0.0.0.0/0").c_str()));
  unknown.push_back(close_one(fx, 999, ids.front()));
  for (const auto& r : unknown) {
    REQUIRE(r);
    CHECK(r->status == 404);
    CHECK(json::parse(r->body)["error"]["code"] == "not_found");
  }
  const auto off = make_forward(fx, {{"protocol", "tcp"}, {"target_port", target.port()}, {"enabled", false}});
  CHECK(list(fx.client, off.id) == json{{"connections", json::array()}, {"next", nullptr}});
  auto put = fx.client.Put(connections_path(fwd.id).c_str(), "{}", json_type);
  REQUIRE(put);
  CHECK(put->status == 405);
  CHECK(put->get_header_value("Allow") == "GET, HEAD, DELETE");
}

TEST_CASE("closing one connection resets its client and its target while the others carry on", "[api][tcp]") {
  std::uint16_t target_port = 0;
  const auto target = listen_on(target_port);
  api_fixture fx;
  const auto fwd = make_forward(fx, {{"protocol", "tcp"}, {"target_port", target_port}});
  // Connected one at a time, so the target's i-th accepted socket is client i's.
  std::vector<fd> clients, targets;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(connect_to(fwd.port));
    REQUIRE(clients.back());
    targets.push_back(accept_within(target));
    REQUIRE(targets.back());
  }
  const auto page = wait_relaying(fx, fwd.id, 3);
  const auto doomed = entry_for(page, local_port(clients[1].get()));
  REQUIRE(doomed.is_object());
  const auto id = doomed["id"].get<std::uint64_t>();

  auto r = close_one(fx, fwd.id, id);
  REQUIRE(r);
  CHECK(r->status == 204);
  // Done before the answer: both sides see the reset at once.
  CHECK(read_to_end(clients[1].get()).error == ECONNRESET);
  CHECK(read_to_end(targets[1].get()).error == ECONNRESET);
  for (int i : {0, 2}) {
    INFO("connection " << i);
    CHECK(send_all(clients[i].get(), "up"));
    CHECK(recv_exact(targets[i].get(), 2) == "up");
    CHECK(send_all(targets[i].get(), "down"));
    CHECK(recv_exact(clients[i].get(), 4) == "down");
  }
  r = close_one(fx, fwd.id, id);
  REQUIRE(r);
  CHECK(r->status == 404);
  CHECK(json::parse(r->body)["error"]["code"] == "not_found");
  const auto left = list(fx.client, fwd.id);
  CHECK(left["connections"].size() == 2);
  CHECK(entry_for(left, local_port(clients[1].get())).is_null());
  auto get = fx.client.Get(("/api/v1/forwards/" + std::to_string(fwd.id) + "/connections/" + std::to_string(id)).c_str());
  REQUIRE(get);
  CHECK(get->status == 405);
  CHECK(get->get_header_value("Allow") == "DELETE");
}

TEST_CASE("closing by client prefix closes only the clients in it", "[api][tcp]") {
  target_server target(target_server::echo);
  api_fixture fx;
  const auto fwd = make_forward(fx, {{"protocol", "tcp"}, {"target_port", target.port()}});
  std::vector<fd> from2, others;
  for (int i = 0; i < 2; ++i) from2.push_back(connect_from(fwd.port, "127.0.0.2"));
  others.push_back(connect_from(fwd.port, "127.0.0.3"));
  others.push_back(connect_to(fwd.port));
  for (const auto& c : from2) REQUIRE(c);
  for (const auto& c : others) REQUIRE(c);
  const auto page = wait_relaying(fx, fwd.id, 4);
  std::multiset<std::string> addresses;
  for (const auto& e : page["connections"]) {
    const auto client = e["client"].get<std::string>();
    addresses.insert(client.substr(0, client.find(':')));
  }
  CHECK(addresses == std::multiset<std::string>{"127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.3"});

  for (const auto* bad : {"", "client=", "client=not-an-address", "client=127.0.0.2/8", "client=127.0.0.2/33",
                          "client=127.0.0.2&client=127.0.0.3",
                          // a second value smuggled after '=' or an encoded '&' is refused, not taken
                          "client=127.0.0.2/32=0.0.0.0/0", "client=127.0.0.2/32%26client=0.0.0.0/0"}) {
    INFO(bad);
    check_invalid_query(fx.client.Delete(connections_path(fwd.id, bad).c_str()), "client");
  }
  check_invalid_query(fx.client.Delete(connections_path(fwd.id, "client=127.0.0.2/32&limit=1").c_str()), "limit");
  check_invalid_query(fx.client.Get(connections_path(fwd.id, "limit=2&clinet=x").c_str()), "clinet");
  CHECK(list(fx.client, fwd.id)["connections"].size() == 4);  // a refused DELETE closed nothing

  CHECK(close_clients(fx, fwd.id, "127.0.0.2/32") == 2);
  for (const auto& c : from2) CHECK(read_to_end(c.get()).error == ECONNRESET);
  for (const auto& c : others) CHECK(echoes(c.get()));
  CHECK(close_clients(fx, fwd.id, "127.0.0.2/32") == 0);
  CHECK(close_clients(fx, fwd.id, "::/0") == 2);  // every IPv4 client too (as IPv4-mapped)
  for (const auto& c : others) CHECK(read_to_end(c.get()).error == ECONNRESET);
  CHECK(list(fx.client, fwd.id)["connections"].empty());
}

TEST_CASE("a /0 of either family closes every client - 0.0.0.0/0 closes an IPv6 client too", "[api][tcp]") {
  target_server target(target_server::echo);
  api_fixture fx;
  auto r = fx.client.Post("/api/v1/forwards",
                          json{{"protocol", "tcp"}, {"listen_host", "::"}, {"listen_port", 0}, {"target_host", "127.0.0.1"},
                               {"target_port", target.port()}}
                              .dump(),
                          json_type);
  REQUIRE(r);
  REQUIRE(r->status == 201);
  const auto id = body_of(r)["id"].get<std::int64_t>();
  const auto port = body_of(r)["listen_port"].get<std::uint16_t>();
  auto v6 = connect_to(port, "::1");  // a listener on :: takes IPv6 only (IPV6_V6ONLY)
  REQUIRE(v6);
  wait_relaying(fx, id, 1);
  CHECK(close_clients(fx, id, "10.0.0.0/8") == 0);
  CHECK(close_clients(fx, id, "0.0.0.0/0") == 1);
  CHECK(read_to_end(v6.get()).error == ECONNRESET);
  CHECK(list(fx.client, id)["connections"].empty());
}

TEST_CASE("UDP sessions are listed and dropped, and the next datagram makes a new one", "[api][udp]") {
  udp_echo_server target;
  api_fixture fx;
  const auto fwd = make_forward(fx, {{"protocol", "udp"}, {"target_port", target.port()}});
  auto c = udp_client(fwd.port);
  ::send(c.get(), "hello", 5, 0);
  REQUIRE(recv_datagram(c.get()) == "hello");
  json page;
  CHECK(eventually([&] {  // the reply's bytes are counted just after it is sent
    page = list(fx.client, fwd.id);
    return page["connections"].size() == 1 && page["connections"][0]["bytes_down"] == 5;
  }));
  INFO(page.dump());
  const auto e = page["connections"][0];
  CHECK(e["protocol"] == "udp");
  CHECK(e["state"] == "active");
  CHECK(e["client"] == "127.0.0.1:" + std::to_string(local_port(c.get())));
  CHECK(e["listen"] == "127.0.0.1:" + std::to_string(fwd.port));
  CHECK(e["target"] == "127.0.0.1:" + std::to_string(target.port()));
  CHECK(e["bytes_up"] == 5);
  const auto first = e["id"].get<std::uint64_t>();

  auto r = close_one(fx, fwd.id, first);
  REQUIRE(r);
  CHECK(r->status == 204);
  CHECK(list(fx.client, fwd.id)["connections"].empty());
  CHECK(close_one(fx, fwd.id, first)->status == 404);

  ::send(c.get(), "again", 5, 0);
  REQUIRE(recv_datagram(c.get()) == "again");
  CHECK(target.distinct_peers() == 2);  // a new session, with a socket of its own towards the target
  page = list(fx.client, fwd.id);
  REQUIRE(page["connections"].size() == 1);
  CHECK(page["connections"][0]["id"].get<std::uint64_t>() > first);
  CHECK(page["connections"][0]["bytes_up"] == 5);
  CHECK(close_clients(fx, fwd.id, "0.0.0.0/0") == 1);
  CHECK(list(fx.client, fwd.id)["connections"].empty());
}

TEST_CASE("a PROXY-carried client is the one listed and closed", "[api][tcp]") {
  target_server target(target_server::echo);
  api_fixture fx;
  const auto fwd = make_forward(fx, {{"protocol", "tcp"}, {"target_port", target.port()}, {"accept_proxy_protocol", true}});
  auto c = connect_to(fwd.port);
  REQUIRE(c);
  // Before its header the connection is its socket's, connecting, with no target yet.
  const auto socket_client = "127.0.0.1:" + std::to_string(local_port(c.get()));
  json page;
  CHECK(eventually([&] {
    page = list(fx.client, fwd.id);
    return page["connections"].size() == 1;
  }));
  INFO(page.dump());
  CHECK(page["connections"][0]["client"] == socket_client);
  CHECK(page["connections"][0]["state"] == "connecting");
  CHECK(page["connections"][0]["target"].is_null());

  REQUIRE(send_all(c.get(), "PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\nhi"));
  REQUIRE(recv_exact(c.get(), 2) == "hi");
  page = wait_relaying(fx, fwd.id, 1);
  const auto e = page["connections"][0];
  CHECK(e["client"] == "192.0.2.7:5555");
  CHECK(e["listen"] == "127.0.0.1:" + std::to_string(fwd.port));  // where it came in, not what the header says
  CHECK(e["target"] == "127.0.0.1:" + std::to_string(target.port()));
  CHECK(close_clients(fx, fwd.id, "127.0.0.1/32") == 0);
  CHECK(close_clients(fx, fwd.id, "192.0.2.0/24") == 1);
  CHECK(read_to_end(c.get()).error == ECONNRESET);
}

TEST_CASE("a worker's part is selected by id, not taken in the order of its list", "[engine]") {
  // A worker's list is in the order connections were added to it, which ids need not follow.
  const std::vector<std::uint64_t> listed{9, 3, 0, 7, 1, 5, 11, 2};  // 0: closed, never listed
  auto ids_of = [](const relay::connection_page& p) {
    std::vector<std::uint64_t> out;
    for (const auto& c : p.items) out.push_back(c.id);
    return out;
  };
  auto info = [](std::uint64_t id) {
    relay::connection_info c;
    c.id = id;
    return c;
  };
  auto part = [&](std::uint64_t after, std::size_t limit) {
    return relay::select_page(listed.begin(), listed.end(), after, limit, [](std::uint64_t id) { return id; },
                              info);
  };
  const auto first = part(2, 3);
  CHECK(ids_of(first) == std::vector<std::uint64_t>{3, 5, 7});
  CHECK(first.more);
  const auto rest = part(7, 3);
  CHECK(ids_of(rest) == std::vector<std::uint64_t>{9, 11});
  CHECK_FALSE(rest.more);

  // Two workers' parts: merged in id order, cut to the limit, `more` when anything was left out.
  relay::connection_page other;
  for (const std::uint64_t id : {4, 6}) other.items.push_back(info(id));
  const auto merged = relay::merge_pages({first, other}, 3);
  CHECK(ids_of(merged) == std::vector<std::uint64_t>{3, 4, 5});
  CHECK(merged.more);
  const auto whole = relay::merge_pages({rest, other}, 5);
  CHECK(ids_of(whole) == std::vector<std::uint64_t>{4, 6, 9, 11});
  CHECK_FALSE(whole.more);
}
