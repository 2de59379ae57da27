// The HTTP API in-process: every route, every failure class, auth, Host checks and body limits.
#include "api_fixture.hpp"
#include "spec_helpers.hpp"

#include <catch2/catch.hpp>

#include <asio/ip/address.hpp>

#include <net/if.h>

#include <cstring>

using namespace test;
using nlohmann::json;

namespace {

std::string forward_body(std::uint16_t target_port, std::uint16_t listen_port = 0) {
  return json{{"protocol", "tcp"},
              {"listen_host", "127.0.0.1"},
              {"listen_port", listen_port},
              {"target_host", "127.0.0.1"},
              {"target_port", target_port}}
      .dump();
}

// Checks the status and that the body is {"error": {"code": code, "message": ...}}.
void check_error(const httplib::Result& r, int status, const std::string& code) {
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == status);
  CHECK(r->get_header_value("Content-Type") == "application/json");
  auto j = json::parse(r->body, nullptr, false);
  REQUIRE(j.is_object());
  CHECK(j["error"]["code"] == code);
  CHECK(j["error"]["message"].is_string());
  CHECK_FALSE(j["error"]["message"].get<std::string>().empty());
}

// A raw HTTP exchange, for what httplib::Client will not send (huge bodies sent slowly, odd Hosts).
std::string raw_request(std::uint16_t port, const std::string& head, const std::string& body = {},
                        std::size_t piece = 16 * 1024) {
  auto c = connect_to(port);
  REQUIRE(c);
  send_all(c.get(), head);
  for (std::size_t off = 0; off < body.size(); off += piece) {
    if (!send_all(c.get(), body.substr(off, piece))) break;
  }
  std::string reply;
  char buf[4096];
  // Read the status line and headers; a reset would end this with nothing.
  while (reply.find("\r\n\r\n") == std::string::npos) {
    auto r = ::recv(c.get(), buf, sizeof buf, 0);
    if (r <= 0) break;
    reply.append(buf, static_cast<std::size_t>(r));
  }
  return reply;
}

}  // namespace

TEST_CASE("healthz needs nothing", "[api]") {
  api_fixture f("tok");
  auto r = f.client.Get("/healthz");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(body_of(r) == json{{"status", "ok"}});
}

TEST_CASE("create, get, list, patch and delete", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  auto created = f.client.Post("/api/v1/forwards", forward_body(target.port()), "application/json");
  REQUIRE(created);
  REQUIRE(created->status == 201);
  auto fwd = body_of(created);
  CHECK(created->get_header_value("Location") == "/api/v1/forwards/" + std::to_string(fwd["id"].get<int>()));
  CHECK(fwd["state"] == "active");
  CHECK(fwd["listen_port"].get<int>() > 0);
  CHECK(fwd["error"].is_null());
  const auto path = created->get_header_value("Location");

  auto got = f.client.Get(path.c_str());
  REQUIRE(got);
  CHECK(got->status == 200);
  CHECK(body_of(got)["id"] == fwd["id"]);

  auto list = f.client.Get("/api/v1/forwards");
  REQUIRE(list);
  CHECK(body_of(list).size() == 1);

  auto patched = f.client.Patch(path.c_str(), R"({"name":"renamed","enabled":false})", "application/json");
  REQUIRE(patched);
  CHECK(patched->status == 200);
  CHECK(body_of(patched)["name"] == "renamed");
  CHECK(body_of(patched)["state"] == "disabled");
  CHECK(f.store.get(fwd["id"])->spec.name == "renamed");

  auto deleted = f.client.Delete(path.c_str());
  REQUIRE(deleted);
  CHECK(deleted->status == 204);
  CHECK(deleted->body.empty());
  check_error(f.client.Get(path.c_str()), 404, "not_found");
  CHECK(f.store.list().empty());
}

TEST_CASE("list is ordered by id", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  for (int i = 0; i < 3; ++i) f.client.Post("/api/v1/forwards", forward_body(target.port()), "application/json");
  auto list = body_of(f.client.Get("/api/v1/forwards"));
  REQUIRE(list.size() == 3);
  CHECK(list[0]["id"] == 1);
  CHECK(list[2]["id"] == 3);
}

TEST_CASE("malformed, non-object, unknown-field and out-of-range bodies are 400s that persist nothing", "[api]") {
  api_fixture f;
  const std::pair<std::string, std::string> cases[] = {
      {"{not json", "invalid_json"},
      {"", "invalid_json"},
      {"[1,2]", "invalid_body"},
      {R"({"protocol":"tcp","listen_port":"80","target_host":"a","target_port":1})", "invalid_field"},
      {R"({"protocol":"tcp","listen_port":80,"target_host":"a","target_port":1,"extra":1})", "unknown_field"},
      {R"({"protocol":"udp","listen_port":80,"target_host":"a","target_port":1,"udp_max_sessions":0})",
       "invalid_field"},
      {R"({"protocol":"tcp","listen_port":80,"target_host":"a"})", "missing_field"},
      {std::string(api::server::max_body + 1, '[') , "payload_too_large"},
  };
  for (const auto& [body, code] : cases) {
    INFO(body.substr(0, 80));
    check_error(f.client.Post("/api/v1/forwards", body, "application/json"), code == "payload_too_large" ? 413 : 400,
                code);
  }
  // Deep nesting within the size limit is just invalid input, not a crash.
  check_error(f.client.Post("/api/v1/forwards", std::string(60000, '['), "application/json"), 400, "invalid_json");
  check_error(f.client.Post("/api/v1/forwards", std::string(30000, '[') + std::string(30000, ']'), "application/json"),
              400, "invalid_body");
  CHECK(f.store.list().empty());
}

TEST_CASE("415 for a mutation that is not JSON - 405 and 404 for methods and paths", "[api]") {
  api_fixture f;
  check_error(f.client.Post("/api/v1/forwards", forward_body(80), "text/plain"), 415, "unsupported_media_type");
  check_error(f.client.Post("/api/v1/forwards", forward_body(80), "application/x-www-form-urlencoded"), 415,
              "unsupported_media_type");
  auto ok_with_charset = f.client.Post("/api/v1/forwards", forward_body(80), "application/json; charset=utf-8");
  REQUIRE(ok_with_charset);
  CHECK(ok_with_charset->status == 201);

  auto put = f.client.Put("/api/v1/forwards", "{}", "application/json");
  check_error(put, 405, "method_not_allowed");
  CHECK(put->get_header_value("Allow") == "GET, HEAD, POST");
  check_error(f.client.Delete("/api/v1/forwards"), 405, "method_not_allowed");
  check_error(f.client.Post("/api/v1/forwards/1", "{}", "application/json"), 405, "method_not_allowed");
  check_error(f.client.Options("/api/v1/forwards"), 405, "method_not_allowed");
  check_error(f.client.Post("/healthz", "{}", "application/json"), 405, "method_not_allowed");
  for (const char* path : {"/nope", "/api/v1/forwards/abc", "/api/v1/forwards/0", "/api/v1/forwards/-1",
                           "/api/v1/forwards/01", "/api/v1/forwards/99999999999999999999", "/api/v2/forwards",
                           "/api/v1/forwards/1/x"}) {
    INFO(path);
    check_error(f.client.Get(path), 404, "not_found");
  }
}

TEST_CASE("PATCH and DELETE of an unknown id are 404 whatever the body", "[api]") {
  api_fixture f;
  check_error(f.client.Patch("/api/v1/forwards/42", "{garbage", "text/plain"), 404, "not_found");
  check_error(f.client.Patch("/api/v1/forwards/42", R"({"listen_port":"x"})", "application/json"), 404, "not_found");
  check_error(f.client.Delete("/api/v1/forwards/42"), 404, "not_found");
}

TEST_CASE("PATCH validates like POST and changes nothing when refused", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  auto fwd = body_of(f.client.Post("/api/v1/forwards", forward_body(target.port()), "application/json"));
  const std::string path = "/api/v1/forwards/" + std::to_string(fwd["id"].get<int>());
  check_error(f.client.Patch(path.c_str(), R"({"target_port":0})", "application/json"), 400, "invalid_field");
  check_error(f.client.Patch(path.c_str(), R"({"id":5})", "application/json"), 400, "read_only_field");
  check_error(f.client.Patch(path.c_str(), R"({"target_port":81,"bogus":1})", "application/json"), 400,
              "unknown_field");
  check_error(f.client.Patch(path.c_str(), "{}", "text/plain"), 415, "unsupported_media_type");
  auto now = body_of(f.client.Get(path.c_str()));
  CHECK(now["target_port"] == fwd["target_port"]);
  CHECK(now["updated_at"] == fwd["updated_at"]);
}

TEST_CASE("a listen address in use is a 409 that persists nothing", "[api]") {
  target_server target(target_server::echo);
  api_fixture f;
  SECTION("taken by another process") {
    std::uint16_t taken = 0;
    auto other = listen_on(taken);
    auto r = f.client.Post("/api/v1/forwards", forward_body(target.port(), taken), "application/json");
    check_error(r, 409, "address_in_use");
    CHECK(body_of(r)["error"]["message"].get<std::string>().find(std::to_string(taken)) != std::string::npos);
  }
  SECTION("taken by another forward; a PATCH onto it is refused too") {
    auto first = body_of(f.client.Post("/api/v1/forwards", forward_body(target.port()), "application/json"));
    const int port = first["listen_port"];
    check_error(f.client.Post("/api/v1/forwards", forward_body(target.port(), port), "application/json"), 409,
                "address_in_use");
    auto second = body_of(f.client.Post("/api/v1/forwards", forward_body(target.port()), "application/json"));
    const std::string path = "/api/v1/forwards/" + std::to_string(second["id"].get<int>());
    check_error(f.client.Patch(path.c_str(), json{{"listen_port", port}}.dump(), "application/json"), 409,
                "address_in_use");
    CHECK(f.store.get(second["id"])->spec.listen_port == second["listen_port"]);
    CHECK(f.store.list().size() == 2);
    return;
  }
  CHECK(f.store.list().empty());
}

TEST_CASE("a listen address this host does not have is a 400", "[api]") {
  api_fixture f;
  auto body = json::parse(forward_body(80));
  body["listen_host"] = "192.0.2.1";  // TEST-NET-1: never local; bind fails before any packet
  check_error(f.client.Post("/api/v1/forwards", body.dump(), "application/json"), 400, "bind_failed");
  CHECK(f.store.list().empty());
}

TEST_CASE("zones are kept as typed through POST, PATCH and a restart - an unknown listen interface is a 400", "[api]") {
  const std::string lo = std::to_string(if_nametoindex("lo"));
  api_fixture f;
  auto body = json::parse(forward_body(80));
  body["enabled"] = false;  // nothing is bound, yet the interface is checked
  body["listen_host"] = "fe80::1%nosuchif0";
  auto r = f.client.Post("/api/v1/forwards", body.dump(), "application/json");
  check_error(r, 400, "invalid_field");
  CHECK(body_of(r)["error"]["field"] == "listen_host");
  CHECK(body_of(r)["error"]["message"] == "unknown network interface 'nosuchif0'");
  body["listen_host"] = "2001:db8::1%lo";
  check_error(f.client.Post("/api/v1/forwards", body.dump(), "application/json"), 400, "invalid_field");
  CHECK(f.store.list().empty());

  body["listen_host"] = "FE80::0001%lo";
  body["target_host"] = "fe80::2%nosuchif0";  // a target's interface may appear later
  r = f.client.Post("/api/v1/forwards", body.dump(), "application/json");
  REQUIRE(r);
  REQUIRE(r->status == 201);
  CHECK(body_of(r)["listen_host"] == "fe80::1%lo");
  CHECK(body_of(r)["target_host"] == "fe80::2%nosuchif0");
  const std::string path = "/api/v1/forwards/" + std::to_string(body_of(r)["id"].get<int>());

  r = f.client.Patch(path.c_str(), R"({"listen_host":"fe80::1%nosuchif1"})", "application/json");
  check_error(r, 400, "invalid_field");
  CHECK(body_of(r)["error"]["message"] == "unknown network interface 'nosuchif1'");
  CHECK(body_of(f.client.Get(path.c_str()))["listen_host"] == "fe80::1%lo");
  r = f.client.Patch(path.c_str(), json{{"listen_host", "fe80::1%" + lo}}.dump(), "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(body_of(r)["listen_host"] == "fe80::1%" + lo);

  // A stored forward whose interface has gone is restored in error naming it, or disabled; that one
  // can be changed, and enabling it is a 400 naming the interface.
  relay::forward_spec gone;
  gone.listen_host = "fe80::1%gone0";
  test::only_target(gone).host = "127.0.0.1";
  test::only_target(gone).port = 80;
  gone.enabled = false;
  f.store.insert(gone);
  gone.listen_host = "fe80::1%gone1";
  gone.enabled = true;
  f.store.insert(gone);
  store::forward_store again((f.dir.path / "api.db").string());
  relay::engine e(test_engine_options());
  api::controller restarted(again, e);
  restarted.restore();
  auto list = restarted.list().body;
  REQUIRE(list.size() == 3);
  CHECK(list[2]["state"] == "error");
  CHECK(list[2]["error"].get<std::string>().find("unknown network interface 'gone1'") != std::string::npos);
  CHECK(list[0]["listen_host"] == "fe80::1%" + lo);
  CHECK(list[0]["target_host"] == "fe80::2%nosuchif0");
  CHECK(list[1]["listen_host"] == "fe80::1%gone0");
  CHECK(list[1]["state"] == "disabled");
  CHECK(restarted.patch(list[1]["id"].get<std::int64_t>(), json{{"name", "later"}}).status == 200);
  auto enabled = restarted.patch(list[1]["id"].get<std::int64_t>(), json{{"enabled", true}});
  CHECK(enabled.status == 400);
  INFO(enabled.body.dump());
  CHECK(enabled.body["error"]["code"] == "bind_failed");
  CHECK(enabled.body["error"]["message"].get<std::string>().find("unknown network interface 'gone0'") !=
        std::string::npos);
}

TEST_CASE("a forward with both lists full of the longest IPv6 prefixes fits in one request - and back", "[api]") {
  api_fixture f;
  auto body = json::parse(forward_body(9));
  for (const char* list : {"allow", "deny"}) {
    body[list] = json::array();
    for (int i = 0; i < 1024; ++i) {
      char entry[64];
      std::snprintf(entry, sizeof entry, "ffff:ffff:ffff:ffff:ffff:ffff:%s:%04x/128", list[0] == 'a' ? "aaaa" : "dddd", i);
      body[list].push_back(entry);
    }
  }
  REQUIRE(body.dump().size() > 90 * 1024);
  auto created = f.client.Post("/api/v1/forwards", body.dump(), "application/json");
  REQUIRE(created);
  INFO(created->body.substr(0, 300));
  REQUIRE(created->status == 201);
  const auto id = json::parse(created->body)["id"].get<int>();
  // The page sends the lists back as GET gave them, with any change.
  auto shown = json::parse(f.client.Get("/api/v1/forwards/" + std::to_string(id))->body);
  const json patch{{"allow", shown["allow"]}, {"deny", shown["deny"]}, {"max_connections", 5}};
  auto patched = f.client.Patch("/api/v1/forwards/" + std::to_string(id), patch.dump(), "application/json");
  REQUIRE(patched);
  CHECK(patched->status == 200);
}

TEST_CASE("bodies over the limit get a 413 the client can read, even while it is still sending", "[api]") {
  api_fixture f;
  const std::string big(1 << 20, 'x');
  SECTION("with Content-Length") {
    auto reply = raw_request(f.server.port(),
                             "POST /api/v1/forwards HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             "Content-Length: " + std::to_string(big.size()) + "\r\n\r\n",
                             big);
    CHECK(reply.rfind("HTTP/1.1 413", 0) == 0);
  }
  SECTION("chunked") {
    std::string chunked;
    for (std::size_t off = 0; off < big.size(); off += 8192) chunked += "2000\r\n" + big.substr(off, 8192) + "\r\n";
    chunked += "0\r\n\r\n";
    auto reply = raw_request(f.server.port(),
                             "POST /api/v1/forwards HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n",
                             chunked);
    CHECK(reply.rfind("HTTP/1.1 413", 0) == 0);
  }
  CHECK(f.store.list().empty());
}

TEST_CASE("a foreign Host header is refused when there is no token (DNS rebinding)", "[api]") {
  api_fixture f;
  check_error(f.client.Get("/api/v1/forwards", {{"Host", "attacker.example"}}), 403, "host_not_allowed");
  check_error(f.client.Post("/api/v1/forwards", {{"Host", "attacker.example:" + std::to_string(f.server.port())}},
                            forward_body(80), "application/json"),
              403, "host_not_allowed");
  CHECK(f.store.list().empty());
  for (std::string host : {"localhost", "127.0.0.1", "[::1]"}) {
    auto r = f.client.Get("/api/v1/forwards", {{"Host", host + ":" + std::to_string(f.server.port())}});
    REQUIRE(r);
    CHECK(r->status == 200);
  }
}

TEST_CASE("with a token every /api/ request needs it", "[api]") {
  api_fixture f("s3cret-token");
  check_error(f.client.Get("/api/v1/forwards"), 401, "unauthorized");
  auto r = f.client.Get("/api/v1/forwards");
  CHECK(r->get_header_value("WWW-Authenticate").find("Bearer") == 0);
  check_error(f.client.Get("/api/v1/forwards", {{"Authorization", "Bearer wrong"}}), 401, "unauthorized");
  check_error(f.client.Post("/api/v1/forwards", forward_body(80), "application/json"), 401, "unauthorized");
  CHECK(f.store.list().empty());
  auto ok = f.client.Get("/api/v1/forwards", {{"Authorization", "Bearer s3cret-token"}});
  REQUIRE(ok);
  CHECK(ok->status == 200);
  f.client.set_bearer_token_auth("s3cret-token");
  auto created = f.client.Post("/api/v1/forwards", forward_body(80), "application/json");
  REQUIRE(created);
  CHECK(created->status == 201);
}

TEST_CASE("with a token no byte of a body is read before the token is checked", "[api]") {
  api_fixture f("s3cret-token");
  const std::string head = "POST /api/v1/forwards HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           "Content-Length: 60000\r\n";
  for (const std::string extra : {"", "Expect: 100-continue\r\n", "Authorization: Bearer wrong\r\n"}) {
    INFO(extra);
    auto c = connect_to(f.port);
    REQUIRE(send_all(c.get(), head + extra + "\r\n"));  // and never the body: the answer cannot wait for it
    const auto answer = recv_http_answer(c.get());
    CHECK(answer.rfind("HTTP/1.1 401 ", 0) == 0);
    CHECK(answer.find("WWW-Authenticate: Bearer") != std::string::npos);
    CHECK(answer.find("\"code\":\"unauthorized\"") != std::string::npos);
  }
  auto c = connect_to(f.port);
  const auto body = forward_body(80);
  REQUIRE(send_all(c.get(), "POST /api/v1/forwards HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            "Authorization: Bearer s3cret-token\r\nContent-Length: " + std::to_string(body.size()) +
                            "\r\n\r\n" + body));
  CHECK(recv_http_answer(c.get()).rfind("HTTP/1.1 201 ", 0) == 0);
}

TEST_CASE("a stored forward that cannot bind at start is kept in state error - the rest work", "[api]") {
  target_server target(target_server::echo);
  test::temp_dir dir;
  const auto db = (dir.path / "restore.db").string();
  std::uint16_t taken = 0;
  auto other = listen_on(taken);
  {
    store::forward_store s(db);
    relay::forward_spec blocked;
    blocked.listen_host = "127.0.0.1";
    blocked.listen_port = taken;
    test::only_target(blocked).host = "127.0.0.1";
    test::only_target(blocked).port = target.port();
    s.insert(blocked);
    auto fine = blocked;
    fine.listen_port = free_port();
    s.insert(fine);
  }
  store::forward_store s(db);
  relay::engine e(test_engine_options());
  api::controller ctl(s, e);
  ctl.restore();
  auto list = ctl.list().body;
  CHECK(list[0]["state"] == "error");
  CHECK(list[0]["error"].get<std::string>().find("Address already in use") != std::string::npos);
  CHECK(list[1]["state"] == "active");
  // While the port is taken it can still be renamed; it stays in error, with the reason.
  auto renamed = ctl.patch(1, json{{"name", "blocked"}});
  CHECK(renamed.status == 200);
  CHECK(renamed.body["name"] == "blocked");
  CHECK(renamed.body["state"] == "error");
  CHECK(renamed.body["error"].get<std::string>().find("in use") != std::string::npos);
  CHECK(s.get(1)->spec.name == "blocked");
  // Moving it onto another taken port is refused outright.
  CHECK(ctl.patch(1, json{{"listen_port", list[1]["listen_port"]}}).status == 409);
  other.reset();
  // Once the port is free, re-enabling retries the bind.
  auto fixed = ctl.patch(1, json{{"enabled", true}});
  CHECK(fixed.status == 200);
  CHECK(fixed.body["state"] == "active");
  CHECK(fixed.body["name"] == "blocked");
}

TEST_CASE("the admin page is served from the binary with its content types, ETag and security headers", "[api]") {
  api_fixture f("tok");  // the page itself needs no token; only /api/ does
  const std::pair<const char*, const char*> files[] = {
      {"/", "text/html; charset=utf-8"}, {"/app.js", "text/javascript; charset=utf-8"},
      {"/style.css", "text/css; charset=utf-8"}};
  for (const auto& [path, type] : files) {
    INFO(path);
    auto r = f.client.Get(path);
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->get_header_value("Content-Type") == type);
    CHECK(r->get_header_value("X-Content-Type-Options") == "nosniff");
    CHECK(r->get_header_value("X-Frame-Options") == "DENY");
    const auto csp = r->get_header_value("Content-Security-Policy");
    CHECK(csp.find("script-src 'self'") != std::string::npos);
    CHECK(csp.find("frame-ancestors 'none'") != std::string::npos);
    CHECK(csp.find("unsafe-inline") == std::string::npos);
    const auto etag = r->get_header_value("ETag");
    REQUIRE(etag.size() > 2);
    auto again = f.client.Get(path, {{"If-None-Match", etag}});
    REQUIRE(again);
    CHECK(again->status == 304);
    CHECK(again->body.empty());
  }
  auto page = f.client.Get("/");
  CHECK(page->body.find("<script src=\"/app.js\"") != std::string::npos);
  CHECK(page->body.find("<script>") == std::string::npos);  // no inline script anywhere
  check_error(f.client.Get("/index.html"), 404, "not_found");
}

TEST_CASE("API connections have TCP_NODELAY and stay open across many requests", "[api]") {
  // httplib writes an answer in two sends; with Nagle the second waits for the client's delayed ACK
  // on every answer after the first on a kept-alive connection. The server is in this process, so
  // the accepted socket is one of our descriptors: find it by its peer and ask the kernel.
  api_fixture f;
  auto c = connect_to(f.port);
  REQUIRE(c);
  const std::string get = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  for (int i = 0; i < 20; ++i) {  // answers on one kept-alive connection, never closed after a few
    INFO("request " << i + 1);
    send_all(c.get(), get);
    std::string reply;
    char buf[4096];
    while (reply.find("{\"status\":\"ok\"}") == std::string::npos) {
      auto n = ::recv(c.get(), buf, sizeof buf, 0);
      REQUIRE(n > 0);
      reply.append(buf, static_cast<std::size_t>(n));
    }
    CHECK(reply.find("Connection: close") == std::string::npos);
  }
  sockaddr_storage mine{};
  socklen_t len = sizeof mine;
  REQUIRE(::getsockname(c.get(), reinterpret_cast<sockaddr*>(&mine), &len) == 0);
  int found = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::stoi(e.path().filename().string());
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    if (fd == c.get() || ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0 || plen != len ||
        std::memcmp(&peer, &mine, len) != 0) {
      continue;
    }
    int nodelay = 0;
    socklen_t olen = sizeof nodelay;
    REQUIRE(::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &olen) == 0);
    CHECK(nodelay == 1);
    ++found;
  }
  CHECK(found == 1);
}

TEST_CASE("an API on localhost listens on the loopback address of each family, on one port", "[api]") {
  const auto addresses = api::listen_addresses("localhost");
  REQUIRE_FALSE(addresses.empty());
  for (const auto& a : addresses) CHECK(asio::ip::make_address(a).is_loopback());
  CHECK(api::listen_addresses("192.0.2.7") == std::vector<std::string>{"192.0.2.7"});  // a literal is itself

  // Both families on one port (what localhost gives where /etc/hosts lists ::1 too).
  temp_dir dir;
  store::forward_store store{(dir.path / "api.db").string()};
  relay::engine engine{test_engine_options()};
  api::controller controller{store, engine};
  api::server server(controller, {"localhost", 0, {}});
  server.bind({"127.0.0.1", "::1"});
  server.start();
  CHECK(server.url() == "http://localhost:" + std::to_string(server.port()) + "/");
  for (const char* host : {"127.0.0.1", "::1"}) {
    INFO(host);
    httplib::Client client(host, server.port());
    auto r = client.Get("/healthz");
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  server.stop();
  CHECK_FALSE(connect_to(server.port()));  // both listeners are closed
  CHECK_FALSE(connect_to(server.port(), "::1"));
}

TEST_CASE("a bound API that never started releases its port when it goes", "[api]") {
  temp_dir dir;
  store::forward_store store{(dir.path / "api.db").string()};
  relay::engine engine{test_engine_options()};
  api::controller controller{store, engine};
  std::uint16_t port = 0;
  {
    api::server server(controller, {"127.0.0.1", 0, {}});
    server.bind();
    port = server.port();
    CHECK(connect_to(port));  // the kernel completes the handshake on a listening socket
  }
  CHECK_FALSE(connect_to(port));
}
