// cli_options: flags, defaults and the errors for bad ones.
#include "cli_options.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <regex>

TEST_CASE("defaults", "[cli]") {
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

TEST_CASE("every flag, in both spellings", "[cli]") {
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

TEST_CASE("the API address may be localhost, in any case, the one name taken", "[cli]") {
  auto r = parse_cli({"--api", "LocalHost:7411"});
  REQUIRE(r.options);
  CHECK(r.options->api_host == "localhost");
  CHECK(r.options->api_port == 7411);
}

TEST_CASE("bad flags and values name themselves", "[cli]") {
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

namespace {
// The one line parse_cli gives for a bad value, and that nothing was parsed.
std::string refused(const std::vector<std::string>& args) {
  auto r = parse_cli(args);
  INFO(args[0] << " " << (args.size() > 1 ? args[1] : ""));
  CHECK_FALSE(r.options);
  CHECK(r.error.find('\n') == std::string::npos);
  return r.error;
}
}  // namespace

TEST_CASE("every range and choice is checked, and the error says what the flag takes", "[cli]") {
  const std::string workers = "(an integer from 1 to 256)";
  for (auto value : {"0", "257", "-1", "two", "3.5", "0x10", "+3", " 3", ""}) {
    CHECK(refused({"--workers", value}) == "invalid value for --workers: '" + std::string(value) + "' " + workers);
  }
  const std::string positive = "(seconds, more than 0 and at most 86400)";
  for (auto flag : {"--connect-timeout", "--half-close-timeout"}) {
    for (auto value : {"0", "-0.5", "86400.5", "nan", "inf", "1e999", "soon"}) {
      CHECK(refused({flag, value}) == "invalid value for " + std::string(flag) + ": '" + value + "' " + positive);
    }
  }
  for (auto value : {"-1", "86401", "nan", "-inf", "soon"}) {
    CHECK(refused({"--drain-timeout", value}) == "invalid value for --drain-timeout: '" + std::string(value) +
                                                     "' (seconds, from 0 to 86400)");
  }
  CHECK(refused({"--log-level", "loud"}) == "invalid value for --log-level: 'loud' (trace, debug, info, warn or error)");
  CHECK(refused({"--log-level", "INFO"}) == "invalid value for --log-level: 'INFO' (trace, debug, info, warn or error)");
  CHECK(refused({"--datapath", "zerocopy"}) == "invalid value for --datapath: 'zerocopy' (auto, splice or copy)");
  CHECK(refused({"--db", ""}) == "invalid value for --db: '' (a file name)");
  CHECK(refused({"--token-file", ""}) == "invalid value for --token-file: '' (a file name)");
  CHECK(refused({"--api", "example.com:80"}) ==
        "invalid value for --api: 'example.com:80' (HOST:PORT with an IP address or localhost, e.g. "
        "127.0.0.1:7410, [::1]:7410 or localhost:7410)");
}

TEST_CASE("the ends of every range and every choice are taken", "[cli]") {
  CHECK(parse_cli({"--workers", "1"}).options->workers == 1);
  CHECK(parse_cli({"--workers", "256"}).options->workers == 256);
  CHECK(parse_cli({"--workers", "010"}).options->workers == 10);  // decimal, never octal
  CHECK(parse_cli({"--connect-timeout", "86400"}).options->connect_timeout_s == 86400);
  CHECK(parse_cli({"--half-close-timeout", "0.001"}).options->half_close_timeout_s == 0.001);
  CHECK(parse_cli({"--drain-timeout", "86400"}).options->drain_timeout_s == 86400);
  for (auto level : {"trace", "debug", "info", "warn", "error"}) CHECK(parse_cli({"--log-level", level}).options->log_level == level);
  for (auto mode : {"auto", "splice", "copy"}) CHECK(parse_cli({"--datapath", mode}).options->datapath == mode);
}

TEST_CASE("a missing value or an unknown argument is one line naming it", "[cli]") {
  for (auto flag : {"--db", "--api", "--token-file", "--workers", "--log-level", "--connect-timeout",
                    "--half-close-timeout", "--drain-timeout", "--datapath"}) {
    CHECK(refused({"--log-level", "debug", flag}) == "option " + std::string(flag) + " needs a value");
  }
  CHECK(refused({"--workers=", "4"}) == "invalid value for --workers: '' (an integer from 1 to 256)");
  CHECK(refused({"--db=", "--workers=4"}) == "invalid value for --db: '' (a file name)");
  CHECK(parse_cli({"--help="}).options->help);
  CHECK(refused({"--db", "x.db", "stray"}) == "unknown option: stray");
  CHECK(refused({"-d"}) == "unknown option: -d");
}

TEST_CASE("a flag given twice: the last one counts, and -h is --help", "[cli]") {
  auto r = parse_cli({"--workers", "2", "--workers=4", "--log-level", "warn", "--log-level", "error"});
  REQUIRE(r.options);
  CHECK(r.options->workers == 4);
  CHECK(r.options->log_level == "error");
  CHECK(parse_cli({"-h"}).options->help);
  CHECK(parse_cli({"--help"}).options->help);
  CHECK(parse_cli({"--version"}).options->version);
  CHECK_FALSE(parse_cli({"--help", "--workers", "0"}).options);  // every flag is checked before the help is printed
}

TEST_CASE("the help comes from the declarations: each flag with what it takes and its default", "[cli]") {
  const auto help = usage();
  INFO(help);
  CHECK(help.find("usage: portrelay [--db FILE] [--api HOST:PORT]") == 0);
  const auto unwrapped = std::regex_replace(help, std::regex("\n +"), " ");
  for (auto line : {"data-plane threads: an integer from 1 to 256 (default one per CPU)",
                    "trace, debug, info, warn or error (default info)", "seconds, from 0 to 86400 (default 30)",
                    "auto, splice or copy (default auto)", "(default 127.0.0.1:7410)", "(default portrelay.db)",
                    "(default 10)", "(default 60)", "-h,--help", "--version", "--token-file FILE"}) {
    CHECK(unwrapped.find(line) != std::string::npos);
  }
  std::size_t longest = 0;
  for (std::size_t start = 0, end; start < help.size(); start = end + 1) {
    end = help.find('\n', start);
    if (end == std::string::npos) end = help.size();
    longest = std::max(longest, end - start);
  }
  CHECK(longest <= 100);
}

TEST_CASE("fleet mode's flags: --store etcd needs endpoints, and the etcd flags need --store etcd", "[cli]") {
  auto r = parse_cli({"--store", "etcd", "--etcd-endpoints", "unix:///run/etcd/localhost:2379,http://127.0.0.1:2379",
                      "--etcd-prefix=/portrelay/edge", "--host-name", "relay-1.example", "--etcd-credentials-file", "c",
                      "--etcd-ca-file", "ca.pem", "--etcd-cert-file", "c.pem", "--etcd-key-file", "k.pem"});
  REQUIRE(r.options);
  CHECK(r.options->store == "etcd");
  CHECK(r.options->etcd_endpoints == "unix:///run/etcd/localhost:2379,http://127.0.0.1:2379");
  CHECK(r.options->etcd_prefix == "/portrelay/edge");
  CHECK(r.options->host_name == "relay-1.example");
  CHECK(r.options->etcd_credentials_file == "c");
  CHECK(r.options->etcd_key_file == "k.pem");
  CHECK(parse_cli({}).options->store == "sqlite");
  CHECK(parse_cli({}).options->etcd_prefix == "/portrelay/default");

  CHECK(parse_cli({"--store", "etcd"}).error == "--store etcd needs --etcd-endpoints");
  CHECK(parse_cli({"--etcd-endpoints", "http://127.0.0.1:2379"}).error == "--etcd-endpoints needs --store etcd");
  CHECK(parse_cli({"--host-name", "a"}).error == "--host-name needs --store etcd");
  CHECK(parse_cli({"--store", "etcd", "--etcd-endpoints", "http://x:1", "--etcd-cert-file", "c"}).error ==
        "--etcd-cert-file and --etcd-key-file go together");
  CHECK(parse_cli({"--store", "consul"}).error.find("--store: 'consul' (sqlite or etcd)") != std::string::npos);
  for (const char* bad : {"portrelay", "/", "/a/", "//a", "/a b", "/a//b"}) {
    INFO(bad);
    CHECK(parse_cli({"--store", "etcd", "--etcd-endpoints", "http://x:1", "--etcd-prefix", bad}).error.find("--etcd-prefix") !=
          std::string::npos);
  }
  for (const std::string& bad : {std::string(), std::string("a b"), std::string(64, 'a'), std::string("host/1")}) {
    INFO(bad);
    CHECK(parse_cli({"--store", "etcd", "--etcd-endpoints", "http://x:1", "--host-name", bad}).error.find("--host-name") !=
          std::string::npos);
  }
}
