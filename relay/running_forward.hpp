// running_forward: what the engine holds for a serving forward, whatever its protocol.
#pragma once

#include "relay/forward_spec.hpp"
#include "relay/result.hpp"
#include "relay/tcp_listener.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>

#include <memory>
#include <variant>

namespace relay {

using udp_socket_ptr = std::shared_ptr<asio::ip::udp::socket>;
// A bound socket that does not serve yet: a TCP acceptor or a UDP socket.
using bound_socket = std::variant<acceptor_ptr, udp_socket_ptr>;

// Binds the listening socket of `spec` on `io`; each failure names its step and the address.
// Call on the worker that will own it.
result<bound_socket> bind_listener(asio::io_context& io, const forward_spec& spec);
std::uint16_t local_port(const bound_socket& s);
void close_socket(const bound_socket& s);

// Every method is for the control plane: it posts to the owning worker(s) and waits.
class running_forward {
 public:
  virtual ~running_forward() = default;
  // Serves on `socket` (bound on the home worker); a previous listener is closed first.
  virtual void listen(bound_socket socket) = 0;
  // Closes the listener; what happens to live traffic is the protocol's business.
  virtual void close_listener() = 0;
  // Takes no new clients (a TCP listener closes, so connections are refused) while live connections
  // and sessions carry on: the first half of a graceful stop.
  virtual void drain() = 0;
  // Target and settings for what comes next; live connections keep their target.
  virtual void configure(const forward_spec& spec) = 0;
  // Listener and all live traffic closed before this returns.
  virtual void stop() = 0;
};

}  // namespace relay
