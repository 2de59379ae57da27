// http_front: the API's connections: accept, caps, deadlines and bounded buffers before any handler.
//
// cpp-httplib gives each connection a pool thread for its whole life, reads a header block of any
// size, and restarts its read timeout with every byte; none of that can be changed at run time. So
// the front owns the sockets on one event-loop thread: a connection holds no thread while it is idle
// or still sending its request, each request must arrive whole within a deadline and within size
// limits, and only then is it handed, complete, to a handler on the pool. The handler's answer is
// written back by the event loop, so a client that does not read holds no thread either.
#pragma once

#include "api/request_framing.hpp"

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/thread_pool.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace api {

struct front_limits {
  request_limits request;
  // From the first byte of a request (or from accept, for the first) until all of it has arrived.
  // HAProxy's "timeout http-request"; a request that misses it is answered 408.
  std::chrono::milliseconds request_timeout{10'000};
  // How long a connection may wait, idle, for its next request (HAProxy's "timeout http-keep-alive").
  std::chrono::milliseconds keep_alive_timeout{5'000};
  // How long writing an answer may make no progress (nginx's send_timeout), and how long it may
  // take in all, however steadily the client reads.
  std::chrono::milliseconds send_timeout{10'000};
  std::chrono::milliseconds max_send_time{60'000};
  // After an error answer that ends the connection, the rest of what the client sends is read and
  // dropped for this long, or up to max_linger_bytes, so that it reads the answer instead of a reset.
  std::chrono::milliseconds linger_timeout{2'000};
  std::size_t max_linger_bytes = 1024 * 1024;
  // Answers held for clients that have not read them yet, in all: past it, the quietest connection
  // with an answer still to write is closed (an answer is as large as the list of forwards).
  std::size_t max_answer_bytes = 64 * 1024 * 1024;
  // Open connections, in all and from one source address. At a cap, the connection that has been
  // quiet longest (idle, or sending its request) is closed to make room, or else the one whose
  // request has waited longest for a handler thread; one whose request a handler is running, or
  // whose answer is being written, is never closed for this. When none can go, a new connection waits in the
  // listen backlog (at the total cap) or is closed (at its source's cap). IPv6 sources count by
  // their /64, which one client usually holds whole.
  std::size_t max_connections = 1024;
  std::size_t max_connections_per_source = 128;
  std::size_t max_requests_per_connection = 10'000;
  unsigned handler_threads = 8;  // at least 1
};

// One complete request, as received (less an "Expect: 100-continue" the front has answered).
struct http_exchange {
  std::string request;
  asio::ip::tcp::endpoint remote;
  asio::ip::tcp::endpoint local;
  bool last = false;  // the connection ends after this answer: the handler should say "Connection: close"
};

struct http_answer {
  std::string bytes;   // the whole response: status line, fields, body
  bool close = false;  // end the connection after it (the request said so, or HTTP/1.0)
};

class http_front {
 public:
  // Runs on a pool thread; may throw (the client then gets error_response(500)).
  using handler = std::function<http_answer(const http_exchange&)>;
  // The whole response, with "Connection: close", for a status the front answers itself:
  // 400, 408, 413, 431, 500 and 501, and what body_check returns.
  using error_response = std::function<std::string(int status)>;
  // Runs on the event loop once a head announcing a body is complete, before the body is read:
  // 0 to read it, or the status to refuse the request with (then no byte of the body is kept).
  // For checks that need no I/O, such as the token: an unauthenticated client then holds one head.
  using body_check = std::function<int(std::string_view head)>;

  struct figures {
    std::size_t open = 0;             // connections now
    std::uint64_t accepted = 0;       // connections ever
    std::uint64_t evicted = 0;        // closed at a cap to make room
    std::uint64_t turned_away = 0;    // closed at once at a cap, when none could make room
    std::uint64_t timed_out = 0;      // ended by the request deadline (408) or a send deadline
    std::uint64_t refused = 0;        // requests answered 4xx/5xx by the front (limits, framing, 401)
    std::uint64_t accept_errors = 0;  // accept failures (for lack of descriptors or memory, mostly)
  };

  // Throws std::invalid_argument when limits.handler_threads is 0.
  http_front(front_limits limits, handler h, error_response e, body_check check = nullptr);
  ~http_front();
  http_front(const http_front&) = delete;
  http_front& operator=(const http_front&) = delete;

  // Opens, binds and listens (SO_REUSEADDR, never SO_REUSEPORT; an IPv6 wildcard takes IPv4 too).
  // Returns the bound endpoint; throws std::system_error naming the step and the endpoint.
  asio::ip::tcp::endpoint listen(const asio::ip::tcp::endpoint& at);
  // Closes every listening socket; only before start().
  void close_listeners();
  // Serves on one event-loop thread and the handler pool until stop().
  void start();
  // Stops accepting and closes every connection; one whose request is being handled gets its
  // answer first (within send_timeout). Idempotent.
  void stop();

  figures counts() const;
  const front_limits& limits() const { return limits_; }

 private:
  class connection;
  struct listener {
    explicit listener(asio::io_context& io) : acceptor(io), retry(io) {}
    asio::ip::tcp::acceptor acceptor;
    asio::steady_timer retry;
    std::chrono::milliseconds backoff{0};
    std::optional<asio::ip::tcp::socket> waiting;  // accepted at the total cap: admitted when one goes
  };

  void accept(listener& l);
  void accepted(listener& l, asio::ip::tcp::socket socket);
  // False when the socket must wait (the total cap, and no connection could make room).
  bool admit(asio::ip::tcp::socket& socket);
  void admit_waiting();
  // A connection went, or may now be closed to make room: a connection waiting for room tries again.
  void room_may_be();
  // Closes the quietest connections that hold an answer to write, but `keep`, until the answers
  // held fit max_answer_bytes again.
  void shed_answers(const connection* keep);
  // Closes the quietest connection (from `source` only, when given); false when none may go.
  bool evict(const asio::ip::address* source);
  void forget(connection& c);
  // What the per-source cap counts by: the IPv4 address (also when mapped into IPv6), or the /64.
  static asio::ip::address source_of(const asio::ip::tcp::endpoint& remote);

  front_limits limits_;
  handler handler_;
  error_response error_response_;
  body_check body_check_;
  asio::io_context io_;
  std::vector<std::unique_ptr<listener>> listeners_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::optional<asio::thread_pool> pool_;
  std::thread thread_;
  bool stopped_ = false;  // the caller's thread

  // Event-loop thread only.
  bool stopping_ = false;
  std::promise<void>* drained_ = nullptr;  // stop() waits on it for the last answers to be written
  asio::steady_timer last_answers_{io_};
  std::string scratch_;  // what one read takes in, before it is kept: no idle connection holds a buffer
  std::unordered_map<connection*, std::shared_ptr<connection>> open_;
  std::uint64_t dispatched_ = 0;    // requests handed to the pool, for the order of their waiting
  std::size_t answer_bytes_ = 0;    // held in connections' answers, not yet written
  std::list<connection*> quiet_;  // every connection not being handled, quietest first
  std::unordered_map<asio::ip::address, std::size_t> per_source_;

  // Written on the event loop, read by counts() from anywhere.
  struct atomic_figures;
  std::unique_ptr<atomic_figures> figures_;
};

}  // namespace api
