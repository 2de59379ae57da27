// forward_json: field-by-field mapping between JSON and forward_spec, naming each bad field.
#include "api/forward_json.hpp"

#include "relay/ip_zone.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

namespace api {

namespace {

constexpr std::array read_only_fields{"id", "state", "error", "created_at", "updated_at", "stats"};
constexpr std::array required_on_create{"protocol", "listen_port", "target_host", "target_port"};

api_error invalid(std::string field, std::string message) {
  return {400, "invalid_field", std::move(message), std::move(field)};
}

template <class T>
std::optional<api_error> read_integer(const json& v, const char* field, std::int64_t min, std::int64_t max, T& out) {
  const std::string range = " from " + std::to_string(min) + " to " + std::to_string(max);
  if (!v.is_number_integer()) return invalid(field, std::string(field) + " must be an integer" + range);
  // Huge values parse as unsigned; compare in the type they were parsed as so none wraps.
  const bool in_range =
      v.is_number_unsigned()
          ? v.get<std::uint64_t>() >= static_cast<std::uint64_t>(min) && v.get<std::uint64_t>() <= static_cast<std::uint64_t>(max)
          : v.get<std::int64_t>() >= min && v.get<std::int64_t>() <= max;
  if (!in_range) return invalid(field, std::string(field) + " must be" + range);
  out = static_cast<T>(v.get<std::int64_t>());
  return std::nullopt;
}

std::optional<api_error> read_string(const json& v, const char* field, std::string& out) {
  if (!v.is_string()) return invalid(field, std::string(field) + " must be a string");
  out = v.get<std::string>();
  return std::nullopt;
}

std::optional<api_error> checked(const char* field, std::optional<std::string> problem) {
  if (problem) return invalid(field, *problem);
  return std::nullopt;
}

constexpr std::array writable_fields{"name",        "protocol",           "listen_host",     "listen_port", "target_host",
                                     "target_port", "enabled", "udp_idle_timeout_s", "udp_max_sessions"};

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
  for (std::string_view field : writable_fields) {
    const auto distance = edit_distance(key, field);
    if (distance < best_distance) {
      best = field;
      best_distance = distance;
      tie = false;
    } else if (distance == best_distance) {
      tie = true;
    }
  }
  if (tie || best_distance > limit) return std::nullopt;
  return best;
}

// Applies one field of a request body to spec.
std::optional<api_error> apply_field(const std::string& key, const json& v, relay::forward_spec& spec) {
  if (key == "name") {
    if (auto e = read_string(v, "name", spec.name)) return e;
    return checked("name", relay::check_name(spec.name));
  }
  if (key == "protocol") {
    std::string text;
    if (auto e = read_string(v, "protocol", text)) return e;
    auto p = relay::parse_protocol(text);
    if (!p) return invalid("protocol", "protocol must be \"tcp\" or \"udp\"");
    spec.protocol = *p;
    return std::nullopt;
  }
  if (key == "udp_idle_timeout_s") return read_integer(v, "udp_idle_timeout_s", 1, 86400, spec.udp_idle_timeout_s);
  if (key == "udp_max_sessions") return read_integer(v, "udp_max_sessions", 1, 1000000, spec.udp_max_sessions);
  if (key == "listen_host") {
    if (auto e = read_string(v, "listen_host", spec.listen_host)) return e;
    if (auto e = checked("listen_host", relay::check_listen_host(spec.listen_host))) return e;
    spec.listen_host = relay::canonical_address(spec.listen_host);
    return std::nullopt;
  }
  if (key == "listen_port") return read_integer(v, "listen_port", 0, 65535, spec.listen_port);
  if (key == "target_host") {
    if (auto e = read_string(v, "target_host", spec.target_host)) return e;
    return checked("target_host", relay::check_target_host(spec.target_host));
  }
  if (key == "target_port") return read_integer(v, "target_port", 1, 65535, spec.target_port);
  if (key == "enabled") {
    if (!v.is_boolean()) return invalid("enabled", "enabled must be true or false");
    spec.enabled = v.get<bool>();
    return std::nullopt;
  }
  for (const char* ro : read_only_fields) {
    if (key == ro) return api_error{400, "read_only_field", "field '" + key + "' is read-only", key};
  }
  std::string message = "unknown field '" + relay::printable(key) + "'";  // the page shows it
  if (auto near = nearest_field(key)) message += " (did you mean '" + std::string(*near) + "'?)";
  return api_error{400, "unknown_field", std::move(message), key};
}

std::optional<api_error> apply_fields(const json& body, relay::forward_spec& spec) {
  if (!body.is_object()) return api_error{400, "invalid_body", "the request body must be a JSON object"};
  for (const auto& [key, value] : body.items()) {
    if (auto e = apply_field(key, value, spec)) return e;
  }
  return std::nullopt;
}

// The interface in a listen_host that a request gives must exist now. One stored earlier is not
// asked for again (the forward may be disabled, its interface due to come back): binding it tells.
std::optional<api_error> check_given_interface(const json& body, const relay::forward_spec& spec) {
  if (!body.contains("listen_host")) return std::nullopt;
  return checked("listen_host", relay::check_interface(spec.listen_host));
}

std::optional<api_error> parse_fields(const json& body, relay::forward_spec& out) {
  relay::forward_spec spec;
  if (auto e = apply_fields(body, spec)) return e;
  for (const char* field : required_on_create) {
    if (!body.contains(field)) {
      return api_error{400, "missing_field", std::string("field '") + field + "' is required", field};
    }
  }
  out = std::move(spec);
  return std::nullopt;
}

}  // namespace

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
  if (auto e = parse_fields(body, spec)) return e;
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
  if (!current.invalid_field.empty() && body.is_object() && !body.contains(current.invalid_field)) {
    return invalid(current.invalid_field, "the stored " + current.invalid + "; the change must give a new " +
                                              current.invalid_field);
  }
  relay::forward_spec next = current.spec;
  if (auto e = apply_patch(body, next)) return e;
  out = std::move(next);
  return std::nullopt;
}

std::optional<api_error> check_spec(const relay::forward_spec& spec) {
  const json body{{"name", spec.name},
                  {"protocol", relay::to_string(spec.protocol)},
                  {"listen_host", spec.listen_host},
                  {"listen_port", spec.listen_port},
                  {"target_host", spec.target_host},
                  {"target_port", spec.target_port},
                  {"enabled", spec.enabled},
                  {"udp_idle_timeout_s", spec.udp_idle_timeout_s},
                  {"udp_max_sessions", spec.udp_max_sessions}};
  relay::forward_spec checked_spec;
  return parse_fields(body, checked_spec);
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
             {"loops_refused", st.loops_refused}};
  if (udp) {
    stats["datagrams_up"] = st.datagrams_up;
    stats["datagrams_down"] = st.datagrams_down;
    stats["datagrams_dropped"] = st.datagrams_dropped;
    stats["sessions_evicted"] = st.sessions_evicted;
    stats["target_unreachable"] = st.target_unreachable;
  }
  return json{
      {"id", s.id},
      {"name", relay::printable(s.name)},
      {"protocol", relay::to_string(s.protocol)},
      {"listen_host", relay::printable(s.listen_host)},
      {"listen_port", s.listen_port},
      {"target_host", relay::printable(s.target_host)},
      {"target_port", s.target_port},
      {"enabled", s.enabled},
      {"udp_idle_timeout_s", udp ? json(s.udp_idle_timeout_s) : json(nullptr)},
      {"udp_max_sessions", udp ? json(s.udp_max_sessions) : json(nullptr)},
      {"state", relay::to_string(status.state)},
      {"error", status.error.empty() ? json(nullptr) : json(status.error)},
      {"created_at", f.created_at},
      {"updated_at", f.updated_at},
      {"stats", std::move(stats)},
  };
}

}  // namespace api
