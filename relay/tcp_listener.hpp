// tcp_listener: binds a forward's listening socket step by step and runs the accept loop that survives.
#pragma once

#include "relay/result.hpp"
#include "relay/worker_pool.hpp"

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace relay {

using acceptor_ptr = std::shared_ptr<asio::ip::tcp::acceptor>;

// open, reuse_address, bind, listen: each failure names its step and the address
// ("bind 0.0.0.0:8080: Address already in use"). Call on the worker that will own the acceptor.
result<acceptor_ptr> bind_tcp(asio::io_context& io, const std::string& host, std::uint16_t port);

// Called on the accepting worker for each accepted connection.
using accept_handler = std::function<void(asio::ip::tcp::socket socket, std::size_t worker)>;

// Accepts on `worker` (the acceptor's own) until the acceptor is closed: after each wake-up, up to 16
// more queued connections are taken without waiting. Resource errors (EMFILE, ENFILE, ENOBUFS,
// ENOMEM) are logged and retried after a back-off of 100 ms doubling to 5 s; aborted handshakes are
// skipped.
asio::awaitable<void> accept_loop(acceptor_ptr acceptor, std::size_t worker, accept_handler on_accept,
                                  std::string label);

}  // namespace relay
