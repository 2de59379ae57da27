// config_document: the declarative configuration as a document: export, parsing, the plan, the ETag.
#pragma once

#include "api/errors.hpp"
#include "relay/forward_spec.hpp"
#include "store/forward_store.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace api {

// The name each stored forward has in the document: its own, unless it is empty, shared with
// another forward, or the generated name of a forward that needs one; then "forward-<id>". So no
// two forwards ever export under one name, and a generated name never stands for another forward.
std::map<std::int64_t, std::string> export_names(const std::vector<store::stored_forward>& set);

// GET /api/v1/config: {"forwards": [...]}, each forward's writable fields that apply to its
// protocol (one form: `targets`, not the shorthand), sorted by name.
json export_config(const std::vector<store::stored_forward>& set, const std::map<std::int64_t, std::string>& names);

// A strong ETag for a document: FNV-1a (64 bits) of its compact text, as 16 hex digits in quotes.
std::string etag_of(const json& doc);
// Whether an If-Match value matches `etag`: "*", or a comma-separated list of strong tags one of
// which is it. A weak tag (W/"...") or a malformed value matches nothing.
bool if_match(std::string_view header, const std::string& etag);

// One forward of a PUT document, read as POST reads a body (defaults for what it leaves out).
struct config_entry {
  std::string name;
  relay::forward_spec spec;
};
// A PUT body: {"forwards": [...]} and nothing else; each entry with a non-empty name no other entry
// has. A 400 names the entry (its name, or "forwards[i]") in the message and in "forward".
std::optional<api_error> parse_config(const json& body, std::vector<config_entry>& out);

// `e` about the forward `name`: the message starts with it, and the error object says it.
api_error about(const std::string& name, api_error e);

struct config_update {
  std::size_t entry;              // its index in the document
  store::stored_forward current;  // as stored
  relay::forward_spec next;       // as it will be stored: its id, and fields that do not apply kept
  json changes;                   // {"field": [old, new], ...} in the field table's order
};

// What a PUT does: forwards matched by their document name are updated (or left alone when no field
// the document shows differs; listen_port 0 keeps the port), the other entries created, the other
// stored forwards deleted.
struct config_plan {
  std::vector<std::size_t> create;  // entry indexes, in document order
  std::vector<config_update> update;
  std::vector<std::int64_t> remove;  // ids, in document-name order
  std::vector<std::string> remove_names;
  std::vector<relay::forward_spec> unchanged;
};
config_plan plan_config(const std::vector<store::stored_forward>& current,
                        const std::map<std::int64_t, std::string>& names, const std::vector<config_entry>& entries);

// The plan as the API answers it: {"create", "update", "delete", "unchanged", "errors"}.
json plan_json(const config_plan& plan, const std::vector<config_entry>& entries, json errors);

}  // namespace api
