// ip_zone: splitting, checking and resolving the zone of an IPv6 literal.
#include "relay/ip_zone.hpp"

#include "relay/forward_spec.hpp"
#include "relay/socket_options.hpp"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace relay {

namespace {

// Linux's own rule for interface names (dev_valid_name), with '%' added: it would end the zone.
bool is_interface_name(std::string_view zone) {
  return !zone.empty() && zone.size() < IFNAMSIZ && zone != "." && zone != ".." &&
         zone.find_first_of("/:% \t\n\v\f\r") == std::string_view::npos;
}

std::optional<asio::ip::address_v6> link_local(std::string_view address) {
  std::error_code ec;
  const auto a = asio::ip::make_address_v6(std::string(address), ec);
  if (ec || !a.is_link_local()) return std::nullopt;
  return a;
}

std::string unknown_interface(std::string_view zone) {
  return "unknown network interface '" + printable(zone) + "'";
}

}  // namespace

zoned_literal split_zone(std::string_view host) {
  const auto percent = host.find('%');
  if (percent == std::string_view::npos) return {host, std::nullopt};
  return {host.substr(0, percent), host.substr(percent + 1)};
}

std::optional<std::string> check_zone(std::string_view field, std::string_view host) {
  const auto [address, zone] = split_zone(host);
  if (!zone) return std::nullopt;
  const std::string f(field);
  if (!link_local(address)) {
    return f + ": a zone (after '%') is allowed only on a link-local IPv6 address (fe80::/10)";
  }
  if (!is_interface_name(*zone)) {
    return f + ": the zone after '%' must be a network interface name (1 to 15 bytes, none of '/', ':', '%' or "
               "spaces) or index, e.g. \"fe80::1%eth0\"";
  }
  return std::nullopt;
}

bool lacks_zone(std::string_view host) {
  const auto [address, zone] = split_zone(host);
  return !zone && link_local(address);
}

result<unsigned> interface_index(std::string_view zone) {
  const op_error unknown{std::error_code(ENODEV, std::system_category()), unknown_interface(zone)};
  if (!is_interface_name(zone)) return unknown;
  // A socket of its own rather than if_nametoindex, which answers 0 both for an unknown name and
  // when it could not open one, and leaves no errno that tells which.
  const int s = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    const std::error_code ec(errno, std::system_category());
    return op_error{ec, "cannot look up network interface '" + printable(zone) + "': " + ec.message()};
  }
  ifreq request{};
  std::memcpy(request.ifr_name, zone.data(), zone.size());  // shorter than IFNAMSIZ: stays terminated
  int index = ::ioctl(s, SIOCGIFINDEX, &request) == 0 ? request.ifr_ifindex : 0;
  int number = 0;
  const auto [end, ec] = std::from_chars(zone.data(), zone.data() + zone.size(), number);
  if (index <= 0 && ec == std::errc{} && end == zone.data() + zone.size() && number > 0) {
    request.ifr_ifindex = number;
    if (::ioctl(s, SIOCGIFNAME, &request) == 0) index = number;
  }
  ::close(s);
  if (index <= 0) return unknown;
  return static_cast<unsigned>(index);
}

std::optional<std::string> check_interface(std::string_view host) {
  const auto zone = split_zone(host).zone;
  if (!zone) return std::nullopt;
  const auto index = interface_index(*zone);
  if (index || is_resource_error(index.error().code)) return std::nullopt;
  return index.error().message;
}

result<asio::ip::address> scoped_address(std::string_view host) {
  const auto [text, zone] = split_zone(host);
  std::error_code ec;
  if (!zone) {
    const auto a = asio::ip::make_address(std::string(text), ec);
    if (ec) return op_error{ec, ec.message()};
    return asio::ip::address(a);
  }
  auto a = asio::ip::make_address_v6(std::string(text), ec);
  if (ec) return op_error{ec, ec.message()};
  const auto index = interface_index(*zone);
  if (!index) return index.error();
  a.scope_id(index.value());
  return asio::ip::address(a);
}

}  // namespace relay
