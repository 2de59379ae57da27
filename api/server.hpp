// server: the API's HTTP side: routing, content types, auth and error shaping, behind http_front.
#pragma once

#include "api/controller.hpp"
#include "api/http_front.hpp"

#include <httplib.h>

#include <cstdint>
#include <string>
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
  // Bytes of a request body: a forward with both lists full of the longest IPv6 prefixes
  // (2 x 1,024 x "ffff:...:ffff/128") is about 95 KB of JSON.
  static constexpr std::size_t max_body = api::max_body;
  // Requests one kept-alive connection may carry before the server closes it.
  static constexpr std::size_t keep_alive_max_requests = 10'000;
  // What the API's connections live by: the README's "API limits" (see http_front.hpp).
  static front_limits default_limits();

  server(controller& ctl, server_options options, front_limits limits = default_limits());
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Binds the listening socket (one per address of "localhost"); throws std::runtime_error naming
  // the address when it cannot.
  void bind();
  // The same on the given addresses (IP literals), all on one port.
  void bind(const std::vector<std::string>& addresses);
  // Serves until stop(); connections that arrived since bind() are taken from the backlog.
  void start();
  void stop();

  std::uint16_t port() const { return options_.port; }
  std::string url() const;

 private:
  // httplib parses, routes and answers each request the front hands over, complete, from memory.
  class router : public httplib::Server {
   public:
    using httplib::Server::process_request;
  };

  void configure();
  http_answer handle(const http_exchange& ex);
  int check_body(std::string_view head) const;
  reply route(const httplib::Request& req, const httplib::ContentReader* body);
  // Fleet mode: the Portrelay-Store header on an /api/ answer.
  void mark_store(httplib::Response& res) const;
  httplib::Server::HandlerResponse guard(const httplib::Request& req, httplib::Response& res);

  controller& ctl_;
  server_options options_;
  router http_;        // before front_: front_'s handlers use it, and front_ stops them as it goes
  http_front front_;
};

}  // namespace api
