// listen_socket: a forward's listening socket of either protocol, bound step by step before it serves.
#pragma once

#include "relay/forward_spec.hpp"
#include "relay/result.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <variant>
#include <vector>

namespace relay {

using acceptor_ptr = std::shared_ptr<asio::ip::tcp::acceptor>;
using udp_socket_ptr = std::shared_ptr<asio::ip::udp::socket>;
// A bound socket that does not serve yet: a listening TCP acceptor or a UDP socket.
using bound_socket = std::variant<acceptor_ptr, udp_socket_ptr>;

// The receive and send buffer limit of a UDP listening socket (see size_buffers): bursts wait in
// the kernel, not in the relay.
inline constexpr int udp_listener_buffer = 4 * 1024 * 1024;

// Binds the listening socket of `spec` on `io`. Call on the worker that will own it.
//  - TCP: open, [IPV6_V6ONLY], SO_REUSEADDR, bind, set_connection_options (inherited by every
//    accepted connection), listen.
//  - UDP: open, [IPV6_V6ONLY], bind, [IP_PKTINFO / IPV6_RECVPKTINFO on a wildcard address, to reply
//    from each datagram's destination], buffers of udp_listener_buffer, non-blocking. No
//    SO_REUSEADDR: on UDP it would let two sockets share a port silently.
// Never SO_REUSEPORT. "::" means IPv6 only, so 0.0.0.0 and :: are separate forwards. "fe80::1%eth0"
// binds on eth0 (its zone is resolved to a scope id now), so one link-local address on two
// interfaces makes two forwards. Each failure names its step and the address ("bind 0.0.0.0:80:
// Address already in use", "set IPV6_V6ONLY on [::1]:80: …", "listen on …") and carries a
// std::system_category code, comparable with std::errc values; a zone that names no interface is
// "address fe80::1%eth9: unknown network interface 'eth9'" (ENODEV).
result<bound_socket> bind_listener(asio::io_context& io, const forward_spec& spec);

// A forward's listening sockets, by port: one for each port of its range.
using listen_sockets = std::map<std::uint16_t, bound_socket>;

// Binds `ports` of `spec` (its protocol and listen_host; port 0 is the kernel's choice, keyed by the
// port it got) on `io`, all or nothing: at the first failure every socket bound so far is closed,
// and the error is that port's ("bind 127.0.0.1:40012: Address already in use"), with the port in
// `failed`. Call on the worker that will own them.
result<listen_sockets> bind_listeners(asio::io_context& io, const forward_spec& spec,
                                      const std::vector<std::uint16_t>& ports, std::uint16_t& failed);

// The port `s` is bound to (the kernel's choice when the spec asked for port 0). Owning worker only.
std::uint16_t local_port(const bound_socket& s);

// Closes `s`, ignoring errors. Owning worker only.
void close_socket(const bound_socket& s);

}  // namespace relay
