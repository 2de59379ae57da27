// server: the HTTP front of the API: routing, body limits, content types, auth and error shaping.
#pragma once

#include "api/controller.hpp"

#include <httplib.h>

#include <cstdint>
#include <string>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

namespace api {

// The addresses an API host means: itself (an IP literal), or for "localhost" the loopback address
// of each family it resolves to that this host can listen on (::1 is skipped when IPv6 is off).
// Throws std::runtime_error when localhost gives none.
std::vector<std::string> listen_addresses(const std::string& host);

struct server_options {
  // An IP literal, or "localhost": the loopback address of each family it resolves to.
  std::string host = "127.0.0.1";
  std::uint16_t port = 7410;
  std::string token;  // empty: no token (loopback only; main enforces that)
};

class server {
 public:
  static constexpr std::size_t max_body = 64 * 1024;
  // Requests one kept-alive connection may carry before the server closes it (httplib's default: 5).
  static constexpr std::size_t keep_alive_max_requests = 10'000;

  server(controller& ctl, server_options options);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Binds the listening socket (one per address of "localhost"); throws std::runtime_error naming
  // the address when it cannot.
  void bind();
  // The same on the given addresses (IP literals), all on one port.
  void bind(const std::vector<std::string>& addresses);
  // Serves on a thread per listening socket (plus httplib's pools) until stop(). Returns once every
  // accept loop runs: httplib's stop() does nothing to a server whose loop has not started yet.
  void start();
  void stop();

  std::uint16_t port() const { return options_.port; }
  std::string url() const;

 private:
  // One httplib server per listening address, all with the same routes and settings.
  struct listener {
    httplib::Server http;
    std::thread thread;
    std::atomic<bool> listen_returned{false};
  };

  void configure(httplib::Server& http);
  void start_one(listener& l);
  // Closes a listener's socket; one that never ran is started first, since httplib closes a bound
  // socket only from a running accept loop.
  void release(listener& l);
  reply route(const httplib::Request& req, const httplib::ContentReader* body);
  httplib::Server::HandlerResponse guard(const httplib::Request& req, httplib::Response& res);

  controller& ctl_;
  server_options options_;
  std::vector<std::unique_ptr<listener>> listeners_;
};

}  // namespace api
