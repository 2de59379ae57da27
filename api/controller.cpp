// controller: the create/patch/delete sequences and the start-up replay.
#include "api/controller.hpp"

#include "api/forward_checks.hpp"
#include "api/forward_json.hpp"

#include <spdlog/spdlog.h>

namespace api {

namespace {
std::string describe(const relay::forward_spec& s) {
  return std::string(relay::to_string(s.protocol)) + " " + relay::listen_endpoint(s) + " -> " +
         relay::targets_summary(s) + (s.enabled ? "" : " (disabled)");
}

// Why a stored forward cannot be served as it is: the checks a request must pass, applied to the row.
std::optional<std::string> stored_problem(const store::stored_forward& f) {
  if (!f.invalid.empty()) return "stored forward is invalid: " + f.invalid;
  if (auto e = check_spec(f.spec)) return "stored forward is invalid: " + e->message;
  return std::nullopt;
}

}  // namespace

controller::controller(store::forward_store& store, relay::engine& engine) : store_(store), engine_(engine) {}

json controller::render(const store::stored_forward& f) {
  auto out = to_json(f, engine_.status(f.spec.id));
  if (fleet_) {
    json hosts = json::array();
    for (const auto& h : fleet_->hosts_of(f.spec.id)) {
      hosts.push_back(json{{"host", h.host},
                           {"state", h.state},
                           {"error", h.error.empty() ? json(nullptr) : json(h.error)},
                           {"applied_revision", h.applied_revision}});
    }
    out["hosts"] = std::move(hosts);
  }
  return out;
}

std::optional<api_error> controller::prepare(relay::forward_spec& next, relay::engine::prepared& out) {
  auto p = engine_.prepare(next);
  if (!p) return bind_refusal(next, p.error());
  if (next.enabled) next.listen_port = p.value().port;
  out = std::move(p.value());
  return std::nullopt;
}

std::optional<api_error> controller::serve(relay::forward_spec& spec) {
  relay::engine::prepared p;
  if (auto e = prepare(spec, p)) {
    engine_.fail(spec, e->message);
    return e;
  }
  engine_.apply(spec, std::move(p));
  return std::nullopt;
}

// After prepare, so that a forward on port 0 is checked with the port it got.
std::optional<api_error> controller::refuse_target(const relay::forward_spec& next) const {
  auto r = engine_.check_target(next);
  if (!r) return std::nullopt;
  return target_refusal(next, *r);
}

void controller::restore() {
  std::lock_guard lock(mutex_);
  for (auto& f : store_.list()) {
    if (auto problem = stored_problem(f)) {
      spdlog::warn("forward {} not restored: {}", f.spec.id, *problem);
      engine_.fail(f.spec, *problem);
      continue;
    }
    auto spec = f.spec;
    if (auto e = foreign_source(spec, nullptr)) {
      // Served all the same: the address may come back (a late interface), and until then each
      // connection to a target fails with this error, as GET's stats show.
      spdlog::warn("forward {}: {}", spec.id, e->message);
    }
    if (auto e = serve(spec)) {
      spdlog::warn("forward {} failed to bind: {}", spec.id, e->message);
      continue;
    }
    if (spec.listen_port != f.spec.listen_port) store_.update(spec);
    spdlog::info("forward {} restored: {}", spec.id, describe(spec));
  }
}

reply controller::list() {
  std::lock_guard lock(mutex_);  // a forward half way through a change is not shown
  json out = json::array();
  for (const auto& f : store_.list()) out.push_back(render(f));
  return {200, std::move(out), {}, {}};
}

reply controller::get(std::int64_t id, bool per_port) {
  std::lock_guard lock(mutex_);
  auto f = store_.get(id);
  if (!f) return forward_not_found(id);
  auto out = render(*f);
  if (per_port) out["per_port"] = port_rows(engine_.port_status(id));
  return {200, std::move(out), {}, {}};
}

bool controller::exists(std::int64_t id) { return store_.get(id).has_value(); }

reply controller::create(const json& body) {
  relay::forward_spec spec;
  if (auto e = parse_create(body, spec)) return error_reply(*e);
  if (auto e = foreign_source(spec, nullptr)) return error_reply(*e);
  std::lock_guard lock(mutex_);
  if (fleet_) return fleet_create(std::move(spec));
  relay::engine::prepared p;
  if (auto e = prepare(spec, p)) return error_reply(*e);
  if (auto e = refuse_target(spec)) {
    engine_.abandon(spec, std::move(p));
    return error_reply(*e);
  }
  store::stored_forward f;
  try {
    f = store_.insert(spec);
  } catch (const std::exception& e) {
    engine_.abandon(spec, std::move(p));
    return storage_failed(e);
  }
  engine_.apply(f.spec, std::move(p));
  spdlog::info("forward {} created: {}", f.spec.id, describe(f.spec));
  return {201, render(f), "/api/v1/forwards/" + std::to_string(f.spec.id), {}};
}

reply controller::patch(std::int64_t id, const json& body) {
  std::lock_guard lock(mutex_);
  if (fleet_) return fleet_patch(id, body);
  auto current = store_.get(id);
  if (!current) return forward_not_found(id);
  relay::forward_spec next;
  if (auto e = apply_patch(body, *current, next)) return error_reply(*e);
  if (auto e = foreign_source(next, &current->spec)) return error_reply(*e);
  relay::engine::prepared p;
  auto bind_error = prepare(next, p);
  if (bind_error) {
    // A forward already in error that keeps its address can still be renamed or retargeted: the
    // change is saved and it stays in error with the fresh reason. A new address that fails is a 4xx.
    const auto& was = current->spec;
    const bool same_address = next.protocol == was.protocol && next.listen_host == was.listen_host &&
                              next.listen_port == was.listen_port;
    if (!same_address || engine_.status(id).state != relay::forward_state::error) return error_reply(*bind_error);
  }
  if (auto e = refuse_target(next)) {
    engine_.abandon(next, std::move(p));
    return error_reply(*e);
  }
  std::optional<store::stored_forward> f;
  try {
    f = store_.update(next);
  } catch (const std::exception& e) {
    engine_.abandon(next, std::move(p));
    return storage_failed(e);
  }
  if (!f) {
    engine_.abandon(next, std::move(p));
    return forward_not_found(id);
  }
  if (bind_error) {
    engine_.fail(next, bind_error->message);
    spdlog::info("forward {} changed, still not listening: {}", id, describe(next));
  } else {
    engine_.apply(next, std::move(p));
    spdlog::info("forward {} changed: {}", id, describe(next));
  }
  return {200, render(*f), {}, {}};
}

reply controller::remove(std::int64_t id) {
  std::lock_guard lock(mutex_);
  if (fleet_) return fleet_remove(id);
  try {
    if (!store_.remove(id)) return forward_not_found(id);
  } catch (const std::exception& e) {
    return storage_failed(e);
  }
  engine_.remove(id);
  spdlog::info("forward {} deleted", id);
  return {204, nullptr, {}, {}};
}

reply controller::connections(std::int64_t id, std::uint64_t after, std::size_t limit) {
  if (!exists(id)) return forward_not_found(id);
  return {200, connections_json(engine_.connections(id, after, limit)), {}, {}};
}

reply controller::close_connection(std::int64_t id, std::uint64_t connection) {
  if (!exists(id)) return forward_not_found(id);
  const auto closed = engine_.close_connection(id, connection);
  if (!closed) {
    return error_reply(404, "not_found",
                       "forward " + std::to_string(id) + " has no connection " + std::to_string(connection));
  }
  spdlog::info("forward {}: connection {} from {} closed over the API", id, connection,
               relay::format_endpoint(closed->client_address.to_string(), closed->client_port));
  return {204, nullptr, {}, {}};
}

reply controller::close_connections(std::int64_t id, const relay::ip_prefix& clients) {
  if (!exists(id)) return forward_not_found(id);
  // A /0 of either family is "everyone": 0.0.0.0/0 closes the IPv6 clients too, as an operator
  // cutting everyone off in an incident means (::/0 matches IPv4 clients as IPv4-mapped already).
  const auto everyone = relay::ip_prefix{asio::ip::address_v6::any(), 0};
  const auto closed = engine_.close_connections(id, relay::prefix_set({clients.length == 0 ? everyone : clients}));
  // An operator's cut is worth a line; a DELETE that matched no one is not (a script's loop would spam).
  spdlog::log(closed > 0 ? spdlog::level::info : spdlog::level::debug, "forward {}: {} connection{} from {} closed over the API", id, closed,
              closed == 1 ? "" : "s", relay::to_string(clients));
  return {200, json{{"closed", closed}}, {}, {}};
}

}  // namespace api
