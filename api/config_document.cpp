// config_document: export names, the document's reading and the diff that becomes the plan.
#include "api/config_document.hpp"

#include "api/forward_json.hpp"
#include "relay/forward_fields.hpp"

#include <algorithm>
#include <cstdio>
#include <set>

namespace api {

namespace {

std::string generated_name(std::int64_t id) { return "forward-" + std::to_string(id); }

// A field's value as the document shows it: null where it does not apply to the protocol.
json shown(const relay::forward_field& f, const relay::forward_spec& s) {
  return f.applies_to(s.protocol) ? f.write(s) : json(nullptr);
}

// What `next` will be stored as: the entry's values, the port `was` has when the entry says 0,
// and `was`'s values of the fields that do not apply to the protocol (they come back if it changes).
relay::forward_spec merged(const relay::forward_spec& was, relay::forward_spec next) {
  next.id = was.id;
  if (next.listen_port == 0 && !next.listen_port_end) next.listen_port = was.listen_port;
  for (const auto& f : relay::forward_fields()) {
    if (!f.shorthand && !f.applies_to(next.protocol)) f.read(f.write(was), next);
  }
  return next;
}

json changes_between(const relay::forward_spec& was, const std::string& was_name, const config_entry& entry,
                     const relay::forward_spec& next) {
  json out = json::object();
  for (const auto& f : relay::forward_fields()) {
    if (f.shorthand) continue;
    auto old_value = f.name == "name" ? json(was_name) : shown(f, was);
    auto new_value = f.name == "name" ? json(entry.name) : shown(f, next);
    if (old_value != new_value) out[f.name] = json::array({std::move(old_value), std::move(new_value)});
  }
  return out;
}

api_error invalid(const std::string& label, std::string code, std::string message, std::string field) {
  return about(label, api_error{400, std::move(code), std::move(message), std::move(field)});
}

}  // namespace

std::map<std::int64_t, std::string> export_names(const std::vector<store::stored_forward>& set) {
  std::map<std::string, int> uses;
  for (const auto& f : set) ++uses[f.spec.name];
  std::set<std::int64_t> generated;
  for (const auto& f : set) {
    if (f.spec.name.empty() || uses[f.spec.name] > 1) generated.insert(f.spec.id);
  }
  // A real name that is another's generated name gives way, and may in turn free or take one: repeat
  // until nothing moves (each round adds a forward, so it ends).
  for (bool moved = true; moved;) {
    moved = false;
    for (const auto& f : set) {
      const auto id = f.spec.id;
      const bool clashes = std::any_of(generated.begin(), generated.end(), [&](std::int64_t g) {
        return g != id && f.spec.name == generated_name(g);
      });
      if (clashes && generated.insert(id).second) moved = true;
    }
  }
  std::map<std::int64_t, std::string> out;
  for (const auto& f : set) out[f.spec.id] = generated.count(f.spec.id) ? generated_name(f.spec.id) : f.spec.name;
  return out;
}

json export_config(const std::vector<store::stored_forward>& set, const std::map<std::int64_t, std::string>& names) {
  std::vector<std::pair<std::string, const store::stored_forward*>> sorted;
  for (const auto& f : set) sorted.emplace_back(names.at(f.spec.id), &f);
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  json forwards = json::array();
  for (const auto& [name, f] : sorted) {
    json entry = json::object();
    for (const auto& field : relay::forward_fields()) {
      if (field.shorthand || !field.applies_to(f->spec.protocol)) continue;
      entry[field.name] = field.name == "name" ? json(name) : field.write(f->spec);
    }
    forwards.push_back(std::move(entry));
  }
  return json{{"forwards", std::move(forwards)}};
}

std::string etag_of(const json& doc) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : doc.dump(-1, ' ', false, json::error_handler_t::replace)) h = (h ^ c) * 1099511628211ull;
  char text[24];
  std::snprintf(text, sizeof text, "\"%016llx\"", static_cast<unsigned long long>(h));
  return text;
}

bool if_match(std::string_view header, const std::string& etag) {
  const auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  if (trim(header) == "*") return true;
  bool matched = false;
  for (std::size_t start = 0; start <= header.size();) {
    auto end = header.find(',', start);
    if (end == std::string_view::npos) end = header.size();
    const auto tag = trim(header.substr(start, end - start));
    const bool strong = tag.size() >= 2 && tag.front() == '"' && tag.back() == '"' &&
                        tag.find('"', 1) == tag.size() - 1;
    if (!strong && tag.substr(0, 2) != "W/") return false;  // malformed: nothing matches
    matched = matched || tag == etag;
    start = end + 1;
  }
  return matched;
}

api_error about(const std::string& name, api_error e) {
  e.message = name + ": " + e.message;
  e.forward = name;
  return e;
}

std::optional<api_error> parse_config(const json& body, std::vector<config_entry>& out) {
  if (!body.is_object()) {
    return api_error{400, "invalid_body", "the configuration must be a JSON object {\"forwards\": [...]}"};
  }
  for (const auto& [key, value] : body.items()) {
    if (key != "forwards") {
      return api_error{400, "unknown_field",
                       "unknown key '" + relay::printable(key) + "' (a configuration has only 'forwards')", key};
    }
  }
  if (!body.contains("forwards")) return api_error{400, "missing_field", "field 'forwards' is required", "forwards"};
  const auto& list = body["forwards"];
  if (!list.is_array()) return api_error{400, "invalid_field", "forwards must be an array of forwards", "forwards"};
  std::vector<config_entry> entries;
  std::map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const auto& e = list[i];
    std::string label = "forwards[" + std::to_string(i) + "]";
    if (!e.is_object()) return invalid(label, "invalid_body", "each forward must be a JSON object", "");
    if (!e.contains("name")) return invalid(label, "missing_field", "field 'name' is required", "name");
    if (!e["name"].is_string() || e["name"].get<std::string>().empty()) {
      return invalid(label, "invalid_field", "name must be a non-empty string", "name");
    }
    config_entry entry{e["name"].get<std::string>(), {}};
    if (auto bad = relay::check_name(entry.name)) return invalid(label, "invalid_field", *bad, "name");
    label = entry.name;
    if (auto [at, added] = seen.emplace(entry.name, i); !added) {
      return invalid(label, "duplicate_name",
                     "forwards[" + std::to_string(i) + "] has the name of forwards[" + std::to_string(at->second) +
                         "]: names must be unique",
                     "name");
    }
    if (auto bad = parse_create(e, entry.spec)) return about(label, std::move(*bad));
    entries.push_back(std::move(entry));
  }
  out = std::move(entries);
  return std::nullopt;
}

config_plan plan_config(const std::vector<store::stored_forward>& current,
                        const std::map<std::int64_t, std::string>& names, const std::vector<config_entry>& entries) {
  std::map<std::string, const store::stored_forward*> by_name;
  for (const auto& f : current) by_name[names.at(f.spec.id)] = &f;
  config_plan plan;
  std::set<std::int64_t> matched;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    auto it = by_name.find(entries[i].name);
    if (it == by_name.end()) {
      plan.create.push_back(i);
      continue;
    }
    const auto& was = *it->second;
    matched.insert(was.spec.id);
    auto next = merged(was.spec, entries[i].spec);
    next.name = entries[i].name;
    auto changes = changes_between(was.spec, it->first, entries[i], next);
    if (changes.empty()) {
      plan.unchanged.push_back(was.spec);
    } else {
      plan.update.push_back({i, was, std::move(next), std::move(changes)});
    }
  }
  for (const auto& [name, f] : by_name) {
    if (matched.count(f->spec.id)) continue;
    plan.remove.push_back(f->spec.id);
    plan.remove_names.push_back(name);
  }
  return plan;
}

json plan_json(const config_plan& plan, const std::vector<config_entry>& entries, json errors) {
  json create = json::array();
  for (const auto i : plan.create) create.push_back(entries[i].name);
  json update = json::array();
  for (const auto& u : plan.update) update.push_back(json{{"name", entries[u.entry].name}, {"changes", u.changes}});
  return json{{"create", std::move(create)},
              {"update", std::move(update)},
              {"delete", plan.remove_names},
              {"unchanged", plan.unchanged.size()},
              {"errors", std::move(errors)}};
}

}  // namespace api
