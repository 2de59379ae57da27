// forward_json: field-by-field mapping between JSON and forward_spec, naming each bad field.
#include "api/forward_json.hpp"

#include <array>
#include <string_view>

namespace api {

namespace {

constexpr std::array read_only_fields{"id", "state", "error", "created_at", "updated_at", "stats"};
constexpr std::array required_on_create{"protocol", "listen_port", "target_host", "target_port"};

api_error invalid(std::string message) { return {400, "invalid_field", std::move(message)}; }

std::optional<api_error> read_port(const json& v, const char* field, std::int64_t min, std::uint16_t& out) {
  const std::string range = " from " + std::to_string(min) + " to 65535";
  if (!v.is_number_integer()) return invalid(std::string(field) + " must be an integer" + range);
  // Huge values parse as unsigned; compare in the type they were parsed as so none wraps.
  const bool in_range = v.is_number_unsigned()
                            ? v.get<std::uint64_t>() >= static_cast<std::uint64_t>(min) && v.get<std::uint64_t>() <= 65535
                            : v.get<std::int64_t>() >= min && v.get<std::int64_t>() <= 65535;
  if (!in_range) return invalid(std::string(field) + " must be" + range);
  out = static_cast<std::uint16_t>(v.get<std::int64_t>());
  return std::nullopt;
}

std::optional<api_error> read_string(const json& v, const char* field, std::string& out) {
  if (!v.is_string()) return invalid(std::string(field) + " must be a string");
  out = v.get<std::string>();
  return std::nullopt;
}

std::optional<api_error> checked(std::optional<std::string> problem) {
  if (problem) return invalid(*problem);
  return std::nullopt;
}

// Applies one field of a request body to spec.
std::optional<api_error> apply_field(const std::string& key, const json& v, relay::forward_spec& spec) {
  if (key == "name") {
    if (auto e = read_string(v, "name", spec.name)) return e;
    return checked(relay::check_name(spec.name));
  }
  if (key == "protocol") {
    std::string text;
    if (auto e = read_string(v, "protocol", text)) return e;
    auto p = relay::parse_protocol(text);
    if (!p) return invalid("protocol must be \"tcp\" or \"udp\"");
    if (*p == relay::protocol::udp) {
      return api_error{400, "unsupported_protocol", "UDP forwards are not supported yet; use \"tcp\""};
    }
    spec.protocol = *p;
    return std::nullopt;
  }
  if (key == "listen_host") {
    if (auto e = read_string(v, "listen_host", spec.listen_host)) return e;
    if (auto e = checked(relay::check_listen_host(spec.listen_host))) return e;
    spec.listen_host = relay::canonical_address(spec.listen_host);
    return std::nullopt;
  }
  if (key == "listen_port") return read_port(v, "listen_port", 0, spec.listen_port);
  if (key == "target_host") {
    if (auto e = read_string(v, "target_host", spec.target_host)) return e;
    return checked(relay::check_target_host(spec.target_host));
  }
  if (key == "target_port") return read_port(v, "target_port", 1, spec.target_port);
  if (key == "enabled") {
    if (!v.is_boolean()) return invalid("enabled must be true or false");
    spec.enabled = v.get<bool>();
    return std::nullopt;
  }
  for (const char* ro : read_only_fields) {
    if (key == ro) return api_error{400, "read_only_field", "field '" + key + "' is read-only"};
  }
  return api_error{400, "unknown_field", "unknown field '" + key + "'"};
}

std::optional<api_error> apply_fields(const json& body, relay::forward_spec& spec) {
  if (!body.is_object()) return api_error{400, "invalid_body", "the request body must be a JSON object"};
  for (const auto& [key, value] : body.items()) {
    if (auto e = apply_field(key, value, spec)) return e;
  }
  return std::nullopt;
}

}  // namespace

std::optional<api_error> parse_create(const json& body, relay::forward_spec& out) {
  relay::forward_spec spec;
  if (auto e = apply_fields(body, spec)) return e;
  for (const char* field : required_on_create) {
    if (!body.contains(field)) return api_error{400, "missing_field", std::string("field '") + field + "' is required"};
  }
  out = std::move(spec);
  return std::nullopt;
}

std::optional<api_error> apply_patch(const json& body, relay::forward_spec& spec) {
  relay::forward_spec next = spec;
  if (auto e = apply_fields(body, next)) return e;
  spec = std::move(next);
  return std::nullopt;
}

json to_json(const store::stored_forward& f, const relay::forward_status& status) {
  const auto& s = f.spec;
  return json{
      {"id", s.id},
      {"name", s.name},
      {"protocol", relay::to_string(s.protocol)},
      {"listen_host", s.listen_host},
      {"listen_port", s.listen_port},
      {"target_host", s.target_host},
      {"target_port", s.target_port},
      {"enabled", s.enabled},
      {"state", status.state},
      {"error", status.error.empty() ? json(nullptr) : json(status.error)},
      {"created_at", f.created_at},
      {"updated_at", f.updated_at},
      {"stats",
       {{"connections_active", status.stats.connections_active},
        {"connections_total", status.stats.connections_total},
        {"bytes_up", status.stats.bytes_up},
        {"bytes_down", status.stats.bytes_down},
        {"connect_errors", status.stats.connect_errors}}},
  };
}

}  // namespace api
