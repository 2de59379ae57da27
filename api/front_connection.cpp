// front_connection: reading a request to its verdict, handing it to the pool, writing the answer.
#include "api/front_connection.hpp"

#include <asio/post.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>

namespace api {

using asio::ip::tcp;

namespace {
constexpr std::size_t read_chunk = 16 * 1024;
constexpr std::string_view continue_answer = "HTTP/1.1 100 Continue\r\n\r\n";
}  // namespace

http_front::connection::connection(http_front& front, tcp::socket socket, tcp::endpoint remote, tcp::endpoint local,
                                   asio::ip::address source)
    : front_(front),
      socket_(std::move(socket)),
      deadline_(front.io_),
      remote_(std::move(remote)),
      local_(std::move(local)),
      source_(std::move(source)),
      scanner_(front.limits_.request) {}

void http_front::connection::start() {
  heard();
  arm(front_.limits_.request_timeout);
  receive();
}

// To the loud end of the front's quiet list: at a cap, the connection at the other end goes first.
void http_front::connection::heard() {
  if (listed_) {
    front_.quiet_.splice(front_.quiet_.end(), front_.quiet_, quiet_at_);
  } else {
    quiet_at_ = front_.quiet_.insert(front_.quiet_.end(), this);
    listed_ = true;
  }
}

void http_front::connection::unlist() {
  if (!listed_) return;
  front_.quiet_.erase(quiet_at_);
  listed_ = false;
}

void http_front::connection::arm(std::chrono::steady_clock::duration after) {
  const auto generation = ++deadline_generation_;
  deadline_.expires_after(after);
  deadline_.async_wait([self = shared_from_this(), generation](const std::error_code& ec) {
    if (!ec && generation == self->deadline_generation_) self->on_deadline();
  });
}

void http_front::connection::on_deadline() {
  switch (state_) {
    case phase::reading:
      if (!started_) return close();  // idle between requests (or before the first): an ordinary end
      ++front_.figures_->timed_out;
      spdlog::debug("api: {} did not send its whole request in time", remote_.address().to_string());
      return refuse(408);
    case phase::writing:
      ++front_.figures_->timed_out;
      return close();
    case phase::lingering: return close();
    case phase::handling:
    case phase::closed: return;
  }
}

// Reads what the socket has, while fewer than `cap` bytes are buffered; ec says why it stopped:
// would_block (drained), eof, a failure, or nothing when the cap was reached.
std::size_t http_front::connection::fill(std::size_t cap, std::error_code& ec) {
  std::size_t total = 0;
  ec = {};
  auto& scratch = front_.scratch_;
  while (in_.size() < cap) {
    const std::size_t n = socket_.read_some(asio::buffer(scratch.data(), std::min(read_chunk, cap - in_.size())), ec);
    if (ec) break;
    in_.append(scratch.data(), n);
    total += n;
  }
  return total;
}

// Only after a read met EAGAIN: the reactor is edge-triggered, and reports only what arrives later.
void http_front::connection::wait_readable() {
  socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](const std::error_code& ec) {
    if (ec) return self->close();
    if (self->state_ == phase::reading) self->receive();
    else if (self->state_ == phase::lingering) self->linger();
  });
}

void http_front::connection::receive() {
  std::error_code ec;
  if (fill(request_scanner::max_request_size(front_.limits_.request) + 1, ec) > 0 && !started_) {
    started_ = true;
    heard();  // quiet from the request's start: the later bytes of a trickle do not make it louder
    if (served_ > 0) arm(front_.limits_.request_timeout);  // the first request's runs from accept
  }
  if (ec == asio::error::eof) peer_done_ = true;
  else if (ec && ec != asio::error::would_block) return close();
  if (!in_.empty()) {
    const auto f = scanner_.scan(in_);
    if (f.state == framing::verdict::refused) {
      spdlog::debug("api: refused a request from {}: {}", remote_.address().to_string(), f.reason);
      return refuse(f.status);
    }
    if (f.head_size > 0 && !head_checked_) {
      head_checked_ = true;
      if (f.has_body && front_.body_check_) {
        if (const int status = front_.body_check_(std::string_view(in_).substr(0, f.head_size))) return refuse(status);
      }
    }
    if (f.state == framing::verdict::complete) return dispatch(f);
    // The cap is one byte past the largest request, so this cannot be; but never wait on a socket
    // that was not read to EAGAIN.
    if (!ec) return refuse(413);
    if (f.expects_continue && !continue_sent_) send_continue();
  }
  if (peer_done_) return close();  // it stopped part way through a request, or between two
  wait_readable();
}

// The interim answer to "Expect: 100-continue". Best effort at once: the socket's send buffer is
// empty at this point, and a remainder goes out ahead of the final answer.
void http_front::connection::send_continue() {
  continue_sent_ = true;
  std::error_code ec;
  const std::size_t n = socket_.write_some(asio::buffer(continue_answer.data(), continue_answer.size()), ec);
  if (ec && ec != asio::error::would_block) return;
  interim_ = std::string(continue_answer.substr(ec ? 0 : n));
}

void http_front::connection::dispatch(const framing& f) {
  state_ = phase::handling;
  unlist();
  ++deadline_generation_;
  deadline_.cancel();

  http_exchange ex;
  ex.request.assign(in_, 0, f.size);
  if (f.expect_end > f.expect_begin) ex.request.erase(f.expect_begin, f.expect_end - f.expect_begin);
  const bool more = in_.size() > f.size;  // pipelined: the next request is already here
  in_.erase(0, f.size);
  if (in_.empty()) in_.shrink_to_fit();
  scanner_.reset();
  started_ = head_checked_ = continue_sent_ = false;
  ex.remote = remote_;
  ex.local = local_;
  ex.last = ++served_ >= front_.limits_.max_requests_per_connection || front_.stopping_ || (peer_done_ && !more);
  dispatched_at_ = ++front_.dispatched_;
  job_ = job_queued;

  asio::post(*front_.pool_, [self = shared_from_this(), ex = std::move(ex)]() mutable {
    auto& io = self->front_.io_;
    int queued = job_queued;
    if (!self->job_.compare_exchange_strong(queued, job_running)) {
      // Withdrawn while it waited (evicted, or the front stopping): nothing to run, nobody to answer.
      asio::post(io, [self = std::move(self)] {});
      return;
    }
    http_answer a;
    try {
      a = self->front_.handler_(ex);
    } catch (const std::exception& e) {
      spdlog::error("api: handler failed: {}", e.what());
      a = {self->front_.error_response_(500), true};
    } catch (...) {
      spdlog::error("api: handler failed");
      a = {self->front_.error_response_(500), true};
    }
    a.close = a.close || ex.last;
    // The last reference may be this one: it is dropped on the event loop, which owns the socket.
    asio::post(io, [self = std::move(self), a = std::move(a)]() mutable { self->respond(std::move(a)); });
  });
}

bool http_front::connection::withdraw() {
  int queued = job_queued;
  return job_.compare_exchange_strong(queued, no_job);
}

void http_front::connection::respond(http_answer answer) {
  job_ = no_job;
  if (state_ == phase::closed) return;
  out_ = std::move(interim_) + std::move(answer.bytes);
  interim_.clear();
  close_after_ = answer.close;
  begin_writing();
}

void http_front::connection::refuse(int status) {
  ++front_.figures_->refused;
  in_.clear();
  in_.shrink_to_fit();
  out_ = std::move(interim_) + front_.error_response_(status);
  interim_.clear();
  close_after_ = true;
  begin_writing();
}

void http_front::connection::begin_writing() {
  state_ = phase::writing;
  written_ = 0;
  write_began_ = std::chrono::steady_clock::now();
  heard();
  account(out_.size());
  front_.shed_answers(this);
  arm_send();
  write_more();
}

void http_front::connection::account(std::size_t bytes) {
  front_.answer_bytes_ = front_.answer_bytes_ - accounted_ + bytes;
  accounted_ = bytes;
}

// send_timeout from the last progress, and never past max_send_time from the start.
void http_front::connection::arm_send() {
  const auto left = write_began_ + front_.limits_.max_send_time - std::chrono::steady_clock::now();
  arm(std::clamp<std::chrono::steady_clock::duration>(left, {}, front_.limits_.send_timeout));
}

void http_front::connection::write_more() {
  socket_.async_write_some(asio::buffer(out_.data() + written_, out_.size() - written_),
                           [self = shared_from_this()](const std::error_code& ec, std::size_t n) {
                             if (ec || self->state_ != phase::writing) return self->close();
                             self->written_ += n;
                             self->heard();
                             if (self->written_ < self->out_.size()) {
                               self->arm_send();
                               return self->write_more();
                             }
                             self->after_write();
                           });
}

void http_front::connection::after_write() {
  out_.clear();
  out_.shrink_to_fit();
  account(0);
  if (close_after_ || front_.stopping_) {
    if (peer_done_ || front_.stopping_) return close();
    // Lingering close: a client still sending would otherwise get a reset, which can destroy the
    // answer in its receive buffer before it reads it.
    std::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    state_ = phase::lingering;
    arm(front_.limits_.linger_timeout);
    return linger();
  }
  state_ = phase::reading;
  started_ = !in_.empty();  // a pipelined request is already under way
  heard();
  arm(started_ ? front_.limits_.request_timeout : front_.limits_.keep_alive_timeout);
  front_.room_may_be();  // it may now be closed to make room for a connection that waits
  receive();
}

// Reads and drops at most one chunk a turn, then lets the event loop serve the others before the
// next: a client that streams junk after its error answer gets no more of the loop than anyone.
void http_front::connection::linger() {
  std::error_code ec;
  lingered_ += fill(read_chunk, ec);
  in_.clear();
  if (lingered_ > front_.limits_.max_linger_bytes) return close();
  if (ec == asio::error::would_block) return wait_readable();
  if (ec) return close();
  asio::post(front_.io_, [self = shared_from_this()] {
    if (self->state_ == phase::lingering) self->linger();
  });
}

void http_front::connection::close() {
  if (state_ == phase::closed) return;
  state_ = phase::closed;
  withdraw();  // a request still waiting for a handler thread will not run
  account(0);
  out_.clear();
  ++deadline_generation_;
  deadline_.cancel();
  std::error_code ignored;
  socket_.close(ignored);
  front_.forget(*this);
}

}  // namespace api
