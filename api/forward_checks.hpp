// forward_checks: the controller's refusals that come from the kernel, the store or a missing forward,
// not from a field's value.
#pragma once

#include "api/errors.hpp"
#include "relay/forward_spec.hpp"
#include "relay/result.hpp"
#include "relay/target_guard.hpp"

#include <cstdint>
#include <exception>
#include <optional>

namespace api {

// Why `next` cannot listen, as the API answers it: 409 when the address (or a port of the range,
// named) is taken or a range would not fit the descriptor limit, 503 when the host is out of
// descriptors or memory, 400 otherwise.
api_error bind_refusal(const relay::forward_spec& next, const relay::op_error& e);

// Why `next`'s source_address cannot be used here: an address this host does not have (asked of the
// kernel with a bind, so it cannot be a field check). Asked only when the address is new to the
// forward (`was` is the stored one): a forward whose address went away since can still be changed.
// When the kernel cannot be asked for want of a resource, nothing: its connections will say.
std::optional<api_error> foreign_source(const relay::forward_spec& next, const relay::forward_spec* was);

// Why `next`'s target must not be used (relay::engine::check_target's refusal): a 400 naming the
// target's port, or `targets` for a pool.
api_error target_refusal(const relay::forward_spec& next, const relay::refusal& r);

// A failed commit: logged, and answered 500 with nothing changed.
reply storage_failed(const std::exception& e);

// 404: there is no forward `id`.
reply forward_not_found(std::int64_t id);

}  // namespace api
