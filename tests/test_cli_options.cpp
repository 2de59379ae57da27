// cli_options: flags, defaults and the errors for bad ones.
#include "cli_options.hpp"

#include <catch2/catch.hpp>

TEST_CASE("defaults") {
  auto r = parse_cli({});
  REQUIRE(r.options);
  CHECK(r.options->db == "portrelay.db");
  CHECK(r.options->api_host == "127.0.0.1");
  CHECK(r.options->api_port == 7410);
  CHECK(r.options->log_level == "info");
  CHECK(r.options->workers == 0);
  CHECK(r.options->drain_timeout_s == 30);
  CHECK(r.options->datapath == "auto");
}

TEST_CASE("every flag, in both spellings") {
  auto r = parse_cli({"--db", "x.db", "--api=[::1]:0", "--token-file", "t", "--workers=3", "--log-level", "debug",
                      "--connect-timeout", "2.5", "--half-close-timeout=30", "--drain-timeout", "0", "--datapath=copy"});
  REQUIRE(r.options);
  CHECK(r.options->db == "x.db");
  CHECK(r.options->api_host == "::1");
  CHECK(r.options->api_port == 0);
  CHECK(r.options->token_file == "t");
  CHECK(r.options->workers == 3);
  CHECK(r.options->log_level == "debug");
  CHECK(r.options->connect_timeout_s == 2.5);
  CHECK(r.options->half_close_timeout_s == 30);
  CHECK(r.options->drain_timeout_s == 0);  // 0: close at once
  CHECK(r.options->datapath == "copy");
}

TEST_CASE("the API address may be localhost, in any case, the one name taken") {
  auto r = parse_cli({"--api", "LocalHost:7411"});
  REQUIRE(r.options);
  CHECK(r.options->api_host == "localhost");
  CHECK(r.options->api_port == 7411);
}

TEST_CASE("bad flags and values name themselves") {
  CHECK(parse_cli({"--bogus"}).error == "unknown option: --bogus");
  CHECK(parse_cli({"--db"}).error == "option --db needs a value");
  for (auto args : std::vector<std::vector<std::string>>{{"--api", "example.com:80"},
                                                         {"--api", "localhost"},
                                                         {"--api", "[localhost]:80"},
                                                         {"--api", "127.0.0.1"},
                                                         {"--api", "::1:80"},
                                                         {"--api", "127.0.0.1:70000"},
                                                         {"--workers", "0"},
                                                         {"--workers", "two"},
                                                         {"--log-level", "loud"},
                                                         {"--connect-timeout", "-1"},
                                                         {"--half-close-timeout", "nan"},
                                                         {"--half-close-timeout", "0"},
                                                         {"--drain-timeout", "-1"},
                                                         {"--drain-timeout", "86401"},
                                                         {"--drain-timeout", "soon"},
                                                         {"--datapath", "zerocopy"}}) {
    auto r = parse_cli(args);
    INFO(args[0] << " " << args[1]);
    CHECK_FALSE(r.options);
    CHECK(r.error.find("invalid value for " + args[0]) == 0);
  }
}
