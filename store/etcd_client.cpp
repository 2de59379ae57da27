// etcd_client: etcd v3's JSON gateway over cpp-httplib: one HTTP exchange per request, endpoint
// failover, the auth token, and the watch stream.
#include "store/etcd_client.hpp"

#include "store/etcd_wire.hpp"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>

namespace store::etcd {

using wire::json;

namespace {

// What came back from one HTTP exchange.
struct answer {
  int status = 0;     // 0: no HTTP answer
  std::string body;   // an unreadable answer when `status` is set and this is no JSON
  httplib::Error error = httplib::Error::Success;

  // True when the request never reached etcd (connect or TLS handshake failed), so that another
  // endpoint may take it whatever it is.
  bool unsent() const {
    using E = httplib::Error;
    return status == 0 && (error == E::Connection || error == E::ConnectionTimeout || error == E::SSLConnection ||
                           error == E::BindIPAddress);
  }
};

constexpr auto watch_read_timeout = std::chrono::hours(1);  // see watch_create_request's progress_notify

// TLS failures that no other endpoint and no later retry cures: throws them as etcd's refusal.
void refuse_tls_failure(const answer& a, const endpoint& e) {
  if (a.status != 0) return;
  if (a.error == httplib::Error::SSLServerVerification) {
    throw error("etcd at " + e.text + ": the server's certificate is not trusted (by the CA file, or the system's CAs)", false);
  }
  if (a.error == httplib::Error::SSLLoadingCerts) throw error("etcd at " + e.text + ": cannot load the CA file", false);
}

}  // namespace

struct client::impl {
  options opts;
  std::atomic<std::size_t> current{0};
  std::mutex token_mutex;
  std::string token;  // guarded by token_mutex

  std::atomic<bool> watch_stopped{false};
  std::mutex watch_mutex;
  httplib::ClientImpl* watch_connection = nullptr;  // guarded by watch_mutex

  std::unique_ptr<httplib::ClientImpl> connect(const endpoint& e, std::chrono::milliseconds read_timeout) const {
    std::unique_ptr<httplib::ClientImpl> c;
    switch (e.scheme) {
      case endpoint::kind::http:
        c = std::make_unique<httplib::ClientImpl>(e.host, e.port);
        break;
      case endpoint::kind::https: {
        auto tls = std::make_unique<httplib::SSLClient>(e.host, e.port, opts.cert_file, opts.key_file);
        if (!tls->is_valid()) {
          throw error("cannot load the etcd client certificate " + opts.cert_file + " with key " + opts.key_file, false);
        }
        if (!opts.ca_file.empty()) tls->set_ca_cert_path(opts.ca_file.c_str());
        tls->enable_server_certificate_verification(true);
        c = std::move(tls);
        break;
      }
      case endpoint::kind::unix_socket:
        c = std::make_unique<httplib::ClientImpl>(e.socket_path);
        c->set_address_family(AF_UNIX);
        break;
    }
    // One exchange per connection: etcd ends its error answers with an HTTP trailer that httplib
    // 0.11 cannot read, which leaves the connection unusable anyway.
    c->set_keep_alive(false);
    c->set_connection_timeout(opts.request_timeout);
    c->set_read_timeout(read_timeout);
    c->set_write_timeout(opts.request_timeout);
    return c;
  }

  static std::string host_header(const endpoint& e) {
    if (e.scheme == endpoint::kind::unix_socket) return "localhost";
    const auto host = e.host.find(':') != std::string::npos ? "[" + e.host + "]" : e.host;
    return host + ":" + std::to_string(e.port);
  }

  // POSTs `body` to `path` at `e`. The body is collected by a content receiver, not by httplib,
  // because etcd's error answers end in a trailer that httplib fails to read after the body; with
  // `stream`, each piece of a 200 answer's body goes to it instead (false ends the exchange).
  answer post(httplib::ClientImpl& c, const endpoint& e, const std::string& path, const std::string& body,
              const std::string& auth_token, const std::function<bool(std::string_view)>& stream = {}) const {
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body;
    req.set_header("Host", host_header(e));
    req.set_header("Content-Type", "application/json");
    if (!auth_token.empty()) req.set_header("Authorization", auth_token);
    answer a;
    req.response_handler = [&](const httplib::Response& r) {
      a.status = r.status;
      return !watch_stopped || !stream;
    };
    req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
      if (stream && a.status == 200) return stream(std::string_view(data, n));
      a.body.append(data, n);
      return a.body.size() < (64u << 20);
    };
    httplib::Response res;
    c.send(req, res, a.error);
    return a;
  }

  answer post(const endpoint& e, const std::string& path, const std::string& body, const std::string& auth_token) const {
    auto c = connect(e, opts.request_timeout);
    return post(*c, e, path, body, auth_token);
  }

  std::string current_token() {
    std::lock_guard lock(token_mutex);
    return token;
  }

  // Fetches a token at `e` (when a user is set). False when `e` did not answer; throws error when
  // etcd refused the name or password.
  bool authenticate(const endpoint& e, std::string& failures) {
    if (opts.user.empty()) return true;
    const auto a = post(e, "/v3/auth/authenticate", json{{"name", opts.user}, {"password", opts.password}}.dump(), {});
    refuse_tls_failure(a, e);
    const auto answer = json::parse(a.body, nullptr, false);
    if (a.status == 0 || answer.is_discarded()) {
      failures += "; " + e.text + ": " + (a.status ? "unreadable answer" : httplib::to_string(a.error));
      return false;
    }
    if (wire::error_code(answer) >= 0) {
      if (wire::error_code(answer) == wire::code_unavailable) {
        failures += "; " + e.text + ": " + wire::error_message(answer);
        return false;
      }
      throw error("etcd at " + e.text + " refused user " + opts.user + ": " + wire::error_message(answer), false);
    }
    std::lock_guard lock(token_mutex);
    token = answer.value("token", "");
    return true;
  }

  // A unary call: tries the endpoint that answered last, then each other one. A request that may have
  // reached etcd before the exchange broke (`repeatable` false: a write) is not sent again elsewhere:
  // it may have been applied.
  json call(const std::string& path, const json& request, bool repeatable) {
    const auto body = request.dump();
    const auto n = opts.endpoints.size();
    const auto first = current.load();
    std::string failures;
    for (std::size_t k = 0; k < n; ++k) {
      const auto i = (first + k) % n;
      const auto& e = opts.endpoints[i];
      if (!opts.user.empty() && current_token().empty() && !authenticate(e, failures)) continue;
      for (int attempt = 0;; ++attempt) {
        const auto a = post(e, path, body, current_token());
        refuse_tls_failure(a, e);
        auto answer = json::parse(a.body, nullptr, false);
        if (a.status == 0 || answer.is_discarded()) {
          const auto what = a.status ? "an unreadable answer (HTTP " + std::to_string(a.status) + ")"
                                     : httplib::to_string(a.error);
          if (!a.unsent() && !repeatable) {
            throw error("etcd at " + e.text + ": " + what + " (the change may or may not have been made)", true);
          }
          failures += "; " + e.text + ": " + what;
          break;
        }
        current = i;
        const int code = wire::error_code(answer);
        if (code < 0) return answer;
        if (code == wire::code_unauthenticated && !opts.user.empty() && attempt == 0) {
          if (!authenticate(e, failures)) break;
          continue;
        }
        if (code == wire::code_unavailable) {
          if (!repeatable) throw error("etcd at " + e.text + ": " + wire::error_message(answer), true);
          failures += "; " + e.text + ": " + wire::error_message(answer);
          break;
        }
        return answer;  // the caller reads the error
      }
    }
    throw error("no etcd endpoint answered" + (failures.empty() ? std::string() : ": " + failures.substr(2)), true);
  }

  // A unary call's answer, or error for an error answer.
  json checked(const std::string& path, const json& request, bool repeatable) {
    auto answer = call(path, request, repeatable);
    if (wire::error_code(answer) >= 0) throw error("etcd: " + wire::error_message(answer), false);
    return answer;
  }

  // The revision `key`'s history is compacted up to, read from a watch at `revision` (etcd's range
  // error does not say); 0 when that fails.
  std::int64_t compact_revision_at(const std::string& key, std::int64_t revision) {
    const auto& e = opts.endpoints[current.load()];
    auto c = connect(e, opts.request_timeout);
    std::int64_t found = 0;
    std::string buffer;
    post(*c, e, "/v3/watch", wire::watch_create_request(key, {}, revision).dump(), current_token(),
         [&](std::string_view piece) {
           buffer.append(piece);
           // "created", then at once the cancel with compact_revision; a revision no longer compacted
           // (a race with a newer read) leaves the stream quiet until the request timeout.
           for (auto line = buffer.find('\n'); line != std::string::npos; line = buffer.find('\n')) {
             const auto message = json::parse(buffer.substr(0, line), nullptr, false);
             buffer.erase(0, line + 1);
             if (!message.is_object() || !message.contains("result")) return false;
             const auto& result = message["result"];
             try {
               found = wire::int_field(result, "compact_revision");
             } catch (const wire::bad_answer&) {
               return false;
             }
             if (found != 0 || result.value("canceled", false)) return false;
           }
           return true;
         });
    return found;
  }
};

namespace {

// Runs `f`, turning an answer that does not follow rpc.proto into an etcd::error.
template <class F>
auto readable(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const wire::bad_answer& e) {
    throw error(std::string("etcd answered something unreadable: ") + e.what(), false);
  } catch (const json::exception& e) {
    throw error(std::string("etcd answered something unreadable: ") + e.what(), false);
  }
}

}  // namespace

client::client(options o) : impl_(std::make_unique<impl>()) {
  if (o.endpoints.empty()) throw std::invalid_argument("etcd client without endpoints");
  impl_->opts = std::move(o);
}

client::~client() = default;

range_result client::range(const std::string& key, const std::string& range_end, std::int64_t revision) {
  return readable([&] {
    auto answer = impl_->call("/v3/kv/range", wire::range_request(key, range_end, revision), true);
    if (wire::error_code(answer) == wire::code_out_of_range &&
        answer.value("message", "").find("compacted") != std::string::npos) {
      throw compacted(impl_->compact_revision_at(key, revision));
    }
    if (wire::error_code(answer) >= 0) throw error("etcd: " + wire::error_message(answer), false);
    return wire::to_range_result(answer);
  });
}

std::int64_t client::put(const std::string& key, const std::string& value, std::int64_t lease) {
  return readable([&] {
    return wire::int_field(impl_->checked("/v3/kv/put", wire::put_request(key, value, lease), false).value("header", json::object()),
                           "revision");
  });
}

std::int64_t client::delete_range(const std::string& key, const std::string& range_end) {
  return readable([&] {
    return wire::int_field(impl_->checked("/v3/kv/deleterange", wire::delete_request(key, range_end), false), "deleted");
  });
}

txn_result client::txn(const std::vector<compare>& compares, const std::vector<operation>& success,
                       const std::vector<operation>& failure) {
  return readable([&] {
    const auto answer = impl_->checked("/v3/kv/txn", wire::txn_request(compares, success, failure), false);
    txn_result r;
    r.succeeded = answer.value("succeeded", false);
    r.revision = wire::int_field(answer.value("header", json::object()), "revision");
    if (const auto responses = answer.find("responses"); responses != answer.end() && responses->is_array()) {
      for (const auto& op : *responses) {
        if (const auto range = op.find("response_range"); range != op.end()) {
          r.ranges.push_back(wire::to_range_result(*range, r.revision));
        }
      }
    }
    return r;
  });
}

std::int64_t client::lease_grant(std::int64_t ttl) {
  return readable([&] {
    return wire::int_field(impl_->checked("/v3/lease/grant", json{{"TTL", std::to_string(ttl)}}, true), "ID");
  });
}

std::int64_t client::lease_keepalive(std::int64_t id) {
  return readable([&] {
    // A stream of LeaseKeepAliveResponse through the gateway: one {"result":{...}} for one request.
    const auto answer = impl_->checked("/v3/lease/keepalive", json{{"ID", std::to_string(id)}}, true);
    return wire::int_field(answer.value("result", json::object()), "TTL");
  });
}

void client::lease_revoke(std::int64_t id) {
  readable([&] {
    const auto answer = impl_->call("/v3/lease/revoke", json{{"ID", std::to_string(id)}}, true);
    const int code = wire::error_code(answer);
    if (code >= 0 && code != wire::code_not_found) throw error("etcd: " + wire::error_message(answer), false);
  });
}

std::string client::current_endpoint() const { return impl_->opts.endpoints[impl_->current.load()].text; }

namespace {

// etcd canceled the watch at its start because the token was invalid or expired (it answers 200 and
// says so in cancel_reason, "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token").
struct watch_token_refused : error {
  explicit watch_token_refused(const std::string& reason) : error("etcd refused the watch: " + reason, false) {}
};

// One message of the watch stream. Calls on_events for a batch with events; throws compacted, or
// error when etcd ended the watch or the stream with an error.
void watch_message(const std::string& text, const std::function<void(const std::vector<watch_event>&, std::int64_t)>& on_events) {
  const auto message = json::parse(text, nullptr, false);
  if (!message.is_object()) throw wire::bad_answer("a watch message is no JSON object: " + text.substr(0, 200));
  if (const int code = wire::error_code(message); code >= 0) {
    throw error("etcd ended the watch: " + wire::error_message(message), code == wire::code_unavailable);
  }
  const auto& result = message.at("result");
  if (result.value("canceled", false)) {
    if (const auto revision = wire::int_field(result, "compact_revision"); revision > 0) throw compacted(revision);
    const auto reason = result.value("cancel_reason", std::string("no reason given"));
    if (reason.find("code = Unauthenticated") != std::string::npos) throw watch_token_refused(reason);
    throw error("etcd canceled the watch: " + reason, false);
  }
  const auto events = result.find("events");
  if (events == result.end() || !events->is_array() || events->empty()) return;  // created, or progress
  std::vector<watch_event> batch;
  for (const auto& e : *events) {
    batch.push_back({e.value("type", "PUT") == "DELETE" ? watch_event::kind::delete_ : watch_event::kind::put,
                     wire::to_key_value(e.value("kv", json::object()))});
  }
  on_events(batch, wire::int_field(result.value("header", json::object()), "revision"));
}

}  // namespace

void client::watch(const std::string& key, const std::string& range_end, std::int64_t start_revision,
                   const std::function<void(const std::vector<watch_event>&, std::int64_t revision)>& on_events) {
  auto& d = *impl_;
  const auto body = wire::watch_create_request(key, range_end, start_revision).dump();
  const auto n = d.opts.endpoints.size();
  const auto first = d.current.load();
  std::string failures;
  for (std::size_t k = 0; k < n; ++k) {
    const auto i = (first + k) % n;
    const auto& e = d.opts.endpoints[i];
    if (d.watch_stopped) return;
    if (!d.opts.user.empty() && d.current_token().empty() && !d.authenticate(e, failures)) continue;
    for (int attempt = 0;; ++attempt) {
      auto connection = d.connect(e, watch_read_timeout);
      {
        std::lock_guard lock(d.watch_mutex);
        if (d.watch_stopped) return;
        d.watch_connection = connection.get();
      }
      std::string buffer;
      std::exception_ptr ended;  // what ended the stream from our side, besides stop_watch()
      const auto a = d.post(*connection, e, "/v3/watch", body, d.current_token(), [&](std::string_view piece) {
        buffer.append(piece);
        for (auto line = buffer.find('\n'); line != std::string::npos && !d.watch_stopped; line = buffer.find('\n')) {
          const auto text = buffer.substr(0, line);
          buffer.erase(0, line + 1);
          try {
            readable([&] { watch_message(text, on_events); });
          } catch (...) {
            ended = std::current_exception();
            return false;
          }
        }
        return !d.watch_stopped;
      });
      {
        std::lock_guard lock(d.watch_mutex);
        d.watch_connection = nullptr;
      }
      if (d.watch_stopped) return;
      if (ended) {
        try {
          std::rethrow_exception(ended);
        } catch (const watch_token_refused&) {
          if (d.opts.user.empty() || attempt > 0) throw;
        }
        if (!d.authenticate(e, failures)) break;
        continue;
      }
      if (a.status == 200) throw error("etcd at " + e.text + " ended the watch stream", true);
      refuse_tls_failure(a, e);
      if (a.status == 0) {
        if (!a.unsent()) throw error("etcd at " + e.text + ": the watch stream broke: " + httplib::to_string(a.error), true);
        failures += "; " + e.text + ": " + httplib::to_string(a.error);
        break;
      }
      d.current = i;
      const auto answer = json::parse(a.body, nullptr, false);
      const int code = wire::error_code(answer);
      if (code == wire::code_unauthenticated && !d.opts.user.empty() && attempt == 0) {
        if (!d.authenticate(e, failures)) break;
        continue;
      }
      if (code == wire::code_unavailable) {
        failures += "; " + e.text + ": " + wire::error_message(answer);
        break;
      }
      throw error("etcd at " + e.text + " refused the watch: " +
                      (code >= 0 ? wire::error_message(answer) : "HTTP " + std::to_string(a.status)), false);
    }
  }
  throw error("no etcd endpoint answered" + (failures.empty() ? std::string() : ": " + failures.substr(2)), true);
}

void client::stop_watch() {
  impl_->watch_stopped = true;
  std::lock_guard lock(impl_->watch_mutex);
  // Shuts the socket down under httplib's own lock, which wakes the watch's read; a watch still
  // connecting sees watch_stopped at the answer's head instead.
  if (impl_->watch_connection) impl_->watch_connection->stop();
}

void client::reset_watch() { impl_->watch_stopped = false; }

}  // namespace store::etcd
