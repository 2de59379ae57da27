// fleet: this host's part in a fleet (--store etcd). Several portrelay hosts share one desired set of
// forwards kept in etcd under one prefix; each host converges its engine on it and publishes, under a
// lease of its own, how each forward runs here. The consistency model is docs/architecture.md's
// "Fleet mode".
//
// Keys under the prefix P:
//   P/forwards/<id>          a forward's document (relay::to_document), as the SQLite store keeps it
//   P/next_id                the next id to give; every change made through the API rewrites it in the
//                            same transaction, compared on its mod_revision: the fleet's write guard
//   P/status/<id>/<host>     {"state", "error", "applied_revision"} under the host's lease
//   P/hosts/<host>           {"started_at", "version"} under the host's lease
#pragma once

#include "api/errors.hpp"
#include "relay/engine.hpp"
#include "store/etcd_client.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace api {

class controller;

// One forward as etcd holds it, or its deletion, as converge() takes it.
struct remote_forward {
  std::int64_t id = 0;
  std::string document;        // the key's value (JSON); empty for a deletion
  std::int64_t mod_revision = 0;
  bool deleted = false;
};

// The fleet's write guard (P/next_id): its value and mod_revision (0: the key does not exist yet).
struct write_guard {
  std::int64_t next_id = 1;
  std::int64_t mod_revision = 0;
};

// A whole read of the prefix, or one watch batch.
struct fleet_changes {
  std::vector<remote_forward> forwards;
  std::optional<write_guard> guard;  // when P/next_id was read or changed
  std::int64_t revision = 0;         // the etcd revision the read or batch stands at
  bool whole_set = false;            // forwards is the whole set: any other forward is gone
};

// Bytes of a text field (state, error, a host's started_at and version) read from another host's
// status or host key; the rest is cut (a key written by hand may hold a megabyte).
constexpr std::size_t max_status_text = 1024;

// How forward `id` runs on one host, as that host published it.
struct host_status {
  std::string host;
  std::string state;  // active, disabled or error
  std::string error;  // empty unless state is error
  std::int64_t applied_revision = 0;  // the mod_revision of the forward's document the host applied
};

class fleet {
 public:
  struct options {
    store::etcd::options etcd;
    std::string prefix = "/portrelay/default";
    std::string host;
    // How long the host's lease lives without renewal, in seconds: its status keys go that long
    // after it dies.
    std::int64_t lease_ttl_s = 10;
  };

  explicit fleet(options o);
  ~fleet();
  fleet(const fleet&) = delete;
  fleet& operator=(const fleet&) = delete;

  // Starts converging `ctl` on the shared set (the watch thread) and publishing this host's status
  // (the lease thread). `local_revision`: the revision of the local copy (0: none).
  void start(controller& ctl, std::int64_t local_revision);
  // Ends both threads and revokes the lease (this host's status goes at once). Idempotent.
  void stop();
  // Waits until the shared set has been read once, at most `limit`; whether it has.
  bool wait_synced(std::chrono::milliseconds limit);

  // For the controller's writes: one transaction; throws store::etcd::error.
  store::etcd::txn_result commit(const std::vector<store::etcd::compare>& compares,
                                 const std::vector<store::etcd::operation>& ops);
  // The whole prefix, read now (the controller's refresh after a write lost a race); also renews
  // the status cache. Throws store::etcd::error.
  fleet_changes read_all();

  std::string forward_key(std::int64_t id) const;
  std::string guard_key() const;
  std::string status_prefix(std::int64_t id) const;

  // This host's state of forward `id` (after the engine applied `applied_revision` of it): written
  // to P/status/<id>/<host> by the lease thread. forget(): the forward is gone.
  void report(std::int64_t id, const relay::forward_status& status, std::int64_t applied_revision);
  void forget(std::int64_t id);

  // The hosts' statuses of forward `id`, sorted by host, as last read or watched (this host's own
  // as it is now, even while etcd is unreachable).
  std::vector<host_status> hosts_of(std::int64_t id) const;
  // GET /api/v1/fleet.
  json describe() const;
  // Whether etcd answered the last request, and the revision this host's copy stands at.
  bool reachable() const { return reachable_.load(); }
  std::int64_t revision() const { return revision_.load(); }
  const std::string& host() const { return options_.host; }

 private:
  void watch_loop();
  void lease_loop();
  // Applies a read or batch to the status and host caches; returns the forward part.
  void absorb_status(const std::string& key, const std::string& value, bool deleted);
  void set_reachable(bool reachable, const std::string& why);
  // Sleeps for the next jittered back-off step, or until stop(); false when stopping.
  bool back_off(std::size_t& failures);
  bool stopping() const { return stopping_.load(); }

  options options_;
  std::string root_;  // prefix + "/"
  store::etcd::client etcd_;        // requests
  store::etcd::client watcher_;     // the watch (its stop_watch() must not end other requests)
  controller* ctl_ = nullptr;

  std::atomic<bool> reachable_{false};
  std::atomic<std::int64_t> revision_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> synced_{false};

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::optional<bool> logged_;  // the reachability last logged: each change is logged once, retries not
  // P/status/<id>/<host> and P/hosts/<host> as last read or watched.
  std::map<std::int64_t, std::map<std::string, host_status>> statuses_;
  std::map<std::string, json> hosts_;
  // This host's own statuses, and those not yet written (or to be deleted: nullopt).
  std::map<std::int64_t, host_status> own_;
  std::map<std::int64_t, bool> dirty_;  // id -> written (true) or deleted (false)
  std::int64_t lease_ = 0;
  // P/hosts/<host> was deleted while this host lives (by hand, e.g. the whole prefix): the lease
  // thread takes a new lease and writes this host's keys again.
  bool republish_ = false;
  std::string started_at_;

  std::thread watch_thread_;
  std::thread lease_thread_;
};

}  // namespace api
