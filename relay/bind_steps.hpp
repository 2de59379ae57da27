// bind_steps: opening and binding a listening socket of either protocol, each failure naming its step.
#pragma once

#include "relay/forward_spec.hpp"
#include "relay/ip_zone.hpp"
#include "relay/result.hpp"

#include <asio/ip/address.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/socket_base.hpp>

#include <optional>
#include <string>

namespace relay {

// open, [IPV6_V6ONLY], [SO_REUSEADDR], bind on `s` (a TCP acceptor or a UDP socket). "::" means IPv6
// only, so 0.0.0.0 and :: are separate forwards. "fe80::1%eth0" binds on eth0 (its scope id), so one
// link-local address on two interfaces makes two forwards. Errors read "bind 0.0.0.0:80: Address
// already in use" and carry a std::system_category code, comparable with std::errc values.
template <class Socket>
std::optional<op_error> open_and_bind(Socket& s, const std::string& host, std::uint16_t port, bool reuse_address) {
  const std::string where = format_endpoint(host, port);
  const auto scoped = scoped_address(host);  // a zone names its interface now, when it is bound
  if (!scoped) return op_error{scoped.error().code, "address " + host + ": " + scoped.error().message};
  const auto& address = scoped.value();
  const typename Socket::endpoint_type endpoint(address, port);
  std::error_code ec;
  auto failed = [&](const char* step) {
    return op_error{std::error_code(ec.value(), std::system_category()),
                    std::string(step) + " " + where + ": " + ec.message()};
  };
  s.open(endpoint.protocol(), ec);
  if (ec) return failed("open");
  if (address.is_v6()) {
    s.set_option(asio::ip::v6_only(true), ec);
    if (ec) return failed("set IPV6_V6ONLY on");
  }
  if (reuse_address) {
    s.set_option(asio::socket_base::reuse_address(true), ec);
    if (ec) return failed("set SO_REUSEADDR on");
  }
  s.bind(endpoint, ec);
  if (ec) return failed("bind");
  return std::nullopt;
}

}  // namespace relay
