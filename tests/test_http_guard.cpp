// http_guard: token comparison and Host header matching.
#include "api/http_guard.hpp"

#include <catch2/catch.hpp>

TEST_CASE("bearer tokens", "[api]") {
  CHECK(api::bearer_matches("Bearer s3cret", "s3cret"));
  CHECK(api::bearer_matches("bearer s3cret", "s3cret"));
  CHECK_FALSE(api::bearer_matches("Bearer s3cre", "s3cret"));
  CHECK_FALSE(api::bearer_matches("Bearer s3cretx", "s3cret"));
  CHECK_FALSE(api::bearer_matches("Basic s3cret", "s3cret"));
  CHECK_FALSE(api::bearer_matches("", "s3cret"));
  CHECK_FALSE(api::bearer_matches("Bearer ", "s3cret"));
  CHECK(api::constant_time_equal("", ""));
  CHECK_FALSE(api::constant_time_equal("a", ""));
}

TEST_CASE("Host header: the API's own address and the loopback names, with or without the port", "[api]") {
  for (const char* ok : {"127.0.0.1", "127.0.0.1:7410", "localhost", "LOCALHOST:7410", "[::1]", "[::1]:7410"}) {
    INFO(ok);
    CHECK(api::host_allowed(ok, "127.0.0.1", 7410));
  }
  for (const char* bad : {"evil.example", "evil.example:7410", "127.0.0.1:80", "localhost.evil.example", "",
                          "127.0.0.2", "::1"}) {
    INFO(bad);
    CHECK_FALSE(api::host_allowed(bad, "127.0.0.1", 7410));
  }
  CHECK(api::host_allowed("127.0.0.5:9000", "127.0.0.5", 9000));
  CHECK(api::host_allowed("[::1]:9000", "::1", 9000));
}
