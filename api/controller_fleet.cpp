// controller_fleet: fleet mode (--store etcd). A change is an etcd transaction guarded by P/next_id's
// mod_revision (and, for a PATCH, the forward's own), then applied here as the watch will bring it
// to every other host; converge() makes the engine and the local copy hold the shared set.
#include "api/controller.hpp"
#include "api/forward_checks.hpp"
#include "api/forward_json.hpp"
#include "relay/forward_fields.hpp"

#include <spdlog/spdlog.h>

#include <limits>
#include <map>
#include <set>

namespace api {

namespace {

namespace etcd = store::etcd;

// How often one change is tried again when other hosts' changes commit first.
constexpr int max_attempts = 8;

etcd::operation put(std::string key, std::string value) {
  return etcd::operation{etcd::operation::kind::put, std::move(key), std::move(value), 0, {}};
}

reply contended() {
  return error_reply(503, "store_busy", "other hosts' changes kept committing first; try again");
}

}  // namespace

std::string controller::store_state() const {
  if (!fleet_) return {};
  return std::string(fleet_->reachable() ? "etcd" : "local-copy") + "; revision=" + std::to_string(fleet_->revision());
}

reply controller::fleet_info() const {
  if (!fleet_) return error_reply(404, "not_found", "this host is not in a fleet (it runs with --store sqlite)");
  return {200, fleet_->describe(), {}, {}};
}

void controller::converge(const fleet_changes& changes) {
  std::lock_guard lock(mutex_);
  converge_locked(changes);
}

std::int64_t controller::resync() {
  std::lock_guard lock(mutex_);
  const auto all = fleet_->read_all();
  converge_locked(all);
  return all.revision;
}

void controller::converge_locked(const fleet_changes& changes) {
  std::map<std::int64_t, store::stored_forward> local;
  for (auto& f : store_.list()) local.emplace(f.spec.id, std::move(f));
  std::vector<store::forward_store::mirrored> put;
  std::vector<std::int64_t> removed;
  std::vector<std::int64_t> unserved;  // an invalid document replaced them: not served, not deleted
  std::vector<relay::forward_spec> changed;
  std::vector<std::int64_t> changed_revision;
  std::set<std::int64_t> seen;
  for (const auto& rf : changes.forwards) {
    seen.insert(rf.id);
    highest_id_ = std::max(highest_id_, rf.id);
    const auto it = local.find(rf.id);
    if (const auto gone = deleted_.find(rf.id); gone != deleted_.end()) {
      if (rf.mod_revision <= gone->second) continue;  // a late event of a forward gone since
      if (!rf.deleted) deleted_.erase(gone);          // put again after its delete: served again
    }
    if (rf.deleted) {
      if (it != local.end()) removed.push_back(rf.id);
      deleted_[rf.id] = rf.mod_revision;
      continue;
    }
    if (!changes.whole_set && it != local.end() && it->second.mod_revision >= rf.mod_revision) continue;  // applied
    relay::forward_spec spec;
    std::optional<std::string> problem;
    const auto doc = relay::json::parse(rf.document, nullptr, false);
    if (!doc.is_object()) {
      problem = "not a JSON object";
    } else if (auto bad = relay::from_document(doc, spec)) {
      problem = bad->message;
    }
    spec.id = rf.id;
    if (!problem) {
      if (auto e = check_spec(spec)) problem = e->message;
    }
    if (problem) {
      spdlog::warn("forward {} in etcd (revision {}) is not served: its document is invalid: {}", rf.id,
                   rf.mod_revision, *problem);
      // Nor is the version before it: every host, restarted or not, serves the same set.
      if (it != local.end()) unserved.push_back(rf.id);
      continue;
    }
    if (it != local.end() && it->second.spec == spec && it->second.invalid.empty()) {
      // The same document (a resync, a compaction, another host's no-op): nothing to touch.
      if (it->second.mod_revision != rf.mod_revision) put.push_back({spec, rf.mod_revision});
      if (changes.whole_set) fleet_->report(rf.id, engine_.status(rf.id), rf.mod_revision);
      continue;
    }
    changed.push_back(spec);
    changed_revision.push_back(rf.mod_revision);
    put.push_back({spec, rf.mod_revision});
  }
  if (changes.whole_set) {
    for (const auto& [id, f] : local) {
      if (seen.contains(id)) continue;
      removed.push_back(id);
      deleted_[id] = changes.revision;
    }
  }
  for (const auto id : removed) spdlog::info("forward {} deleted (fleet revision {})", id, changes.revision);
  removed.insert(removed.end(), unserved.begin(), unserved.end());  // gone here and from the local copy alike
  for (const auto id : removed) {
    engine_.remove(id);
    fleet_->forget(id);
  }
  // Listeners that move or close make room first, so two forwards may swap ports in one change.
  std::vector<std::int64_t> leaving;
  for (const auto& next : changed) {
    const auto it = local.find(next.id);
    if (it != local.end() &&
        ((it->second.spec.enabled && !next.enabled) || relay::changes(it->second.spec, next, relay::change_effect::rebind))) {
      leaving.push_back(next.id);
    }
  }
  engine_.release_for(leaving, changed);
  for (std::size_t k = 0; k < changed.size(); ++k) {
    auto spec = changed[k];
    if (auto e = serve(spec)) {
      spdlog::warn("forward {} (fleet revision {}) cannot listen on this host: {}", spec.id, changed_revision[k], e->message);
    } else {
      spdlog::info("forward {} {} (fleet revision {}): {}", spec.id, local.contains(spec.id) ? "changed" : "created",
                   changed_revision[k], relay::listen_endpoint(spec) + " -> " + relay::targets_summary(spec));
    }
    fleet_->report(spec.id, engine_.status(spec.id), changed_revision[k]);
  }
  try {
    store_.mirror(put, removed, changes.revision);
  } catch (const std::exception& e) {
    // The engine serves the shared set all the same; the copy is written again at the next change.
    spdlog::error("the local copy could not be written: {}", e.what());
  }
  // A whole read is made under the mutex (resync, or a write's refresh): it is the newest there is.
  // A watch batch may be older than this host's own last commit: it never moves the guard back.
  if (changes.guard && (changes.whole_set || changes.guard->mod_revision > guard_.mod_revision)) guard_ = *changes.guard;
}

controller::fleet_write controller::commit_to_fleet(std::vector<etcd::compare> compares,
                                                    std::vector<etcd::operation> ops, std::int64_t next_id) {
  compares.insert(compares.begin(), etcd::compare{fleet_->guard_key(), etcd::compare::target::mod_revision,
                                                  etcd::compare::result::equal, guard_.mod_revision, {}, {}});
  ops.insert(ops.begin(), put(fleet_->guard_key(), std::to_string(next_id)));
  try {
    const auto r = fleet_->commit(compares, ops);
    if (r.succeeded) {
      guard_ = {next_id, r.revision};
      return {r.revision, {}};
    }
    converge_locked(fleet_->read_all());  // another host's change came first: see it, then try again
    return {};
  } catch (const etcd::error& e) {
    if (e.unreachable()) {
      return {{}, error_reply(503, "store_unreachable",
                              std::string("the shared store (etcd) is unreachable (") + e.what() +
                                  "); this host serves its last applied set (revision " +
                                  std::to_string(fleet_->revision()) + "); try again later")};
    }
    return {{}, error_reply(503, "store_error", std::string("etcd refused the change: ") + e.what())};
  }
}

std::optional<api_error> controller::shared_clash(const relay::forward_spec& next) {
  if (!next.enabled) return std::nullopt;
  for (const auto& f : store_.list()) {
    if (f.spec.id == next.id || !f.spec.enabled || !relay::listen_overlaps(f.spec, next)) continue;
    return api_error{409, "address_in_use",
                "listen address " + relay::listen_endpoint(next) + " is already used by forward " +
                    std::to_string(f.spec.id) + (f.spec.name.empty() ? "" : " (" + f.spec.name + ")") +
                    " of the fleet's shared set",
                "listen_port"};
  }
  return std::nullopt;
}

std::optional<api_error> controller::resolve_port(relay::forward_spec& next) {
  if (!next.enabled || next.listen_port != 0) return std::nullopt;
  auto probe = next;
  probe.id = 0;
  relay::engine::prepared p;
  if (auto e = prepare(probe, p)) return e;
  engine_.abandon(probe, std::move(p));
  next.listen_port = probe.listen_port;  // stored so: every host listens on the port this one chose
  return std::nullopt;
}

std::optional<reply> controller::commit_one(fleet_edit edit, std::int64_t id, const std::string& document,
                                            std::int64_t seen_revision) {
  const auto key = fleet_->forward_key(id);
  std::vector<etcd::compare> compares;
  std::vector<etcd::operation> ops;
  if (edit == fleet_edit::remove) {
    const auto statuses = fleet_->status_prefix(id);
    ops = {etcd::operation{etcd::operation::kind::delete_range, key, {}, 0, {}},
           etcd::operation{etcd::operation::kind::delete_range, statuses, {}, 0, etcd::prefix_end(statuses)}};
  } else {
    // A create's key must not exist yet (create_revision 0); a patch's must be as it was planned on.
    const auto what = edit == fleet_edit::create ? etcd::compare::target::create_revision : etcd::compare::target::mod_revision;
    compares = {etcd::compare{key, what, etcd::compare::result::equal, seen_revision, {}, {}}};
    ops = {put(key, document)};
  }
  // P/next_id is rewritten with every change: past every id seen, even where it held no id.
  auto w = commit_to_fleet(std::move(compares), std::move(ops), edit == fleet_edit::create ? id + 1 : next_fleet_id());
  if (w.failed) return w.failed;
  if (!w.revision) return std::nullopt;
  converge_locked(fleet_changes{{{id, document, *w.revision, edit == fleet_edit::remove}}, {}, *w.revision, false});
  if (edit == fleet_edit::remove) return reply{204, nullptr, {}, {}};
  auto f = store_.get(id);
  if (!f) {
    return storage_failed(std::runtime_error(std::string(edit == fleet_edit::create ? "the forward" : "the change") +
                                             " was committed to etcd but not to the local copy"));
  }
  if (edit == fleet_edit::create) return reply{201, render(*f), "/api/v1/forwards/" + std::to_string(id), {}};
  return reply{200, render(*f), {}, {}};
}

std::optional<api_error> controller::ids_left(std::int64_t first, std::size_t count) {
  constexpr auto largest = std::numeric_limits<std::int64_t>::max();
  if (count < static_cast<std::uint64_t>(largest) && first <= largest - static_cast<std::int64_t>(count)) {
    return std::nullopt;
  }
  return api_error{507, "ids_exhausted",
                   "forward ids are used up: the next is " + std::to_string(first) + ", and " + std::to_string(count) +
                       " more would pass the largest id there is (was P/next_id written by hand?)"};
}

reply controller::fleet_create(relay::forward_spec spec) {
  for (int attempt = 0; attempt < max_attempts; ++attempt) {
    auto next = spec;
    next.id = next_fleet_id();
    if (auto e = ids_left(next.id, 1)) return error_reply(*e);
    if (auto e = resolve_port(next)) return error_reply(*e);
    if (auto e = shared_clash(next)) return error_reply(*e);
    if (auto e = refuse_target(next)) return error_reply(*e);
    if (auto r = commit_one(fleet_edit::create, next.id, relay::document_text(next))) return *r;
  }
  return contended();
}

reply controller::fleet_patch(std::int64_t id, const json& body) {
  std::optional<std::int64_t> seen;
  for (int attempt = 0; attempt < max_attempts; ++attempt) {
    auto current = store_.get(id);
    if (!current) return forward_not_found(id);
    if (!seen) {
      seen = current->mod_revision;
    } else if (current->mod_revision != *seen) {
      return error_reply(409, "conflict",
                         "forward " + std::to_string(id) + " was changed by another host while this change was made "
                         "(its revision went from " + std::to_string(*seen) + " to " +
                         std::to_string(current->mod_revision) + "); read it again and retry");
    }
    relay::forward_spec next;
    if (auto e = apply_patch(body, *current, next)) return error_reply(*e);
    if (auto e = foreign_source(next, &current->spec)) return error_reply(*e);
    if (auto e = resolve_port(next)) return error_reply(*e);
    if (auto e = shared_clash(next)) return error_reply(*e);
    if (auto e = refuse_target(next)) return error_reply(*e);
    if (next == current->spec) return {200, render(*current), {}, {}};
    if (auto r = commit_one(fleet_edit::patch, id, relay::document_text(next), *seen)) return *r;
  }
  return contended();
}

reply controller::fleet_remove(std::int64_t id) {
  for (int attempt = 0; attempt < max_attempts; ++attempt) {
    if (!store_.get(id)) return forward_not_found(id);
    if (auto r = commit_one(fleet_edit::remove, id)) return *r;
  }
  return contended();
}

}  // namespace api
