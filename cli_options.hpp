// cli_options: the daemon's command line, parsed into values with one error line per mistake.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

struct cli_options {
  std::string db = "portrelay.db";
  std::string api_host = "127.0.0.1";
  std::uint16_t api_port = 7410;
  std::string token_file;
  std::size_t workers = 0;  // 0: one per CPU
  std::string log_level = "info";
  double connect_timeout_s = 10;
  double half_close_timeout_s = 60;
  double drain_timeout_s = 30;
  std::string datapath = "auto";  // auto, splice or copy
  // Fleet mode (--store etcd): the forwards are kept in etcd and shared by every host on the prefix.
  std::string store = "sqlite";  // sqlite or etcd
  std::string etcd_endpoints;    // comma-separated client URLs (store::etcd::parse_endpoints checks them)
  std::string etcd_prefix = "/portrelay/default";
  std::string host_name;         // empty: gethostname()
  std::string etcd_credentials_file;  // "user:password" on one line
  std::string etcd_ca_file;
  std::string etcd_cert_file;
  std::string etcd_key_file;
  bool help = false;
  bool version = false;
};

// Either options or the one-line error to print before exiting with status 2.
struct cli_parse {
  std::optional<cli_options> options;
  std::string error;
};

cli_parse parse_cli(const std::vector<std::string>& args);
std::string usage();
