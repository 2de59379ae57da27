// tcp_listener: the accept loop that survives: it ends only when its acceptor is closed.
#pragma once

#include "relay/listen_socket.hpp"
#include "relay/worker_pool.hpp"

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include <functional>
#include <string>

namespace relay {

// Called on the accepting worker for each accepted connection, with the client's address as accept(2)
// gave it (no getpeername: it is there even once the client has reset).
using accept_handler =
    std::function<void(asio::ip::tcp::socket socket, const asio::ip::tcp::endpoint& client, std::size_t worker)>;

// Accepts on `worker` (the acceptor's own) until the acceptor is closed: after each wake-up, up to 16
// more queued connections are taken without waiting. Resource errors (EMFILE, ENFILE, ENOBUFS,
// ENOMEM) are logged and retried after a back-off of 100 ms doubling to 5 s; aborted handshakes are
// skipped.
asio::awaitable<void> accept_loop(acceptor_ptr acceptor, std::size_t worker, accept_handler on_accept,
                                  std::string label);

}  // namespace relay
