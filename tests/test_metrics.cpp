// /metrics over HTTP: checked by the Prometheus client library's parser, then read back as numbers that
// must move with real traffic through real forwards.
#include "api/metrics.hpp"
#include "api_fixture.hpp"
#include "descriptor_limit.hpp"
#include "metrics_support.hpp"

#include <catch2/catch.hpp>

#include <regex>

using namespace test;
using nlohmann::json;

namespace {

json create(httplib::Client& c, json body) {
  auto r = c.Post("/api/v1/forwards", body.dump(), "application/json");
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 201);
  return json::parse(r->body);
}

}  // namespace

TEST_CASE("the Prometheus parser accepts the /metrics scrape, and the numbers move with traffic", "[api]") {
  target_server tcp_target(target_server::echo);
  udp_echo_server udp_target;
  api_fixture f;
  // A hostile name: quotes, a backslash and non-ASCII must come out escaped and still parse.
  auto tcp = create(f.client, {{"name", "we\"b \\ café"}, {"protocol", "tcp"}, {"listen_host", "127.0.0.1"},
                               {"listen_port", 0}, {"target_host", "127.0.0.1"}, {"target_port", tcp_target.port()}});
  auto udp = create(f.client, {{"name", "dns"}, {"protocol", "udp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                               {"target_host", "127.0.0.1"}, {"target_port", udp_target.port()}});
  create(f.client, {{"name", "off"}, {"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                    {"target_host", "127.0.0.1"}, {"target_port", 9}, {"enabled", false}});

  auto scrape = [&] {
    auto r = f.client.Get("/metrics");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    CHECK(r->get_header_value("Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
    return r->body;
  };
  const auto before = scrape();
  auto check = metrics_check(before, f.dir);
  INFO(before);
  INFO(check.output);
  REQUIRE(check.status == 0);
  CHECK(check.output.empty());  // no lint findings either

  // Every family has HELP and TYPE, counters end in _total.
  std::regex type_line(R"(# TYPE (\S+) (counter|gauge))");
  std::set<std::string> families;
  for (std::sregex_iterator it(before.begin(), before.end(), type_line), end; it != end; ++it) {
    const std::string name = (*it)[1];
    families.insert(name);
    CHECK(before.find("# HELP " + name + " ") != std::string::npos);
    if ((*it)[2] == "counter") CHECK(name.size() > 6);
    if ((*it)[2] == "counter") CHECK(name.substr(name.size() - 6) == "_total");
  }
  for (const char* name : {"portrelay_build_info", "portrelay_workers", "portrelay_forwards",
                           "portrelay_forward_state", "portrelay_forward_connections_active",
                           "portrelay_forward_connections_total", "portrelay_forward_sessions_active",
                           "portrelay_forward_bytes_total", "portrelay_forward_datagrams_total",
                           "portrelay_forward_dropped_datagrams_total", "portrelay_forward_connect_errors_total",
                           "portrelay_forward_target_unreachable_total", "process_open_fds", "process_resident_memory_bytes"}) {
    CHECK(families.count(name) == 1);
  }

  auto m = samples(before);
  const std::string t = R"({id="1",name="we\"b \\ café",protocol="tcp"})";
  const std::string u = R"({id="2",name="dns",protocol="udp"})";
  CHECK(m.at(std::string("portrelay_build_info{version=\"") + PORTRELAY_VERSION + "\"}") == 1);
  CHECK(m.at("portrelay_workers") == 2);
  CHECK(m.at(R"(portrelay_forwards{state="active"})") == 2);
  CHECK(m.at(R"(portrelay_forwards{state="disabled"})") == 1);
  CHECK(m.at(R"(portrelay_forwards{state="error"})") == 0);
  CHECK(m.at(R"(portrelay_forward_state{id="3",name="off",protocol="tcp",state="disabled"})") == 1);
  CHECK(m.at(R"(portrelay_forward_state{id="3",name="off",protocol="tcp",state="active"})") == 0);
  CHECK(m.at("portrelay_forward_bytes_total" + t.substr(0, t.size() - 1) + R"(,direction="up"})") == 0);
  CHECK(m.at("process_open_fds") > 5);
  CHECK(m.at("process_resident_memory_bytes") > 1e6);

  // Traffic: 1000 bytes each way over TCP, 3 datagrams of 4 bytes over UDP, a refused connection.
  const std::string payload(1000, 'x');
  CHECK(echo_once(tcp["listen_port"].get<std::uint16_t>(), payload) == payload);
  auto c = udp_client(udp["listen_port"].get<std::uint16_t>());
  for (int i = 0; i < 3; ++i) {
    send_all(c.get(), std::string("ping"));
    REQUIRE(recv_datagram(c.get()) == "ping");
  }
  auto refused_target = create(f.client, {{"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                                          {"target_host", "127.0.0.1"}, {"target_port", free_port()}});
  CHECK(echo_once(refused_target["listen_port"].get<std::uint16_t>(), "x").empty());

  auto with = [](const std::string& labels, const std::string& extra) {
    return labels.substr(0, labels.size() - 1) + "," + extra + "}";
  };
  std::string after;
  const bool moved = eventually([&] {
    after = scrape();
    m = samples(after);
    return m.at("portrelay_forward_bytes_total" + with(t, R"(direction="up")")) == 1000 &&
           m.at("portrelay_forward_bytes_total" + with(t, R"(direction="down")")) == 1000 &&
           m.at("portrelay_forward_connections_total" + t) == 1 &&
           m.at("portrelay_forward_connections_active" + t) == 0 &&
           m.at("portrelay_forward_datagrams_total" + with(u, R"(direction="up")")) == 3 &&
           m.at("portrelay_forward_datagrams_total" + with(u, R"(direction="down")")) == 3 &&
           m.at("portrelay_forward_bytes_total" + with(u, R"(direction="up")")) == 12 &&
           m.at("portrelay_forward_sessions_active" + u) == 1 &&
           m.at("portrelay_forward_sessions_total" + u) == 1 &&
           m.at("portrelay_forward_target_unreachable_total" + u) == 0 &&
           m.at(R"(portrelay_forward_connect_errors_total{id="4",name="",protocol="tcp"})") == 1;
  });
  INFO(after);
  CHECK(moved);
  CHECK(metrics_check(after, f.dir).status == 0);
  // Per-protocol families: no session counters for TCP, no connection counters for UDP.
  CHECK(after.find(R"(portrelay_forward_sessions_active{id="1")") == std::string::npos);
  CHECK(after.find(R"(portrelay_forward_connections_active{id="2")") == std::string::npos);
  CHECK(after.find(R"(portrelay_forward_target_unreachable_total{id="1")") == std::string::npos);
}

TEST_CASE("/metrics has a series per target of each running forward - labelled id name and target", "[api]") {
  target_server live(target_server::echo);
  api_fixture f;
  const auto dead = free_port();
  auto pool = create(f.client, {{"name", "po\"ol"}, {"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                                {"targets", json::array({json{{"host", "127.0.0.1"}, {"port", live.port()}},
                                                         json{{"host", "::1"}, {"port", dead}, {"backup", true}}})}});
  create(f.client, {{"name", "off"}, {"protocol", "udp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                    {"target_host", "127.0.0.1"}, {"target_port", 9}, {"enabled", false}});
  auto r = f.client.Get("/metrics");
  REQUIRE(r);
  REQUIRE(r->status == 200);
  const auto text = r->body;
  INFO(text);
  const auto check = metrics_check(text, f.dir);
  INFO(check.output);
  CHECK(check.status == 0);
  CHECK(check.output.empty());
  for (const char* family : {"portrelay_target_up", "portrelay_target_connections_active",
                             "portrelay_target_connections_total", "portrelay_target_bytes_total",
                             "portrelay_target_connect_errors_total"}) {
    INFO(family);
    CHECK(text.find(std::string("# HELP ") + family + " ") != std::string::npos);
    CHECK(text.find(std::string("# TYPE ") + family + " ") != std::string::npos);
  }
  CHECK(text.find("# TYPE portrelay_target_up gauge") != std::string::npos);
  CHECK(text.find("# TYPE portrelay_target_bytes_total counter") != std::string::npos);
  const auto m = samples(text);
  const std::string a = R"({id="1",name="po\"ol",target="127.0.0.1:)" + std::to_string(live.port()) + '"';
  const std::string b = R"({id="1",name="po\"ol",target="[::1]:)" + std::to_string(dead) + '"';
  // Nothing has tried either target yet: unchecked, which counts as up.
  CHECK(m.at("portrelay_target_up" + a + "}") == 1);
  CHECK(m.at("portrelay_target_up" + b + "}") == 1);
  CHECK(m.at("portrelay_target_connections_active" + b + "}") == 0);
  CHECK(m.at("portrelay_target_connections_total" + a + "}") == 0);
  CHECK(m.at("portrelay_target_bytes_total" + a + R"(,direction="up"})") == 0);
  CHECK(m.at("portrelay_target_bytes_total" + b + R"(,direction="down"})") == 0);
  CHECK(m.at("portrelay_target_connect_errors_total" + b + "}") == 0);
  // The disabled forward has no live targets, so no series.
  CHECK(text.find(R"(portrelay_target_up{id="2")") == std::string::npos);
  CHECK(pool["stats"]["targets"].size() == 2);
}

TEST_CASE("the metrics format checker itself refuses what promtool refuses", "[api]") {
  temp_dir dir;
  const std::string good = "# HELP a_total A \\\\ b\\n c.\n# TYPE a_total counter\n"
                           "a_total{id=\"1\",name=\"we\\\"b \\\\ x\\n\"} 3\n# HELP g G.\n# TYPE g gauge\ng 1\n";
  REQUIRE(metrics_check(good, dir).status == 0);
  const std::vector<std::pair<std::string, std::string>> bad{
      {"a label value escape the format does not define", std::string(good).replace(good.find("x\\n"), 1, "\\q")},
      {"a second TYPE line", good + "# TYPE g gauge\n"},
      {"a family without HELP", "# TYPE g gauge\ng 1\n"},
      {"a counter without _total", "# HELP c C.\n# TYPE c counter\nc 1\n"},
      {"a series twice", good + "g 2\n"},
      {"a line that is not a sample", good + "g one\n"},
  };
  for (const auto& [what, text] : bad) {
    INFO(what << ":\n" << text);
    CHECK(metrics_check(text, dir).status == 1);
  }
}

TEST_CASE("/metrics follows the token rule of /api/, and only GET and HEAD are allowed", "[api]") {
  SECTION("with a token") {
    api_fixture f("s3cret-token");
    auto r = f.client.Get("/metrics");
    REQUIRE(r);
    CHECK(r->status == 401);
    CHECK(r->get_header_value("WWW-Authenticate").find("Bearer") == 0);
    CHECK(body_of(r)["error"]["code"] == "unauthorized");
    auto wrong = f.client.Get("/metrics", {{"Authorization", "Bearer nope"}});
    CHECK(wrong->status == 401);
    auto ok = f.client.Get("/metrics", {{"Authorization", "Bearer s3cret-token"}});
    REQUIRE(ok);
    CHECK(ok->status == 200);
    CHECK(ok->body.find("portrelay_build_info") != std::string::npos);
  }
  SECTION("without a token, a foreign Host is refused as everywhere") {
    api_fixture f;
    auto r = f.client.Get("/metrics", {{"Host", "evil.example:80"}});
    REQUIRE(r);
    CHECK(r->status == 403);
    CHECK(f.client.Head("/metrics")->status == 200);
    auto post = f.client.Post("/metrics", "{}", "application/json");
    REQUIRE(post);
    CHECK(post->status == 405);
    CHECK(post->get_header_value("Allow") == "GET, HEAD");
  }
}

TEST_CASE("metric label values are escaped as the format requires", "[api]") {
  CHECK(api::escape_label_value("plain") == "plain");
  CHECK(api::escape_label_value("a\"b") == "a\\\"b");
  CHECK(api::escape_label_value("a\\b") == "a\\\\b");
  CHECK(api::escape_label_value("a\nb") == "a\\nb");
}

// ---- process figures at the descriptor limit (issue 12, part 5) ----

TEST_CASE("at the descriptor limit the process figures in /metrics are exact, never 0", "[api]") {
  relay::engine engine(test_engine_options());
  temp_dir dir;  // for the format check, made before the descriptors run out
  std::string text;
  std::uint64_t limit = 0;
  {
    descriptors_exhausted full;
    REQUIRE(full.refused_with() == EMFILE);
    limit = full.limit();
    auto scraped = api::render_metrics(engine);
    INFO((scraped ? std::string() : scraped.error().message));
    REQUIRE(scraped);  // each figure is read without a new descriptor, so none is missing
    text = scraped.value();
  }
  INFO(text);
  auto m = samples(text);
  CHECK(m.at("process_open_fds") == static_cast<double>(limit));  // every descriptor below the limit
  CHECK(m.at("process_max_fds") == static_cast<double>(limit));
  CHECK(m.at("process_resident_memory_bytes") > 1e6);
  CHECK(m.at("process_virtual_memory_bytes") > 1e6);
  CHECK(metrics_check(text, dir).status == 0);

  // And off the limit the count is the real one, the reading's own directory included.
  auto again = api::render_metrics(engine);
  REQUIRE(again);
  CHECK(samples(again.value()).at("process_open_fds") == static_cast<double>(open_fds() - 1));
}

TEST_CASE("/metrics counts the API's own connections: open, accepted, and requests refused at a limit", "[api]") {
  api_fixture f;
  auto sample = [&](const std::string& name) {
    auto r = f.client.Get("/metrics");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    CHECK(metrics_check(r->body, f.dir).status == 0);
    return samples(r->body).at(name);
  };
  CHECK(sample("portrelay_api_requests_refused_total") == 0);
  std::vector<fd> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(connect_to(f.port));
  CHECK(eventually([&] { return sample("portrelay_api_connections") == 4; }));  // the three and the scrape's
  CHECK(sample("portrelay_api_connections_total") >= 4);

  auto flood = connect_to(f.port);
  REQUIRE(send_all(flood.get(), "GET / HTTP/1.1\r\nX-Pad: " + std::string(70 * 1024, 'p')));
  CHECK(recv_http_answer(flood.get()).rfind("HTTP/1.1 431 ", 0) == 0);
  CHECK(sample("portrelay_api_requests_refused_total") == 1);
  CHECK(sample("portrelay_api_connections_evicted_total") == 0);
  CHECK(sample("portrelay_api_timeouts_total") == 0);
  CHECK(sample("portrelay_api_accept_errors_total") == 0);
  CHECK(sample("portrelay_api_connections_turned_away_total") == 0);
}

TEST_CASE("refused connections and datagrams show in GET stats and in /metrics by reason", "[api]") {
  target_server tcp_target(target_server::echo);
  udp_echo_server udp_target;
  api_fixture f;
  const auto tcp = create(f.client, {{"name", "t"}, {"protocol", "tcp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                                     {"target_host", "127.0.0.1"}, {"target_port", tcp_target.port()},
                                     {"deny", {"127.0.0.3"}}, {"max_connections", 1}});
  const auto udp = create(f.client, {{"name", "u"}, {"protocol", "udp"}, {"listen_host", "127.0.0.1"}, {"listen_port", 0},
                                     {"target_host", "127.0.0.1"}, {"target_port", udp_target.port()},
                                     {"allow", {"127.0.0.2"}}});
  const auto tcp_port = tcp["listen_port"].get<std::uint16_t>();
  auto held = connect_from(tcp_port, "127.0.0.2");  // the one connection max_connections lets in
  REQUIRE(send_all(held.get(), std::string("x")));
  REQUIRE(recv_exact(held.get(), 1) == "x");
  auto denied = connect_from(tcp_port, "127.0.0.3");
  CHECK(closed_by_peer(denied.get()));
  auto over = connect_from(tcp_port, "127.0.0.4");
  CHECK(closed_by_peer(over.get()));
  auto c = udp_client(udp["listen_port"].get<std::uint16_t>());  // from 127.0.0.1: not allowed
  for (int i = 0; i < 3; ++i) send_all(c.get(), std::string("ping"));

  auto stats = [&](const json& forward) {
    auto r = f.client.Get("/api/v1/forwards/" + std::to_string(forward["id"].get<std::int64_t>()));
    REQUIRE(r);
    return json::parse(r->body)["stats"];
  };
  REQUIRE(eventually([&] { return stats(udp)["refused_acl"] == 3; }));
  CHECK(stats(udp)["refused_limit"] == 0);
  CHECK(stats(udp)["connections_total"] == 0);
  CHECK(stats(tcp)["refused_acl"] == 1);
  CHECK(stats(tcp)["refused_limit"] == 1);
  CHECK(stats(tcp)["connections_active"] == 1);

  auto r = f.client.Get("/metrics");
  REQUIRE(r);
  INFO(r->body);
  const auto check = metrics_check(r->body, f.dir);
  INFO(check.output);
  CHECK(check.status == 0);
  CHECK(check.output.empty());
  const auto m = samples(r->body);
  CHECK(m.at(R"(portrelay_forward_refused_total{id="1",name="t",protocol="tcp",reason="acl"})") == 1);
  CHECK(m.at(R"(portrelay_forward_refused_total{id="1",name="t",protocol="tcp",reason="limit"})") == 1);
  CHECK(m.at(R"(portrelay_forward_refused_total{id="2",name="u",protocol="udp",reason="acl"})") == 3);
  CHECK(m.at(R"(portrelay_forward_refused_total{id="2",name="u",protocol="udp",reason="limit"})") == 0);
}
