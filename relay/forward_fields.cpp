// forward_fields: the table of a forward's writable fields, and the stored document built from it.
#include "relay/forward_fields.hpp"

#include <algorithm>
#include <cstdint>

namespace relay {

namespace {

using problem = std::optional<std::string>;

// An integer member of forward_spec, from `min` to `max`. Values too large for int64 parse as
// unsigned; they are compared in the type they were parsed as, so none wraps.
template <class T>
forward_field integer(std::string name, T forward_spec::*member, std::int64_t min, std::int64_t max) {
  forward_field f;
  const std::string range = " from " + std::to_string(min) + " to " + std::to_string(max);
  f.read = [name, member, min, max, range](const json& v, forward_spec& spec) -> problem {
    if (!v.is_number_integer()) return name + " must be an integer" + range;
    const bool in_range = v.is_number_unsigned() ? v.get<std::uint64_t>() >= static_cast<std::uint64_t>(min) &&
                                                       v.get<std::uint64_t>() <= static_cast<std::uint64_t>(max)
                                                 : v.get<std::int64_t>() >= min && v.get<std::int64_t>() <= max;
    if (!in_range) return name + " must be" + range;
    spec.*member = static_cast<T>(v.get<std::int64_t>());
    return std::nullopt;
  };
  f.write = [member](const forward_spec& spec) { return json(spec.*member); };
  f.refused = {json(min - 1), json(max + 1), json(std::to_string(min)), json(1.5), json(nullptr)};
  f.name = std::move(name);
  return f;
}

// A string member of forward_spec, checked by `check` (then turned into its canonical form, if any).
forward_field text(std::string name, std::string forward_spec::*member, problem (*check)(std::string_view),
                   std::string (*canonical)(std::string_view) = nullptr) {
  forward_field f;
  f.read = [name, member, check, canonical](const json& v, forward_spec& spec) -> problem {
    if (!v.is_string()) return name + " must be a string";
    spec.*member = v.get<std::string>();  // kept even when refused: a stored one is shown as it is
    if (auto bad = check(spec.*member)) return bad;
    if (canonical) spec.*member = canonical(spec.*member);
    return std::nullopt;
  };
  f.write = [member](const forward_spec& spec) { return json(spec.*member); };
  f.refused = {json(7), json(true), json(nullptr)};
  f.name = std::move(name);
  return f;
}

std::vector<forward_field> declare() {
  std::vector<forward_field> fields;

  auto name = text("name", &forward_spec::name, check_name);
  name.examples = {"web", "dns \xE2\x98\x83"};
  name.refused.push_back(std::string(65, 'n'));
  name.refused.push_back("tab\there");
  fields.push_back(std::move(name));

  forward_field proto;
  proto.name = "protocol";
  proto.required = true;
  proto.effect = change_effect::rebind;
  proto.read = [](const json& v, forward_spec& spec) -> problem {
    if (!v.is_string()) return "protocol must be a string";
    auto p = parse_protocol(v.get<std::string>());
    if (!p) return "protocol must be \"tcp\" or \"udp\"";
    spec.protocol = *p;
    return std::nullopt;
  };
  proto.write = [](const forward_spec& spec) { return json(to_string(spec.protocol)); };
  proto.examples = {"udp"};
  proto.refused = {"sctp", "TCP", 6, nullptr};
  fields.push_back(std::move(proto));

  auto listen_host = text("listen_host", &forward_spec::listen_host, check_listen_host, canonical_address);
  listen_host.effect = change_effect::rebind;
  listen_host.examples = {"127.0.0.1", "::1"};
  listen_host.refused.push_back("localhost");
  listen_host.refused.push_back("");
  fields.push_back(std::move(listen_host));

  auto listen_port = integer("listen_port", &forward_spec::listen_port, 0, 65535);
  listen_port.required = true;
  listen_port.effect = change_effect::rebind;
  // No fixed examples: a port that is free here may be taken there (the test draws free ones).
  fields.push_back(std::move(listen_port));

  auto target_host = text("target_host", &forward_spec::target_host, check_target_host);
  target_host.required = true;
  target_host.effect = change_effect::reconfigure;
  target_host.examples = {"127.0.0.1", "localhost"};
  target_host.refused.push_back("");
  target_host.refused.push_back("no spaces.example");
  fields.push_back(std::move(target_host));

  auto target_port = integer("target_port", &forward_spec::target_port, 1, 65535);
  target_port.required = true;
  target_port.effect = change_effect::reconfigure;
  target_port.examples = {9, 10};  // the field walk draws live targets' ports instead, to see them reached
  fields.push_back(std::move(target_port));

  forward_field enabled;
  enabled.name = "enabled";
  enabled.effect = change_effect::enable;
  enabled.read = [](const json& v, forward_spec& spec) -> problem {
    if (!v.is_boolean()) return "enabled must be true or false";
    spec.enabled = v.get<bool>();
    return std::nullopt;
  };
  enabled.write = [](const forward_spec& spec) { return json(spec.enabled); };
  enabled.examples = {false};
  enabled.refused = {1, "true", nullptr};
  fields.push_back(std::move(enabled));

  auto idle = integer("udp_idle_timeout_s", &forward_spec::udp_idle_timeout_s, 1, 86400);
  idle.tcp = false;
  idle.effect = change_effect::reconfigure;
  idle.examples = {120, 1};  // long, then short: the walk sees the short one end a session
  fields.push_back(std::move(idle));

  auto sessions = integer("udp_max_sessions", &forward_spec::udp_max_sessions, 1, 1000000);
  sessions.tcp = false;
  sessions.effect = change_effect::reconfigure;
  sessions.examples = {10, 20};
  fields.push_back(std::move(sessions));

  return fields;
}

}  // namespace

const std::vector<forward_field>& forward_fields() {
  static const std::vector<forward_field> fields = declare();
  return fields;
}

const forward_field* find_field(std::string_view name) {
  const auto& fields = forward_fields();
  auto it = std::find_if(fields.begin(), fields.end(), [&](const forward_field& f) { return f.name == name; });
  return it == fields.end() ? nullptr : &*it;
}

json to_document(const forward_spec& spec) {
  json doc = json::object();
  for (const auto& f : forward_fields()) doc[f.name] = f.write(spec);
  return doc;
}

std::optional<field_problem> from_document(const json& doc, forward_spec& spec) {
  if (!doc.is_object()) return field_problem{"spec", "spec is not a JSON object"};
  std::optional<field_problem> first;
  for (const auto& f : forward_fields()) {
    auto it = doc.find(f.name);
    if (it == doc.end()) continue;
    auto bad = f.read(*it, spec);
    if (bad && !first) first = field_problem{f.name, std::move(*bad)};
  }
  return first;
}

bool changes(const forward_spec& a, const forward_spec& b, change_effect effect) {
  return std::any_of(forward_fields().begin(), forward_fields().end(),
                     [&](const forward_field& f) { return f.effect == effect && f.write(a) != f.write(b); });
}

}  // namespace relay
