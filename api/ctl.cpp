// ctl: the subcommands of `portrelay ctl`, each declared once with CLI11 and run against the API.
#include "api/ctl.hpp"

#include "api/ctl_client.hpp"
#include "api/ctl_document.hpp"
#include "api/ctl_output.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <sstream>

namespace api {

namespace {

constexpr const char* forwards = "/api/v1/forwards/";

// Every value a subcommand can be given; each binds the ones it takes.
struct ctl_options {
  std::string api, token_file;
  bool json = false;
  std::string id, connection, client, file, if_match, name, protocol = "tcp", listen;
  int listen_port = -1, limit = 100;
  std::vector<std::string> targets, fields;
  bool dry_run = false, disabled = false, yaml = false;
};

struct session {
  ctl_client client;
  const ctl_options& o;
  std::ostream& out;
  std::ostream& err;
};

bool is_digit(unsigned char c) { return std::isdigit(c); }

// "HOST:PORT" with IPv6 in brackets, the port 0 to 65535; or nothing.
std::optional<std::pair<std::string, int>> host_port(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  std::string host = text.substr(0, colon);
  const std::string port = text.substr(colon + 1);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  else if (host.find(':') != std::string::npos) return std::nullopt;
  if (host.empty() || port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), is_digit)) return std::nullopt;
  const int p = std::stoi(port);
  if (p > 65535) return std::nullopt;
  return std::pair{host, p};
}

CLI::Validator check(std::function<bool(const std::string&)> ok, const std::string& what) {
  return CLI::Validator([ok, what](std::string& v) { return ok(v) ? std::string() : "'" + v + "' is not " + what; }, what);
}

const CLI::Validator forward_id = check(
    [](const std::string& v) {
      return !v.empty() && v.size() < 19 && v[0] != '0' && std::all_of(v.begin(), v.end(), is_digit);
    },
    "an id (a positive integer)");
const CLI::Validator address = check([](const std::string& v) { return parse_endpoint(v).has_value(); },
                                     "http://HOST:PORT or HOST:PORT (IPv6 in brackets)");
const CLI::Validator target = check([](const std::string& v) { return host_port(v).has_value(); },
                                    "HOST:PORT (IPv6 in brackets)");
const CLI::Validator listen_address = check(
    [](const std::string& v) { return host_port(v).has_value() || host_port("h:" + v).has_value(); },
    "HOST:PORT or PORT (IPv6 in brackets)");
const CLI::Validator assignment = check([](const std::string& v) { return v.find('=') + 1 > 1; },
                                        "FIELD=VALUE");

// FIELD=VALUE pairs into body: VALUE as JSON when it parses as JSON, else as a string.
void add_fields(ctl_json& body, const std::vector<std::string>& pairs) {
  for (const auto& pair : pairs) {
    const auto eq = pair.find('=');
    const auto key = pair.substr(0, eq);
    if (body.contains(key)) throw ctl_error(ctl_usage, "field " + key + " is given twice");
    auto value = ctl_json::parse(pair.substr(eq + 1), nullptr, false);
    body[key] = value.is_discarded() ? ctl_json(pair.substr(eq + 1)) : std::move(value);
  }
}

ctl_json parse(const ctl_answer& a) {
  auto doc = ctl_json::parse(a.body, nullptr, false);
  if (doc.is_discarded()) throw ctl_error(ctl_failed, "the API's answer is not JSON: " + a.body.substr(0, 200));
  return doc;
}

// --json: the API's body as it came; otherwise what `human` makes of it.
void show(session& s, const ctl_answer& a, const std::function<std::string(const ctl_json&)>& human) {
  if (s.o.json) s.out << a.body << (a.body.ends_with('\n') ? "" : "\n");
  else s.out << human(parse(a));
}

// An ETag as If-Match wants it: quoted, unless it is "*" (any) or already quoted or weak.
std::string quoted_etag(std::string tag) {
  return tag.empty() || tag == "*" || tag.front() == '"' || tag.starts_with("W/") ? tag : "\"" + tag + "\"";
}

int list(session& s) {
  show(s, s.client.call("GET", "/api/v1/forwards"), forwards_text);
  return ctl_ok;
}

int get(session& s) {
  show(s, s.client.call("GET", forwards + s.o.id), forward_text);
  return ctl_ok;
}

int add(session& s) {
  ctl_json body = ctl_json::object();
  if (!s.o.name.empty()) body["name"] = s.o.name;
  body["protocol"] = s.o.protocol;
  if (!s.o.listen.empty()) {
    if (auto hp = host_port(s.o.listen)) {
      body["listen_host"] = hp->first;
      body["listen_port"] = hp->second;
    } else {
      body["listen_port"] = std::stoi(s.o.listen);
    }
  }
  if (s.o.listen_port >= 0) body["listen_port"] = s.o.listen_port;
  if (!s.o.targets.empty()) {
    body["targets"] = ctl_json::array();
    for (const auto& t : s.o.targets) body["targets"].push_back({{"host", host_port(t)->first}, {"port", host_port(t)->second}});
  }
  if (s.o.disabled) body["enabled"] = false;
  add_fields(body, s.o.fields);
  show(s, s.client.call("POST", "/api/v1/forwards", body.dump()), forward_text);
  return ctl_ok;
}

int set(session& s) {
  ctl_json body = ctl_json::object();
  add_fields(body, s.o.fields);
  show(s, s.client.call("PATCH", forwards + s.o.id, body.dump()), forward_text);
  return ctl_ok;
}

int enable(session& s, bool on) {
  show(s, s.client.call("PATCH", forwards + s.o.id, ctl_json{{"enabled", on}}.dump()), forward_line);
  return ctl_ok;
}

int rm(session& s) {
  s.client.call("DELETE", forwards + s.o.id);
  if (!s.o.json) s.out << "deleted forward " << s.o.id << "\n";
  return ctl_ok;
}

// Every page, following `next`; --json prints them as one answer of the API's shape.
int conns(session& s) {
  const std::string path = forwards + s.o.id + "/connections?limit=" + std::to_string(s.o.limit);
  auto all = ctl_json::array();
  std::string after;
  for (;;) {
    const auto page = parse(s.client.call("GET", path + (after.empty() ? "" : "&after=" + query_value(after))));
    for (const auto& c : page.value("connections", ctl_json::array())) all.push_back(c);
    const auto next = page.value("next", ctl_json());
    if (!next.is_string() || next == after) break;
    after = next.get<std::string>();
  }
  if (s.o.json) s.out << ctl_json{{"connections", all}, {"next", nullptr}}.dump() << "\n";
  else s.out << connections_text(all, std::chrono::system_clock::now());
  return ctl_ok;
}

int kill_connections(session& s) {
  if (s.o.connection.empty() == s.o.client.empty()) {
    throw ctl_error(ctl_usage, "kill: give either a connection id or --client CIDR");
  }
  const std::string path = forwards + s.o.id + "/connections";
  if (!s.o.connection.empty()) {
    s.client.call("DELETE", path + "/" + s.o.connection);
    if (!s.o.json) s.out << "closed connection " << s.o.connection << "\n";
    return ctl_ok;
  }
  show(s, s.client.call("DELETE", path + "?client=" + query_value(s.o.client)), [](const ctl_json& r) {
    const auto closed = r.value("closed", ctl_json());
    return "closed " + closed.dump() + (closed == 1 ? " connection\n" : " connections\n");
  });
  return ctl_ok;
}

int export_config(session& s) {
  const auto a = s.client.call("GET", "/api/v1/config");
  const bool yaml = s.o.yaml || is_yaml_name(s.o.file);
  const auto doc = parse(a);
  const std::string text = yaml ? json_to_yaml(doc) : s.o.json && s.o.file.empty() ? a.body : doc.dump(2) + "\n";
  if (s.o.file.empty() || s.o.file == "-") {
    s.out << text;
    s.err << "ETag " << a.etag << " (for apply --if-match)\n";  // not in the document, so `export > f` keeps it
    return ctl_ok;
  }
  std::ofstream f(s.o.file, std::ios::trunc);
  if (!(f << text) || !f.flush()) throw ctl_error(ctl_failed, "cannot write " + s.o.file + ": " + std::strerror(errno));
  if (!s.o.json) {
    s.out << "exported " << doc.value("forwards", ctl_json::array()).size() << " forwards to " << s.o.file << " (ETag " << a.etag << ")\n";
  }
  return ctl_ok;
}

int apply(session& s) {
  std::string text;
  if (s.o.file == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), {});
  } else {
    std::ifstream f(s.o.file);
    if (!f) throw ctl_error(ctl_failed, "cannot read " + s.o.file + ": " + std::strerror(errno));
    text.assign(std::istreambuf_iterator<char>(f), {});
  }
  std::string body;
  try {
    body = document_body(text, s.o.file);
  } catch (const std::runtime_error& e) {
    throw ctl_error(ctl_failed, s.o.file + ": " + e.what());
  }
  httplib::Headers headers;
  if (!s.o.if_match.empty()) headers.emplace("If-Match", quoted_etag(s.o.if_match));
  const auto a = s.client.call("PUT", std::string("/api/v1/config") + (s.o.dry_run ? "?dry_run=true" : ""), body, headers);
  const auto plan = parse(a);
  show(s, a, [&](const ctl_json& p) {
    return plan_text(p) + (s.o.dry_run ? "dry run: nothing was changed\n" : "applied (ETag " + a.etag + ")\n");
  });
  const bool errors = plan.contains("errors") && !plan["errors"].empty();
  return errors ? ctl_failed : ctl_ok;
}

using command = std::function<int(session&)>;

void declare(CLI::App& app, ctl_options& o, std::vector<std::pair<CLI::App*, command>>& commands) {
  app.description("The command-line client of a running portrelay daemon's API.");
  app.require_subcommand(1);
  app.fallthrough();  // the global flags may come after the subcommand too
  app.footer(
      "Environment: PORTRELAY_API (http://HOST:PORT or HOST:PORT) and PORTRELAY_TOKEN (the token itself,\n"
      "not a file), used when --api or --token-file is not given; the default is 127.0.0.1:7410 without a\n"
      "token. The global options may also follow the command.\n"
      "Exit status: 0 done, 1 refused by the API (its message on stderr), a dry run that lists errors, or a\n"
      "file that could not be used, 2 usage error, 3 the API cannot be reached.\n");
  app.add_option("--api", o.api, "the API's address (default: $PORTRELAY_API, else 127.0.0.1:7410)")
      ->check(address)->option_text("HOST:PORT");
  app.add_option("--token-file", o.token_file, "file holding the API token (default: the token in $PORTRELAY_TOKEN)")
      ->option_text("FILE");
  app.add_flag("--json", o.json, "print the API's JSON instead of tables");

  const auto sub = [&](const char* name, const char* what, command run) {
    auto* s = app.add_subcommand(name, what);
    commands.emplace_back(s, std::move(run));
    return s;
  };
  const auto id = [&](CLI::App* s) { s->add_option("ID", o.id, "forward id")->required()->check(forward_id)->type_name(""); };

  sub("list", "list the forwards", list);
  id(sub("get", "show one forward", get));
  auto* a = sub("add", "create a forward", add);
  a->add_option("--name", o.name, "its name");
  a->add_option("--protocol", o.protocol, "tcp or udp")->check(CLI::IsMember({"tcp", "udp"}))->capture_default_str();
  a->add_option("--listen", o.listen, "where it listens (the host defaults to 0.0.0.0)")
      ->check(listen_address)->option_text("HOST:PORT|PORT");
  a->add_option("--listen-port", o.listen_port, "the port it listens on (0: any free port)")
      ->check(CLI::Range(0, 65535))->option_text("PORT")->excludes("--listen");
  a->add_option("--target", o.targets, "a target; repeat for a pool")->check(target)->option_text("HOST:PORT");
  a->add_flag("--disabled", o.disabled, "create it disabled");
  a->add_option("--set", o.fields, "any other field (VALUE as JSON, else a string); repeatable")
      ->check(assignment)->option_text("FIELD=VALUE");
  auto* st = sub("set", "change fields of a forward: set ID FIELD=VALUE... (VALUE as JSON, else a string)", set);
  id(st);
  st->add_option("FIELD=VALUE", o.fields, "the fields to change")->required()->check(assignment)->type_name("");
  id(sub("rm", "delete a forward", rm));
  id(sub("enable", "enable a forward", [](session& s) { return enable(s, true); }));
  id(sub("disable", "disable a forward (its listener and connections close)", [](session& s) { return enable(s, false); }));
  auto* c = sub("conns", "list a forward's live connections and UDP sessions (every page)", conns);
  id(c);
  c->add_option("--limit", o.limit, "entries per request")->check(CLI::Range(1, 1000))->capture_default_str();
  auto* k = sub("kill", "close a connection: kill ID CID, or every match: kill ID --client CIDR", kill_connections);
  id(k);
  k->add_option("CID", o.connection, "connection id")->check(forward_id);
  k->add_option("--client", o.client, "close every connection from this prefix (0.0.0.0/0 and ::/0: all)")
      ->option_text("CIDR");
  auto* e = sub("export", "write the configuration: JSON, or YAML for a FILE ending .yaml or .yml", export_config);
  e->add_option("FILE", o.file, "where to write it (default: standard output)");
  e->add_flag("--yaml", o.yaml, "write YAML whatever the file name");
  auto* ap = sub("apply", "make the daemon's forwards those of FILE (JSON or YAML; - is standard input)", apply);
  ap->add_option("FILE", o.file, "the configuration")->required();
  ap->add_flag("--dry-run", o.dry_run, "show what would change and change nothing");
  ap->add_option("--if-match", o.if_match, "apply only if the configuration is still this one (its ETag)")
      ->option_text("ETAG");
}

// "unknown command 'lst' (commands: list, get, ...)" when the first word that is not an option (or
// the value of --api or --token-file) names no command; CLI11 would only say one is required.
std::optional<std::string> unknown_command(const CLI::App& app, const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    if (a == "--api" || a == "--token-file") {
      ++i;
      continue;
    }
    if (a.starts_with("-")) continue;
    std::string names;
    for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      if (sub->get_name() == a) return std::nullopt;
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    return "unknown command '" + a + "' (commands: " + names + ")";
  }
  return std::nullopt;
}

}  // namespace

int run_ctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  ctl_options o;
  CLI::App app("", "portrelay ctl");
  std::vector<std::pair<CLI::App*, command>> commands;
  declare(app, o, commands);
  try {
    app.parse(std::vector<std::string>(args.rbegin(), args.rend()));  // CLI11 takes them last first
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, out, err);
  } catch (const CLI::ParseError& e) {
    err << "portrelay ctl: " << unknown_command(app, args).value_or(e.what()) << "\n(see portrelay ctl --help)\n";
    return ctl_usage;
  }
  try {
    session s{ctl_client(resolve_endpoint(o.api), resolve_token(o.token_file)), o, out, err};
    for (const auto& [sub, run] : commands) {
      if (sub->parsed()) return run(s);
    }
  } catch (const ctl_error& e) {
    err << "portrelay ctl: " << e.what() << "\n";
    return e.status;
  } catch (const std::exception& e) {  // an answer of another shape than the API's (nlohmann's type errors)
    err << "portrelay ctl: unexpected answer from the API: " << e.what() << "\n";
    return ctl_failed;
  }
  return ctl_usage;
}

}  // namespace api
