// listen_socket: open, options, bind and listen for either protocol, each failure naming its step.
#include "relay/listen_socket.hpp"

#include "relay/ip_zone.hpp"
#include "relay/socket_options.hpp"

#include <asio/ip/v6_only.hpp>
#include <asio/socket_base.hpp>

#include <optional>
#include <string>

namespace relay {

namespace {

// "bind 0.0.0.0:80: Address already in use", with the code in std::system_category (asio's
// operations report theirs in asio's own), so callers can compare it with std::errc values.
op_error step_failed(const char* step, const std::string& where, const std::error_code& ec) {
  return op_error{std::error_code(ec.value(), std::system_category()), std::string(step) + " " + where + ": " + ec.message()};
}

// open, [IPV6_V6ONLY], [SO_REUSEADDR], bind on `s` (a TCP acceptor or a UDP socket).
template <class Socket>
std::optional<op_error> open_and_bind(Socket& s, const std::string& host, std::uint16_t port, bool reuse_address) {
  const std::string where = format_endpoint(host, port);
  const auto scoped = scoped_address(host);  // a zone names its interface now, when it is bound
  if (!scoped) return op_error{scoped.error().code, "address " + host + ": " + scoped.error().message};
  const auto& address = scoped.value();
  const typename Socket::endpoint_type endpoint(address, port);
  std::error_code ec;
  s.open(endpoint.protocol(), ec);
  if (ec) return step_failed("open", where, ec);
  if (address.is_v6()) {
    s.set_option(asio::ip::v6_only(true), ec);
    if (ec) return step_failed("set IPV6_V6ONLY on", where, ec);
  }
  if (reuse_address) {
    s.set_option(asio::socket_base::reuse_address(true), ec);
    if (ec) return step_failed("set SO_REUSEADDR on", where, ec);
  }
  s.bind(endpoint, ec);
  if (ec) return step_failed("bind", where, ec);
  return std::nullopt;
}

result<bound_socket> bind_tcp(asio::io_context& io, const std::string& host, std::uint16_t port) {
  auto acceptor = std::make_shared<asio::ip::tcp::acceptor>(io);
  if (auto e = open_and_bind(*acceptor, host, port, true)) return *e;
  set_connection_options(acceptor->native_handle());  // inherited by every accepted connection
  std::error_code ec;
  acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return step_failed("listen on", format_endpoint(host, port), ec);
  return bound_socket(std::move(acceptor));
}

result<bound_socket> bind_udp(asio::io_context& io, const std::string& host, std::uint16_t port) {
  auto socket = std::make_shared<asio::ip::udp::socket>(io);
  if (auto e = open_and_bind(*socket, host, port, false)) return *e;
  std::error_code ignored;
  // A wildcard listener learns each datagram's destination, to reply from it (udp_forward).
  const auto bound = socket->local_endpoint(ignored).address();
  if (bound.is_unspecified()) {
    if (auto ec = receive_destinations(socket->native_handle(), bound.is_v6())) {
      return step_failed(bound.is_v6() ? "set IPV6_RECVPKTINFO on" : "set IP_PKTINFO on", format_endpoint(host, port),
                         ec);
    }
  }
  size_buffers(socket->native_handle(), udp_listener_buffer);
  socket->non_blocking(true, ignored);
  return bound_socket(std::move(socket));
}

}  // namespace

result<bound_socket> bind_listener(asio::io_context& io, const forward_spec& spec) {
  if (spec.protocol == protocol::udp) return bind_udp(io, spec.listen_host, spec.listen_port);
  return bind_tcp(io, spec.listen_host, spec.listen_port);
}

result<listen_sockets> bind_listeners(asio::io_context& io, const forward_spec& spec,
                                      const std::vector<std::uint16_t>& ports, std::uint16_t& failed) {
  listen_sockets bound;
  auto one = spec;
  for (const auto port : ports) {
    one.listen_port = port;
    auto s = bind_listener(io, one);
    if (!s) {
      failed = port;
      for (const auto& [p, socket] : bound) close_socket(socket);
      return s.error();
    }
    bound.emplace(local_port(s.value()), std::move(s.value()));
  }
  return bound;
}

std::uint16_t local_port(const bound_socket& s) {
  return std::visit([](const auto& socket) { return socket->local_endpoint().port(); }, s);
}

void close_socket(const bound_socket& s) {
  std::visit(
      [](const auto& socket) {
        std::error_code ignored;
        socket->close(ignored);
      },
      s);
}

}  // namespace relay
