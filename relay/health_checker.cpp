// health_checker: one probe per target, each a timer that starts a check (resolve, then connect to
// each address in turn under one deadline) and reports it to the pool.
//
// A probe's states: waiting (tick_ armed) -> resolving (names only) -> connecting (address k of n)
// -> waiting. The deadline, armed when a check starts, cancels the resolver or closes the socket;
// whichever handler then runs sees timed_out_ and reports the timeout. The next check starts one
// interval after this one started (at once if the check took longer), so checks never overlap.
#include "relay/health_checker.hpp"

#include "relay/ip_zone.hpp"

#include <asio/dispatch.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include <algorithm>
#include <atomic>
#include <random>

namespace relay {

namespace {

using clock = std::chrono::steady_clock;

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
    // A random offset within the first interval for each target: a thousand forwards created
    // together (a restart) must not check all their targets in the same instant, every interval.
    thread_local std::minstd_rand spread{std::random_device{}()};
    const auto span = std::chrono::duration_cast<std::chrono::milliseconds>(interval_).count();
    for (auto& p : probes_) {
      p->next = clock::now() + std::chrono::milliseconds(std::uniform_int_distribution<long>(0, span - 1)(spread));
      wait(*p);
    }
  }

  void stop() override {
    stopped_.store(true, std::memory_order_relaxed);
    asio::dispatch(loop_, [self = shared_from_this()] {
      for (auto& p : self->probes_) {
        p->tick.cancel();
        p->deadline.cancel();
        p->resolver.cancel();
        std::error_code ignored;
        p->socket.close(ignored);
      }
    });
  }

 private:
  struct probe {
    probe(asio::io_context& loop, std::size_t i, std::string h, std::uint16_t p)
        : index(i), host(std::move(h)), port(p), tick(loop), deadline(loop), resolver(loop), socket(loop) {}
    const std::size_t index;
    const std::string host;
    const std::uint16_t port;
    asio::steady_timer tick;
    asio::steady_timer deadline;
    asio::ip::tcp::resolver resolver;
    asio::ip::tcp::socket socket;
    clock::time_point next;  // when the next check starts
    std::uint64_t check = 0;  // the number of the check in flight, so a late deadline knows it is stale
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

  void wait(probe& p) {
    p.tick.expires_at(p.next);
    p.tick.async_wait(guarded([&p](checker& self, const std::error_code& ec) {
      if (!ec) self.begin_check(p);
    }));
  }

  void begin_check(probe& p) {
    p.next = std::max(p.next + interval_, clock::now());  // a loop held up long does not catch up in a burst
    const auto check = ++p.check;
    p.timed_out = false;
    p.endpoints.clear();
    p.last_error.clear();
    p.deadline.expires_after(timeout_);
    p.deadline.async_wait(guarded([&p, check](checker&, const std::error_code& ec) {
      if (ec || check != p.check) return;
      p.timed_out = true;
      p.resolver.cancel();
      std::error_code ignored;
      p.socket.close(ignored);  // the pending connect completes with operation_aborted
    }));

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
    std::error_code ignored;
    p.socket.close(ignored);
    p.socket.async_connect(p.endpoints[k], guarded([&p, k](checker& self, const std::error_code& ec) {
      if (p.timed_out) return self.finish_timed_out(p);
      if (!ec) return self.finish(p, true, {});
      p.last_error = "connect " + self.describe(p, p.endpoints[k]) + ": " + ec.message();
      self.connect(p, k + 1);
    }));
  }

  std::string describe(const probe& p, const asio::ip::tcp::endpoint& e) const {
    const auto address = e.address().to_string();
    const auto where = format_endpoint(address, e.port());
    if (split_zone(p.host).address == split_zone(address).address) return where;
    return format_endpoint(p.host, p.port) + " (" + address + ")";
  }

  void finish_timed_out(probe& p) {
    finish(p, false, "timed out after " + std::to_string(timeout_.count()) + " s");
  }

  void finish(probe& p, bool ok, const std::string& reason) {
    p.deadline.cancel();
    std::error_code ignored;
    if (ok) {
      // Closed with a reset, as HAProxy closes its checks: an orderly close would leave a TIME_WAIT
      // socket here per check, and a thousand forwards checking one target every second would hold
      // 60,000 of them, more than the ephemeral ports to that one address.
      p.socket.set_option(asio::socket_base::linger(true, 0), ignored);
    }
    p.socket.close(ignored);  // no data: the connect was the check
    p.endpoints.clear();
    if (stopped()) return;
    pool_->check_result(p.index, ok, reason);
    if (!stopped()) wait(p);
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
