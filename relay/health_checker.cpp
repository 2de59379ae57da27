// health_checker: one probe per target, each a timer that starts a check (resolve, then connect to
// each address in turn under one deadline) and reports it to the pool.
//
// A probe's states: waiting (timer set for the next start) -> resolving (names only) -> connecting
// (address k of n) -> waiting. While a check runs, the same timer holds its deadline, which cancels
// the resolver or closes the socket; whichever handler then runs sees timed_out and reports the
// timeout. The next check starts one interval after this one was due (at once if the loop fell
// behind), so checks never overlap.
//
// What a check costs is mostly system calls, so: starts fall on a 10 ms grid shared by every
// checker, so that the timers due together take one wake-up of the loop (and one timerfd update)
// instead of one each; the socket is opened non-blocking and connected by hand (start_connect, as
// tcp_session does: no ioctl, no poll); and one timer serves as both tick and deadline.
#include "relay/health_checker.hpp"

#include "relay/ip_zone.hpp"
#include "relay/socket_options.hpp"

#include <asio/dispatch.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <algorithm>
#include <atomic>
#include <random>

namespace relay {

namespace {

using clock = std::chrono::steady_clock;
constexpr auto grain = std::chrono::milliseconds(10);

// The first grid point at or after t.
clock::time_point on_grid(clock::time_point t) {
  const auto since = t.time_since_epoch();
  const auto rounded = std::chrono::ceil<std::chrono::milliseconds>(since);
  const auto rest = rounded.count() % grain.count();
  return clock::time_point(rounded + (rest ? grain - std::chrono::milliseconds(rest) : clock::duration::zero()));
}

class checker final : public health_checker, public std::enable_shared_from_this<checker> {
 public:
  checker(asio::io_context& loop, std::shared_ptr<target_pool> pool) : loop_(loop), pool_(std::move(pool)) {
    const auto& spec = *pool_->health_check();
    interval_ = std::chrono::seconds(spec.interval_s);
    timeout_ = std::chrono::seconds(spec.timeout_s);
    for (std::size_t i = 0; i < pool_->targets().size(); ++i) {
      const auto& t = pool_->targets()[i];
      probes_.push_back(std::make_unique<probe>(loop, i, t.host, spec.port.value_or(t.port)));
    }
  }

  void begin() {
    // A random grid point within the first interval for each target: a thousand forwards created
    // together (a restart) must not check all their targets in the same instant, every interval.
    thread_local std::minstd_rand spread{std::random_device{}()};
    const auto slots = static_cast<long>(interval_ / grain);
    const auto now = on_grid(clock::now());
    for (auto& p : probes_) {
      p->due = now + grain * std::uniform_int_distribution<long>(0, slots - 1)(spread);
      wait(*p);
    }
  }

  void stop() override {
    stopped_.store(true, std::memory_order_relaxed);
    asio::dispatch(loop_, [self = shared_from_this()] {
      for (auto& p : self->probes_) {
        p->timer.cancel();
        p->resolver.cancel();
        std::error_code ignored;
        p->socket.close(ignored);
      }
    });
  }

  const target_pool* pool() const override { return pool_.get(); }

 private:
  struct probe {
    probe(asio::io_context& loop, std::size_t i, std::string h, std::uint16_t p)
        : index(i), host(std::move(h)), port(p), timer(loop), resolver(loop), socket(loop) {}
    const std::size_t index;
    const std::string host;
    const std::uint16_t port;
    asio::steady_timer timer;  // the next start while waiting, the deadline while checking
    asio::ip::tcp::resolver resolver;
    asio::ip::tcp::socket socket;
    clock::time_point due;    // when the current or next check starts
    std::uint64_t armed = 0;  // counts the timer's waits, so a superseded one knows it is stale
    bool timed_out = false;
    std::vector<asio::ip::tcp::endpoint> endpoints;
    std::string last_error;
  };

  bool stopped() const { return stopped_.load(std::memory_order_relaxed); }

  // A completion handler that runs `f(*this, args...)` only while the checker lives and is not
  // stopped: a checker dropped without stop() ends too, its asio objects cancelling what is pending.
  template <class F>
  auto guarded(F f) {
    return [weak = weak_from_this(), f = std::move(f)](auto&&... args) {
      const auto self = weak.lock();
      if (self && !self->stopped()) f(*self, std::forward<decltype(args)>(args)...);
    };
  }

  // Sets the probe's timer for `at`; `then` runs when it expires and no later arm replaced it.
  template <class F>
  void arm(probe& p, clock::time_point at, F then) {
    p.timer.expires_at(at);
    p.timer.async_wait(guarded([&p, n = ++p.armed, then](checker& self, const std::error_code& ec) {
      if (!ec && n == p.armed) then(self, p);
    }));
  }

  void wait(probe& p) {
    arm(p, p.due, [](checker& self, probe& q) { self.begin_check(q); });
  }

  void begin_check(probe& p) {
    p.timed_out = false;
    p.endpoints.clear();
    p.last_error.clear();
    arm(p, std::max(p.due, clock::now()) + timeout_, [](checker&, probe& q) {
      q.timed_out = true;
      q.resolver.cancel();
      std::error_code ignored;
      q.socket.close(ignored);  // the pending wait completes with operation_aborted
    });

    std::error_code ec;
    if (asio::ip::make_address(std::string(split_zone(p.host).address), ec); !ec) {  // a literal: no resolver
      const auto address = scoped_address(p.host);
      if (!address) return finish(p, false, "address " + p.host + ": " + address.error().message);
      p.endpoints.emplace_back(address.value(), p.port);
      return connect(p, 0);
    }
    p.resolver.async_resolve(
        p.host, std::to_string(p.port), asio::ip::tcp::resolver::numeric_service,
        guarded([&p](checker& self, const std::error_code& ec, const asio::ip::tcp::resolver::results_type& found) {
          if (p.timed_out) return self.finish_timed_out(p);
          if (ec) return self.finish(p, false, "resolve " + p.host + ": " + ec.message());
          for (const auto& entry : found) p.endpoints.push_back(entry.endpoint());
          self.connect(p, 0);
        }));
  }

  void connect(probe& p, std::size_t k) {
    if (k == p.endpoints.size()) return finish(p, false, p.last_error);
    const auto begun = start_connect(p.socket, p.endpoints[k], connect_options::kernel_defaults, pool_->source_address());
    if (begun.state == connect_state::connected) return finish(p, true, {});
    if (begun.state == connect_state::failed) return failed(p, k, begun.error);
    p.socket.async_wait(asio::socket_base::wait_write, guarded([&p, k](checker& self, std::error_code ec) {
      if (p.timed_out) return self.finish_timed_out(p);
      if (!ec) ec = pending_error(p.socket.native_handle());
      if (!ec) return self.finish(p, true, {});
      self.failed(p, k, ec);
    }));
  }

  // Address k refused (or worse): the next one, or the end of the check with this as its reason.
  void failed(probe& p, std::size_t k, const std::error_code& ec) {
    p.last_error = "connect " + describe(p, p.endpoints[k]) + ": " + ec.message();
    connect(p, k + 1);
  }

  std::string describe(const probe& p, const asio::ip::tcp::endpoint& e) const {
    const auto address = e.address().to_string();
    const auto where = format_endpoint(address, e.port());
    if (split_zone(p.host).address == split_zone(address).address) return where;
    return format_endpoint(p.host, p.port) + " (" + address + ")";
  }

  void finish_timed_out(probe& p) { finish(p, false, "timed out after " + std::to_string(timeout_.count()) + " s"); }

  void finish(probe& p, bool ok, const std::string& reason) {
    // Closed with a reset, as HAProxy closes its checks: an orderly close would leave a TIME_WAIT
    // socket here per check, and a thousand forwards checking one target every second would hold
    // 60,000 of them, more than the ephemeral ports towards that one address.
    if (ok) reset_on_close(p.socket);
    std::error_code ignored;
    p.socket.close(ignored);  // no data: the connect was the check
    p.endpoints.clear();
    pool_->check_result(p.index, ok, reason);
    if (stopped()) return;  // a listener stopped the checker
    p.due = std::max(p.due + interval_, on_grid(clock::now()));  // a loop held up does not catch up in a burst
    wait(p);                                                      // (and replaces the deadline)
  }

  asio::io_context& loop_;
  const std::shared_ptr<target_pool> pool_;
  std::chrono::seconds interval_{};
  std::chrono::seconds timeout_{};
  std::vector<std::unique_ptr<probe>> probes_;
  std::atomic<bool> stopped_{false};
};

}  // namespace

std::shared_ptr<health_checker> health_checker::start(asio::io_context& loop, std::shared_ptr<target_pool> pool) {
  auto c = std::make_shared<checker>(loop, std::move(pool));
  c->begin();
  return c;
}

}  // namespace relay
