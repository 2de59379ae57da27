// api_fixture: a real store, engine, controller and HTTP server on a kernel-chosen loopback port.
#pragma once

#include "api/controller.hpp"
#include "api/server.hpp"
#include "test_support.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>


namespace test {

inline relay::engine_options test_engine_options() {
  relay::engine_options o;
  o.workers = 2;
  o.connect_timeout = 30s;  // far above a loopback connect on a loaded machine
  return o;
}

struct api_fixture {
  temp_dir dir;
  store::forward_store store{(dir.path / "api.db").string()};
  relay::engine engine{test_engine_options()};
  api::controller controller{store, engine};
  api::server server;
  std::uint16_t port;
  httplib::Client client;

  explicit api_fixture(std::string token = {})
      : server(controller, api::server_options{"127.0.0.1", 0, std::move(token)}),
        port((server.bind(), server.port())),
        client("127.0.0.1", port) {
    server.start();
    client.set_connection_timeout(30);
    client.set_read_timeout(30);
  }
};

inline nlohmann::json body_of(const httplib::Result& r) { return nlohmann::json::parse(r->body); }

}  // namespace test
