// forward_json: field-by-field mapping between JSON and forward_spec, naming each bad field.
#include "api/forward_json.hpp"

#include "relay/forward_fields.hpp"
#include "relay/ip_zone.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <ctime>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

namespace api {

namespace {

constexpr std::array read_only_fields{"id", "state", "error", "created_at", "updated_at", "stats"};

api_error invalid(std::string field, std::string message) {
  return {400, "invalid_field", std::move(message), std::move(field)};
}

api_error missing(const std::string& field) {
  return {400, "missing_field", "field '" + field + "' is required", field};
}

// Every string in `value` through relay::printable (a hand-edited store's strings are shown safely).
void make_printable(json& value) {
  if (value.is_string()) {
    value = relay::printable(value.get<std::string>());
  } else if (value.is_structured()) {
    for (auto& item : value) make_printable(item);
  }
}

// Optimal string alignment distance: edits, where swapping two neighbours is one edit ("tagret").
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// The field an unknown key most likely meant: within 2 edits (1 for keys of up to 4 characters),
// and only when one field is nearest. Keys over 64 characters are not compared.
std::optional<std::string_view> nearest_field(std::string_view key) {
  if (key.size() > 64) return std::nullopt;
  const std::size_t limit = key.size() <= 4 ? 1 : 2;
  std::optional<std::string_view> best;
  std::size_t best_distance = limit + 1;
  bool tie = false;
  for (const auto& field : relay::forward_fields()) {
    const auto distance = edit_distance(key, field.name);
    if (distance < best_distance) {
      best = field.name;
      best_distance = distance;
      tie = false;
    } else if (distance == best_distance) {
      tie = true;
    }
  }
  if (tie || best_distance > limit) return std::nullopt;
  return best;
}

api_error unknown_field(const std::string& key) {
  for (const char* ro : read_only_fields) {
    if (key == ro) return api_error{400, "read_only_field", "field '" + key + "' is read-only", key};
  }
  std::string message = "unknown field '" + relay::printable(key) + "'";  // the page shows it
  if (auto near = nearest_field(key)) message += " (did you mean '" + std::string(*near) + "'?)";
  return api_error{400, "unknown_field", std::move(message), key};
}

// Applies a request body's fields to spec, in two passes. The first reads every value that is not
// null, so the protocol is known; the second holds each field to that protocol: a value for a
// field that does not apply to it is refused, and null is accepted only for such a field (it is
// what GET shows there; it sets the field back to its default), never in place of a value.
std::optional<api_error> apply_fields(const json& body, relay::forward_spec& spec) {
  if (!body.is_object()) return api_error{400, "invalid_body", "the request body must be a JSON object"};
  // With `targets`, the shorthand fields may only repeat what GET shows beside it (null for a pool,
  // the one target's host and port otherwise), so that a GET edited and sent back is accepted.
  const bool pool_given = body.contains("targets");
  const auto echoed = [&](const relay::forward_field& f) { return pool_given && f.shorthand; };
  for (const auto& [key, value] : body.items()) {
    const auto* field = relay::find_field(key);
    if (!field) return unknown_field(key);
    if (value.is_null() || echoed(*field)) continue;
    if (auto bad = field->read(value, spec)) return invalid(key, std::move(*bad));
  }
  for (const auto& [key, value] : body.items()) {
    const auto* field = relay::find_field(key);
    if (echoed(*field)) {
      if (!value.is_null() && value != field->write(spec)) {
        return invalid("targets", "give either targets or the shorthand target_host and target_port, not both (" +
                                      key + " differs from targets)");
      }
    } else if (field->applies_to(spec.protocol)) {
      if (value.is_null()) {
        if (auto bad = field->read(value, spec)) return invalid(key, std::move(*bad));
      }
    } else if (!value.is_null()) {
      return invalid(key, key + " applies only to " + (field->tcp ? "tcp" : "udp") + " forwards");
    } else {
      field->read(field->write(relay::forward_spec{}), spec);  // null: back to the default
    }
  }
  return std::nullopt;
}

// The interface in a listen_host that a request gives must exist now. One stored earlier is not
// asked for again (the forward may be disabled, its interface due to come back): binding it tells.
std::optional<api_error> check_given_interface(const json& body, const relay::forward_spec& spec) {
  if (!body.contains("listen_host")) return std::nullopt;
  if (auto bad = relay::check_interface(spec.listen_host)) return invalid("listen_host", std::move(*bad));
  return std::nullopt;
}

// A time as RFC 3339 in UTC, like created_at.
std::string rfc3339(std::chrono::system_clock::time_point at) {
  const std::time_t t = std::chrono::system_clock::to_time_t(at);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json target_json(const relay::target_stats& t, const std::string& fallback_since) {
  const bool has_since = t.since != std::chrono::system_clock::time_point{};
  return json{{"host", t.host},
              {"port", t.port},
              {"health", relay::to_string(t.health)},
              {"since", has_since ? rfc3339(t.since) : fallback_since},
              {"last_error", t.last_error.empty() ? json(nullptr) : json(t.last_error)},
              {"connections_active", t.connections_active},
              {"connections_total", t.connections_total},
              {"bytes_up", t.bytes_up},
              {"bytes_down", t.bytes_down},
              {"connect_errors", t.connect_errors}};
}

}  // namespace

std::vector<relay::target_stats> target_rows(const relay::forward_spec& spec, const relay::forward_status& status) {
  // status.targets is positional: engine::status_of takes it from the forward's target_pool, which
  // has one row per target of the spec the engine holds, in its order, and is renewed on every change
  // of the targets, disabled forwards included (engine::apply, engine::fail). So row i is target i
  // whenever the engine holds this spec. Otherwise (a count or a host:port that differs) a row is
  // looked for by host and port, and a target with none gets zeros.
  const bool same_count = status.targets.size() == spec.targets.size();
  std::vector<relay::target_stats> rows;
  rows.reserve(spec.targets.size());
  for (std::size_t i = 0; i < spec.targets.size(); ++i) {
    const auto& t = spec.targets[i];
    const auto is_t = [&](const relay::target_stats& s) { return s.host == t.host && s.port == t.port; };
    if (same_count && is_t(status.targets[i])) {
      rows.push_back(status.targets[i]);
    } else if (auto live = std::find_if(status.targets.begin(), status.targets.end(), is_t);
               live != status.targets.end()) {
      rows.push_back(*live);
    } else {
      relay::target_stats none;
      none.host = t.host;
      none.port = t.port;
      rows.push_back(std::move(none));
    }
  }
  return rows;
}

std::optional<api_error> parse_body(std::string_view text, json& out) {
  std::vector<std::set<std::string>> keys;  // one set for each object being read, innermost last
  std::optional<api_error> duplicate;
  auto on_event = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      keys.pop_back();
    } else if (event == json::parse_event_t::key && !duplicate) {
      auto key = parsed.get<std::string>();
      if (!keys.back().insert(key).second) {
        duplicate = api_error{400, "duplicate_key",
                              "key '" + relay::printable(key) + "' appears more than once in one object",
                              keys.size() == 1 ? key : std::string()};
      }
    }
    return true;
  };
  auto doc = json::parse(text.begin(), text.end(), on_event, false);
  if (doc.is_discarded()) return api_error{400, "invalid_json", "the request body is not valid JSON"};
  if (duplicate) return duplicate;
  out = std::move(doc);
  return std::nullopt;
}

std::optional<api_error> parse_create(const json& body, relay::forward_spec& out) {
  relay::forward_spec spec;
  if (auto e = apply_fields(body, spec)) return e;
  for (const auto& field : relay::forward_fields()) {
    if (field.required && !body.contains(field.name)) return missing(field.name);
  }
  // A pool, or the shorthand for one target: both of its fields.
  if (!body.contains("targets")) {
    if (!body.contains("target_host") && !body.contains("target_port")) {
      return api_error{400, "missing_field", "field 'targets' (or 'target_host' and 'target_port') is required",
                       "targets"};
    }
    if (!body.contains("target_host")) return missing("target_host");
    if (!body.contains("target_port")) return missing("target_port");
  }
  if (auto bad = relay::check_across(spec)) return invalid(bad->field, std::move(bad->message));
  if (auto e = check_given_interface(body, spec)) return e;
  out = std::move(spec);
  return std::nullopt;
}

std::optional<api_error> apply_patch(const json& body, relay::forward_spec& spec) {
  relay::forward_spec next = spec;
  if (auto e = apply_fields(body, next)) return e;
  if (auto e = check_spec(next)) return e;
  if (auto e = check_given_interface(body, next)) return e;
  spec = std::move(next);
  return std::nullopt;
}

std::optional<api_error> apply_patch(const json& body, const store::stored_forward& current, relay::forward_spec& out) {
  // A pool is mended through `targets`, or through the shorthand when it has one target.
  const bool gives = body.is_object() && (body.contains(current.invalid_field) ||
                                          (current.invalid_field == "targets" && current.spec.targets.size() <= 1 &&
                                           (body.contains("target_host") || body.contains("target_port"))));
  if (!current.invalid_field.empty() && body.is_object() && !gives) {
    return invalid(current.invalid_field, "the stored forward is invalid (" + current.invalid +
                                              "); the change must give a new " + current.invalid_field);
  }
  relay::forward_spec next = current.spec;
  if (auto e = apply_patch(body, next)) return e;
  out = std::move(next);
  return std::nullopt;
}

std::optional<api_error> check_spec(const relay::forward_spec& spec) {
  relay::forward_spec checked_spec;
  if (auto bad = relay::from_document(relay::to_document(spec), checked_spec)) {
    return invalid(bad->field, std::move(bad->message));
  }
  return std::nullopt;
}

json connections_json(const relay::connection_page& page) {
  json items = json::array();
  for (const auto& c : page.items) {
    const double idle = std::chrono::duration<double>(c.idle).count();
    items.push_back(json{{"id", c.id},
                         {"protocol", relay::to_string(c.protocol)},
                         {"client", relay::format_endpoint(c.client_address.to_string(), c.client_port)},
                         {"listen", relay::format_endpoint(c.listen_address.to_string(), c.listen_port)},
                         {"target", c.target ? json(relay::printable(*c.target)) : json(nullptr)},
                         {"state", relay::to_string(c.state)},
                         {"started_at", rfc3339(c.started_at)},
                         {"idle_s", std::round(idle * 10) / 10},
                         {"bytes_up", c.bytes_up},
                         {"bytes_down", c.bytes_down}});
  }
  const bool more = page.more && !page.items.empty();
  return json{{"connections", std::move(items)},
              {"next", more ? json(std::to_string(page.items.back().id)) : json(nullptr)}};
}

json port_rows(const std::vector<relay::port_snapshot>& ports) {
  json out = json::array();
  for (const auto& p : ports) {
    out.push_back(json{{"port", p.port},
                       {"connections_active", p.connections_active},
                       {"connections_total", p.connections_total},
                       {"bytes_up", p.bytes_up},
                       {"bytes_down", p.bytes_down}});
  }
  return out;
}

json to_json(const store::stored_forward& f, const relay::forward_status& status) {
  const auto& s = f.spec;
  const bool udp = s.protocol == relay::protocol::udp;
  const auto& st = status.stats;
  json stats{{"connections_active", st.connections_active},
             {"connections_total", st.connections_total},
             {"bytes_up", st.bytes_up},
             {"bytes_down", st.bytes_down},
             {"connect_errors", st.connect_errors},
             {"loops_refused", st.loops_refused},
             {"refused_acl", st.refused_acl},
             {"refused_limit", st.refused_limit}};
  if (udp) {
    stats["datagrams_up"] = st.datagrams_up;
    stats["datagrams_down"] = st.datagrams_down;
    stats["datagrams_dropped"] = st.datagrams_dropped;
    stats["sessions_evicted"] = st.sessions_evicted;
    stats["target_unreachable"] = st.target_unreachable;
  } else {
    stats["proxy_errors"] = st.proxy_errors;
  }
  json targets = json::array();
  for (const auto& t : target_rows(s, status)) targets.push_back(target_json(t, f.updated_at));
  make_printable(targets);  // a hand-edited store's host
  stats["targets"] = std::move(targets);
  json out{{"id", s.id}};
  for (const auto& field : relay::forward_fields()) {
    auto value = field.applies_to(s.protocol) ? field.write(s) : json(nullptr);
    make_printable(value);  // a hand-edited store
    out[field.name] = std::move(value);
  }
  out["state"] = relay::to_string(status.state);
  out["error"] = status.error.empty() ? json(nullptr) : json(status.error);
  out["created_at"] = f.created_at;
  out["updated_at"] = f.updated_at;
  out["stats"] = std::move(stats);
  return out;
}

}  // namespace api
