// running_forward: binding and handling the listening socket of either protocol.
#include "relay/running_forward.hpp"

#include "relay/udp_forward.hpp"

namespace relay {

result<bound_socket> bind_listener(asio::io_context& io, const forward_spec& spec) {
  if (spec.protocol == protocol::udp) {
    auto r = bind_udp(io, spec.listen_host, spec.listen_port);
    if (!r) return r.error();
    return bound_socket(r.value());
  }
  auto r = bind_tcp(io, spec.listen_host, spec.listen_port);
  if (!r) return r.error();
  return bound_socket(r.value());
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
