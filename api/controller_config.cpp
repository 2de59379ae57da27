// controller_config: GET and PUT /api/v1/config: a whole set of forwards bound, committed and applied at once.
#include "api/config_document.hpp"
#include "api/controller.hpp"
#include "api/forward_checks.hpp"
#include "relay/forward_fields.hpp"

#include <spdlog/spdlog.h>

namespace api {

namespace {

// The forwards a plan binds for (created and changed ones, in that order) and their document names;
// created ones get ids -1, -2, ... until the store assigns theirs.
struct wanted_set {
  std::vector<relay::forward_spec> specs;
  std::vector<std::string> names;
  std::size_t created = 0;  // specs[0, created) are the created ones
};

wanted_set wanted_by(const config_plan& plan, const std::vector<config_entry>& entries) {
  wanted_set w;
  for (const auto i : plan.create) {
    w.specs.push_back(entries[i].spec);
    w.specs.back().id = -static_cast<std::int64_t>(w.specs.size());
    w.names.push_back(entries[i].name);
  }
  w.created = w.specs.size();
  for (const auto& u : plan.update) {
    w.specs.push_back(u.next);
    w.names.push_back(entries[u.entry].name);
  }
  return w;
}

// The forwards whose listeners the plan closes or moves: deleted, disabled, or with a new address.
std::vector<std::int64_t> leaving_by(const config_plan& plan) {
  auto out = plan.remove;
  for (const auto& u : plan.update) {
    const auto& was = u.current.spec;
    if ((was.enabled && !u.next.enabled) || relay::changes(was, u.next, relay::change_effect::rebind)) {
      out.push_back(was.id);
    }
  }
  return out;
}

// The set as it will be, for the loop guard: the unchanged forwards and the wanted ones.
std::optional<api_error> refuse_targets(const relay::engine& engine, const config_plan& plan, const wanted_set& w) {
  auto set = w.specs;
  set.insert(set.end(), plan.unchanged.begin(), plan.unchanged.end());
  auto r = engine.check_targets(set);
  if (!r || r->first >= w.specs.size()) return std::nullopt;  // an unchanged forward was let through before
  return about(w.names[r->first], target_refusal(w.specs[r->first], r->second));
}

std::optional<api_error> foreign_sources(const config_plan& plan, const wanted_set& w) {
  for (std::size_t k = 0; k < w.specs.size(); ++k) {
    const auto* was = k < w.created ? nullptr : &plan.update[k - w.created].current.spec;
    if (auto e = foreign_source(w.specs[k], was)) return about(w.names[k], std::move(*e));
  }
  return std::nullopt;
}

// As with PATCH, a forward in state error that keeps its address may be changed although it still
// cannot bind: it is saved and stays in error, with the fresh reason.
bool stays_in_error(const relay::engine& engine, const config_plan& plan, const wanted_set& w, std::size_t k) {
  if (k < w.created) return false;
  const auto& was = plan.update[k - w.created].current.spec;
  const auto& next = w.specs[k];
  return next.protocol == was.protocol && next.listen_host == was.listen_host && next.listen_port == was.listen_port &&
         engine.status(was.id).state == relay::forward_state::error;
}

reply with_etag(reply r, std::string etag) {
  r.etag = std::move(etag);
  return r;
}

}  // namespace

reply controller::config() {
  std::lock_guard lock(mutex_);
  const auto set = store_.list();
  auto doc = export_config(set, export_names(set));
  auto etag = etag_of(doc);
  return with_etag({200, std::move(doc), {}, {}}, std::move(etag));
}

reply controller::put_config(const json& body, bool dry_run, const std::optional<std::string>& if_match_header) {
  std::vector<config_entry> entries;
  if (auto e = parse_config(body, entries)) return error_reply(*e);
  std::lock_guard lock(mutex_);
  const auto current = store_.list();
  const auto names = export_names(current);
  auto etag = etag_of(export_config(current, names));
  if (if_match_header && !if_match(*if_match_header, etag)) {
    return error_reply(412, "precondition_failed",
                       "the configuration has changed since it was read (If-Match does not match its ETag " + etag +
                           "); read it again");
  }
  const auto plan = plan_config(current, names, entries);
  const auto w = wanted_by(plan, entries);
  if (auto e = foreign_sources(plan, w)) return error_reply(*e);
  if (!dry_run) return fleet_ ? fleet_apply_config(plan, entries) : apply_config(plan, entries);
  if (auto e = refuse_targets(engine_, plan, w)) return error_reply(*e);
  json errors = json::array();
  for (const auto& [k, error] : engine_.probe(w.specs, leaving_by(plan))) {
    if (stays_in_error(engine_, plan, w, k)) continue;
    const auto refusal = bind_refusal(w.specs[k], error);
    errors.push_back(json{{"name", w.names[k]}, {"field", refusal.field}, {"message", refusal.message}});
  }
  return with_etag({200, plan_json(plan, entries, std::move(errors)), {}, {}}, std::move(etag));
}

reply controller::apply_config(const config_plan& plan, const std::vector<config_entry>& entries) {
  auto w = wanted_by(plan, entries);
  const auto released = engine_.release_for(leaving_by(plan), w.specs);
  std::vector<relay::engine::prepared> prepared(w.specs.size());
  std::size_t bound = 0;
  const auto undo = [&] {
    while (bound > 0) {
      --bound;
      engine_.abandon(w.specs[bound], std::move(prepared[bound]));
    }
    engine_.take_back(released);
  };
  std::vector<std::optional<api_error>> unbound(w.specs.size());
  for (; bound < w.specs.size(); ++bound) {
    if (auto e = prepare(w.specs[bound], prepared[bound])) {
      if (stays_in_error(engine_, plan, w, bound)) {
        unbound[bound] = std::move(e);
        continue;
      }
      auto refusal = about(w.names[bound], std::move(*e));
      undo();
      return error_reply(refusal);
    }
  }
  if (auto e = refuse_targets(engine_, plan, w)) {  // again, with the ports the kernel chose
    undo();
    return error_reply(*e);
  }
  const auto split = w.specs.begin() + static_cast<std::ptrdiff_t>(w.created);
  const std::vector<relay::forward_spec> added(w.specs.begin(), split);
  const std::vector<relay::forward_spec> changed(split, w.specs.end());
  std::vector<store::stored_forward> stored;
  try {
    stored = store_.replace_set(added, changed, plan.remove);
  } catch (const std::exception& e) {
    undo();
    return storage_failed(e);
  }
  for (const auto id : plan.remove) engine_.remove(id);
  for (std::size_t k = 0; k < w.specs.size(); ++k) {
    auto spec = k < w.created ? stored[k].spec : w.specs[k];
    if (unbound[k]) {
      engine_.fail(spec, unbound[k]->message);
    } else {
      engine_.apply(spec, std::move(prepared[k]));
    }
  }
  // A PUT that changed nothing (a GitOps loop re-applying) is not worth an info line each time.
  const bool changed_any = w.created + changed.size() + plan.remove.size() > 0;
  spdlog::log(changed_any ? spdlog::level::info : spdlog::level::debug,
              "configuration applied: {} created, {} changed, {} deleted, {} unchanged", w.created, changed.size(),
              plan.remove.size(), plan.unchanged.size());
  const auto now = store_.list();
  return with_etag({200, plan_json(plan, entries, json::array()), {}, {}},
                   etag_of(export_config(now, export_names(now))));
}

// Fleet mode: the whole change is one etcd transaction (every forward it writes or deletes, compared
// on the revisions this host planned with), then applied here as the watch brings it to the others.
// A bind that fails here is this host's error state, not a refusal, as with a POST.
reply controller::fleet_apply_config(const config_plan& plan, const std::vector<config_entry>& entries) {
  namespace etcd = store::etcd;
  auto w = wanted_by(plan, entries);
  const auto first_id = next_fleet_id();
  if (auto e = ids_left(first_id, w.created)) return error_reply(*e);
  for (std::size_t k = 0; k < w.created; ++k) w.specs[k].id = first_id + static_cast<std::int64_t>(k);
  for (std::size_t k = 0; k < w.specs.size(); ++k) {
    if (auto e = resolve_port(w.specs[k])) return error_reply(about(w.names[k], std::move(*e)));
  }
  // Clashes inside the new set: the forwards it keeps and the ones it writes.
  std::vector<const relay::forward_spec*> set;
  for (const auto& s : plan.unchanged) set.push_back(&s);
  for (std::size_t k = 0; k < w.specs.size(); ++k) {
    const auto& next = w.specs[k];
    for (const auto* other : set) {
      if (next.enabled && other->enabled && relay::listen_overlaps(next, *other)) {
        return error_reply(about(w.names[k], api_error{409, "address_in_use",
                                                       "listen address " + relay::listen_endpoint(next) +
                                                           " is used by another forward of the document",
                                                       "listen_port"}));
      }
    }
    set.push_back(&next);
  }
  if (auto e = refuse_targets(engine_, plan, w)) return error_reply(*e);
  std::vector<etcd::compare> compares;
  std::vector<etcd::operation> ops;
  fleet_changes applied;
  for (std::size_t k = 0; k < w.specs.size(); ++k) {
    const auto key = fleet_->forward_key(w.specs[k].id);
    const auto doc = relay::document_text(w.specs[k]);
    // A created key must not exist yet (one made by hand that this host has not seen), a changed one
    // must be as it was planned on.
    const bool created = k < w.created;
    compares.push_back({key, created ? etcd::compare::target::create_revision : etcd::compare::target::mod_revision,
                        etcd::compare::result::equal, created ? 0 : plan.update[k - w.created].current.mod_revision,
                        {}, {}});
    ops.push_back({etcd::operation::kind::put, key, doc, 0, {}});
    applied.forwards.push_back({w.specs[k].id, doc, 0, false});
  }
  for (const auto id : plan.remove) {
    const auto statuses = fleet_->status_prefix(id);
    ops.push_back({etcd::operation::kind::delete_range, fleet_->forward_key(id), {}, 0, {}});
    ops.push_back({etcd::operation::kind::delete_range, statuses, {}, 0, etcd::prefix_end(statuses)});
    applied.forwards.push_back({id, {}, 0, true});
  }
  // etcd refuses a transaction of more than --max-txn-ops operations (128 by default), the guard's own included.
  if (ops.size() + 1 > fleet_max_txn_ops) {
    return error_reply(413, "too_many_changes",
                       "this document changes " + std::to_string(ops.size()) + " keys in etcd, more than one transaction "
                       "takes (" + std::to_string(fleet_max_txn_ops - 1) + " with etcd's default --max-txn-ops); apply it in parts");
  }
  if (ops.empty()) {
    const auto now = store_.list();
    return with_etag({200, plan_json(plan, entries, json::array()), {}, {}}, etag_of(export_config(now, export_names(now))));
  }
  auto written = commit_to_fleet(std::move(compares), std::move(ops), first_id + static_cast<std::int64_t>(w.created));
  if (written.failed) return *written.failed;
  if (!written.revision) {
    return error_reply(409, "conflict",
                       "the configuration was changed by another host while this one was applied; read it again");
  }
  for (auto& f : applied.forwards) f.mod_revision = *written.revision;
  applied.revision = *written.revision;
  converge_locked(applied);
  spdlog::info("configuration applied to the fleet (revision {}): {} created, {} changed, {} deleted, {} unchanged",
               *written.revision, w.created, w.specs.size() - w.created, plan.remove.size(), plan.unchanged.size());
  const auto now = store_.list();
  return with_etag({200, plan_json(plan, entries, json::array()), {}, {}}, etag_of(export_config(now, export_names(now))));
}

}  // namespace api
