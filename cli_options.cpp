// cli_options: hand-rolled flag parsing (both "--flag value" and "--flag=value").
#include "cli_options.hpp"

#include "relay/forward_spec.hpp"

#include <asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

namespace {

template <class T>
bool parse_number(const std::string& text, T& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

bool parse_seconds(const std::string& text, double& out, bool zero_ok = false) {
  try {
    std::size_t used = 0;
    out = std::stod(text, &used);
    return used == text.size() && std::isfinite(out) && (out > 0 || (zero_ok && out == 0)) && out <= 86400;
  } catch (const std::exception&) {
    return false;
  }
}

// "127.0.0.1:7410", "[::1]:7410", "0.0.0.0:0", "localhost:7410" (the one name taken: it means
// loopback whatever the resolver says of other names).
bool parse_host_port(const std::string& text, std::string& host, std::uint16_t& port) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::string h = text.substr(0, colon);
  std::string lower = h;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "localhost") {
    if (!parse_number(text.substr(colon + 1), port)) return false;
    host = lower;
    return true;
  }
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  else if (h.find(':') != std::string::npos) return false;  // IPv6 needs brackets
  if (relay::check_listen_host(h)) return false;
  if (!parse_number(text.substr(colon + 1), port)) return false;
  host = relay::canonical_address(h);
  return true;
}

}  // namespace

std::string usage() {
  return "usage: portrelay [--db FILE] [--api HOST:PORT] [--token-file FILE] [--workers N]\n"
         "                 [--log-level LEVEL] [--connect-timeout SECONDS] [--half-close-timeout SECONDS]\n"
         "                 [--drain-timeout SECONDS] [--datapath auto|splice|copy]\n"
         "\n"
         "Forwards local TCP and UDP ports to remote host:port targets, managed over a REST API.\n"
         "\n"
         "  --db FILE                 SQLite database (default portrelay.db; created when missing)\n"
         "  --api HOST:PORT           API address: an IP, or localhost for 127.0.0.1 and ::1 (default\n"
         "                            127.0.0.1:7410; port 0 = any free port)\n"
         "  --token-file FILE         require 'Authorization: Bearer <token>' on /api/ and /metrics (needed\n"
         "                            off loopback; default: $CREDENTIALS_DIRECTORY/token when systemd passes one)\n"
         "  --workers N               data-plane threads (default: one per CPU)\n"
         "  --log-level LEVEL         trace, debug, info (default), warn, error\n"
         "  --connect-timeout S       per-address connect timeout to targets (default 10)\n"
         "  --half-close-timeout S    idle time before a half-closed connection is closed (default 60)\n"
         "  --drain-timeout S         on SIGTERM, how long live connections may finish (default 30; 0 = close\n"
         "                            at once); a second SIGTERM or SIGINT closes them at once\n"
         "  --datapath MODE           how TCP bytes move: auto (default: copy small messages, splice bulk),\n"
         "                            splice (always through a pipe), copy (always through a buffer)\n"
         "  --help, --version\n";
}

cli_parse parse_cli(const std::vector<std::string>& args) {
  cli_options o;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i], value;
    bool has_value = false;
    if (auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_value = true;
    }
    if (flag == "--help" || flag == "-h") {
      o.help = true;
      continue;
    }
    if (flag == "--version") {
      o.version = true;
      continue;
    }
    const bool takes_value = flag == "--db" || flag == "--api" || flag == "--token-file" || flag == "--workers" ||
                             flag == "--log-level" || flag == "--connect-timeout" || flag == "--half-close-timeout" ||
                             flag == "--drain-timeout" || flag == "--datapath";
    if (!takes_value) return {std::nullopt, "unknown option: " + args[i]};
    if (!has_value) {
      if (i + 1 >= args.size()) return {std::nullopt, "option " + flag + " needs a value"};
      value = args[++i];
    }
    auto bad = [&](const std::string& what) { return cli_parse{std::nullopt, "invalid value for " + flag + ": '" + value + "' (" + what + ")"}; };
    if (flag == "--db") {
      if (value.empty()) return bad("a file name");
      o.db = value;
    } else if (flag == "--api") {
      if (!parse_host_port(value, o.api_host, o.api_port)) return bad("HOST:PORT with an IP address or localhost, e.g. 127.0.0.1:7410, [::1]:7410 or localhost:7410");
    } else if (flag == "--token-file") {
      if (value.empty()) return bad("a file name");
      o.token_file = value;
    } else if (flag == "--workers") {
      if (!parse_number(value, o.workers) || o.workers < 1 || o.workers > 256) return bad("an integer from 1 to 256");
    } else if (flag == "--log-level") {
      if (value != "trace" && value != "debug" && value != "info" && value != "warn" && value != "error") {
        return bad("trace, debug, info, warn or error");
      }
      o.log_level = value;
    } else if (flag == "--connect-timeout") {
      if (!parse_seconds(value, o.connect_timeout_s)) return bad("seconds, more than 0 and at most 86400");
    } else if (flag == "--half-close-timeout") {
      if (!parse_seconds(value, o.half_close_timeout_s)) return bad("seconds, more than 0 and at most 86400");
    } else if (flag == "--drain-timeout") {
      if (!parse_seconds(value, o.drain_timeout_s, true)) return bad("seconds, from 0 to 86400");
    } else if (flag == "--datapath") {
      if (value != "auto" && value != "splice" && value != "copy") return bad("auto, splice or copy");
      o.datapath = value;
    }
  }
  return {o, {}};
}
