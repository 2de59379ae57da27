// e2e_support: the real binary running on a scratch database with its API on a kernel-chosen port.
#pragma once

#include "api_fixture.hpp"
#include "daemon_process.hpp"

#include <catch2/catch.hpp>

namespace test {

struct running {
  daemon_process proc;
  std::uint16_t port;
  httplib::Client client;
  explicit running(std::vector<std::string> args, daemon_env env = {})
      : proc(std::move(args), std::move(env)), port(proc.wait_ready()), client("127.0.0.1", port) {
    INFO(proc.log());
    REQUIRE(port != 0);
    client.set_read_timeout(30);
  }
};

inline std::vector<std::string> args_for(const temp_dir& dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> a{"--db", (dir.path / "e2e.db").string(), "--api", "127.0.0.1:0", "--workers", "2"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

inline nlohmann::json create(httplib::Client& c, std::uint16_t target_port, bool enabled = true,
                             std::uint16_t listen_port = 0, const std::string& protocol = "tcp") {
  auto r = c.Post("/api/v1/forwards",
                  nlohmann::json{{"protocol", protocol}, {"listen_host", "127.0.0.1"}, {"listen_port", listen_port},
                                 {"target_host", "127.0.0.1"}, {"target_port", target_port}, {"enabled", enabled}}
                      .dump(),
                  "application/json");
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 201);
  return nlohmann::json::parse(r->body);
}

inline bool exited_cleanly(daemon_process& p, std::chrono::milliseconds limit = 30s) {
  auto st = p.wait_exit(limit);
  return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
}

}  // namespace test
