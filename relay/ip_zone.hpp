// ip_zone: the zone of an IPv6 literal ("fe80::1%eth0"): the forms it may take and the interface it names.
#pragma once

#include "relay/result.hpp"

#include <asio/ip/address.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace relay {

// "fe80::1%eth0" -> {"fe80::1", "eth0"}; without a '%' the zone is nothing.
struct zoned_literal {
  std::string_view address;
  std::optional<std::string_view> zone;
};
zoned_literal split_zone(std::string_view host);

// Why the zone of `host` (an IP literal in `field`) is unacceptable whatever interfaces exist;
// nothing when it has none or a good one. A zone is allowed only on a link-local unicast IPv6
// address (fe80::/10), the one kind the kernel reads it for, and is an interface name (1 to 15
// bytes, none of '/', ':', '%' or white space) or an interface index in decimal.
std::optional<std::string> check_zone(std::string_view field, std::string_view host);

// A link-local IPv6 literal without a zone: nothing can bind it, as nothing says on which link.
bool lacks_zone(std::string_view host);

// The interface a zone names now: by name, else by a decimal index that an interface has. The error
// is ENODEV ("unknown network interface 'eth9'"), or the resource error that kept the kernel from
// being asked (the look-up needs a socket: EMFILE at the descriptor limit).
result<unsigned> interface_index(std::string_view zone);

// Why the interface `host`'s zone names does not exist now ("unknown network interface 'eth9'").
// Nothing when it cannot be asked for want of a resource: that is no fault of the host's text.
std::optional<std::string> check_interface(std::string_view host);

// An IP literal as a socket needs it, its zone resolved to a scope id now. The error is ENODEV
// naming the interface, or why the text is no address.
result<asio::ip::address> scoped_address(std::string_view host);

}  // namespace relay
