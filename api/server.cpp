// server: httplib wiring; every answer, including httplib's own errors, leaves as JSON.
#include "api/server.hpp"

#include "api/forward_json.hpp"
#include "api/http_guard.hpp"
#include "api/metrics.hpp"
#include "relay/forward_spec.hpp"
#include "web/assets.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <charconv>
#include <optional>
#include <stdexcept>

namespace api {

namespace {

constexpr std::string_view forwards_path = "/api/v1/forwards";
constexpr std::string_view metrics_path = "/metrics";

// What a token guards: the API and the metrics. The admin page itself and /healthz stay open.
bool needs_token(const std::string& path) { return path.rfind("/api/", 0) == 0 || path == metrics_path; }
// Past this much of an over-long chunked body the connection is dropped rather than drained.
constexpr std::size_t drain_limit = 8 * 1024 * 1024;

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

// Reads the whole body, keeping at most max_body bytes. A body that is too long is drained (up to a
// bound) so the client reads our 413 instead of a connection reset.
struct body_result {
  std::string text;
  bool too_large = false;
  bool failed = false;
};

body_result read_body(const httplib::ContentReader& reader, const httplib::Request& req) {
  body_result out;
  std::size_t seen = 0;
  bool ok = reader([&](const char* data, std::size_t len) {
    seen += len;
    if (seen > server::max_body) {
      out.too_large = true;
      return seen <= drain_limit;
    }
    out.text.append(data, len);
    return true;
  });
  // httplib refuses a Content-Length over the limit itself (and skips that body) before we see a byte.
  if (!ok && !out.too_large) {
    const auto length = req.get_header_value<std::uint64_t>("Content-Length");
    out.too_large = length > server::max_body;
    // No Content-Length and no chunking means no body (curl -X PUT), not a broken one.
    out.failed = !out.too_large && (req.has_header("Content-Length") || req.has_header("Transfer-Encoding"));
  }
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

void write(const reply& r, httplib::Response& res) {
  res.status = r.status;
  if (!r.location.empty()) res.set_header("Location", r.location);
  if (!r.allow.empty()) res.set_header("Allow", r.allow);
  if (r.status == 401) res.set_header("WWW-Authenticate", "Bearer realm=\"portrelay\"");
  if (r.status != 204) {
    res.set_content(r.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", "application/json");
  }
}

}  // namespace

server::server(controller& ctl, server_options options) : ctl_(ctl), options_(std::move(options)) {}

void server::configure(httplib::Server& http) {
  http.set_payload_max_length(max_body);
  http.set_read_timeout(10, 0);
  http.set_write_timeout(10, 0);
  http.set_keep_alive_timeout(5);
  // httplib closes a kept-alive connection after 5 requests by default; a script or the page would
  // pay a new connection every few requests.
  http.set_keep_alive_max_count(keep_alive_max_requests);
  // httplib writes an answer's head and body separately; with Nagle the body would wait for the
  // client's delayed ACK (about 40 ms on every answer after the first on a kept-alive connection).
  // Set on the listener, which accepted connections inherit.
  http.set_tcp_nodelay(true);
  // httplib's default adds SO_REUSEPORT, which would let a second daemon share the API port unnoticed.
  http.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  // An admin page: no inline script, nothing from elsewhere, never framed, never sniffed.
  http.set_default_headers({
      {"Content-Security-Policy",
       "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
      {"X-Content-Type-Options", "nosniff"},
      {"X-Frame-Options", "DENY"},
      {"Referrer-Policy", "no-referrer"},
  });
  http.set_pre_routing_handler([this](const auto& req, auto& res) { return guard(req, res); });

  auto plain = [this](const httplib::Request& req, httplib::Response& res) {
    if (const auto* a = web::find_asset(req.path); a && req.method != "OPTIONS") return serve_asset(*a, req, res);
    if (req.path == metrics_path && (req.method == "GET" || req.method == "HEAD")) {
      auto text = render_metrics(ctl_.engine());
      if (!text) return write(error_reply(503, "metrics_unavailable", text.error().message), res);
      res.set_content(text.value(), metrics_content_type);
      return;
    }
    write(route(req, nullptr), res);
  };
  auto with_body = [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& body) {
    write(route(req, &body), res);
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

reply server::route(const httplib::Request& req, const httplib::ContentReader* reader) {
  const std::string& m = req.method;
  body_result body;
  if (reader) body = read_body(*reader, req);
  if (body.failed) return error_reply(400, "bad_request", "the request body could not be read");

  auto parse = [&](auto&& then) -> reply {
    if (!is_json(req)) return error_reply(415, "unsupported_media_type", "Content-Type must be application/json");
    if (body.too_large) return error_reply(413, "payload_too_large", "the request body is larger than 64 KiB");
    json doc;
    if (auto e = parse_body(body.text, doc)) return error_reply(*e);
    return then(doc);
  };

  if (req.path == "/healthz") {
    if (m == "GET" || m == "HEAD") return {200, json{{"status", "ok"}}, {}, {}};
    return method_not_allowed("GET, HEAD");
  }
  if (req.path == metrics_path) return method_not_allowed("GET, HEAD");
  if (req.path == forwards_path) {
    if (m == "GET" || m == "HEAD") return ctl_.list();
    if (m == "POST") return parse([&](const json& doc) { return ctl_.create(doc); });
    return method_not_allowed("GET, HEAD, POST");
  }
  if (auto id = forward_id(req.path)) {
    if (m == "GET" || m == "HEAD") return ctl_.get(*id);
    if (m == "DELETE") return ctl_.remove(*id);
    if (m == "PATCH") {
      if (!ctl_.exists(*id)) return ctl_.get(*id);  // the 404, whatever the body
      return parse([&](const json& doc) { return ctl_.patch(*id, doc); });
    }
    return method_not_allowed("GET, HEAD, PATCH, DELETE");
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
      auto l = std::make_unique<listener>();
      configure(l->http);
      l->http.set_address_family(address.find(':') != std::string::npos ? AF_INET6 : AF_INET);
      if (port == 0) {
        const int got = l->http.bind_to_any_port(address);
        if (got > 0) port = static_cast<std::uint16_t>(got);
        else failed = relay::format_endpoint(address, 0);
      } else if (!l->http.bind_to_port(address, port)) {
        failed = relay::format_endpoint(address, port);
      }
      if (!failed.empty()) break;
      listeners_.push_back(std::move(l));
    }
    if (failed.empty()) {
      options_.port = port;
      return;
    }
    for (auto& l : listeners_) release(*l);
    listeners_.clear();
    if (!any_port || attempt + 1 == attempts) {
      throw std::runtime_error("cannot listen on " + failed + ": address in use or not available");
    }
  }
}

void server::start_one(listener& l) {
  l.thread = std::thread([&l] {
    l.http.listen_after_bind();
    l.listen_returned = true;
  });
  while (!l.http.is_running() && !l.listen_returned) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void server::release(listener& l) {
  if (!l.thread.joinable()) start_one(l);  // httplib closes a bound socket only from a running loop
  l.http.stop();
  l.thread.join();
}

void server::start() {
  for (auto& l : listeners_) start_one(*l);
}

void server::stop() {
  for (auto& l : listeners_) {
    if (l->thread.joinable()) l->http.stop();
  }
  for (auto& l : listeners_) {
    if (l->thread.joinable()) {
      l->thread.join();
    } else {
      release(*l);  // bound, never started
    }
  }
  listeners_.clear();
}

std::string server::url() const { return "http://" + relay::format_endpoint(options_.host, options_.port) + "/"; }

}  // namespace api
