// front_connection: one connection of http_front, a state machine run by the front's event loop.
//
// Phases, one at a time; every one but handling has a deadline:
//   reading   --request complete-->  handling  --answer back from the pool-->  writing
//   reading   --limit, bad framing, request deadline, body_check-->  writing (an error answer)
//   reading   --EOF, idle deadline-->  closed
//   writing   --written, kept alive-->  reading
//   writing   --written, ending-->  lingering (closed at once if the client has sent its EOF)
//   lingering --EOF, deadline, max_linger_bytes-->  closed
//   any       --failure, send deadline, eviction, stop-->  closed
#pragma once

#include "api/http_front.hpp"

#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <list>
#include <memory>
#include <string>

namespace api {

// Written on the event loop, read by http_front::counts() from any thread.
struct http_front::atomic_figures {
  std::atomic<std::size_t> open{0};
  std::atomic<std::uint64_t> accepted{0}, evicted{0}, turned_away{0}, timed_out{0}, refused{0}, accept_errors{0};
};

class http_front::connection : public std::enable_shared_from_this<connection> {
 public:
  connection(http_front& front, asio::ip::tcp::socket socket, asio::ip::tcp::endpoint remote,
             asio::ip::tcp::endpoint local, asio::ip::address source);

  // Waits for the first request, whose deadline runs from now.
  void start();
  // Idempotent; the front forgets the connection. Callers hold a shared_ptr to it.
  void close();
  bool handling() const { return state_ == phase::handling; }
  bool writing() const { return state_ == phase::writing; }
  // Takes back a request still waiting for a handler thread (then close()); false once one runs it.
  bool withdraw();
  // When the request being handled was handed to the pool (http_front::dispatched_).
  std::uint64_t dispatched_at() const { return dispatched_at_; }
  const asio::ip::address& source() const { return source_; }
  // Out of the front's quiet list (while handled, and once closed).
  void unlist();

 private:
  enum class phase { reading, handling, writing, lingering, closed };

  void heard();
  void arm(std::chrono::steady_clock::duration after);
  void on_deadline();
  std::size_t fill(std::size_t cap, std::error_code& ec);
  void wait_readable();
  void receive();
  void send_continue();
  void dispatch(const framing& f);
  void respond(http_answer answer);
  void refuse(int status);
  void begin_writing();
  void arm_send();
  void write_more();
  void after_write();
  void linger();
  void account(std::size_t bytes);

  // A request's way through the pool: queued until a thread takes it, unless withdrawn first.
  enum job_state : int { no_job, job_queued, job_running };

  http_front& front_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer deadline_;
  std::uint64_t deadline_generation_ = 0;  // a wait armed before the last arm() is stale
  asio::ip::tcp::endpoint remote_, local_;
  asio::ip::address source_;
  request_scanner scanner_;
  std::string in_;       // received and not yet handed on
  std::string out_;      // the answer being written
  std::size_t written_ = 0;
  std::chrono::steady_clock::time_point write_began_;
  std::string interim_;  // the part of a "100 Continue" the socket did not take at once
  phase state_ = phase::reading;
  bool started_ = false;        // bytes of the current request have arrived
  bool head_checked_ = false;   // body_check has seen this request's head
  bool continue_sent_ = false;
  bool peer_done_ = false;      // the client has sent its last byte (EOF)
  bool close_after_ = false;
  std::size_t served_ = 0;
  std::size_t lingered_ = 0;
  std::list<connection*>::iterator quiet_at_;
  bool listed_ = false;
  std::atomic<int> job_{no_job};
  std::uint64_t dispatched_at_ = 0;
  std::size_t accounted_ = 0;  // of front_.answer_bytes_
};

}  // namespace api
