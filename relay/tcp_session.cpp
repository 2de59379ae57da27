// tcp_session: read a client's PROXY header when the forward wants one; connect (to a target of the
// pool, else the next), sending a PROXY header first when the forward does; then a readiness-driven
// relay: splice through a pooled pipe, or copy through the worker's buffer; half-close,
// backpressure, a connect timeout, a half-closed idle timeout, and resets passed on from one side to
// the other (also when seen on a socket it has stopped reading).
// The session's phases and each direction's states, with their transitions: the class comment in
// tcp_session.hpp.
#include "relay/tcp_session.hpp"

#include "relay/error_wake.hpp"
#include "relay/forward_spec.hpp"
#include "relay/ip_prefix.hpp"
#include "relay/result.hpp"
#include "relay/socket_options.hpp"
#include "relay/target_guard.hpp"

#include <asio/post.hpp>
#include <spdlog/spdlog.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>

namespace relay {

namespace {

constexpr std::size_t chunk = 64 * 1024;     // per recv, into the copy buffer
constexpr std::size_t small_splice = 4 * 1024;  // automatic datapath: below this, copying is cheaper
constexpr std::size_t bulk_read = 16 * 1024;    // automatic datapath: from this, splicing is cheaper
constexpr int rounds_per_wakeup = 16;        // then the worker's other connections get their turn
constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();  // a read's size, without a limit

// What a worker owns for all its connections: empty pipes ready for lease, and one copy buffer.
// The buffer stays here rather than in splice_pipe's module: it is the copy datapath's scratch,
// filled and emptied within one call of fill_copy, and one thread_local holds both.
struct worker_resources {
  pipe_pool pipes;
  std::vector<char> buffer = std::vector<char>(chunk);
};

worker_resources& resources() {
  thread_local worker_resources r;  // worker threads are the only callers
  return r;
}

std::string remote_text(const asio::ip::tcp::socket& s) {
  std::error_code ec;
  auto ep = s.remote_endpoint(ec);
  return ec ? std::string("?") : format_endpoint(ep.address().to_string(), ep.port());
}

}  // namespace

tcp_session::tcp_session(asio::ip::tcp::socket client, tcp_route route, forward_stats& stats,
                         const engine_options& options, std::shared_ptr<void> owner, arrival port,
                         std::uint64_t id)
    : client_(std::move(client)),
      upstream_(client_.get_executor()),
      timer_(client_.get_executor()),
      up_{&client_, &upstream_, &stats.bytes_up},
      down_{&upstream_, &client_, &stats.bytes_down},
      id_(id),
      started_(std::chrono::system_clock::now()),
      last_active_(coarse_clock::now()),
      route_(std::move(route)),
      port_(port),
      stats_(stats),
      options_(options),
      owner_(std::move(owner)) {
  up_.port_counter = &port_.counters->bytes_up;
  down_.port_counter = &port_.counters->bytes_down;
}

// Pipes still leased here were cut off mid-transfer: their own destructors close them, never
// pooling them (this may also run off the worker, when an engine is destroyed with connections
// still queued, and the pool is the worker's).
tcp_session::~tcp_session() = default;

std::string tcp_session::peer() const {
  if (!carried_) return remote_text(client_);
  return format_endpoint(carried_->source.address().to_string(), carried_->source.port());
}

void tcp_session::start(connection_set::registration listed) {
  listed_ = std::move(listed);
  if (!route_->spec.accept_proxy_protocol) return begin();
  // Nothing is admitted or connected before the header is whole, which names the client; it holds
  // a slot of max_connections meanwhile (from its accept), so silent clients cannot pile up.
  phase_ = phase::header;
  header_ = std::make_unique<proxy_header_parser>();
  timer_.expires_after(proxy_header_timeout);  // for the whole header: one byte a second is still cut at 3 s
  timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (!ec && self->phase_ == phase::header) self->header_failed("no whole PROXY header within 3 s");
  });
  read_header();
}

void tcp_session::begin() {
  phase_ = phase::connecting;
  bump(stats_.connections_total);
  bump(stats_.connections_active);
  bump(port_.counters->connections_total);
  bump(port_.counters->connections_active);
  next_target();
}

// Reads only what the parser says cannot go past the header (a v1 line byte by byte once short of
// its end, a v2 header by its length), so the client's data stays in the socket for the relay.
void tcp_session::read_header() {
  char buffer[proxy_v2_max_size];
  while (header_->state() == proxy_header_parser::status::need_more) {
    const ssize_t n = ::recv(client_.native_handle(), buffer,
                             std::min(sizeof buffer, header_->safe_read_size()), MSG_DONTWAIT);
    if (n == 0) return header_failed("closed before the PROXY header was whole");
    if (n < 0) {
      if (!would_block(errno)) return header_failed(last_error().message());
      client_.async_wait(asio::socket_base::wait_read, [self = shared_from_this()](const std::error_code& ec) {
        if (self->phase_ != phase::header) return;
        if (ec) return self->header_failed(ec.message());
        self->read_header();
      });
      return;
    }
    header_->feed(std::string_view(buffer, static_cast<std::size_t>(n)));
  }
  if (header_->state() == proxy_header_parser::status::error) return header_failed(header_->error());
  header_read();
}

void tcp_session::header_read() {
  timer_.cancel();
  const auto header = header_->header();
  header_.reset();
  if (header.transport != proxy_transport::stream) {
    return header_failed("a PROXY header for datagrams on a TCP connection");
  }
  if (header.addresses == proxy_addresses::carried) {  // else LOCAL or UNKNOWN: the socket's own addresses
    auto source = header.source;
    source.address(unmapped(source.address()));  // matches IPv4 lists
    carried_ = std::make_unique<carried>(carried{source, header.destination});
  }
  const auto& lists = route_->latest ? (*route_->latest)->filter : route_->filter;
  if (!admit_carried(lists.get(), *route_->counts, stats_, route_->spec.id, ticket_, client_endpoint().address(),
                     "connection from")) {
    return refuse();
  }
  begin();
}

void tcp_session::header_failed(const std::string& why) {
  bump(stats_.proxy_errors);
  spdlog::debug("forward {}: {}: {}", route_->spec.id, peer(), why);
  refuse();
}

asio::ip::tcp::endpoint tcp_session::client_endpoint() const {
  if (carried_) return carried_->source;
  std::error_code ec;
  return client_.remote_endpoint(ec);
}

asio::ip::tcp::endpoint tcp_session::local_endpoint() const {
  if (carried_) return carried_->destination;
  std::error_code ec;
  return client_.local_endpoint(ec);
}

// Each target is tried once per connection, in the pool's order for this client; what makes one
// fail (refused, unreachable, timed out, not resolved) counts against its health. A target with an
// address that leads back into the daemon is passed over at that address without that: it is this
// daemon's configuration that is wrong, not the target (loops_refused counts it).
void tcp_session::next_target() {
  std::error_code ec;
  auto& pool = *route_->pool;
  // Only source_hash reads the client's address: the others save the system call.
  const auto client = pool.policy() == balance_policy::source_hash ? client_endpoint().address()
                                                                    : asio::ip::address();
  const auto i = pool.pick(client, tried_);
  if (!i) return refuse();
  target_ = static_cast<std::uint8_t>(*i);
  tried_ |= tried_set{1} << *i;
  const auto& t = target();
  const auto address = asio::ip::make_address(t.host, ec);
  if (!ec) {  // an IP literal needs no resolver (and no trip to its thread)
    const asio::ip::tcp::endpoint endpoint(address, target_port());
    endpoints_ = std::make_unique<std::vector<asio::ip::tcp::endpoint>>(1, endpoint);
    try_connect(0);
  } else {
    resolve();
  }
}

void tcp_session::target_failed(const std::string& reason) {
  bump(stats_.connect_errors);
  route_->pool->attempt_failed(target_, reason);
  next_target();
}

void tcp_session::resolve() {
  if (!resolver_) resolver_ = std::make_unique<asio::ip::tcp::resolver>(client_.get_executor());
  arm_connect_timeout();
  resolver_->async_resolve(
      target().host, std::to_string(target_port()), asio::ip::tcp::resolver::numeric_service,
      [self = shared_from_this()](const std::error_code& ec, asio::ip::tcp::resolver::results_type results) {
        if (self->phase_ == phase::done) return;
        if (ec || self->timed_out_ || results.empty()) {
          const auto why = self->timed_out_ ? std::string("timed out") : ec ? ec.message() : "no address";
          spdlog::debug("forward {}: {}: resolve {}: {}", self->route_->spec.id, self->peer(), self->target().host,
                        why);
          self->timed_out_ = false;
          return self->target_failed("resolve " + self->target().host + ": " + why);
        }
        self->endpoints_ = std::make_unique<std::vector<asio::ip::tcp::endpoint>>();
        for (const auto& entry : results) self->endpoints_->push_back(entry.endpoint());
        self->try_connect(0);
      });
}

void tcp_session::try_connect(std::size_t index) {
  if (phase_ == phase::done) return;
  if (index >= endpoints_->size()) {
    return target_failed("connect " + target_text() + ": " + failure_.message());
  }
  const auto endpoint = (*endpoints_)[index];
  if (leads_back(route_->spec.id, protocol::tcp, endpoint.address(), endpoint.port(), stats_)) return next_target();
  timed_out_ = false;
  const auto begun = start_connect(upstream_, endpoint, connect_options::connection, route_->spec.source_address);
  if (begun.state == connect_state::failed && begun.no_socket && is_resource_error(begun.error)) {
    // Out of descriptors or memory: worth an operator's attention, at most once a second per worker.
    thread_local clock::time_point last_warning{};
    if (clock::now() - last_warning >= std::chrono::seconds(1)) {
      last_warning = clock::now();
      spdlog::warn("forward {}: cannot open a connection to the target: {}", route_->spec.id, begun.error.message());
    }
  }
  if (begun.state != connect_state::in_progress) {
    on_connect(index, begun.error);
    return;
  }
  arm_connect_timeout();
  upstream_.async_wait(asio::socket_base::wait_write, [self = shared_from_this(), index](std::error_code ec) {
    if (self->phase_ == phase::done) return;
    if (!ec) ec = pending_error(self->upstream_.native_handle());
    self->on_connect(index, ec);
  });
}

void tcp_session::on_connect(std::size_t index, std::error_code ec) {
  // A refused connect is ECONNREFUSED; ECONNRESET means the target accepted, and reset (maybe after
  // sending) before the connect was seen here: relayed as any reset.
  if ((!ec || ec == asio::error::connection_reset) && !timed_out_) {
    connected(ec);
    return;
  }
  failure_ = timed_out_ ? std::make_error_code(std::errc::timed_out) : ec;
  if (spdlog::should_log(spdlog::level::debug)) {
    const auto& e = (*endpoints_)[index];
    spdlog::debug("forward {}: {}: connect {} ({}): {}", route_->spec.id, peer(), target_text(),
                  e.address().to_string(), failure_.message());
  }
  timed_out_ = false;
  try_connect(index + 1);
}

// No target to relay to: the client sees a reset, as it would from a port where nothing listens,
// never an orderly end (which would pass for an empty answer).
void tcp_session::refuse() {
  reset_on_close(client_);
  stop();
}

void tcp_session::arm_connect_timeout() {
  timer_.expires_after(options_.connect_timeout);
  timer_.async_wait([self = shared_from_this(), attempt = ++attempt_](const std::error_code& ec) {
    if (ec || self->phase_ != phase::connecting || attempt != self->attempt_) return;
    self->timed_out_ = true;
    if (self->resolver_) self->resolver_->cancel();
    std::error_code ignored;
    self->upstream_.close(ignored);
  });
}

void tcp_session::connected(const std::error_code& reset) {
  timer_.cancel();
  phase_ = phase::relaying;
  endpoints_.reset();
  resolver_.reset();
  auto& pool = *route_->pool;
  pool.attempt_succeeded(target_);
  pool.opened(target_);
  counted_ = true;
  up_.target_counter = &pool.state(target_).bytes_up;
  down_.target_counter = &pool.state(target_).bytes_down;
  std::error_code ignored;
  client_.non_blocking(true, ignored);  // its other options come from the listener
  if (spdlog::should_log(spdlog::level::debug)) {
    spdlog::debug("forward {}: {} -> {} connected", route_->spec.id, peer(), remote_text(upstream_));
  }
  if (reset) {
    broken(upstream_, reset);
    return pump(down_);
  }
  if (const auto version = route_->spec.proxy_protocol; version != 0) {
    // The header goes first, as bytes the target has not taken yet: the flush that opens the up
    // direction sends it before any read of the client, on the splice path and the copy path alike,
    // and a target that fails meanwhile is a failure of that direction like any other.
    const auto header = version == 1 ? proxy_v1_header(client_endpoint(), local_endpoint())
                                     : proxy_v2_header(client_endpoint(), local_endpoint());
    up_.held = std::make_unique<std::vector<char>>(header.begin(), header.end());
    up_.held_from = 0;
  }
  pump(up_);                                     // the client may well have sent already
  wait(down_, asio::socket_base::wait_read);     // the target has not: no need to try reading it
}

void tcp_session::pump(direction& d) {
  for (int round = 0; round < rounds_per_wakeup; ++round) {
    if (phase_ == phase::done || d.finished()) return;
    std::error_code ec;
    if (!flush(d, ec)) {
      if (ec) return broken(*d.to, ec);
      // Bytes may arrive meanwhile: once unblocked, read again (to EAGAIN) before waiting to read.
      if (d.state != flow::ended) d.state = flow::blocked;
      if (!d.watched) watch(d);
      return wait(d, asio::socket_base::wait_write);  // `to` is full: reading this direction pauses
    }
    switch (d.state) {
      case flow::ended:
        return finish(d);
      case flow::drained:  // the last read saw EAGAIN, and nothing is pending: wait for more
        d.state = flow::reading;
        release_pipe(d);  // idle: the connection holds no pipe and no buffer
        return wait(d, asio::socket_base::wait_read);
      default:
        d.state = flow::reading;  // (from `blocked`: `to` took it all)
    }
    // A limited direction reads what its bucket grants (the most any read here takes, or less), and
    // gives back what the read did not use; an unlimited one pays this one relaxed load.
    if (auto& b = bucket(d); b.limited()) {
      const auto grant = b.take(large_pipe_bytes);
      if (grant == 0) return wait_for_tokens(d, b, large_pipe_bytes);
      b.give_back(grant - fill(d, ec, grant));
    } else {
      fill(d, ec, unlimited);
    }
    if (ec) {
      broken(*d.from, ec);
      d.state = flow::ended;  // nothing more comes from `from`: what was read still goes, then the reset
    }
  }
  // A fast direction has had its share of this wake-up: the worker's other connections go first.
  asio::post(client_.get_executor(), [self = shared_from_this(), &d] { self->pump(d); });
}

bool tcp_session::flush(direction& d, std::error_code& ec) {
  const int to = d.to->native_handle();
  while (d.pipe.size() > 0) {
    const ssize_t n = d.pipe.splice_to(to);
    if (n < 0) {
      if (!would_block(errno)) ec = last_error();
      return false;
    }
    moved(d, static_cast<std::size_t>(n));
  }
  while (d.held) {
    const auto& held = *d.held;
    const ssize_t n = ::send(to, held.data() + d.held_from, held.size() - d.held_from, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (!would_block(errno)) ec = last_error();
      return false;
    }
    d.held_from += static_cast<std::size_t>(n);
    moved(d, static_cast<std::size_t>(n));
    if (d.held_from == held.size()) d.held.reset();
  }
  return true;
}

std::size_t tcp_session::fill(direction& d, std::error_code& ec, std::size_t most) {
  const bool splice = options_.datapath == datapath::splice ||
                      (options_.datapath == datapath::automatic && d.splicing);
  if (splice) {
    if (!d.pipe) d.pipe = resources().pipes.lease();
    if (d.pipe) return fill_splice(d, ec, most);
    // No pipe to be had (out of descriptors): this round copies instead.
  }
  return fill_copy(d, ec, most);
}

// One splice into the empty pipe per round: EAGAIN then means the socket is drained. (Splicing on
// into a pipe that already holds data could also fail for want of pipe slots, which says nothing
// about the socket.)
std::size_t tcp_session::fill_splice(direction& d, std::error_code& ec, std::size_t most) {
  const ssize_t n = d.pipe.splice_from(d.from->native_handle(), most);
  if (n < 0) {
    if (would_block(errno)) {
      d.state = flow::drained;
    } else {
      ec = last_error();
    }
    return 0;
  }
  const auto got = static_cast<std::size_t>(n);
  if (n == 0) d.state = flow::ended;
  // Back to copying small messages; a read the limit cut short says nothing about their size.
  if (n > 0 && got < small_splice && got < most) d.splicing = false;
  return got;
}

// Reads until the socket is drained, ends or the buffer is full, then passes it all on in one send.
// Reading ahead costs no extra call (the read that sees EAGAIN is needed anyway), and when it sees
// the end, the data and the FIN leave in one segment (MSG_MORE holds the data until the shutdown or
// close that follows): one packet and one wake-up fewer for the receiver of a short reply.
std::size_t tcp_session::fill_copy(direction& d, std::error_code& ec, std::size_t most) {
  auto& buffer = resources().buffer;
  const int from = d.from->native_handle();
  const std::size_t want = std::min(buffer.size(), most);
  std::size_t got = 0;
  while (got < want) {
    const ssize_t n = ::recv(from, buffer.data() + got, want - got, MSG_DONTWAIT);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else {
      if (n == 0) {
        d.state = flow::ended;
      } else if (would_block(errno)) {
        d.state = flow::drained;
      } else {
        ec = last_error();  // what was read before the error is still passed on
      }
      break;
    }
  }
  if (got == 0) return 0;
  // Bulk, or more waiting than the limit let through: the next reads splice.
  if (got >= bulk_read || got == most) d.splicing = true;
  const int more = d.state == flow::ended ? MSG_MORE : 0;
  // On an error other than EAGAIN the bytes are held too: the flush that follows sees it again, as
  // the destination's (`ec` is the source's).
  const ssize_t sent = ::send(d.to->native_handle(), buffer.data(), got, MSG_DONTWAIT | MSG_NOSIGNAL | more);
  const std::size_t taken = sent < 0 ? 0 : static_cast<std::size_t>(sent);
  moved(d, taken);
  if (taken < got) {  // only what the destination would not take is kept, until it takes it
    d.held = std::make_unique<std::vector<char>>(buffer.begin() + static_cast<std::ptrdiff_t>(taken),
                                                 buffer.begin() + static_cast<std::ptrdiff_t>(got));
    d.held_from = 0;
  }
  return got;
}

// Nothing pending, so the pipe goes back while the direction waits. A session that resets meanwhile
// waits no less for its bytes to be delivered: the wait is the limit's, not the receiver's.
void tcp_session::wait_for_tokens(direction& d, token_bucket& b, std::size_t want) {
  // A side that reset ended the connection abortively: what it left is not delivered at the limit's
  // pace, which would hold the connection's slot and descriptors for as long as that takes (minutes,
  // for a full receive queue at a low rate). The reset goes now.
  if (phase_ == phase::resetting) return stop();
  release_pipe(d);
  if (!d.watched) watch(d);  // nothing reads `from` meanwhile: its peer's reset is still seen
  const auto wait = std::min<clock::duration>(b.time_until(want), max_token_wait);
  if (!d.throttle) d.throttle = std::make_unique<asio::steady_timer>(client_.get_executor());
  d.throttle->expires_after(wait);
  d.throttle->async_wait([self = shared_from_this(), &d](const std::error_code& ec) {
    if (ec || self->phase_ == phase::done) return;
    self->pump(d);
  });
}

// Pooled when empty; closed with bytes still in it (the connection is going away) or a full pool.
void tcp_session::release_pipe(direction& d) {
  if (d.pipe) resources().pipes.give_back(std::move(d.pipe));
}

void tcp_session::wait(direction& d, asio::socket_base::wait_type what) {
  auto& socket = what == asio::socket_base::wait_read ? *d.from : *d.to;
  socket.async_wait(what, [self = shared_from_this(), &d, &socket](const std::error_code& ec) {
    if (self->phase_ == phase::done) return;
    if (ec) return self->broken(socket, ec);
    self->pump(d);
  });
}

// While a direction waits for `to` to take bytes, or after `from` ended, nothing reads `from`, and
// the reactor is edge-triggered: a reset by its peer would go unseen until `to` moved again (never,
// from a hung target), keeping the session counted and both descriptors open. An error wait on
// `from` sees it. It is queued the first time it is needed and then kept for the session's life
// (an idle connection that never stalled does without it); stop() closing the socket ends it.
void tcp_session::watch(direction& d) {
  d.watched = true;
  d.from->async_wait(asio::socket_base::wait_error, [self = shared_from_this(), &d](const std::error_code& ec) {
    if (self->phase_ == phase::done) return;
    if (ec) return self->broken(*d.from, ec);
    const auto woke = check_error_wake(d.from->native_handle());
    // The error is read (and cleared) here: reads on `from` now give what it still holds, then EOF.
    if (woke.error) return self->broken(*d.from, woke.error);
    if (woke.wait_again) self->watch(d);
  });
}

void tcp_session::finish(direction& d) {
  d.state = flow::finished;
  release_pipe(d);
  if (phase_ == phase::resetting) return pass_reset();  // the failed side's bytes are all delivered
  if (up_.finished() && down_.finished()) {
    stop();  // both ways done: closing sends the last FIN, no shutdown needed first
    return;
  }
  if (!d.watched) watch(d);  // `from` has ended, but its peer may still reset
  std::error_code ignored;
  d.to->shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  phase_ = phase::half_closed;
  deadline_ = clock::now() + options_.half_close_timeout;
  arm_idle_timer();
}

void tcp_session::moved(direction& d, std::size_t n) {
  if (n == 0) return;
  d.bytes += n;
  last_active_ = coarse_clock::now();
  bump(*d.counter, n);
  bump(*d.target_counter, n);  // set once connected, before any byte moves
  bump(*d.port_counter, n);
  if (phase_ == phase::half_closed) {
    deadline_ = clock::now() + options_.half_close_timeout;
  } else if (phase_ == phase::resetting) {
    deadline_ = clock::now() + reset_delivery_stall;
  }
}

void tcp_session::arm_idle_timer() {
  if (timer_armed_) return;
  timer_armed_ = true;
  timer_.expires_at(deadline_);
  timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
    self->timer_armed_ = false;
    if (ec || self->phase_ != phase::half_closed) return;
    if (clock::now() < self->deadline_) return self->arm_idle_timer();  // bytes moved meanwhile
    if (self->up_.pending() || self->down_.pending() || unacknowledged(self->client_) ||
        unacknowledged(self->upstream_) || unread(self->client_) || unread(self->upstream_)) {
      // Blocked on a slow reader, not idle: bytes are waiting in the relay, in a send queue for a
      // receiver that has not taken them (either direction: a finished one may still be delivering),
      // or in a receive queue for a worker that has not run yet (a loaded machine).
      self->deadline_ = clock::now() + self->options_.half_close_timeout;
      return self->arm_idle_timer();
    }
    spdlog::debug("forward {}: {}: half-closed and idle, closing", self->route_->spec.id, self->peer());
    self->stop();
  });
}

// A relay passes on what happened: the side that stays sees a reset, not an orderly end that
// would make a truncated stream look complete. The failed socket's direction goes on, to hand over
// what was read before the error (and what the socket still holds, when the error came by
// another way: reads then give it, then EOF); the reverse direction has nowhere to go any more.
void tcp_session::broken(asio::ip::tcp::socket& s, const std::error_code& ec) {
  if (phase_ == phase::done) return;
  if (!is_ordinary_disconnect(ec) && ec != asio::error::operation_aborted) {
    spdlog::warn("forward {}: {} -> {}: {}", route_->spec.id, peer(), target_text(), ec.message());
  }
  if (phase_ == phase::resetting) {
    if (&s != failed_) stop();  // both sides failed: nobody left to deliver to
    return;                     // (the failed side again: its direction sees the end itself)
  }
  phase_ = phase::resetting;
  failed_ = &s;
  auto& drain = &s == &client_ ? up_ : down_;
  auto& dropped = &drain == &up_ ? down_ : up_;
  dropped.state = flow::finished;
  dropped.held.reset();
  release_pipe(dropped);
  deadline_ = clock::now() + reset_delivery_stall;
  unacknowledged_ = std::numeric_limits<int>::max();
  if (drain.finished()) return pass_reset();
  arm_reset_timer(deadline_);  // a receiver that takes nothing does not hold the session
}

// The failed side's bytes are all with the other side's kernel; a reset would drop those its peer
// has not acknowledged yet, so it waits for them (the interval doubling from 1 ms to 64 ms) while
// they keep being acknowledged.
void tcp_session::pass_reset() {
  auto& other = failed_ == &client_ ? upstream_ : client_;
  const int queued = send_queue(other);
  const auto now = clock::now();
  if (queued == 0 || now >= deadline_ || gone(other)) return stop();
  if (queued < unacknowledged_) deadline_ = now + reset_delivery_stall;
  unacknowledged_ = queued;
  const auto poll = std::chrono::milliseconds(1 << polls_);
  if (polls_ < 6) ++polls_;
  arm_reset_timer(std::min(deadline_, now + poll));
}

void tcp_session::arm_reset_timer(clock::time_point at) {
  timer_.expires_at(at);  // replaces the half-closed idle timer, or the previous wait of this one
  timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (ec || self->phase_ == phase::done) return;
    const auto& drain = self->failed_ == &self->client_ ? self->up_ : self->down_;
    if (drain.finished()) return self->pass_reset();
    if (clock::now() >= self->deadline_) return self->stop();  // stalled: the reset goes now
    self->arm_reset_timer(self->deadline_);
  });
}

void tcp_session::stop() {
  if (phase_ == phase::done) return;
  if (phase_ == phase::resetting) {  // both: the failed one may have failed on this side (no pipe, no memory)
    reset_on_close(client_);
    reset_on_close(upstream_);
  }
  const bool counted = phase_ != phase::header;  // a connection counts from begin() on
  phase_ = phase::done;
  ticket_.reset();  // the slot is free as soon as the connection is over, not when its last handler has run
  if (listed_ && counted) {
    lower(stats_.connections_active);  // before the sockets close, so no client sees it still counted
    lower(port_.counters->connections_active);
    if (counted_) route_->pool->closed(target_);
    spdlog::debug("forward {}: connection closed", route_->spec.id);
  }
  if (resolver_) resolver_->cancel();
  timer_.cancel();
  for (auto* d : {&up_, &down_}) {
    if (d->throttle) d->throttle->cancel();
  }
  std::error_code ignored;
  client_.close(ignored);
  upstream_.close(ignored);
}

connection_info tcp_session::describe() const {
  connection_info info;
  info.id = id_;
  info.protocol = protocol::tcp;
  const auto client = client_endpoint();
  info.client_address = unmapped(client.address());
  info.client_port = client.port();
  std::error_code ec;
  const auto local = client_.local_endpoint(ec);  // where it came in, whatever a PROXY header said
  info.listen_address = unmapped(local.address());
  info.listen_port = local.port();
  // No target yet while a PROXY header is read or a name resolves.
  if (phase_ != phase::header && (phase_ != phase::connecting || endpoints_)) info.target = target_text();
  info.state = phase_ == phase::relaying     ? connection_state::relaying
               : phase_ == phase::header || phase_ == phase::connecting ? connection_state::connecting
                                                                         : connection_state::half_closed;
  info.started_at = started_;
  info.idle = std::max(coarse_clock::now() - last_active_, coarse_clock::duration::zero());
  info.bytes_up = up_.bytes;
  info.bytes_down = down_.bytes;
  return info;
}

void tcp_session::cut_off() {
  if (phase_ == phase::done) return;
  reset_on_close(client_);
  reset_on_close(upstream_);
  stop();
}

}  // namespace relay
