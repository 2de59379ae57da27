// tcp_listener: step-named binding and the accept loop with back-off on resource exhaustion.
#include "relay/tcp_listener.hpp"

#include "relay/forward_spec.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <cerrno>

namespace relay {

namespace {
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

bool is_resource_error(const std::error_code& ec) {
  const int v = ec.value();
  return ec.category() == asio::error::get_system_category() &&
         (v == EMFILE || v == ENFILE || v == ENOBUFS || v == ENOMEM);
}
}  // namespace

result<acceptor_ptr> bind_tcp(asio::io_context& io, const std::string& host, std::uint16_t port) {
  const std::string where = format_endpoint(host, port);
  std::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return op_error{ec, "address " + host + ": " + ec.message()};
  asio::ip::tcp::endpoint endpoint(address, port);
  auto acceptor = std::make_shared<asio::ip::tcp::acceptor>(io);
  // As a std::system_category code, so callers can compare it with std::errc values.
  auto failed = [&](const char* step) {
    return op_error{std::error_code(ec.value(), std::system_category()),
                    std::string(step) + " " + where + ": " + ec.message()};
  };
  acceptor->open(endpoint.protocol(), ec);
  if (ec) return failed("open");
  if (address.is_v6()) {
    acceptor->set_option(asio::ip::v6_only(true), ec);  // "::" means IPv6 only; 0.0.0.0 is its own forward
    if (ec) return failed("set IPV6_V6ONLY on");
  }
  acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) return failed("set SO_REUSEADDR on");
  acceptor->bind(endpoint, ec);
  if (ec) return failed("bind");
  acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return failed("listen on");
  return acceptor;
}

asio::awaitable<void> accept_loop(acceptor_ptr acceptor, worker_pool& pool, accept_handler on_accept,
                                  std::string label) {
  using namespace std::chrono_literals;
  auto backoff = std::chrono::milliseconds(100);
  asio::steady_timer pause(acceptor->get_executor());
  while (acceptor->is_open()) {
    const std::size_t worker = pool.next();
    auto [ec, socket] = co_await acceptor->async_accept(pool.context(worker), use_tuple);
    if (!acceptor->is_open()) break;  // closed while the accept was in flight: drop what it brought
    if (!ec) {
      backoff = 100ms;
      on_accept(std::move(socket), worker);
    } else if (ec == asio::error::connection_aborted || ec == asio::error::connection_reset ||
               ec == asio::error::operation_aborted) {
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
