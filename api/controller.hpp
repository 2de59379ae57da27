// controller: applies each API change to the store and the engine together, or to neither.
#pragma once

#include "api/errors.hpp"
#include "api/fleet.hpp"
#include "relay/engine.hpp"
#include "store/forward_store.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace api {

// The most operations one etcd transaction may hold: etcd's --max-txn-ops default.
inline constexpr std::size_t fleet_max_txn_ops = 128;

struct config_entry;
struct config_plan;

// Changes are serialised: each one runs prepare (bind) -> commit (SQLite) -> apply (serve), and a
// failure at any step undoes the steps before it, so disk and runtime never disagree.
class controller {
 public:
  controller(store::forward_store& store, relay::engine& engine);

  // Start-up: every stored forward comes back; one that cannot bind stays stored, in state "error".
  // So does one that fails the checks a request must pass (a hand-edited file); it is never served.
  void restore();

  reply list();
  // With `per_port`, the answer has "per_port": each listening port's counters (forward_json's port_rows).
  reply get(std::int64_t id, bool per_port = false);
  bool exists(std::int64_t id);
  reply create(const json& body);
  reply patch(std::int64_t id, const json& body);
  reply remove(std::int64_t id);
  // GET /api/v1/config: the document (config_document's export) with its ETag.
  reply config();
  // PUT /api/v1/config: makes the set of forwards the document's, all or nothing, and answers the
  // plan (what was done) with the new ETag; with `dry_run`, only the plan and the binds that would
  // fail. `if_match`: the If-Match header, when given (412 when it does not match).
  reply put_config(const json& body, bool dry_run, const std::optional<std::string>& if_match);

  // Fleet mode (--store etcd), set before restore(): every change is then an etcd transaction first,
  // and the shared set comes back through converge() (api/controller_fleet.cpp).
  void join(fleet& f) { fleet_ = &f; }
  // Makes the engine and the local copy hold what etcd holds: a whole read (what it lacks is
  // removed) or a watch batch. A forward whose document is unchanged is not touched, whatever its
  // revision, so a resync never bounces it.
  void converge(const fleet_changes& changes);
  // Reads the whole prefix and converges on it, with the change mutex held throughout, so that no
  // change this host commits meanwhile is undone by an older read; returns the read's revision.
  // Throws store::etcd::error.
  std::int64_t resync();
  // The Portrelay-Store header: "etcd; revision=N" or "local-copy; revision=N"; empty on one host.
  std::string store_state() const;
  // GET /api/v1/fleet: 404 on a single host.
  reply fleet_info() const;

  // For reads that need no serialising (metrics): the engine is thread-safe on its own.
  const relay::engine& engine() const { return engine_; }

  // The live connections API, outside the change mutex (no change is made to a forward): 404 for
  // a forward that does not exist; a stored forward that does not serve has none.
  reply connections(std::int64_t id, std::uint64_t after, std::size_t limit);
  // 204 once connection `connection` is reset (both sides) or the session dropped; 404 when gone.
  reply close_connection(std::int64_t id, std::uint64_t connection);
  // 200 {"closed": N}: every connection or session of a client in `clients`.
  reply close_connections(std::int64_t id, const relay::ip_prefix& clients);

 private:
  json render(const store::stored_forward& f);
  // Binds what `next` needs, or says why not: 409 when the address (or a port of the range, named)
  // is taken or a range would not fit the descriptor limit, 503 when the host is out of descriptors
  // or memory, 400 otherwise.
  std::optional<api_error> prepare(relay::forward_spec& next, relay::engine::prepared& out);
  // Binds `spec` here and serves it (a listen_port 0 becomes the port bound), or puts it in state
  // error when it cannot bind: restore() and converge(), which serve what is already stored.
  // Returns the bind error, if any.
  std::optional<api_error> serve(relay::forward_spec& spec);
  // 400 when `next`'s target leads back into this daemon: its API, or a loop of forwards.
  std::optional<api_error> refuse_target(const relay::forward_spec& next) const;
  // put_config's binding, commit and apply, once the plan is known and checked (api/controller_config).
  reply apply_config(const config_plan& plan, const std::vector<config_entry>& entries);

  // Fleet mode's writes, with mutex_ held: each one a transaction guarded by the view's write_guard.
  reply fleet_create(relay::forward_spec spec);
  reply fleet_patch(std::int64_t id, const json& body);
  reply fleet_remove(std::int64_t id);
  reply fleet_apply_config(const config_plan& plan, const std::vector<config_entry>& entries);
  struct fleet_write {
    std::optional<std::int64_t> revision;  // committed at this revision
    std::optional<reply> failed;           // etcd unreachable or refusing: the answer
  };                                       // neither: another host's write came first; the view is fresh
  fleet_write commit_to_fleet(std::vector<store::etcd::compare> compares, std::vector<store::etcd::operation> ops,
                              std::int64_t next_id);
  // fleet_create, fleet_patch and fleet_remove's transaction: forward `id` written as `document` (a
  // create guarded on the key's absence, a patch on `seen_revision`, the forward's revision it was
  // planned on; 0 for a create) or deleted with its statuses, then applied here. The answer (201 or 200 with the
  // forward, 204, or why etcd did not take it), or none when another host's change came first: the
  // view is fresh then, and the caller plans the change again.
  enum class fleet_edit { create, patch, remove };
  std::optional<reply> commit_one(fleet_edit edit, std::int64_t id, const std::string& document = {},
                                  std::int64_t seen_revision = 0);
  void converge_locked(const fleet_changes& changes);
  // The id a forward created now takes: P/next_id's, or past every id seen when that is higher (a
  // key made by hand may name the largest id there is: no overflow then).
  std::int64_t next_fleet_id() const {
    const auto past = highest_id_ == std::numeric_limits<std::int64_t>::max() ? highest_id_ : highest_id_ + 1;
    return std::max(guard_.next_id, past);
  }
  // 507 ids_exhausted when `count` forwards created from id `first` on would pass the largest id
  // there is (P/next_id written by hand near it): the id after them could not be stored.
  static std::optional<api_error> ids_left(std::int64_t first, std::size_t count);
  // 409 when `next` would listen where an enabled forward of the shared set does.
  std::optional<api_error> shared_clash(const relay::forward_spec& next);
  // Resolves listen_port 0 of an enabled forward by binding (and closing) a port here.
  std::optional<api_error> resolve_port(relay::forward_spec& next);

  mutable std::mutex mutex_;
  fleet* fleet_ = nullptr;
  write_guard guard_;  // fleet mode: P/next_id as this host last saw it
  // Fleet mode: ids deleted from the shared set, each with the revision of its deletion. A late
  // watch event that still carries one (a put older than the delete this host committed) is
  // ignored; a put made after the delete (by hand, in etcd) is served, as on a host that never saw it.
  std::map<std::int64_t, std::int64_t> deleted_;
  // Fleet mode: the highest id this host saw in the shared set (served, invalid or deleted). A new
  // forward's id is past it even when P/next_id is missing, unreadable or behind a key made by hand.
  std::int64_t highest_id_ = 0;
  store::forward_store& store_;
  relay::engine& engine_;
};

}  // namespace api
