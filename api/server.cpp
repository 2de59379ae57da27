// server: httplib wiring; every answer, including httplib's own errors, leaves as JSON.
#include "api/server.hpp"

#include "api/forward_json.hpp"
#include "api/http_guard.hpp"
#include "api/metrics.hpp"
#include "relay/forward_spec.hpp"
#include "relay/ip_prefix.hpp"
#include "web/assets.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <charconv>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>

namespace api {

namespace {

constexpr std::string_view forwards_path = "/api/v1/forwards";
constexpr std::string_view fleet_path = "/api/v1/fleet";
constexpr std::string_view metrics_path = "/metrics";
constexpr std::string_view config_path = "/api/v1/config";

// What a token guards: the API and the metrics. The admin page itself and /healthz stay open.
bool needs_token(const std::string& path) { return path.rfind("/api/", 0) == 0 || path == metrics_path; }

std::optional<std::int64_t> forward_id(std::string_view path) {
  if (path.size() <= forwards_path.size() + 1 || path.substr(0, forwards_path.size()) != forwards_path ||
      path[forwards_path.size()] != '/') {
    return std::nullopt;
  }
  auto digits = path.substr(forwards_path.size() + 1);
  std::int64_t id = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), id);
  if (ec != std::errc() || end != digits.data() + digits.size() || id <= 0 || digits[0] == '0') return std::nullopt;
  return id;
}

// A decimal number without sign or leading zero, in [low, high].
std::optional<std::uint64_t> decimal(std::string_view text, std::uint64_t low, std::uint64_t high) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || (text[0] == '0' && text.size() > 1) ||
      n < low || n > high) {
    return std::nullopt;
  }
  return n;
}

// /api/v1/forwards/{id}/connections[/{cid}]: the forward's id and, for one connection, its id.
struct connections_target {
  std::int64_t forward;
  std::optional<std::uint64_t> connection;
};

std::optional<connections_target> connections_path(std::string_view path) {
  constexpr std::string_view tail = "/connections";
  const auto prefix = std::string(forwards_path) + "/";
  if (path.substr(0, prefix.size()) != prefix) return std::nullopt;
  path.remove_prefix(prefix.size());
  const auto slash = path.find('/');
  const auto id = decimal(path.substr(0, slash), 1, std::numeric_limits<std::int64_t>::max());
  if (!id || slash == std::string_view::npos) return std::nullopt;
  path.remove_prefix(slash);
  if (path.substr(0, tail.size()) != tail) return std::nullopt;
  path.remove_prefix(tail.size());
  connections_target out{static_cast<std::int64_t>(*id), std::nullopt};
  if (path.empty()) return out;
  if (path[0] != '/' || !(out.connection = decimal(path.substr(1), 1, std::numeric_limits<std::uint64_t>::max()))) {
    return std::nullopt;
  }
  return out;
}

reply invalid_query(std::string message, std::string parameter) {
  return error_reply(api_error{400, "invalid_query", std::move(message), std::move(parameter)});
}

// Why a route that takes the parameters `takes` refuses the query, read from the raw request target:
// an unknown parameter (a misspelt dry_run must not apply for real), one given twice, or a piece that
// is not one key=value with a value free of '=' and '&' once decoded (httplib would keep what follows
// the last '=', so "client=10.0.0.0/8=0.0.0.0/0" would close every client).
std::optional<reply> check_query(const httplib::Request& req, std::initializer_list<std::string_view> takes) {
  const auto mark = req.target.find('?');
  if (mark == std::string::npos) return std::nullopt;
  const std::string_view query = std::string_view(req.target).substr(mark + 1);
  std::vector<std::string> seen;
  for (std::size_t start = 0; start < query.size();) {
    auto end = query.find('&', start);
    if (end == std::string_view::npos) end = query.size();
    const auto piece = query.substr(start, end - start);
    start = end + 1;
    if (piece.empty()) continue;
    const auto eq = piece.find('=');
    const auto key = httplib::detail::decode_url(std::string(piece.substr(0, eq)), true);
    if (std::find(takes.begin(), takes.end(), key) == takes.end()) {
      std::string known;
      for (const auto t : takes) known += (known.empty() ? "" : ", ") + std::string(t);
      return invalid_query("unknown query parameter '" + relay::printable(key.substr(0, 64)) + "' (this path takes " +
                               (known.empty() ? "none" : known) + ")",
                           relay::printable(key.substr(0, 64)));
    }
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) return invalid_query(key + " may be given once", key);
    seen.push_back(key);
    const auto value = eq == std::string_view::npos ? std::string() : httplib::detail::decode_url(std::string(piece.substr(eq + 1)), true);
    if (eq == std::string_view::npos || value.find_first_of("=&") != std::string::npos) {
      return invalid_query(key + " must be given as " + key + "=VALUE, the value without '=' or '&'", key);
    }
  }
  return std::nullopt;
}

// Every If-Match field line as one list (RFC 9110 section 5.3: lines of a list field combine with
// commas), or nothing when there is none.
std::optional<std::string> if_match_of(const httplib::Request& req) {
  const auto n = req.get_header_value_count("If-Match");
  if (n == 0) return std::nullopt;
  std::string all;
  for (std::size_t i = 0; i < n; ++i) all += (i ? ", " : "") + req.get_header_value("If-Match", i);
  return all;
}

// The live connections of a forward known to exist: GET lists a page, DELETE closes those of the
// clients in the `client` prefix (required, so that nobody closes everything by accident).
reply connections_route(controller& ctl, std::int64_t id, const httplib::Request& req) {
  if (auto refused = req.method == "DELETE" ? check_query(req, {"client"}) : check_query(req, {"limit", "after"})) {
    return *refused;
  }
  if (req.method == "DELETE") {
    if (!req.has_param("client")) {
      return invalid_query("client is required: the prefix of the clients to close, such as 192.0.2.7/32 "
                           "(a /0 of either family, 0.0.0.0/0 or ::/0, closes every connection)",
                           "client");
    }
    const auto prefix = relay::parse_prefix(req.get_param_value("client"));
    if (const auto* why = std::get_if<std::string>(&prefix)) return invalid_query("client: " + *why, "client");
    return ctl.close_connections(id, std::get<relay::ip_prefix>(prefix));
  }
  std::size_t limit = connections_page_default;
  if (req.has_param("limit")) {
    const auto n = decimal(req.get_param_value("limit"), 1, connections_page_max);
    if (!n) {
      return invalid_query("limit must be a whole number from 1 to " + std::to_string(connections_page_max), "limit");
    }
    limit = static_cast<std::size_t>(*n);
  }
  std::uint64_t after = 0;
  if (req.has_param("after")) {
    const auto n = decimal(req.get_param_value("after"), 0, std::numeric_limits<std::uint64_t>::max());
    if (!n) return invalid_query("after must be the \"next\" of an earlier page", "after");
    after = *n;
  }
  return ctl.connections(id, after, limit);
}

bool is_json(const httplib::Request& req) {
  std::string type = req.get_header_value("Content-Type");
  type = type.substr(0, type.find(';'));
  type.erase(std::remove_if(type.begin(), type.end(), [](unsigned char c) { return std::isspace(c); }), type.end());
  std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
  return type == "application/json";
}

reply method_not_allowed(std::string allow) {
  auto r = error_reply(405, "method_not_allowed", "this path supports " + allow);
  r.allow = std::move(allow);
  return r;
}

// Reads the whole body; the front has already bounded it and read all of it.
struct body_result {
  std::string text;
  bool failed = false;
};

body_result read_body(const httplib::ContentReader& reader, const httplib::Request& req) {
  body_result out;
  const bool ok = reader([&](const char* data, std::size_t len) {
    out.text.append(data, len);
    return true;
  });
  // No Content-Length and no chunking means no body (curl -X PUT), not a broken one.
  out.failed = !ok && (req.has_header("Content-Length") || req.has_header("Transfer-Encoding"));
  return out;
}

// The admin page: revalidated on every load (no-cache) and answered 304 when the ETag still matches.
void serve_asset(const web::asset& a, const httplib::Request& req, httplib::Response& res) {
  res.set_header("ETag", std::string(a.etag));
  res.set_header("Cache-Control", "no-cache");
  if (req.get_header_value("If-None-Match") == a.etag) {
    res.status = 304;
    return;
  }
  res.status = 200;
  res.set_content(std::string(a.body), std::string(a.content_type) + "; charset=utf-8");
}

constexpr const char* bearer_challenge = "Bearer realm=\"portrelay\"";

// An admin page: no inline script, nothing from elsewhere, never framed, never sniffed.
const httplib::Headers& security_headers() {
  static const httplib::Headers headers{
      {"Content-Security-Policy",
       "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
      {"X-Content-Type-Options", "nosniff"},
      {"X-Frame-Options", "DENY"},
      {"Referrer-Policy", "no-referrer"},
  };
  return headers;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 500: return "Internal Server Error";
    default: return status < 500 ? "Refused" : "Error";
  }
}

// The front's own answers (limits, framing, deadlines), shaped like every other error answer.
std::string error_response(int status) {
  const std::string body = error_body_for_status(status).dump() + "\n";
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  for (const auto& [name, value] : security_headers()) out += name + ": " + value + "\r\n";
  if (status == 401) out += std::string("WWW-Authenticate: ") + bearer_challenge + "\r\n";
  out += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
  return out;
}

// One whole request, read from memory; the answer collected in memory, for the front to write.
class exchange_stream final : public httplib::Stream {
 public:
  explicit exchange_stream(const http_exchange& ex) : ex_(ex), left_(ex.request) {}

  bool is_readable() const override { return true; }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, size_t size) override {
    size = std::min(size, left_.size());
    std::memcpy(ptr, left_.data(), size);
    left_.remove_prefix(size);
    return static_cast<ssize_t>(size);
  }
  ssize_t write(const char* ptr, size_t size) override {
    answer.append(ptr, size);
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = ex_.remote.address().to_string();
    port = ex_.remote.port();
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = ex_.local.address().to_string();
    port = ex_.local.port();
  }
  // No socket: httplib then never compares one with FD_SETSIZE (its select() limit).
  socket_t socket() const override { return INVALID_SOCKET; }

  std::string answer;

 private:
  const http_exchange& ex_;
  std::string_view left_;
};

// Fleet mode: which set an answer comes from, the shared one or this host's local copy (etcd unreachable).
constexpr const char* store_header = "Portrelay-Store";

void write(const reply& r, httplib::Response& res) {
  res.status = r.status;
  if (!r.location.empty()) res.set_header("Location", r.location);
  if (!r.allow.empty()) res.set_header("Allow", r.allow);
  if (!r.etag.empty()) res.set_header("ETag", r.etag);
  if (r.status == 401) res.set_header("WWW-Authenticate", bearer_challenge);
  if (r.status != 204) {
    res.set_content(r.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", "application/json");
  }
}

}  // namespace

front_limits server::default_limits() {
  front_limits l;
  l.request.max_body = max_body;
  l.max_requests_per_connection = keep_alive_max_requests;
  return l;
}

server::server(controller& ctl, server_options options, front_limits limits)
    : ctl_(ctl),
      options_(std::move(options)),
      front_(limits, [this](const http_exchange& ex) { return handle(ex); }, error_response,
             [this](std::string_view head) { return check_body(head); }) {
  configure();
}

void server::configure() {
  auto& http = http_;
  const auto& limits = front_.limits();
  // The front has already bounded the body; these say the same to httplib and to clients
  // ("Keep-Alive: timeout=5, max=10000").
  http.set_payload_max_length(limits.request.max_body);
  http.set_keep_alive_timeout(std::chrono::duration_cast<std::chrono::seconds>(limits.keep_alive_timeout).count());
  http.set_keep_alive_max_count(limits.max_requests_per_connection);
  http.set_default_headers(security_headers());
  http.set_pre_routing_handler([this](const auto& req, auto& res) { return guard(req, res); });

  auto plain = [this](const httplib::Request& req, httplib::Response& res) {
    if (const auto* a = web::find_asset(req.path); a && req.method != "OPTIONS") return serve_asset(*a, req, res);
    if (req.path == metrics_path && (req.method == "GET" || req.method == "HEAD")) {
      auto text = render_metrics(ctl_.engine(), front_.counts());
      if (!text) return write(error_reply(503, "metrics_unavailable", text.error().message), res);
      res.set_content(text.value(), metrics_content_type);
      return;
    }
    write(route(req, nullptr), res);
    mark_store(res);
  };
  auto with_body = [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& body) {
    write(route(req, &body), res);
    mark_store(res);
  };
  http.Get(".*", plain);
  http.Options(".*", plain);
  http.Post(".*", with_body);
  http.Put(".*", with_body);
  http.Patch(".*", with_body);
  http.Delete(".*", with_body);

  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) res.set_content(error_body_for_status(res.status).dump() + "\n", "application/json");
  });
  http.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("api: {} {}: {}", req.method, req.path, what);
    write(error_reply(500, "internal_error", "the server failed to handle the request; see its log"), res);
  });
}

server::~server() { stop(); }

int server::check_body(std::string_view head) const {
  // Every route that takes a body needs the token, so without it no body is read: a client without
  // the token can make the API hold one request head, never a body.
  if (options_.token.empty()) return 0;
  // httplib percent-decodes header values before the guard compares them: so must this check.
  const auto authorization = std::string(field_value(head, "Authorization").value_or(""));
  return bearer_matches(httplib::detail::decode_url(authorization, false), options_.token) ? 0 : 401;
}

http_answer server::handle(const http_exchange& ex) {
  exchange_stream stream(ex);
  bool closed = false;
  const bool ok = http_.process_request(stream, ex.last, closed, nullptr);
  if (stream.answer.empty()) return {error_response(400), true};
  return {std::move(stream.answer), closed || !ok};
}

httplib::Server::HandlerResponse server::guard(const httplib::Request& req, httplib::Response& res) {
  using hr = httplib::Server::HandlerResponse;
  if (options_.token.empty()) {
    // Without a token the API is on loopback; a foreign Host means a page that rebound its name to us.
    if (req.has_header("Host") && !host_allowed(req.get_header_value("Host"), options_.host, options_.port)) {
      write(error_reply(403, "host_not_allowed", "the Host header does not name this API"), res);
      return hr::Handled;
    }
  } else if (needs_token(req.path) &&
             !bearer_matches(req.get_header_value("Authorization"), options_.token)) {
    write(error_reply(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required"), res);
    return hr::Handled;
  }
  return hr::Unhandled;
}

void server::mark_store(httplib::Response& res) const {
  if (auto state = ctl_.store_state(); !state.empty()) res.set_header(store_header, state);
}

reply server::route(const httplib::Request& req, const httplib::ContentReader* reader) {
  const std::string& m = req.method;
  body_result body;
  if (reader) body = read_body(*reader, req);
  if (body.failed) return error_reply(400, "bad_request", "the request body could not be read");

  auto parse = [&](auto&& then) -> reply {
    if (!is_json(req)) return error_reply(415, "unsupported_media_type", "Content-Type must be application/json");
    json doc;
    if (auto e = parse_body(body.text, doc)) return error_reply(*e);
    return then(doc);
  };

  if (req.path == "/healthz") {
    if (m == "GET" || m == "HEAD") return {200, json{{"status", "ok"}}, {}, {}};
    return method_not_allowed("GET, HEAD");
  }
  if (req.path == metrics_path) return method_not_allowed("GET, HEAD");
  if (req.path == fleet_path) {
    if (m == "GET" || m == "HEAD") return ctl_.fleet_info();
    return method_not_allowed("GET, HEAD");
  }
  if (req.path == forwards_path) {
    if (m == "GET" || m == "HEAD") return ctl_.list();
    if (m == "POST") return parse([&](const json& doc) { return ctl_.create(doc); });
    return method_not_allowed("GET, HEAD, POST");
  }
  if (req.path == config_path) {
    if (m != "GET" && m != "HEAD" && m != "PUT") return method_not_allowed("GET, HEAD, PUT");
    if (auto refused = check_query(req, m == "PUT" ? std::initializer_list<std::string_view>{"dry_run"}
                                                   : std::initializer_list<std::string_view>{})) {
      return *refused;
    }
    if (m == "GET" || m == "HEAD") return ctl_.config();
    const auto dry_run = req.get_param_value("dry_run");
    const bool valid = dry_run == "true" || dry_run == "false" || !req.has_param("dry_run");
    if (req.get_param_value_count("dry_run") > 1 || !valid) {
      return error_reply(api_error{400, "invalid_query", "dry_run must be true or false, given once", "dry_run"});
    }
    const auto if_match = if_match_of(req);
    return parse([&](const json& doc) { return ctl_.put_config(doc, dry_run == "true", if_match); });
  }
  if (auto id = forward_id(req.path)) {
    if (m == "GET" || m == "HEAD") {
      if (auto refused = check_query(req, {"per_port"})) return *refused;
      const auto per_port = req.get_param_value("per_port");
      const bool valid = per_port == "true" || per_port == "false" || !req.has_param("per_port");
      if (req.get_param_value_count("per_port") > 1 || !valid) {
        return error_reply(api_error{400, "invalid_query", "per_port must be true or false, given once", "per_port"});
      }
      return ctl_.get(*id, per_port == "true");
    }
    if (m == "DELETE") return ctl_.remove(*id);
    if (m == "PATCH") {
      if (!ctl_.exists(*id)) return ctl_.get(*id);  // the 404, whatever the body
      return parse([&](const json& doc) { return ctl_.patch(*id, doc); });
    }
    return method_not_allowed("GET, HEAD, PATCH, DELETE");
  }
  if (auto at = connections_path(req.path)) {
    if (at->connection) {
      if (m == "DELETE") return ctl_.close_connection(at->forward, *at->connection);
      return method_not_allowed("DELETE");
    }
    if (m != "GET" && m != "HEAD" && m != "DELETE") return method_not_allowed("GET, HEAD, DELETE");
    if (!ctl_.exists(at->forward)) return ctl_.get(at->forward);  // the 404, whatever the query
    return connections_route(ctl_, at->forward, req);
  }
  return error_reply(404, "not_found", "there is nothing at " + req.path);
}

namespace {

// Whether this host can listen on `ip` at all (the family enabled, the address configured).
bool can_listen_on(const asio::ip::address& ip) {
  asio::io_context io;
  asio::ip::tcp::socket probe(io);
  std::error_code ec;
  probe.open(ip.is_v6() ? asio::ip::tcp::v6() : asio::ip::tcp::v4(), ec);
  if (!ec) probe.bind({ip, 0}, ec);
  return !ec;
}

}  // namespace

std::vector<std::string> listen_addresses(const std::string& host) {
  if (host != "localhost") return {host};
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  std::error_code ec;
  const auto found = resolver.resolve(host, "", ec);
  if (ec) throw std::runtime_error("cannot resolve localhost: " + ec.message());
  std::vector<std::string> out;
  bool v4 = false, v6 = false;
  for (const auto& entry : found) {
    const auto ip = entry.endpoint().address();
    bool& seen = ip.is_v6() ? v6 : v4;
    // ::1 listed in /etc/hosts on a host with IPv6 off is skipped, not a failed start.
    if (seen || !ip.is_loopback() || !can_listen_on(ip)) continue;
    seen = true;
    out.push_back(ip.to_string());
  }
  if (out.empty()) throw std::runtime_error("localhost resolves to no loopback address this host can listen on");
  return out;
}

void server::bind() { bind(listen_addresses(options_.host)); }

void server::bind(const std::vector<std::string>& addresses) {
  // With port 0 the first address picks the port and the others must take the same one, which
  // another program may hold there: then every listener is released and a new port tried.
  constexpr int attempts = 16;
  const bool any_port = options_.port == 0;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    std::uint16_t port = any_port ? 0 : options_.port;
    std::string failed;
    for (const auto& address : addresses) {
      try {
        const auto bound = front_.listen({asio::ip::make_address(address), port});
        port = bound.port();
      } catch (const std::exception& e) {
        failed = e.what();  // "bind 127.0.0.1:7410: Address already in use"
        break;
      }
    }
    if (failed.empty()) {
      options_.port = port;
      return;
    }
    front_.close_listeners();
    if (!any_port || attempt + 1 == attempts) throw std::runtime_error("API: " + failed);
  }
}

void server::start() { front_.start(); }

void server::stop() { front_.stop(); }

std::string server::url() const { return "http://" + relay::format_endpoint(options_.host, options_.port) + "/"; }

}  // namespace api
