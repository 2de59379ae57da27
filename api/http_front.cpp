// http_front: accept loop, admission at the caps, and each connection's state machine.
//
// A connection's phases (one at a time; every phase but handling has a deadline):
//   reading   --request complete-->  handling   --answer ready-->  writing
//   reading   --limit, bad framing, request deadline-->  writing (error answer, then close)
//   writing   --written, keep alive-->  reading      --written, closing-->  lingering
//   lingering --EOF, deadline or max_linger_bytes-->  closed
//   any       --peer gone, deadline, eviction, stop-->  closed
#include "api/http_front.hpp"

#include <asio/ip/v6_only.hpp>
#include <asio/post.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <future>
#include <system_error>

namespace api {

using asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t read_chunk = 16 * 1024;
constexpr std::string_view continue_answer = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr std::chrono::milliseconds max_accept_backoff = 1s;

// Failures that say the host is short of something, not that one connection went wrong.
bool out_of_resources(const std::error_code& ec) {
  return ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system ||
         ec == std::errc::no_buffer_space || ec == std::errc::not_enough_memory;
}

asio::ip::address source_of(const tcp::endpoint& e) {
  auto a = e.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());  // an IPv4 client of a dual-stack API
  return a;
}

}  // namespace

struct http_front::atomic_figures {
  std::atomic<std::size_t> open{0};
  std::atomic<std::uint64_t> accepted{0}, evicted{0}, timed_out{0}, refused{0}, accept_errors{0};
};

struct http_front::connection : std::enable_shared_from_this<connection> {
  enum class phase { reading, handling, writing, lingering, closed };

  connection(http_front& f, tcp::socket s, tcp::endpoint r, tcp::endpoint l)
      : front(f), socket(std::move(s)), deadline(f.io_), remote(r), local(l), scanner(f.limits_.request) {}

  http_front& front;
  tcp::socket socket;
  asio::steady_timer deadline;
  std::uint64_t deadline_generation = 0;
  tcp::endpoint remote, local;
  request_scanner scanner;
  std::string in;       // received and not yet handed on
  std::string out;      // the answer being written
  std::size_t written = 0;
  std::string interim;  // the part of a "100 Continue" the socket did not take at once
  phase state = phase::reading;
  bool started = false;        // bytes of the current request have arrived
  bool continue_sent = false;
  bool head_checked = false;   // body_check has seen this request's head
  bool peer_done = false;      // the client has sent its last byte (EOF)
  bool close_after = false;
  std::size_t served = 0;
  std::size_t lingered = 0;
  std::list<connection*>::iterator quiet_at;
  bool quiet = false;

  // Moves this connection to the loud end of the quiet list (in it unless being handled).
  void heard() {
    if (quiet) front.quiet_.splice(front.quiet_.end(), front.quiet_, quiet_at);
    else quiet_at = front.quiet_.insert(front.quiet_.end(), this), quiet = true;
  }

  void arm(std::chrono::milliseconds after) {
    const auto generation = ++deadline_generation;
    deadline.expires_after(after);
    deadline.async_wait([self = shared_from_this(), generation](const std::error_code& ec) {
      if (!ec && generation == self->deadline_generation) self->on_deadline();
    });
  }

  void on_deadline() {
    switch (state) {
      case phase::reading:
        if (!started) return close();  // idle between requests: an ordinary end
        ++front.figures_->timed_out;
        spdlog::debug("api: {} did not send its whole request in time", remote.address().to_string());
        return refuse(408);
      case phase::writing:
        ++front.figures_->timed_out;
        return close();
      case phase::lingering: return close();
      case phase::handling:
      case phase::closed: return;
    }
  }

  // Reads what the socket has, up to `cap` bytes buffered; ec says why it stopped (would_block,
  // eof, a failure, or none when the cap was reached).
  std::size_t fill(std::size_t cap, std::error_code& ec) {
    std::size_t total = 0;
    ec = {};
    while (in.size() < cap) {
      auto& scratch = front.scratch_;
      const std::size_t n = socket.read_some(asio::buffer(scratch.data(), std::min(read_chunk, cap - in.size())), ec);
      if (ec) break;
      in.append(scratch.data(), n);
      total += n;
    }
    return total;
  }

  void wait_readable() {
    socket.async_wait(tcp::socket::wait_read, [self = shared_from_this()](const std::error_code& ec) {
      if (ec) return self->close();
      if (self->state == phase::reading) self->receive();
      else if (self->state == phase::lingering) self->linger();
    });
  }

  void receive() {
    std::error_code ec;
    if (fill(request_scanner::max_request_size(front.limits_.request) + 1, ec) > 0) {
      heard();
      if (!started) {
        started = true;
        arm(front.limits_.request_timeout);
      }
    }
    if (ec == asio::error::eof) peer_done = true;
    else if (ec && ec != asio::error::would_block) return close();
    if (!in.empty()) {
      const auto f = scanner.scan(in);
      if (f.state == framing::verdict::refused) {
        spdlog::debug("api: refused a request from {}: {}", remote.address().to_string(), f.reason);
        return refuse(f.status);
      }
      if (f.head_size > 0 && !head_checked) {
        head_checked = true;
        if (f.has_body && front.body_check_) {
          if (const int status = front.body_check_(std::string_view(in).substr(0, f.head_size))) return refuse(status);
        }
      }
      if (f.state == framing::verdict::complete) return dispatch(f);
      if (f.expects_continue && !continue_sent) send_continue();
    }
    if (peer_done) return close();  // it stopped part way through a request, or between two
    wait_readable();
  }

  // The interim answer to "Expect: 100-continue". Best effort at once: the socket's send buffer is
  // empty at this point, and a remainder goes out ahead of the final answer.
  void send_continue() {
    continue_sent = true;
    std::error_code ec;
    const std::size_t n = socket.write_some(asio::buffer(continue_answer.data(), continue_answer.size()), ec);
    if (ec && ec != asio::error::would_block) return;
    interim = std::string(continue_answer.substr(ec ? 0 : n));
  }

  void dispatch(const framing& f) {
    state = phase::handling;
    front.quiet_.erase(quiet_at);
    quiet = false;
    ++deadline_generation;
    deadline.cancel();

    http_exchange ex;
    ex.request.assign(in, 0, f.size);
    if (f.expects_continue) ex.request.erase(f.expect_begin, f.expect_end - f.expect_begin);
    in.erase(0, f.size);
    if (in.empty()) in.shrink_to_fit();
    scanner.reset();
    started = continue_sent = head_checked = false;
    ex.remote = remote;
    ex.local = local;
    ex.last = ++served >= front.limits_.max_requests_per_connection || front.stopping_ || peer_done;

    asio::post(*front.pool_, [self = shared_from_this(), ex = std::move(ex)] {
      http_answer a;
      try {
        a = self->front.handler_(ex);
      } catch (const std::exception& e) {
        spdlog::error("api: handler failed: {}", e.what());
        a = {self->front.error_response_(500), true};
      }
      a.close = a.close || ex.last;
      asio::post(self->front.io_, [self, a = std::move(a)]() mutable { self->respond(std::move(a)); });
    });
  }

  void respond(http_answer a) {
    if (state == phase::closed) return;
    out = std::move(interim) + std::move(a.bytes);
    interim.clear();
    close_after = a.close;
    begin_writing();
  }

  void refuse(int status) {
    ++front.figures_->refused;
    in.clear();
    in.shrink_to_fit();
    out = std::move(interim) + front.error_response_(status);
    interim.clear();
    close_after = true;
    begin_writing();
  }

  void begin_writing() {
    state = phase::writing;
    written = 0;
    heard();
    arm(front.limits_.send_timeout);
    write_more();
  }

  void write_more() {
    socket.async_write_some(asio::buffer(out.data() + written, out.size() - written),
                            [self = shared_from_this()](const std::error_code& ec, std::size_t n) {
                              if (ec || self->state != phase::writing) return self->close();
                              self->written += n;
                              self->heard();
                              if (self->written < self->out.size()) {
                                self->arm(self->front.limits_.send_timeout);
                                return self->write_more();
                              }
                              self->after_write();
                            });
  }

  void after_write() {
    out.clear();
    out.shrink_to_fit();
    if (close_after || front.stopping_) {
      if (peer_done) return close();
      // Lingering close: a client still sending would otherwise get a reset that can destroy the
      // answer in its receive buffer before it reads it.
      std::error_code ignored;
      socket.shutdown(tcp::socket::shutdown_send, ignored);
      state = phase::lingering;
      arm(front.limits_.linger_timeout);
      return linger();
    }
    state = phase::reading;
    started = !in.empty();  // a pipelined request is already under way
    arm(started ? front.limits_.request_timeout : front.limits_.keep_alive_timeout);
    receive();
  }

  void linger() {
    std::error_code ec;
    do {
      lingered += fill(read_chunk, ec);
      in.clear();
      if (lingered > front.limits_.max_linger_bytes) return close();
    } while (!ec);
    if (ec == asio::error::would_block) return wait_readable();
    close();
  }

  void close() {
    if (state == phase::closed) return;
    state = phase::closed;
    ++deadline_generation;
    deadline.cancel();
    std::error_code ignored;
    socket.close(ignored);
    front.forget(*this);  // may drop the last owner but one: callers hold a shared_ptr
  }
};

http_front::http_front(front_limits limits, handler h, error_response e, body_check check)
    : limits_(limits),
      handler_(std::move(h)),
      error_response_(std::move(e)),
      body_check_(std::move(check)),
      scratch_(read_chunk, '\0'),
      figures_(std::make_unique<atomic_figures>()) {}

http_front::~http_front() { stop(); }

tcp::endpoint http_front::listen(const tcp::endpoint& at) {
  auto l = std::make_unique<listener>(io_);
  auto& a = l->acceptor;
  const auto where = [&](const char* step) {
    return std::string(step) + " " + at.address().to_string() + " port " + std::to_string(at.port());
  };
  std::error_code ec;
  a.open(at.protocol(), ec);
  if (ec) throw std::system_error(ec, where("open"));
  a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec && at.address().is_v6()) a.set_option(asio::ip::v6_only(false), ec);
  if (ec) throw std::system_error(ec, where("setsockopt"));
  a.bind(at, ec);
  if (ec) throw std::system_error(ec, where("bind"));
  a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::system_error(ec, where("listen"));
  const auto bound = a.local_endpoint();
  listeners_.push_back(std::move(l));
  return bound;
}

void http_front::close_listeners() { listeners_.clear(); }

void http_front::start() {
  pool_.emplace(limits_.handler_threads);
  for (auto& l : listeners_) accept(*l);
  thread_ = std::thread([this] { io_.run(); });
}

void http_front::accept(listener& l) {
  l.acceptor.async_accept([this, &l](const std::error_code& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !l.acceptor.is_open()) return;
    if (!ec) {
      l.backoff = 0ms;
      admit(std::move(socket));
      return accept(l);
    }
    if (!out_of_resources(ec)) return accept(l);  // ECONNABORTED and the like: that client is gone
    ++figures_->accept_errors;
    // Short of descriptors or memory: free what the quietest connection holds, then try again soon.
    // The pending client waits in the backlog meanwhile.
    l.backoff = std::min(max_accept_backoff, std::max(100ms, l.backoff * 2));
    if (l.backoff == 100ms) spdlog::warn("api: cannot accept a connection: {}; retrying", ec.message());
    evict(nullptr);
    l.retry.expires_after(l.backoff);
    l.retry.async_wait([this, &l](const std::error_code& wait_ec) {
      if (!wait_ec) accept(l);
    });
  });
}

void http_front::admit(tcp::socket socket) {
  std::error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  const auto local = ec ? tcp::endpoint() : socket.local_endpoint(ec);
  if (!ec) socket.non_blocking(true, ec);
  if (!ec) socket.set_option(tcp::no_delay(true), ec);
  if (ec) return;  // gone already
  const auto source = source_of(remote);
  if (const auto it = per_source_.find(source);
      it != per_source_.end() && it->second >= limits_.max_connections_per_source && !evict(&source)) {
    return;
  }
  if (open_.size() >= limits_.max_connections && !evict(nullptr)) return;
  ++per_source_[source];
  ++figures_->accepted;
  ++figures_->open;
  auto c = std::make_shared<connection>(*this, std::move(socket), remote, local);
  open_.emplace(c.get(), c);
  c->heard();
  c->arm(limits_.request_timeout);  // the first request has its whole deadline from accept
  c->receive();
}

bool http_front::evict(const asio::ip::address* source) {
  for (auto* c : quiet_) {
    if (source && source_of(c->remote) != *source) continue;
    spdlog::debug("api: closing the quietest connection, from {}, to make room", c->remote.address().to_string());
    ++figures_->evicted;
    c->close();
    return true;
  }
  return false;
}

void http_front::forget(connection& c) {
  if (c.quiet) {
    quiet_.erase(c.quiet_at);
    c.quiet = false;
  }
  const auto source = source_of(c.remote);
  if (auto it = per_source_.find(source); it != per_source_.end() && --it->second == 0) per_source_.erase(it);
  --figures_->open;
  open_.erase(&c);
}

void http_front::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (!thread_.joinable()) {
    close_listeners();
    return;
  }
  std::promise<void> closed;
  asio::post(io_, [this, &closed] {
    stopping_ = true;
    for (auto& l : listeners_) {
      std::error_code ignored;
      l->acceptor.close(ignored);
      l->retry.cancel();
    }
    std::vector<std::shared_ptr<connection>> all;
    for (auto& [_, c] : open_) all.push_back(c);
    for (auto& c : all) c->close();
    closed.set_value();
  });
  closed.get_future().wait();
  pool_->join();  // a running handler finishes; its answer finds its connection closed
  io_.stop();
  thread_.join();
}

http_front::figures http_front::counts() const {
  return {figures_->open.load(), figures_->accepted.load(), figures_->evicted.load(),
          figures_->timed_out.load(), figures_->refused.load(), figures_->accept_errors.load()};
}

}  // namespace api
