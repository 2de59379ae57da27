// http_guard: token comparison and Host header matching.
#include "api/http_guard.hpp"

#include "relay/forward_spec.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <string_view>

namespace api {

bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

bool bearer_matches(std::string_view authorization, std::string_view token) {
  constexpr std::string_view scheme = "Bearer ";
  if (authorization.size() < scheme.size()) return false;
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != std::tolower(scheme[i])) return false;
  }
  return constant_time_equal(authorization.substr(scheme.size()), token);
}

bool host_allowed(std::string_view host_header, std::string_view api_host, std::uint16_t api_port) {
  std::string host(host_header);
  std::transform(host.begin(), host.end(), host.begin(), [](unsigned char c) { return std::tolower(c); });
  const std::string own = relay::format_endpoint(api_host, api_port);  // "127.0.0.1:7070" or "[::1]:7070"
  const std::string_view own_host = std::string_view(own).substr(0, own.rfind(':'));
  const std::string port = std::to_string(api_port);
  const std::array<std::string_view, 4> names{own_host, "localhost", "127.0.0.1", "[::1]"};
  const std::string_view h = host;
  return std::any_of(names.begin(), names.end(), [&](std::string_view name) {
    if (h.substr(0, name.size()) != name) return false;
    const auto rest = h.substr(name.size());  // nothing, or ":" and the API's port
    return rest.empty() || (rest.size() == port.size() + 1 && rest[0] == ':' && rest.substr(1) == port);
  });
}

}  // namespace api
