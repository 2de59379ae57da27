// http_guard: who may talk to the API: the bearer token and the Host header check against DNS rebinding.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace api {

// Equal strings in time that does not depend on where they first differ.
bool constant_time_equal(std::string_view a, std::string_view b);

// True when `authorization` is "Bearer <token>" for the configured token.
bool bearer_matches(std::string_view authorization, std::string_view token);

// The names a browser may use for a loopback API: its own address and the loopback names, each with
// or without the API's port. Anything else is a page that rebound its DNS name to 127.0.0.1.
bool host_allowed(std::string_view host_header, std::string_view api_host, std::uint16_t api_port);

}  // namespace api
