// socket_options: the options the relay sets on its sockets, what it asks the kernel about them, and what their errors mean.
#pragma once

#include <asio/error.hpp>
#include <asio/ip/tcp.hpp>

#include <cerrno>
#include <optional>
#include <system_error>
#include <type_traits>

namespace relay {

// ---- Options set (tcp(7), socket(7), ip(7), ipv6(7))

// TCP_NODELAY and keepalive (SO_KEEPALIVE; TCP_KEEPIDLE 60 s, TCP_KEEPINTVL 10 s, TCP_KEEPCNT 6: a
// peer that vanished without a FIN is found in about 2 minutes). Set on listening sockets, whose
// accepted connections inherit them, and on each connection to a target. Best effort: a failure
// leaves the kernel's default.
void set_connection_options(int fd);

// Receive and send buffer limits of `bytes` each (SO_RCVBUF, SO_SNDBUF). SO_RCVBUFFORCE and
// SO_SNDBUFFORCE pass the net.core.rmem_max / wmem_max caps when the process may (root or
// CAP_NET_ADMIN); otherwise the kernel clamps to them. A limit, not an allocation: memory is used
// only while datagrams wait. Best effort.
void size_buffers(int fd, int bytes);

// Has the kernel hand over each datagram's destination address with it (IP_PKTINFO, or
// IPV6_RECVPKTINFO when `v6`). Only a wildcard listener needs it: its datagrams reach it on many
// addresses. The error is in std::system_category.
std::error_code receive_destinations(int fd, bool v6);

// Closing with a linger of zero (SO_LINGER {1, 0}) sends a reset instead of a FIN, and drops the
// send queue.
void reset_on_close(asio::ip::tcp::socket& s);

// ---- Connecting by hand

// Where start_connect left a connect: done at once (connect(2) returned 0), under way (wait for the
// socket to be writable, then read pending_error), or failed.
enum class connect_state { connected, in_progress, failed };

// What start_connect did.
struct connect_start {
  connect_state state = connect_state::failed;
  std::error_code error;   // why it failed, in asio's system category
  bool no_socket = false;  // socket(2) itself failed: the host may be out of descriptors or memory
};

// Whether start_connect sets set_connection_options on the new socket before connecting.
enum class connect_options { kernel_defaults, connection };

// Replaces what `s` held with a new non-blocking socket (SOCK_NONBLOCK | SOCK_CLOEXEC) for `to`'s
// protocol and starts a connect to `to` on it. Fewer system calls than asio's async_connect (no
// ioctl, no poll), which matters when connections are short. With a `source`, the socket is bound
// to it first (bind_source, taking no port); a `to` of the other family fails at once with
// source_family_error, and a failed bind with its errno. On failure `s` is closed or holds the socket
// whose bind or connect failed.
connect_start start_connect(asio::ip::tcp::socket& s, const asio::ip::tcp::endpoint& to, connect_options options,
                            const std::optional<asio::ip::address>& source = std::nullopt);

// ---- The source address of connections to targets (a forward's source_address)

// Why a target's address cannot be reached from the source address: its family is the other one.
// An error code of its own category, whose message says which way round.
enum class source_family_error { ipv6_target_ipv4_source = 1, ipv4_target_ipv6_source };
std::error_code make_error_code(source_family_error e);

// Nothing when a socket bound to `source` can connect to `target`, else the source_family_error.
std::error_code check_family(const asio::ip::address& target, const asio::ip::address& source);

// Binds `fd` to (source, port 0) before its connect. `no_port` (TCP) sets IP_BIND_ADDRESS_NO_PORT
// first: the bind takes no port, and connect picks one that is free towards that target only, so
// connections from one source address are not limited to one ephemeral range for all targets. The
// error is bind(2)'s, in asio's system category (EADDRNOTAVAIL: the host does not have the address).
std::error_code bind_source(int fd, const asio::ip::address& source, bool no_port);

// Whether this host has `address` now: a throwaway UDP socket is bound to (address, 0), never used.
// EADDRNOTAVAIL when it does not; a resource error when the kernel could not be asked.
std::error_code check_local_address(const asio::ip::address& address);
// Whether `address` is the directed broadcast address (all host bits set) of an IPv4 prefix of this
// host's interfaces, from /8 to /30 (getifaddrs(3)): 127.255.255.255 for lo's 127.0.0.1/8. bind(2)
// takes one, but a connection from it leaves from an address of the kernel's choice and a UDP
// session's replies never come back, so it is refused as a source like 255.255.255.255 is.
bool is_local_broadcast(const asio::ip::address& address);

// ---- What the kernel says about a socket

// Bytes in the socket's send queue that its peer has not acknowledged yet (SIOCOUTQ, tcp(7)); 0 for
// a closed socket. A peer whose receive buffer is full acknowledges nothing more until its
// application reads.
int send_queue(asio::ip::tcp::socket& s);
inline bool unacknowledged(asio::ip::tcp::socket& s) { return send_queue(s) > 0; }

// Bytes in the socket's receive queue that the relay has not read yet (SIOCINQ, tcp(7)): they are
// on their way, whether or not the worker has got round to them.
bool unread(asio::ip::tcp::socket& s);

// A connection that is over (TCP_INFO's state is TCP_CLOSE: reset, or timed out), or a socket that
// is closed: its send queue will never be acknowledged.
bool gone(asio::ip::tcp::socket& s);

// The socket's pending error (SO_ERROR, socket(7)), which reading clears: a reset, or how a
// non-blocking connect ended. In asio's system category, as last_error().
std::error_code pending_error(int fd);

// ---- What an error means

// errno as an error code in asio's system category, so that it compares equal to asio::error
// values (connection_reset, eof …) as the codes of asio's own operations do.
inline std::error_code last_error() { return {errno, asio::error::get_system_category()}; }

// A non-blocking call found nothing to do (EAGAIN, EWOULDBLOCK): wait for readiness.
inline bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

// The host is short of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): a condition that
// lasts a while, and that no client's request caused. Compared by value: asio's system category does
// not map its codes onto std::errc conditions.
inline bool is_resource_error(const std::error_code& ec) {
  const int v = ec.value();
  const auto& c = ec.category();
  return (c == asio::error::get_system_category() || c == std::system_category() || c == std::generic_category()) &&
         (v == EMFILE || v == ENFILE || v == ENOBUFS || v == ENOMEM);
}

// The errors an ICMP message leaves on a connected UDP socket saying the destination does not take
// datagrams: port, host or network unreachable, administratively prohibited (Linux's
// icmp_err_convert and icmpv6_err_convert). Not EMSGSIZE, which is about the datagram, nor
// ENOPROTOOPT, which a GSO send also answers when the kernel cannot segment.
inline bool is_unreachable(int err) {
  return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN || err == ENONET ||
         err == EACCES;
}

// A client that gave up while its connection waited to be accepted (ECONNABORTED, ECONNRESET):
// accept the next one.
inline bool is_aborted_handshake(const std::error_code& ec) {
  return ec == asio::error::connection_aborted || ec == asio::error::connection_reset;
}

// The ordinary end of a connection rather than a fault (EOF, reset, broken pipe, timed out,
// cancelled, closed under it): logged at debug level only.
inline bool is_ordinary_disconnect(const std::error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::operation_aborted || ec == asio::error::timed_out || ec == asio::error::not_connected ||
         ec == asio::error::connection_aborted || ec == asio::error::bad_descriptor;
}

}  // namespace relay

template <>
struct std::is_error_code_enum<relay::source_family_error> : std::true_type {};
