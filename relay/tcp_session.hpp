// tcp_session: one client connection: connect to the target, then copy both ways until both are done.
#pragma once

#include "relay/connection_set.hpp"
#include "relay/engine_options.hpp"
#include "relay/forward_stats.hpp"

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>

namespace relay {

// Where a new connection goes: captured when it is accepted, so a PATCH only affects later ones.
struct tcp_route {
  std::int64_t forward_id = 0;
  std::string target_host;
  std::uint16_t target_port = 0;
};

class tcp_session final : public stoppable {
 public:
  tcp_session(asio::ip::tcp::socket client, tcp_route route, forward_stats& stats, const engine_options& options);

  // Runs the whole connection; returns once both sockets are done with.
  asio::awaitable<void> run();

  // Closes both sides at once (forward disabled or deleted). Same worker only.
  void stop() override;

 private:
  using clock = std::chrono::steady_clock;
  enum class phase { connecting, relaying, half_closed, done };

  asio::awaitable<void> proxy();
  asio::awaitable<bool> connect_upstream();
  asio::awaitable<void> transfer(asio::ip::tcp::socket& from, asio::ip::tcp::socket& to,
                                 std::atomic<std::uint64_t>& counter);
  asio::awaitable<void> watchdog();
  void set_deadline(clock::time_point at);
  void direction_finished();

  asio::ip::tcp::socket client_;
  asio::ip::tcp::socket upstream_;
  asio::ip::tcp::resolver resolver_;
  asio::steady_timer timer_;
  clock::time_point deadline_ = clock::time_point::max();
  phase phase_ = phase::connecting;
  bool stopped_ = false;
  bool timed_out_ = false;
  tcp_route route_;
  forward_stats& stats_;
  const engine_options& options_;
  std::string peer_;  // client address, for logs
};

}  // namespace relay
