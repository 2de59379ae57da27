// forward_json: the forward's JSON form: strict parsing and validation of input, rendering of output.
#pragma once

#include "api/errors.hpp"
#include "relay/engine.hpp"
#include "store/forward_store.hpp"

#include <optional>

namespace api {

// A POST body: the fields given are checked and the rest take their defaults. Errors are 400s.
std::optional<api_error> parse_create(const json& body, relay::forward_spec& out);

// A PATCH body: the fields given replace those in `spec`; `spec` is unchanged on error.
std::optional<api_error> apply_patch(const json& body, relay::forward_spec& spec);

json to_json(const store::stored_forward& f, const relay::forward_status& status);

}  // namespace api
