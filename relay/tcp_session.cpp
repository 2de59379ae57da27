// tcp_session: connect-then-relay with half-close, backpressure and a watchdog on one shared deadline.
#include "relay/tcp_session.hpp"

#include "relay/disconnect.hpp"
#include "relay/forward_spec.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

namespace relay {

namespace {
using namespace asio::experimental::awaitable_operators;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t buffer_size = 16 * 1024;  // HAProxy's default; memory per connection is 2 of these

// Keepalive finds a peer that vanished without a FIN: first probe after 60 s idle, then every 10 s,
// given up after 6 unanswered probes (about 2 minutes in all).
void tune(asio::ip::tcp::socket& s) {
  std::error_code ignored;
  s.set_option(asio::ip::tcp::no_delay(true), ignored);
  s.set_option(asio::socket_base::keep_alive(true), ignored);
  s.set_option(asio::detail::socket_option::integer<IPPROTO_TCP, TCP_KEEPIDLE>(60), ignored);
  s.set_option(asio::detail::socket_option::integer<IPPROTO_TCP, TCP_KEEPINTVL>(10), ignored);
  s.set_option(asio::detail::socket_option::integer<IPPROTO_TCP, TCP_KEEPCNT>(6), ignored);
}

std::string describe(const asio::ip::tcp::socket& s) {
  std::error_code ec;
  auto ep = s.remote_endpoint(ec);
  return ec ? std::string("?") : format_endpoint(ep.address().to_string(), ep.port());
}
}  // namespace

tcp_session::tcp_session(asio::ip::tcp::socket client, tcp_route route, forward_stats& stats,
                         const engine_options& options)
    : client_(std::move(client)),
      upstream_(client_.get_executor()),
      resolver_(client_.get_executor()),
      timer_(client_.get_executor()),
      route_(std::move(route)),
      stats_(stats),
      options_(options),
      peer_(describe(client_)) {}

asio::awaitable<void> tcp_session::run() {
  bump(stats_.connections_total);
  bump(stats_.connections_active);
  co_await (proxy() && watchdog());
  lower(stats_.connections_active);
  spdlog::debug("forward {}: {} closed", route_.forward_id, peer_);
}

asio::awaitable<void> tcp_session::proxy() {
  const bool connected = co_await connect_upstream();
  if (connected) {
    tune(client_);
    tune(upstream_);
    phase_ = phase::relaying;
    co_await (transfer(client_, upstream_, stats_.bytes_up) && transfer(upstream_, client_, stats_.bytes_down));
  } else {
    bump(stats_.connect_errors);
  }
  phase_ = phase::done;
  timer_.cancel();
}

asio::awaitable<bool> tcp_session::connect_upstream() {
  const std::string target = format_endpoint(route_.target_host, route_.target_port);
  set_deadline(clock::now() + options_.connect_timeout);
  auto [ec, endpoints] = co_await resolver_.async_resolve(route_.target_host, std::to_string(route_.target_port),
                                                          asio::ip::tcp::resolver::numeric_service, use_tuple);
  if (ec || stopped_) {
    spdlog::debug("forward {}: {}: resolve {}: {}", route_.forward_id, peer_, route_.target_host,
                  timed_out_ ? "timed out" : ec.message());
    co_return false;
  }
  for (const auto& entry : endpoints) {
    timed_out_ = false;
    set_deadline(clock::now() + options_.connect_timeout);
    std::tie(ec) = co_await upstream_.async_connect(entry.endpoint(), use_tuple);
    if (stopped_) co_return false;
    if (!ec && !timed_out_) {
      set_deadline(clock::time_point::max());
      spdlog::debug("forward {}: {} -> {} connected", route_.forward_id, peer_, describe(upstream_));
      co_return true;
    }
    spdlog::debug("forward {}: {}: connect {} ({}): {}", route_.forward_id, peer_, target,
                  entry.endpoint().address().to_string(), timed_out_ ? "timed out" : ec.message());
    std::error_code ignored;
    upstream_.close(ignored);
  }
  co_return false;
}

// Read, write all of it, read again: the reader waits while the writer is slow, so memory stays at
// one buffer per direction whatever the speeds.
asio::awaitable<void> tcp_session::transfer(asio::ip::tcp::socket& from, asio::ip::tcp::socket& to,
                                            std::atomic<std::uint64_t>& counter) {
  std::array<char, buffer_size> buffer;
  for (;;) {
    auto [rec, n] = co_await from.async_read_some(asio::buffer(buffer), use_tuple);
    if (n > 0) {
      auto [wec, written] = co_await asio::async_write(to, asio::buffer(buffer.data(), n), use_tuple);
      bump(counter, written);
      if (phase_ == phase::half_closed) deadline_ = clock::now() + options_.half_close_timeout;
      if (wec) rec = wec;
    }
    if (rec == asio::error::eof) {
      std::error_code ignored;
      to.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
      direction_finished();
      co_return;
    }
    if (rec) {
      if (!is_ordinary_disconnect(rec)) {
        spdlog::warn("forward {}: {} -> {}: {}", route_.forward_id, peer_,
                     format_endpoint(route_.target_host, route_.target_port), rec.message());
      }
      stop();  // one side failed: the other direction has nowhere to go
      co_return;
    }
  }
}

void tcp_session::direction_finished() {
  if (phase_ == phase::relaying) {
    phase_ = phase::half_closed;
    set_deadline(clock::now() + options_.half_close_timeout);
  }
}

asio::awaitable<void> tcp_session::watchdog() {
  while (phase_ != phase::done) {
    timer_.expires_at(deadline_);
    co_await timer_.async_wait(use_tuple);
    if (phase_ == phase::done || clock::now() < deadline_) continue;
    deadline_ = clock::time_point::max();
    if (phase_ == phase::connecting) {
      timed_out_ = true;
      resolver_.cancel();
      std::error_code ignored;
      upstream_.close(ignored);
    } else if (phase_ == phase::half_closed) {
      spdlog::debug("forward {}: {}: half-closed and idle, closing", route_.forward_id, peer_);
      stop();
    }
  }
}

void tcp_session::set_deadline(clock::time_point at) {
  const bool sooner = at < deadline_;
  deadline_ = at;
  if (sooner) timer_.cancel();  // wake the watchdog so it waits for the new, earlier deadline
}

void tcp_session::stop() {
  stopped_ = true;
  resolver_.cancel();
  std::error_code ignored;
  client_.close(ignored);
  upstream_.close(ignored);
}

}  // namespace relay
