// tcp_listener: the accept loop, batched, with back-off on resource exhaustion.
#include "relay/tcp_listener.hpp"

#include "relay/socket_options.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace relay {

namespace {
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
}  // namespace

asio::awaitable<void> accept_loop(acceptor_ptr acceptor, std::size_t worker, accept_handler on_accept,
                                  std::string label) {
  using namespace std::chrono_literals;
  constexpr int batch = 16;
  auto backoff = std::chrono::milliseconds(100);
  asio::steady_timer pause(acceptor->get_executor());
  std::error_code ignored;
  acceptor->non_blocking(true, ignored);
  while (acceptor->is_open()) {
    asio::ip::tcp::endpoint client;
    auto [ec, socket] = co_await acceptor->async_accept(client, use_tuple);
    if (!acceptor->is_open()) break;  // closed while the accept was in flight: drop what it brought
    if (!ec) {
      backoff = 100ms;
      on_accept(std::move(socket), client, worker);
      for (int i = 0; i < batch && acceptor->is_open(); ++i) {
        std::error_code more_ec;
        auto more = acceptor->accept(client, more_ec);
        if (more_ec) break;  // none queued (or an error the waiting accept will meet and report)
        on_accept(std::move(more), client, worker);
      }
    } else if (is_aborted_handshake(ec) || ec == asio::error::operation_aborted) {
      spdlog::debug("{}: accept: {}", label, ec.message());  // the client gave up during the handshake
    } else {
      // EMFILE and friends: the condition lasts a while, so pause instead of spinning on it.
      spdlog::log(is_resource_error(ec) ? spdlog::level::warn : spdlog::level::err,
                  "{}: accept: {}; retrying in {} ms", label, ec.message(), backoff.count());
      pause.expires_after(backoff);
      co_await pause.async_wait(use_tuple);
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, 5s);
    }
  }
  spdlog::debug("{}: accept loop ended", label);
}

}  // namespace relay
