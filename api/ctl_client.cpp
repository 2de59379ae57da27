// ctl_client: the address and token of `portrelay ctl`, and its requests with their failures worded.
#include "api/ctl_client.hpp"

#include "service.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>

namespace api {

namespace {

constexpr std::uint16_t default_port = 7410;  // the daemon's default --api port

std::optional<std::uint16_t> parse_port(std::string_view digits) {
  std::uint16_t port = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || port == 0) return std::nullopt;
  return port;
}

std::string trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return std::string(text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1));
}

// The API's error answer as one line: its message, then the status, code, forward and field.
std::string api_message(const ctl_answer& a, bool sent_token) {
  const auto body = nlohmann::json::parse(a.body, nullptr, false);
  if (body.is_discarded() || !body.contains("error") || !body["error"].is_object()) {
    return "the API answered " + std::to_string(a.status) + (a.body.empty() ? "" : ": " + trim(a.body.substr(0, 200)));
  }
  const auto& e = body["error"];
  const auto text = [&](const char* key) { return e.contains(key) && e[key].is_string() ? e[key].get<std::string>() : ""; };
  std::string line = text("message") + " (" + std::to_string(a.status) + " " + text("code");
  if (!text("forward").empty()) line += ", forward " + text("forward");
  if (!text("field").empty()) line += ", field " + text("field");
  line += ")";
  if (a.status == 401) {
    line += sent_token ? "; the token given (--token-file, else PORTRELAY_TOKEN) was refused"
                       : "; give the token with --token-file FILE, or PORTRELAY_TOKEN holding the token itself";
  }
  return line;
}

}  // namespace

std::optional<ctl_endpoint> parse_endpoint(std::string_view text) {
  if (text.starts_with("http://")) text.remove_prefix(7);
  if (text.ends_with('/')) text.remove_suffix(1);
  ctl_endpoint e;
  std::string_view host = text, port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.empty() && !rest.starts_with(':')) return std::nullopt;
    if (!rest.empty()) port = rest.substr(1);
    if (rest == ":") return std::nullopt;
  } else if (const auto colon = text.find(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (port.empty() || port.find(':') != std::string_view::npos) return std::nullopt;  // IPv6 needs brackets
  }
  const bool host_ok = !host.empty() && std::all_of(host.begin(), host.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '%' || c == '_';
  });
  if (!host_ok) return std::nullopt;
  // The port is always given: a bare "7420" would otherwise be read as the IPv4 number 0.0.28.252.
  auto p = parse_port(port);
  if (!p) return std::nullopt;
  e.host = std::string(host);
  e.port = *p;
  return e;
}

std::string endpoint_url(const ctl_endpoint& e) {
  const bool v6 = e.host.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + e.host + "]" : e.host) + ":" + std::to_string(e.port);
}

ctl_endpoint resolve_endpoint(const std::string& api_flag) {
  if (!api_flag.empty()) return *parse_endpoint(api_flag);  // the flag's check has passed it
  if (const char* env = std::getenv("PORTRELAY_API"); env && *env) {
    if (auto e = parse_endpoint(env)) return *e;
    throw ctl_error(ctl_usage, "PORTRELAY_API: '" + std::string(env) +
                                   "' is not http://HOST:PORT or HOST:PORT (IPv6 in brackets)");
  }
  return {"127.0.0.1", default_port};
}

std::string resolve_token(const std::string& token_file_flag) {
  if (!token_file_flag.empty()) {
    std::string error;
    auto token = service::read_token_file(token_file_flag, error);
    if (!token) throw ctl_error(ctl_usage, error);
    return *token;
  }
  if (const char* env = std::getenv("PORTRELAY_TOKEN")) return trim(env);
  return {};
}

ctl_client::ctl_client(ctl_endpoint endpoint, const std::string& token)
    : endpoint_(std::move(endpoint)), client_(endpoint_.host, endpoint_.port) {
  client_.set_connection_timeout(5);
  client_.set_read_timeout(30);
  client_.set_write_timeout(30);
  if (!token.empty()) client_.set_bearer_token_auth(token);
  sent_token_ = !token.empty();
}

ctl_answer ctl_client::call(const std::string& method, const std::string& path, const std::string& body,
                            const httplib::Headers& headers) {
  httplib::Request req;
  req.method = method;
  req.path = path;
  req.headers = headers;
  if (!body.empty()) {
    req.body = body;
    req.set_header("Content-Type", "application/json");
  }
  auto res = client_.send(req);
  const std::string where = "the API at " + endpoint_url(endpoint_);
  if (!res) {
    switch (res.error()) {
      case httplib::Error::Connection:
        throw ctl_error(ctl_unreachable, "cannot connect to " + where +
                                             " (is the daemon running there? see --api and PORTRELAY_API)");
      case httplib::Error::ConnectionTimeout:
        throw ctl_error(ctl_unreachable, "cannot connect to " + where + ": no answer to the connect within 5 s");
      case httplib::Error::Read:
        throw ctl_error(ctl_unreachable, where + " did not answer within 30 s, or closed the connection");
      default:
        throw ctl_error(ctl_unreachable, "request to " + where + " failed: " + httplib::to_string(res.error()));
    }
  }
  ctl_answer a{res->status, res->body, res->get_header_value("ETag")};
  if (a.status >= 400) throw ctl_error(ctl_failed, api_message(a, sent_token_));
  return a;
}

std::string query_value(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += {'%', hex[c >> 4], hex[c & 15]};
    }
  }
  return out;
}

}  // namespace api
