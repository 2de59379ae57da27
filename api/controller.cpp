// controller: the create/patch/delete sequences and the start-up replay.
#include "api/controller.hpp"

#include "api/forward_json.hpp"
#include "relay/socket_options.hpp"

#include <spdlog/spdlog.h>

namespace api {

namespace {
std::string describe(const relay::forward_spec& s) {
  return std::string(relay::to_string(s.protocol)) + " " + relay::listen_endpoint(s) + " -> " +
         relay::targets_summary(s) + (s.enabled ? "" : " (disabled)");
}

reply not_found(std::int64_t id) {
  return error_reply(404, "not_found", "there is no forward with id " + std::to_string(id));
}

// The host ran out of something a listener needs: a 503, not the client's fault and not its field.
std::optional<std::string> exhausted_resource(const std::error_code& code) {
  if (!relay::is_resource_error(code)) return std::nullopt;
  if (code == std::errc::too_many_files_open) return "file descriptors of the portrelay process (RLIMIT_NOFILE)";
  if (code == std::errc::too_many_files_open_in_system) return "file descriptors of the system (fs.file-max)";
  return "kernel memory";  // ENOBUFS, ENOMEM
}

// Why a stored forward cannot be served as it is: the checks a request must pass, applied to the row.
std::optional<std::string> stored_problem(const store::stored_forward& f) {
  if (!f.invalid.empty()) return "stored forward is invalid: " + f.invalid;
  if (auto e = check_spec(f.spec)) return "stored forward is invalid: " + e->message;
  return std::nullopt;
}

// Why `next`'s source_address cannot be used here: an address this host does not have (asked of the
// kernel with a bind, so it cannot be a field check). Asked only when the address is new to the
// forward (`was` is the stored one): a forward whose address went away since can still be changed.
// When the kernel cannot be asked for want of a resource, nothing: its connections will say.
std::optional<api_error> foreign_source(const relay::forward_spec& next, const relay::forward_spec* was) {
  if (!next.source_address || (was && was->source_address == next.source_address)) return std::nullopt;
  const auto ec = relay::check_local_address(*next.source_address);
  if (!ec || relay::is_resource_error(ec)) return std::nullopt;
  const auto address = next.source_address->to_string();
  return api_error{400, "invalid_field",
                   ec.value() == EADDRNOTAVAIL
                       ? "source_address " + address + " is not an address of this host"
                       : "source_address " + address + " cannot be bound: " + ec.message(),
                   "source_address"};
}

reply storage_failed(const std::exception& e) {
  spdlog::error("store: {}", e.what());
  return error_reply(500, "storage_error", "the change could not be saved; nothing was changed");
}
}  // namespace

controller::controller(store::forward_store& store, relay::engine& engine) : store_(store), engine_(engine) {}

json controller::render(const store::stored_forward& f) { return to_json(f, engine_.status(f.spec.id)); }

std::optional<api_error> controller::prepare(relay::forward_spec& next, relay::engine::prepared& out) {
  auto p = engine_.prepare(next);
  if (!p) {
    const auto& e = p.error();
    if (e.code == std::errc::address_in_use) {
      // A range's message names the port that is taken ("listen port 40012 is in use: bind ...").
      const auto where = relay::listen_endpoint(next);
      return api_error{409, "address_in_use",
                       next.listen_port_end ? e.message + " (range " + where + "; nothing was bound)"
                                            : "listen address " + where + " is already in use (" + e.message + ")",
                       "listen_port"};
    }
    if (e.code == relay::range_over_budget) {
      return api_error{409, "descriptor_limit", "cannot listen on " + relay::listen_endpoint(next) + ": " + e.message,
                       "listen_port_end"};
    }
    if (auto resource = exhausted_resource(e.code)) {
      return api_error{503, "resource_exhausted",
                       "cannot listen on " + relay::listen_endpoint(next) + ": the host is out of " + *resource +
                           " (" + e.message + "); try again later"};
    }
    return api_error{400, "bind_failed", "cannot listen on " + relay::listen_endpoint(next) + ": " + e.message,
                     "listen_host"};
  }
  if (next.enabled) next.listen_port = p.value().port;
  out = std::move(p.value());
  return std::nullopt;
}

// After prepare, so that a forward on port 0 is checked with the port it got.
std::optional<api_error> controller::refuse_target(const relay::forward_spec& next) const {
  auto r = engine_.check_target(next);
  if (!r) return std::nullopt;
  // The field is the port: a local target host is ordinary, it is the port that makes it the API or
  // a listener of this daemon.
  const bool api = r->kind == relay::refusal::kind::api;
  return api_error{400, api ? "target_is_api" : "forward_loop", r->message,
                   next.targets.size() == 1 ? "target_port" : "targets"};
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
    relay::engine::prepared p;
    if (auto e = prepare(spec, p)) {
      spdlog::warn("forward {} failed to bind: {}", spec.id, e->message);
      engine_.fail(f.spec, e->message);
      continue;
    }
    if (spec.listen_port != f.spec.listen_port) store_.update(spec);
    engine_.apply(spec, std::move(p));
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
  if (!f) return not_found(id);
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
  auto current = store_.get(id);
  if (!current) return not_found(id);
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
    return not_found(id);
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
  try {
    if (!store_.remove(id)) return not_found(id);
  } catch (const std::exception& e) {
    return storage_failed(e);
  }
  engine_.remove(id);
  spdlog::info("forward {} deleted", id);
  return {204, nullptr, {}, {}};
}

reply controller::connections(std::int64_t id, std::uint64_t after, std::size_t limit) {
  if (!exists(id)) return not_found(id);
  return {200, connections_json(engine_.connections(id, after, limit)), {}, {}};
}

reply controller::close_connection(std::int64_t id, std::uint64_t connection) {
  if (!exists(id)) return not_found(id);
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
  if (!exists(id)) return not_found(id);
  const auto closed = engine_.close_connections(id, relay::prefix_set({clients}));
  spdlog::info("forward {}: {} connection{} from {} closed over the API", id, closed, closed == 1 ? "" : "s",
               relay::to_string(clients));
  return {200, json{{"closed", closed}}, {}, {}};
}

}  // namespace api
