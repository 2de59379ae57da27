// The live connections API against the built binary: a client cut off over the API sees a reset,
// and the daemon logs one line per DELETE.
#include "e2e_support.hpp"
#include "engine_helpers.hpp"

#include <catch2/catch.hpp>

using namespace test;
using nlohmann::json;

TEST_CASE("the daemon lists a client and cuts it off over the API with one log line per DELETE", "[e2e]") {
  target_server target(target_server::echo);
  temp_dir dir;
  running d(args_for(dir));
  const auto fwd = create(d.client, target.port());
  const auto id = fwd["id"].get<std::int64_t>();
  const auto path = "/api/v1/forwards/" + std::to_string(id) + "/connections";
  // The second connects once the first is relayed, so it is accepted later: the higher id.
  auto one = connect_to(fwd["listen_port"].get<std::uint16_t>());
  REQUIRE(one);
  REQUIRE(send_all(one.get(), "ping"));
  REQUIRE(recv_exact(one.get(), 4) == "ping");
  auto two = connect_from(fwd["listen_port"].get<std::uint16_t>(), "127.0.0.2");
  REQUIRE(two);
  REQUIRE(send_all(two.get(), "ping"));
  REQUIRE(recv_exact(two.get(), 4) == "ping");

  json page;
  CHECK(eventually([&] {
    auto r = d.client.Get(path.c_str());
    page = r && r->status == 200 ? json::parse(r->body) : json();
    return page.is_object() && page["connections"].size() == 2 && page["connections"][0]["bytes_down"] == 4 &&
           page["connections"][1]["bytes_down"] == 4;
  }));
  INFO(page.dump());
  REQUIRE(page["connections"].size() == 2);
  const auto first = page["connections"][0];
  CHECK(first["client"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
  CHECK(page["connections"][1]["client"].get<std::string>().rfind("127.0.0.2:", 0) == 0);

  auto r = d.client.Delete((path + "/" + std::to_string(first["id"].get<std::uint64_t>())).c_str());
  REQUIRE(r);
  CHECK(r->status == 204);
  CHECK(read_to_end(one.get()).error == ECONNRESET);
  r = d.client.Delete((path + "?client=127.0.0.2").c_str());
  REQUIRE(r);
  CHECK(r->body == "{\"closed\":1}\n");
  CHECK(read_to_end(two.get()).error == ECONNRESET);

  // One line per DELETE, naming what it closed.
  const auto by_id = "forward " + std::to_string(id) + ": connection " + first["id"].dump() + " from " +
                     first["client"].get<std::string>() + " closed over the API";
  const auto by_prefix = "forward " + std::to_string(id) + ": 1 connection from 127.0.0.2/32 closed over the API";
  CHECK(eventually([&] {
    const auto log = d.proc.log();
    return log.find(by_id) != std::string::npos && log.find(by_prefix) != std::string::npos;
  }));
  INFO(d.proc.log());
  d.proc.signal(SIGTERM);
  CHECK(exited_cleanly(d.proc));
}
