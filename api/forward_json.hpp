// forward_json: the forward's JSON form: strict parsing and validation of input, rendering of output.
#pragma once

#include "api/errors.hpp"
#include "relay/engine.hpp"
#include "store/forward_store.hpp"

#include <optional>
#include <string_view>
#include <vector>

namespace api {

// A request body as JSON. Invalid JSON and a key given twice in one object (at any depth) are 400s:
// with duplicates one of the values would be silently dropped, perhaps the one that was checked.
std::optional<api_error> parse_body(std::string_view text, json& out);

// A POST body: the fields given are checked and the rest take their defaults. Errors are 400s. A
// zone in listen_host ("fe80::1%eth0") must name an interface that exists now, even when disabled.
std::optional<api_error> parse_create(const json& body, relay::forward_spec& out);

// A PATCH body: the fields given replace those in `spec`; `spec` is unchanged on error. A listen_host
// given is checked as in parse_create. The result must pass every check, so a forward stored
// invalid (see check_spec) is changed only together with what makes it valid.
std::optional<api_error> apply_patch(const json& body, relay::forward_spec& spec);
// The same for a stored forward; one with a column the spec could not hold (store::stored_forward's
// `invalid`) needs a new value for that field in the body.
std::optional<api_error> apply_patch(const json& body, const store::stored_forward& current, relay::forward_spec& out);

// Whether a spec (one read back from the store, one a patch made) passes the checks a request must
// pass, by running its fields through the same code as parse_create. The error names the first bad
// field. Whether listen_host's interface exists is left to binding: it may have gone and come back.
std::optional<api_error> check_spec(const relay::forward_spec& spec);

// One row per target of `spec`, in its order: the engine's figures for the target (status.targets
// row for row, as the engine keeps them; by host and port where a row differs), or, where the engine
// has none (a forward it does not hold, or holds with other targets), "unchecked" with zero counters
// and `since` left at the epoch. So stats.targets and the per-target metrics always follow `targets`.
std::vector<relay::target_stats> target_rows(const relay::forward_spec& spec, const relay::forward_status& status);

// GET /api/v1/forwards/{id}?per_port=true's "per_port": an array of {port, connections_active,
// connections_total, bytes_up, bytes_down}, one per port the forward listens on, in port order.
json port_rows(const std::vector<relay::port_snapshot>& ports);

// GET /api/v1/forwards/{id}/connections: {"connections": [{id, protocol, client, listen, target,
// state, started_at, idle_s, bytes_up, bytes_down}, ...], "next": the last id as a string when more
// remain, else null}. Endpoints as "ip:port" ("[ip]:port" for IPv6), idle_s to a tenth of a second.
json connections_json(const relay::connection_page& page);
// The page size a listing takes when it names none, and the most it may name.
inline constexpr std::size_t connections_page_default = 100;
inline constexpr std::size_t connections_page_max = 1000;

// Strings that did not pass the checks (a hand-edited store) are rendered through relay::printable.
// stats.targets is target_rows(); a row with no `since` of its own shows the forward's updated_at.
json to_json(const store::stored_forward& f, const relay::forward_status& status);

}  // namespace api
