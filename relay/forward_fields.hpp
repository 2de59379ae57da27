// forward_fields: every writable field of a forward, declared once.
//
// One entry per field gives its JSON name, how a JSON value is read into forward_spec (with the
// checks and the error sentence the API answers), how it is written back, the protocols it applies
// to, whether POST needs it, and what a change to it means for a live forward. Its default is
// forward_spec's own. From this table come the API's parsing and rendering (api/forward_json), the
// store's document (store/forward_store), the engine's choice between rebind and reconfigure, and
// the test that walks every field (tests/test_forward_fields.cpp).
#pragma once

#include "relay/forward_spec.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace relay {

using json = nlohmann::ordered_json;  // keys stay in the order written, as the API renders them

// What a change of a field's value means for a live forward.
enum class change_effect {
  none,         // nothing runs differently (the name)
  rebind,       // a new listening socket (protocol, listen address)
  reconfigure,  // running_forward::configure: what later connections or sessions use, and the limits
  enable,       // the forward starts or stops
};

struct forward_field {
  std::string name;
  bool tcp = true;  // the protocols the field applies to; on the others its value is null
  bool udp = true;
  bool required = false;  // POST must give it
  // A view of other fields, not a value of its own (target_host and target_port, for a forward with
  // one target; null for one with several): not stored, and never given together with `targets`.
  bool shorthand = false;
  change_effect effect = change_effect::none;
  // Reads `value` into `spec`: nothing, or why it is refused, as one sentence naming the field.
  std::function<std::optional<std::string>(const json& value, forward_spec& spec)> read;
  // The field's value in `spec`, as read() takes it.
  std::function<json(const forward_spec& spec)> write;
  // For the test that walks every field: accepted values that differ from the default and from each
  // other, and values refused for their type or range.
  std::vector<json> examples;
  std::vector<json> refused;

  bool applies_to(protocol p) const { return p == protocol::tcp ? tcp : udp; }
};

// Every writable field, in the order the API renders them.
const std::vector<forward_field>& forward_fields();
const forward_field* find_field(std::string_view name);

// A field that cannot be read, and why.
struct field_problem {
  std::string field;
  std::string message;
};

// The stored form of a spec: a JSON object of every writable field, including those that do not
// apply to its protocol (a UDP option of a forward made TCP comes back when it is made UDP again).
json to_document(const forward_spec& spec);
// to_document as the stores keep it (SQLite's column, etcd's value): compact, and an invalid UTF-8
// byte replaced rather than thrown on.
std::string document_text(const forward_spec& spec);
// Reads a stored document over forward_spec's defaults, through each field's read(): a field the
// document lacks keeps its default, so a new field needs no migration (a document from before pools
// has target_host and target_port, which read as a one-target pool). Keys it does not know are
// ignored (a newer portrelay's document). Every field is read; a refused string is kept as it was,
// a refused number keeps the default. Nothing, or the first field that could not be read.
std::optional<field_problem> from_document(const json& doc, forward_spec& spec);

// The rules that hold between fields, checked after every field is read: listen_port_end against
// listen_port and the targets' ports (see forward_spec), a pool with a target
// whose port is not given yet (target_host without target_port), and a UDP forward's health_check
// without a port. Nothing, or the field to blame and why.
std::optional<field_problem> check_across(const forward_spec& spec);

// Whether going from `a` to `b` changes a field with this effect.
bool changes(const forward_spec& a, const forward_spec& b, change_effect effect);

}  // namespace relay
