// http_front: listening, the accept loop, admission at the caps, and stopping in two steps.
#include "api/http_front.hpp"

#include "api/front_connection.hpp"
#include "relay/forward_spec.hpp"
#include "relay/socket_options.hpp"

#include <asio/ip/v6_only.hpp>
#include <asio/post.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>
#include <system_error>

namespace api {

using asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

// The accept loop's longest wait after a failure. The forwards' loops wait up to 5 s; this is how
// long an operator may wait for the API once descriptors are free again, so it is shorter.
constexpr std::chrono::milliseconds max_accept_backoff = 1s;

}  // namespace

asio::ip::address http_front::source_of(const tcp::endpoint& remote) {
  const auto a = remote.address();
  if (a.is_v4()) return a;
  const auto v6 = a.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6);  // IPv4 on a dual-stack API
  auto bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return asio::ip::address_v6(bytes);
}

http_front::http_front(front_limits limits, handler h, error_response e, body_check check)
    : limits_(limits),
      handler_(std::move(h)),
      error_response_(std::move(e)),
      body_check_(std::move(check)),
      scratch_(16 * 1024, '\0'),
      figures_(std::make_unique<atomic_figures>()) {
  if (limits_.handler_threads == 0) throw std::invalid_argument("http_front: handler_threads must be at least 1");
}

http_front::~http_front() { stop(); }

// Not relay::bind_listener: a forward on "::" is IPv6 only, but an API on "::" (which needs a token)
// has always taken IPv4 too, and the API's acceptor also listens here.
tcp::endpoint http_front::listen(const tcp::endpoint& at) {
  auto l = std::make_unique<listener>(io_);
  auto& a = l->acceptor;
  const auto where = relay::format_endpoint(at.address().to_string(), at.port());
  std::error_code ec;
  const auto failed = [&](const char* step) { return std::system_error(ec, std::string(step) + " " + where); };
  a.open(at.protocol(), ec);
  if (ec) throw failed("open");
  a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (ec) throw failed("set SO_REUSEADDR on");
  if (at.address().is_v6()) a.set_option(asio::ip::v6_only(false), ec);
  if (ec) throw failed("clear IPV6_V6ONLY on");
  a.bind(at, ec);
  if (ec) throw failed("bind");
  a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw failed("listen on");
  const auto bound = a.local_endpoint();
  listeners_.push_back(std::move(l));
  return bound;
}

void http_front::close_listeners() { listeners_.clear(); }

void http_front::start() {
  work_.emplace(io_.get_executor());  // run() must not return while nothing is pending
  pool_.emplace(limits_.handler_threads);
  for (auto& l : listeners_) accept(*l);
  thread_ = std::thread([this] { io_.run(); });
}

void http_front::accept(listener& l) {
  l.acceptor.async_accept([this, &l](const std::error_code& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !l.acceptor.is_open()) return;
    if (!ec) return accepted(l, std::move(socket));
    if (relay::is_aborted_handshake(ec)) return accept(l);  // it left
    // Short of descriptors or memory, or anything else: back off, and retry with the client waiting
    // in the backlog. Once per streak, what the quietest connection holds is freed for it.
    ++figures_->accept_errors;
    const bool first = l.backoff == 0ms;
    l.backoff = first ? 100ms : std::min(max_accept_backoff, l.backoff * 2);
    if (first) {
      spdlog::warn("api: cannot accept a connection: {}; retrying", ec.message());
      if (relay::is_resource_error(ec)) evict(nullptr);
    }
    l.retry.expires_after(l.backoff);
    l.retry.async_wait([this, &l](const std::error_code& wait_ec) {
      if (!wait_ec) accept(l);
    });
  });
}

// Admits this connection and whatever else the backlog holds (up to a batch, so that a flood of
// new connections cannot keep a client queued behind it for a round of the event loop each), then
// waits for more; or stops accepting on this listener while a connection must wait for room.
void http_front::accepted(listener& l, tcp::socket socket) {
  constexpr int batch = 64;
  l.backoff = 0ms;
  std::error_code ec;
  // Non-blocking only for these synchronous accepts: asio completes an async_accept on a
  // non-blocking acceptor with would_block instead of waiting.
  l.acceptor.non_blocking(true, ec);
  for (int taken = 1;; ++taken) {
    if (!admit(socket)) {
      l.waiting.emplace(std::move(socket));
      break;
    }
    if (taken == batch) break;
    socket = tcp::socket(io_);
    l.acceptor.accept(socket, ec);  // EAGAIN once the backlog is empty
    if (ec) break;
  }
  l.acceptor.non_blocking(false, ec);
  if (!l.waiting) accept(l);
}

bool http_front::admit(tcp::socket& socket) {
  std::error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  const auto local = ec ? tcp::endpoint() : socket.local_endpoint(ec);
  if (!ec) socket.non_blocking(true, ec);
  if (!ec) socket.set_option(tcp::no_delay(true), ec);
  if (ec) return true;  // gone already
  const auto source = source_of(remote);
  const auto from_source = per_source_.find(source);
  if (from_source != per_source_.end() && from_source->second >= limits_.max_connections_per_source &&
      !evict(&source)) {
    ++figures_->turned_away;  // its own source's connections are all being answered
    spdlog::debug("api: turned away a connection from {}: at the per-source cap", remote.address().to_string());
    socket.close(ec);
    return true;
  }
  if (open_.size() >= limits_.max_connections && !evict(nullptr)) return false;
  ++per_source_[source];
  ++figures_->accepted;
  ++figures_->open;
  auto c = std::make_shared<connection>(*this, std::move(socket), remote, local, source);
  open_.emplace(c.get(), c);
  c->start();
  return true;
}

void http_front::room_may_be() {
  const bool waiting = std::any_of(listeners_.begin(), listeners_.end(), [](const auto& l) { return l->waiting.has_value(); });
  if (waiting && !stopping_) asio::post(io_, [this] { admit_waiting(); });  // not from inside the caller
}

void http_front::admit_waiting() {
  for (auto& l : listeners_) {
    if (!l->waiting || stopping_) continue;
    auto socket = std::move(*l->waiting);
    l->waiting.reset();
    accepted(*l, std::move(socket));
  }
}

bool http_front::evict(const asio::ip::address* source) {
  const auto from = [&](const connection* c) { return !source || c->source() == *source; };
  for (auto* c : quiet_) {
    // One writing its answer is left to finish: the send deadline and max_answer_bytes bound it.
    if (!from(c) || c->writing()) continue;
    ++figures_->evicted;
    spdlog::debug("api: closing the quietest connection, from {}, to make room", c->source().to_string());
    c->close();  // erases it from quiet_: this loop goes no further
    return true;
  }
  // Then the request that has waited longest for a handler thread: a flood of requests displaces
  // its own, never one that a handler is running.
  std::vector<connection*> waiting;
  for (auto& [c, _] : open_) {
    if (c->handling() && from(c)) waiting.push_back(c);
  }
  std::sort(waiting.begin(), waiting.end(),
            [](const connection* a, const connection* b) { return a->dispatched_at() < b->dispatched_at(); });
  for (auto* c : waiting) {
    if (!c->withdraw()) continue;  // a handler has it already
    ++figures_->evicted;
    spdlog::debug("api: dropping the longest-waiting request, from {}, to make room", c->source().to_string());
    c->close();
    return true;
  }
  return false;
}

void http_front::shed_answers(const connection* keep) {
  for (auto it = quiet_.begin(); answer_bytes_ > limits_.max_answer_bytes && it != quiet_.end();) {
    auto* c = *it++;  // close() erases c from quiet_
    if (c == keep || !c->writing()) continue;
    ++figures_->evicted;
    spdlog::debug("api: closing a connection from {} that does not read its answer: answers over {} bytes",
                  c->source().to_string(), limits_.max_answer_bytes);
    c->close();
  }
}

void http_front::forget(connection& c) {
  c.unlist();
  if (auto it = per_source_.find(c.source()); it != per_source_.end() && --it->second == 0) per_source_.erase(it);
  --figures_->open;
  open_.erase(&c);
  room_may_be();
  if (drained_ && open_.empty()) {
    last_answers_.cancel();
    std::exchange(drained_, nullptr)->set_value();
  }
}

void http_front::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (!thread_.joinable()) {
    close_listeners();
    return;
  }
  const auto close_all = [this](bool keep_running) {
    std::vector<std::shared_ptr<connection>> closing;
    for (auto& [_, c] : open_) {
      if (!keep_running || !c->handling() || c->withdraw()) closing.push_back(c);
    }
    for (auto& c : closing) c->close();
  };
  // 1. No more connections, and none that waits for a request or for a handler thread; a request a
  // handler is running goes on.
  std::promise<void> quiet;
  asio::post(io_, [&] {
    stopping_ = true;
    for (auto& l : listeners_) {
      std::error_code ignored;
      l->acceptor.close(ignored);
      l->retry.cancel();
      l->waiting.reset();
    }
    close_all(true);
    quiet.set_value();
  });
  quiet.get_future().wait();
  // 2. Every handler finishes and posts its answer, which is written before each connection closes
  // (within send_timeout); this step is queued behind those answers.
  pool_->join();
  std::promise<void> drained;
  asio::post(io_, [&] {
    if (open_.empty()) return drained.set_value();
    drained_ = &drained;
    last_answers_.expires_after(limits_.send_timeout);
    last_answers_.async_wait([&](const std::error_code& ec) {
      if (!ec) close_all(false);
    });
  });
  drained.get_future().wait();
  work_.reset();
  io_.stop();
  thread_.join();
}

http_front::figures http_front::counts() const {
  return {figures_->open.load(),       figures_->accepted.load(), figures_->evicted.load(),
          figures_->turned_away.load(), figures_->timed_out.load(), figures_->refused.load(),
          figures_->accept_errors.load()};
}

}  // namespace api
