// cli_options: the daemon's flags, each declared once with CLI11: its check, its help line and the
// words of its error come from that one declaration.
#include "cli_options.hpp"

#include "relay/forward_spec.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace {

constexpr std::size_t help_width = 100;

// "127.0.0.1:7410", "[::1]:7410", "0.0.0.0:0", "localhost:7410" (the one name taken: it means
// loopback whatever the resolver says of other names).
bool parse_host_port(const std::string& text, std::string& host, std::uint16_t& port) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  const std::string digits = text.substr(colon + 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (ec != std::errc() || end != digits.data() + digits.size()) return false;
  std::string h = text.substr(0, colon);
  std::string lower = h;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "localhost") {
    host = lower;
    return true;
  }
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  else if (h.find(':') != std::string::npos) return false;  // IPv6 needs brackets
  if (relay::check_listen_host(h)) return false;
  host = relay::canonical_address(h);
  return true;
}

// The checks. Each one's description says what it accepts, in the words of the help and the error.
// A check returns an empty string for a good value (CLI11's convention).

CLI::Validator file_name() {
  return CLI::Validator([](std::string& v) { return v.empty() ? std::string("empty") : std::string(); }, "a file name");
}

// Decimal digits only, rewritten without leading zeros: CLI11 converts integers with base 0, which
// would read 010 as 8 and accept 0x10.
const CLI::Validator decimal([](std::string& v) {
  if (v.empty() || !std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); })) return std::string("not decimal");
  v.erase(0, std::min(v.find_first_not_of('0'), v.size() - 1));
  return std::string();
}, "");

CLI::Validator integer(int min, int max) {
  return (decimal & CLI::Range(min, max))
      .description("an integer from " + std::to_string(min) + " to " + std::to_string(max));
}

// CLI::Range lets NaN through: every comparison with it is false.
const CLI::Validator finite([](std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  return !v.empty() && end == v.c_str() + v.size() && std::isfinite(d) ? std::string() : std::string("not finite");
}, "");

CLI::Validator seconds(bool zero_ok) {
  constexpr int max = 86400;
  const std::string most = std::to_string(max);
  if (zero_ok) return (finite & CLI::Range(0.0, double(max))).description("seconds, from 0 to " + most);
  return (finite & CLI::Range(std::numeric_limits<double>::denorm_min(), double(max)))
      .description("seconds, more than 0 and at most " + most);
}

CLI::Validator one_of(const std::vector<std::string>& names) {
  std::string listed = names.front();
  for (std::size_t i = 1; i < names.size(); ++i) listed += (i + 1 == names.size() ? " or " : ", ") + names[i];
  return CLI::IsMember(names).description(listed);
}

CLI::Validator host_port() {
  return CLI::Validator(
      [](std::string& v) {
        std::string host;
        std::uint16_t port = 0;
        return parse_host_port(v, host, port) ? std::string() : std::string("not HOST:PORT");
      },
      "HOST:PORT with an IP address or localhost, e.g. 127.0.0.1:7410, [::1]:7410 or localhost:7410");
}

// An etcd key prefix: "/" then one or more segments of [A-Za-z0-9._-], no trailing "/".
CLI::Validator key_prefix() {
  return CLI::Validator(
      [](std::string& v) {
        if (v.size() < 2 || v.front() != '/' || v.back() == '/' || v.find("//") != std::string::npos) return std::string("bad");
        const bool ok = std::all_of(v.begin(), v.end(), [](unsigned char c) {
          return std::isalnum(c) || c == '/' || c == '.' || c == '_' || c == '-';
        });
        return ok ? std::string() : std::string("bad");
      },
      "a key prefix such as /portrelay/NAME: segments of letters, digits, '.', '_' or '-' after '/', no trailing '/'");
}

CLI::Validator host_name() {
  return CLI::Validator(
      [](std::string& v) {
        const bool ok = !v.empty() && v.size() <= 63 && std::all_of(v.begin(), v.end(), [](unsigned char c) {
          return std::isalnum(c) || c == '.' || c == '_' || c == '-';
        });
        return ok ? std::string() : std::string("bad");
      },
      "1 to 63 letters, digits, '.', '_' or '-'");
}

// Adds check to opt. What it accepts ends the flag's help line and is the error's reason:
// "--workers: 'two' (an integer from 1 to 256)", to which parse_cli adds "invalid value for ".
// A transform, not a check, which CLI11 would hand a copy, so that decimal's rewrite is kept.
CLI::Option* accepts(CLI::Option* opt, const CLI::Validator& check) {
  const std::string what = check.get_description();
  opt->transform(CLI::Validator(
      [what, check](std::string& value) {
        const std::string given = value;
        return check(value).empty() ? std::string() : "'" + given + "' (" + what + ")";
      },
      ""));
  return opt->description(opt->get_description() + ": " + what);
}

// Fills lines of at most width characters with words; the lines after the first start with indent.
std::string fill(const std::vector<std::string>& items, std::size_t width, const std::string& indent = "") {
  std::string out, line;
  for (const auto& word : items) {
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      out += line + "\n" + indent;
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  return out + line;
}

std::vector<std::string> words(const std::string& text) {
  std::vector<std::string> out;
  for (std::size_t start = 0, end; start < text.size(); start = end + 1) {
    end = std::min(text.find(' ', start), text.size());
    out.push_back(text.substr(start, end - start));
  }
  return out;
}

// The help: a usage line built from the flags, then one entry per flag with its default.
class help_formatter : public CLI::Formatter {
 public:
  std::string make_help(const CLI::App* app, std::string name, CLI::AppFormatMode mode) const override {
    return make_usage(app, name) + "\n" + app->get_description() + "\n" + make_groups(app, mode);
  }

  std::string make_usage(const CLI::App* app, std::string name) const override {
    const std::string lead = "usage: " + name + " ";
    std::vector<std::string> flags;
    for (const CLI::Option* opt : app->get_options()) {
      if (!opt->get_option_text().empty()) flags.push_back("[" + opt->get_name() + " " + opt->get_option_text() + "]");
    }
    const std::string indent(lead.size(), ' ');
    return lead + fill(flags, help_width - lead.size(), indent) + "\n" +
           indent.substr(name.size() + 1) + name + " --help | --version\n";
  }

  std::string make_option_desc(const CLI::Option* opt) const override {
    std::string desc = opt->get_description();
    if (!opt->get_default_str().empty()) desc += " (default " + opt->get_default_str() + ")";
    return fill(words(desc), help_width - get_column_width() - 2);
  }
};

void declare(CLI::App& app, cli_options& o) {
  app.description("Forwards local TCP and UDP ports to remote host:port targets, managed over a REST API.");
  app.formatter(std::make_shared<help_formatter>());
  app.set_help_flag();  // --help is an ordinary flag: main prints the help once every flag checked out
  app.allow_extras();   // parse_cli names the first unknown one itself
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // CLI11's default refuses a repeat

  app.add_flag("-h,--help", o.help, "print this help and exit");
  app.add_flag("--version", o.version, "print the version and exit");
  accepts(app.add_option("--db", o.db, "SQLite database, created when missing"), file_name())
      ->option_text("FILE")->capture_default_str();
  accepts(app.add_option_function<std::string>(
              "--api", [&o](const std::string& v) { parse_host_port(v, o.api_host, o.api_port); },
              "API address (localhost: 127.0.0.1 and ::1; port 0: any free port)"),
          host_port())
      ->option_text("HOST:PORT")->default_str(o.api_host + ":" + std::to_string(o.api_port));
  accepts(app.add_option("--token-file", o.token_file,
                         "require 'Authorization: Bearer <token>' on /api/ and /metrics, needed off loopback; "
                         "without it, $CREDENTIALS_DIRECTORY/token when systemd passes one"),
          file_name())
      ->option_text("FILE");
  accepts(app.add_option("--workers", o.workers, "data-plane threads"), integer(1, 256))
      ->option_text("N")->default_str("one per CPU");
  accepts(app.add_option("--log-level", o.log_level, "the least severe messages logged"),
          one_of({"trace", "debug", "info", "warn", "error"}))
      ->option_text("LEVEL")->capture_default_str();
  accepts(app.add_option("--connect-timeout", o.connect_timeout_s, "per-address connect timeout to targets"),
          seconds(false))
      ->option_text("S")->capture_default_str();
  accepts(app.add_option("--half-close-timeout", o.half_close_timeout_s,
                         "idle time before a half-closed connection is closed"),
          seconds(false))
      ->option_text("S")->capture_default_str();
  accepts(app.add_option("--drain-timeout", o.drain_timeout_s,
                         "on SIGTERM, how long live connections may finish; 0, or a second SIGTERM or "
                         "SIGINT, closes them at once"),
          seconds(true))
      ->option_text("S")->capture_default_str();
  accepts(app.add_option("--datapath", o.datapath,
                         "how TCP bytes move: auto copies small messages and splices bulk, splice always "
                         "goes through a pipe, copy always through a buffer"),
          one_of({"auto", "splice", "copy"}))
      ->option_text("MODE")->capture_default_str();
  accepts(app.add_option("--store", o.store,
                         "where the forwards are kept: sqlite in --db (one host), or etcd, shared by every "
                         "host on --etcd-prefix, with --db as this host's local copy"),
          one_of({"sqlite", "etcd"}))
      ->option_text("KIND")->capture_default_str();
  accepts(app.add_option("--etcd-endpoints", o.etcd_endpoints,
                         "with --store etcd: etcd's client URLs, comma-separated: http://HOST:PORT, "
                         "https://HOST:PORT or unix:///PATH"),
          CLI::Validator([](std::string& v) { return v.empty() ? std::string("empty") : std::string(); }, "a list of URLs"))
      ->option_text("URLS");
  accepts(app.add_option("--etcd-prefix", o.etcd_prefix, "the fleet's keys in etcd"), key_prefix())
      ->option_text("PREFIX")->capture_default_str();
  accepts(app.add_option("--host-name", o.host_name, "this host's name in the fleet's status"), host_name())
      ->option_text("NAME")->default_str("the system's host name");
  accepts(app.add_option("--etcd-credentials-file", o.etcd_credentials_file,
                         "etcd user and password as one line USER:PASSWORD; without it, "
                         "$CREDENTIALS_DIRECTORY/etcd-credentials when systemd passes one"),
          file_name())
      ->option_text("FILE");
  accepts(app.add_option("--etcd-ca-file", o.etcd_ca_file, "CA bundle for https etcd endpoints (default: the system's)"),
          file_name())
      ->option_text("FILE");
  accepts(app.add_option("--etcd-cert-file", o.etcd_cert_file, "client certificate for etcd, with --etcd-key-file"),
          file_name())
      ->option_text("FILE");
  accepts(app.add_option("--etcd-key-file", o.etcd_key_file, "client key for etcd, with --etcd-cert-file"), file_name())
      ->option_text("FILE");
}

}  // namespace

std::string usage() {
  cli_options o;
  CLI::App app("", "portrelay");
  declare(app, o);
  return app.help();
}

cli_parse parse_cli(const std::vector<std::string>& args) {
  cli_options o;
  CLI::App app("", "portrelay");
  declare(app, o);
  // CLI11 takes them last first, and reads "--db=" as "--db" wanting the next argument: the empty
  // value is meant, and refused as one.
  std::vector<std::string> reversed;
  for (auto arg = args.rbegin(); arg != args.rend(); ++arg) {
    const std::string name = arg->substr(0, arg->size() - 1);
    const auto* opt = arg->ends_with('=') ? app.get_option_no_throw(name) : nullptr;
    if (opt && opt->get_expected_min() > 0) {
      reversed.insert(reversed.end(), {"", name});
    } else {
      reversed.push_back(*arg);
    }
  }
  try {
    app.parse(reversed);
  } catch (const CLI::ArgumentMismatch&) {
    // CLI11 takes any next argument as a flag's value, so only the last one can lack it.
    return {std::nullopt, "option " + args.back().substr(0, args.back().find('=')) + " needs a value"};
  } catch (const CLI::ValidationError& e) {
    return {std::nullopt, std::string("invalid value for ") + e.what()};
  } catch (const CLI::ParseError& e) {
    return {std::nullopt, e.what()};
  }
  if (const auto unknown = app.remaining(); !unknown.empty()) return {std::nullopt, "unknown option: " + unknown.front()};
  if (o.store == "etcd" && o.etcd_endpoints.empty()) return {std::nullopt, "--store etcd needs --etcd-endpoints"};
  if (o.store != "etcd") {
    for (const char* flag : {"--etcd-endpoints", "--etcd-prefix", "--host-name", "--etcd-credentials-file",
                             "--etcd-ca-file", "--etcd-cert-file", "--etcd-key-file"}) {
      if (app.count(flag) > 0) return {std::nullopt, std::string(flag) + " needs --store etcd"};
    }
  }
  if (o.etcd_cert_file.empty() != o.etcd_key_file.empty()) {
    return {std::nullopt, "--etcd-cert-file and --etcd-key-file go together"};
  }
  return {o, {}};
}
