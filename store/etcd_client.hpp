// etcd_client: a small client of etcd v3's JSON gateway (etcd 3.4: POST /v3/kv/range, /v3/kv/put,
// /v3/kv/deleterange, /v3/kv/txn, /v3/lease/grant|keepalive|revoke, /v3/watch, /v3/auth/authenticate)
// over cpp-httplib, for fleet mode. Keys and values are raw bytes here; the gateway's base64 and its
// int64-as-string encoding stay inside. Source of the wire format: etcd's api/etcdserverpb/rpc.proto
// and the grpc-gateway JSON mapping.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace store::etcd {

// One client URL: "http://HOST:PORT", "https://HOST:PORT" (HOST may be [v6]) or "unix:///PATH" (etcd's
// `--listen-client-urls unix://NAME` socket file, served with the same gateway).
struct endpoint {
  enum class kind { http, https, unix_socket };
  kind scheme = kind::http;
  std::string host;         // http/https: the host as written (no brackets)
  std::uint16_t port = 0;   // http/https
  std::string socket_path;  // unix
  std::string text;         // as given, for messages
};
// Parses a comma-separated list of endpoints; nothing and `error` set (naming the bad one) when one
// does not parse, or when the list is empty.
std::optional<std::vector<endpoint>> parse_endpoints(std::string_view list, std::string& error);

struct options {
  std::vector<endpoint> endpoints;
  // etcd's own authentication (`etcdctl user add`): both empty for none.
  std::string user;
  std::string password;
  // TLS for https endpoints: the CA bundle that signs etcd's certificate (empty: the system's), and a
  // client certificate and key when etcd asks for one (--client-cert-auth). Both or neither. The
  // process must ignore SIGPIPE (portrelay's main() does): OpenSSL writes with write(2).
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  // Connect, read and write timeout of one request (not of a watch's wait for events).
  std::chrono::milliseconds request_timeout{2000};
};

// A failed request. unreachable(): no endpoint answered (connection refused, timeout, reset): the
// caller may retry later. Otherwise etcd answered with an error (message has etcd's own words and
// its gRPC code), which a retry will not cure, e.g. a bad password or a too-large transaction.
class error : public std::runtime_error {
 public:
  error(const std::string& what, bool unreachable) : std::runtime_error(what), unreachable_(unreachable) {}
  bool unreachable() const { return unreachable_; }

 private:
  bool unreachable_;
};

// The watch's start revision has been compacted away: read the range again (at compact_revision or
// later) and watch from there.
class compacted : public std::runtime_error {
 public:
  explicit compacted(std::int64_t compact_revision)
      : std::runtime_error("etcd revision compacted (up to " + std::to_string(compact_revision) + ")"),
        compact_revision_(compact_revision) {}
  std::int64_t compact_revision() const { return compact_revision_; }

 private:
  std::int64_t compact_revision_;
};

struct key_value {
  std::string key;
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;
  std::int64_t lease = 0;
};

struct range_result {
  std::int64_t revision = 0;  // the store's revision the read was made at (header.revision)
  std::vector<key_value> kvs;
};

// A transaction's comparison (rpc.proto Compare): target `what` of `key` (or of every key in
// [key, range_end) when range_end is set) compared with `number` (revisions, version) or `value`.
struct compare {
  enum class target { version, create_revision, mod_revision, value };
  enum class result { equal, greater, less, not_equal };
  std::string key;
  target what = target::mod_revision;
  result op = result::equal;
  std::int64_t number = 0;
  std::string value;
  std::string range_end;
};

// A transaction's operation (rpc.proto RequestOp): put, delete or range.
struct operation {
  enum class kind { put, delete_range, range };
  kind type = kind::put;
  std::string key;
  std::string value;      // put
  std::int64_t lease = 0; // put: 0 for none
  std::string range_end;  // delete_range, range: empty for the one key
};

struct txn_result {
  bool succeeded = false;
  std::int64_t revision = 0;           // header.revision: the commit's revision when a put/delete ran
  std::vector<range_result> ranges;    // the range operations' answers, in order
};

struct watch_event {
  enum class kind { put, delete_ };
  kind type = kind::put;
  key_value kv;  // for a delete: key and mod_revision (the delete's revision) only
};

// The smallest key after every key that starts with `prefix` (etcd's prefix range end).
std::string prefix_end(std::string_view prefix);

// Thread-safe: each request is its own HTTP exchange (no connection shared between threads). Every
// call tries the endpoint that answered last, then each other one in order, and throws
// error{unreachable=true} when none answered. A member without a leader ("no leader", "request
// timed out": gRPC Unavailable) counts as not answering. A write (put, delete_range, txn) whose
// exchange broke after it was sent, or that such a member refused, is not sent to another endpoint
// (it may yet be applied): it throws error{unreachable=true} at once. TLS and credential problems
// throw error{unreachable=false}. With a user, the auth token is fetched on first use and fetched
// again once when etcd says it is invalid or expired.
class client {
 public:
  explicit client(options o);
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // Keys in [key, range_end), or the one key when range_end is empty; at `revision` when non-zero
  // (throws compacted when that revision is gone).
  range_result range(const std::string& key, const std::string& range_end = {}, std::int64_t revision = 0);
  // Returns the revision of the put.
  std::int64_t put(const std::string& key, const std::string& value, std::int64_t lease = 0);
  // Returns how many keys were deleted.
  std::int64_t delete_range(const std::string& key, const std::string& range_end = {});
  txn_result txn(const std::vector<compare>& compares, const std::vector<operation>& success,
                 const std::vector<operation>& failure = {});

  // A lease of `ttl` seconds; returns its id.
  std::int64_t lease_grant(std::int64_t ttl);
  // Renews the lease; returns the TTL etcd granted, 0 when the lease no longer exists (expired).
  std::int64_t lease_keepalive(std::int64_t id);
  // Ends the lease and deletes its keys now. A lease already gone is not an error.
  void lease_revoke(std::int64_t id);

  // Streams every change to keys in [key, range_end) from `start_revision` on, calling `on_events`
  // with the events of each revision batch as etcd sends them (in revision order) and with the
  // batch's header revision. Blocks until stop_watch() is called (returns normally), the revision
  // is compacted (throws compacted), or the stream breaks (throws error, unreachable() true: the
  // endpoint went away). Only one watch at a time per client.
  void watch(const std::string& key, const std::string& range_end, std::int64_t start_revision,
             const std::function<void(const std::vector<watch_event>&, std::int64_t revision)>& on_events);
  // From another thread: ends the running watch (or the next one at once, until it starts). Safe to
  // call when no watch runs.
  void stop_watch();
  // Lets watch() run again after stop_watch().
  void reset_watch();

  // The endpoint that answered the last request, for log lines.
  std::string current_endpoint() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace store::etcd
