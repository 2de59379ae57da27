// End to end: PUT /api/v1/config against the built binary, killed with SIGKILL right after the answer.
#include "e2e_support.hpp"

#include <catch2/catch.hpp>

using namespace test;
using nlohmann::json;

TEST_CASE("kill -9 right after a 200 config PUT keeps the new set", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  json applied;
  std::uint16_t freed = 0;
  {
    running d(args_for(dir));
    create(d.client, target.port());  // forward-1: changed
    freed = create(d.client, target.port())["listen_port"];  // forward-2: deleted, its port taken by "born"
    auto doc = json::parse(d.client.Get("/api/v1/config")->body);
    doc["forwards"].erase(1);
    doc["forwards"][0]["max_connections"] = 7;
    doc["forwards"].push_back(json{{"name", "born"},
                                   {"protocol", "tcp"},
                                   {"listen_host", "127.0.0.1"},
                                   {"listen_port", freed},
                                   {"targets", {{{"host", "127.0.0.1"}, {"port", target.port()}}}}});
    auto r = d.client.Put("/api/v1/config", doc.dump(), "application/json");
    REQUIRE(r);
    INFO(r->body);
    REQUIRE(r->status == 200);
    d.proc.signal(SIGKILL);
    REQUIRE(d.proc.wait_exit());
    applied = doc;
  }
  running d(args_for(dir));
  auto now = json::parse(d.client.Get("/api/v1/config")->body)["forwards"];
  REQUIRE(now.size() == 2);
  CHECK(now[0]["name"] == "born");
  CHECK(now[0]["listen_port"] == freed);
  CHECK(now[1] == applied["forwards"][0]);  // forward-1 as the document said, max_connections 7
  CHECK(echo_once(freed, "durable") == "durable");
  auto list = json::parse(d.client.Get("/api/v1/forwards")->body);
  REQUIRE(list.size() == 2);
  CHECK(list[0]["id"] == 1);
  CHECK(list[1]["id"] == 3);
  CHECK(list[1]["state"] == "active");
}
