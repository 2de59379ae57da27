// udp_forward: per-client UDP sessions with connected upstream sockets, LRU eviction and one sweep timer.
#include "relay/udp_forward.hpp"

#include "relay/forward_spec.hpp"
#include "relay/ip_prefix.hpp"
#include "relay/proxy_protocol.hpp"
#include "relay/socket_options.hpp"
#include "relay/target_guard.hpp"
#include "relay/udp_batch.hpp"

#include <asio/co_spawn.hpp>
#include <asio/post.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <array>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>

namespace relay {

namespace {
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr int rounds = 4;                          // recvmmsg batches per wake-up, so one forward cannot starve a worker
constexpr std::size_t max_pending = 8;             // per session while its target's name resolves
constexpr int session_buffer = 1024 * 1024;       // a target's burst of replies to one client
}  // namespace

struct udp_forward::session {
  session(const asio::any_io_executor& ex, const flow& f)
      : client(f.client), local(f.local), source(f.local), upstream(ex), resolver(ex) {}
  asio::ip::udp::endpoint client;
  asio::ip::address local;  // what the client sent to, on a wildcard listener; else unspecified
  reply_source source;      // `local` as control data for the replies
  asio::ip::udp::socket upstream;  // connected to the target: it sees one peer per client
  asio::ip::udp::resolver resolver;
  clock::time_point last_active;
  std::list<session*>::iterator lru_pos;
  bool open = true;
  bool ready = false;                // upstream connected
  bool gso = true;                   // runs of datagrams to the target may go as one GSO send
  std::vector<std::string> pending;  // what arrived while the target's name resolved
  std::vector<asio::ip::udp::endpoint> targets;  // the target's addresses, in the resolver's order
  std::size_t at = 0;                            // the one `upstream` is connected to
  std::shared_ptr<target_pool> pool;  // what it picked from (a PATCH may give the forward a new one)
  std::size_t target = 0;             // pool's index of its target
  target_state* state = nullptr;      // its target's, once connected: counted there while open
  bool answered = false;              // the target has replied (its success is counted once)
  admission_ticket ticket;            // its slot in the forward's session counts, while open
  std::string proxy_header;           // proxy_protocol "v2": before each datagram to the target
  std::shared_ptr<listener> via;      // the listen port it came in on: replies leave through it
  std::uint16_t offset = 0;           // that port's place in the range, added to the target's port
  // For the connections list.
  std::uint64_t id = 0;
  std::chrono::system_clock::time_point started_at;
  std::uint64_t bytes_up = 0;
  std::uint64_t bytes_down = 0;
};

std::size_t flow_hash::operator()(const flow& f) const noexcept {
  return (std::hash<asio::ip::udp::endpoint>()(f.client) * 31 + std::hash<asio::ip::address>()(f.local)) * 31 + f.port;
}

udp_forward::udp_forward(worker_pool& pool, std::size_t home, const forward_spec& spec,
                         std::shared_ptr<forward_stats> stats, std::shared_ptr<port_stats> ports,
                         std::chrono::milliseconds drain_idle, std::shared_ptr<target_pool> targets,
                         std::atomic<std::uint64_t>& connection_ids)
    : pool_(pool),
      home_(home),
      stats_(std::move(stats)),
      ports_(std::move(ports)),
      spec_(spec),
      targets_(std::move(targets)),
      idle_(std::chrono::seconds(spec.udp_idle_timeout_s)),
      bandwidth_(spec.bandwidth_limit),
      drain_idle_(drain_idle),
      filter_(make_filter(spec)),
      sweep_timer_(pool.context(home)),
      connection_ids_(connection_ids) {
  admission_.set_limits(spec.max_connections, spec.max_connections_per_source);
}

udp_forward::~udp_forward() = default;

void udp_forward::listen(listen_sockets sockets, bool replace) {
  // The first listen comes before any session could use the constructor's pool (and no other call
  // writes targets_ meanwhile): its listener goes in now, when weak_from_this() works.
  if (!watched_) watch(*targets_);
  std::vector<listener_ptr> added;
  for (auto& [port, socket] : sockets) {
    added.push_back(std::make_shared<listener>(listener{std::get<udp_socket_ptr>(std::move(socket)), port,
                                                        &ports_->at(port)}));
  }
  pool_.run_on(home_, [&] {
    if (replace) {
      close_sockets();
      close_all_sessions();
    }
    auto self = shared_from_this();
    if (!added.empty()) {  // every port of a forward is bound to its one listen_host
      std::error_code ec;
      wildcard_ = added.front()->socket->local_endpoint(ec).address().is_unspecified();
    }
    for (auto& l : added) {
      listeners_[l->port] = l;
      asio::co_spawn(pool_.context(home_), [self, l] { return self->receive_from_clients(l); }, log_coroutine_exception);
    }
    if (!sweeping_) {
      sweeping_ = true;
      asio::co_spawn(pool_.context(home_), [self] { return self->sweep(); }, log_coroutine_exception);
    }
  });
}

void udp_forward::close_ports(const std::vector<std::uint16_t>& ports) {
  pool_.run_on(home_, [&] {
    for (const auto port : ports) {
      auto it = listeners_.find(port);
      if (it == listeners_.end()) continue;
      it->second->socket->close();
      listeners_.erase(it);
    }
    std::vector<session*> gone;
    for (session* s : lru_) {
      if (std::find(ports.begin(), ports.end(), s->via->port) != ports.end()) gone.push_back(s);
    }
    for (session* s : gone) close_session(*s, false);
  });
}

void udp_forward::close_sockets() {
  for (auto& [port, l] : listeners_) l->socket->close();
  listeners_.clear();
}

void udp_forward::close_listener() {
  pool_.run_on(home_, [&] {
    close_sockets();
    close_all_sessions();
  });
}

void udp_forward::drain() {
  pool_.run_on(home_, [&] {
    draining_ = true;
    // UDP has no end of session: one that carries nothing for drain_idle_ from here on is done, so
    // an idle session does not hold the drain to its deadline. Every session starts that count now.
    idle_ = std::min(idle_, drain_idle_);
    const auto now = clock::now();
    for (session* s : lru_) s->last_active = now;
    sweep_timer_.cancel();  // the sweep re-arms for the shorter timeout
  });
}

void udp_forward::configure(const forward_spec& spec, std::shared_ptr<target_pool> targets) {
  if (watched_ != targets.get()) watch(*targets);
  pool_.run_on(home_, [&] {
    spec_ = spec;
    targets_ = std::move(targets);
    idle_ = std::chrono::seconds(spec.udp_idle_timeout_s);
    bandwidth_.configure(spec.bandwidth_limit);
    enforce_cap();
    sweep_timer_.cancel();  // the sweep re-arms for the new idle timeout
    admission_.set_limits(spec.max_connections, spec.max_connections_per_source);
    filter_ = make_filter(spec);
    review();
  });
}

void udp_forward::review() {
  if (!reviewing(filter_.get(), admission_)) return;
  // A session from before the per-source limit was turned on counts in it from now on; none is
  // closed for it.
  std::vector<session*> denied;
  for (session* s : lru_) {
    if (!still_admitted(filter_.get(), admission_, s->ticket, s->client.address())) denied.push_back(s);
  }
  log_cut_off(spec_.id, denied.size(), "closed", "session");
  for (session* s : denied) close_session(*s, false);
}

void udp_forward::watch(target_pool& targets) {
  watched_ = &targets;
  // The pool owns this listener, so `targets` outlives it; a target's state is compared by address,
  // which every pool keeping that target shares (sessions on an older pool are found too).
  targets.add_listener([weak = weak_from_this(), &targets](std::size_t i, target_health now) {
    auto self = weak.lock();
    if (now != target_health::down || !self) return;
    const target_state* dead = &targets.state(i);
    asio::post(self->pool_.context(self->home_), [self, dead] { self->close_sessions_on(dead); });
  });
}

void udp_forward::close_sessions_on(const target_state* dead) {
  std::vector<session*> doomed;
  for (session* s : lru_) {
    if (s->state == dead) doomed.push_back(s);
  }
  if (!doomed.empty()) spdlog::debug("forward {}: {} sessions closed: their target is down", spec_.id, doomed.size());
  for (session* s : doomed) close_session(*s, false);
}

void udp_forward::stop() {
  pool_.run_on(home_, [&] {
    stopped_ = true;
    close_sockets();
    close_all_sessions();
    sweep_timer_.cancel();
  });
}

asio::awaitable<void> udp_forward::receive_from_clients(listener_ptr l) {
  const auto& socket = l->socket;
  while (socket->is_open()) {
    auto [ec] = co_await socket->async_wait(asio::ip::udp::socket::wait_read, use_tuple);
    if (!socket->is_open() || ec == asio::error::operation_aborted) break;
    auto& b = scratch();
    for (int round = 0; round < rounds && socket->is_open(); ++round) {
      b.arm(true, wildcard_);
      const int n = ::recvmmsg(socket->native_handle(), b.in.data(), batch_space::slots, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (would_block(errno)) break;
        continue;  // an error queued on the socket (ICMP); it is consumed, nothing else is hurt
      }
      // Consecutive datagrams of one session leave together on its upstream socket (send_batch).
      session* batch_for = nullptr;
      int queued = 0;
      auto flush = [&] {
        if (!batch_for || queued == 0) return;
        const auto sent = send_batch(batch_for->upstream.native_handle(), b, queued, batch_for->gso);
        queued = 0;
        bump(stats_->datagrams_up, sent.datagrams);
        bump(stats_->bytes_up, sent.bytes);
        bump(batch_for->state->bytes_up, sent.bytes);  // ready, so connected and counted on its target
        batch_for->bytes_up += sent.bytes;
        bump(l->counters->bytes_up, sent.bytes);
        bump(stats_->datagrams_dropped, sent.dropped);
        if (sent.unreachable) target_failed(*batch_for, sent.unreachable);
      };
      for (int i = 0; i < n; ++i) {
        flow from;
        from.port = l->port;
        std::memcpy(from.client.data(), &b.from[i],
                    std::min<std::size_t>(b.in[i].msg_hdr.msg_namelen, sizeof b.from[i]));
        if (wildcard_) from.local = destination(b.in[i].msg_hdr);
        session* s = client_datagram(from, l);
        if (!s) continue;
        if (!within_limit(bandwidth_.up, b.in[i].msg_len)) continue;
        if (!s->ready) {
          hold(*s, b.slot(i), b.in[i].msg_len);
          continue;
        }
        if (s != batch_for) {
          flush();
          batch_for = s;
        }
        b.queue(queued++, i, nullptr, nullptr, s->proxy_header);
      }
      flush();
      if (n < batch_space::slots) break;  // the socket's queue is empty (UDP has no EOF to miss)
    }
  }
}

udp_forward::session* udp_forward::client_datagram(const flow& from, const listener_ptr& via) {
  auto it = sessions_.find(from);
  session* s = nullptr;
  if (it != sessions_.end()) {
    s = it->second.get();
  } else if (!draining_ && from.port >= spec_.listen_port && from.port <= last_port(spec_)) {
    // (A port outside spec_'s range is leaving it in a PATCH whose close_ports comes next.)
    auto ticket = admit(from);
    if (!ticket) return nullptr;  // refused: counted as such
    s = open_session(from, std::move(ticket), via);
  }
  if (!s) {
    bump(stats_->datagrams_dropped);
    return nullptr;
  }
  touch(*s);
  return s;
}

void udp_forward::hold(session& s, const char* data, std::size_t n) {
  if (s.pending.size() < max_pending) {
    s.pending.emplace_back(data, n);
  } else {
    bump(stats_->datagrams_dropped);
  }
}

admission_ticket udp_forward::admit(const flow& f) {
  // At udp_max_sessions the least recent session goes to make room, but only for a client the limits
  // admit (the one going does not count against max_connections meanwhile): a refused datagram
  // evicts no one.
  const bool full = sessions_.size() >= spec_.udp_max_sessions && !lru_.empty();
  auto ticket = admit_client(filter_.get(), admission_, *stats_, spec_.id, f.client.address(), "datagram from",
                             full ? 1 : 0);
  if (ticket && full) close_session(*lru_.back(), true);
  return ticket;
}

udp_forward::session* udp_forward::open_session(const flow& f, admission_ticket ticket, const listener_ptr& via) {
  auto s = std::make_shared<session>(pool_.context(home_).get_executor(), f);
  s->ticket = std::move(ticket);
  s->via = via;
  s->offset = static_cast<std::uint16_t>(f.port - spec_.listen_port);
  s->id = connection_ids_.fetch_add(1, std::memory_order_relaxed) + 1;
  s->started_at = std::chrono::system_clock::now();
  bump(via->counters->connections_total);
  bump(via->counters->connections_active);
  if (spec_.proxy_protocol == 2) s->proxy_header = proxy_header_for(f, *via);  // for its life, as a TCP connection's
  s->last_active = clock::now();
  lru_.push_front(s.get());
  s->lru_pos = lru_.begin();
  sessions_.emplace(f, s);
  bump(stats_->connections_total);
  bump(stats_->connections_active);
  // The lambda owns the forward for as long as the coroutine runs (co_spawn keeps it in its frame).
  asio::co_spawn(pool_.context(home_), [self = shared_from_this(), s] { return self->start_session(s); },
                 log_coroutine_exception);
  // co_spawn runs the session inline up to its first wait, so a target that cannot be reached at
  // once (no descriptor left, a family the host lacks) has closed it already, and `s` is its last owner.
  return s->open ? s.get() : nullptr;
}

asio::awaitable<bool> udp_forward::pick_target(session_ptr s) {
  s->pool = targets_;  // taken now: a later PATCH affects only later sessions
  tried_set tried = 0;
  while (const auto i = s->pool->pick(s->client.address(), tried)) {
    tried |= tried_set{1} << *i;
    s->target = *i;
    const auto& t = s->pool->targets()[*i];
    const auto port = static_cast<std::uint16_t>(t.port + s->offset);
    std::error_code ec;
    const auto address = asio::ip::make_address(t.host, ec);
    if (!ec) {
      s->targets.emplace_back(address, port);
      if (reachable_from_source(*s)) co_return true;
      continue;
    }
    auto [rec, results] = co_await s->resolver.async_resolve(t.host, std::to_string(port),
                                                             asio::ip::udp::resolver::numeric_service, use_tuple);
    if (!s->open) co_return false;
    if (!rec && !results.empty()) {
      for (const auto& entry : results) s->targets.push_back(entry.endpoint());
      if (reachable_from_source(*s)) co_return true;
      continue;
    }
    const std::string why = rec ? rec.message() : "no address";
    spdlog::debug("forward {}: resolve {}: {}", spec_.id, t.host, why);
    bump(stats_->connect_errors);
    s->pool->attempt_failed(*i, "resolve " + t.host + ": " + why);
  }
  close_session(*s, false);
  co_return false;
}

asio::awaitable<void> udp_forward::start_session(session_ptr s) {
  if (!co_await pick_target(s)) co_return;
  if (!connect_to(*s, choose_address(s->targets, 0))) co_return;
  s->state = &s->pool->state(s->target);
  s->pool->opened(s->target);
  for (const auto& d : s->pending) send_upstream(*s, d.data(), d.size());
  s->pending.clear();
  co_await receive_from_target(s);
}

bool udp_forward::connect_to(session& s, std::size_t index) {
  const auto target = s.targets[index];
  if (leads_back(spec_.id, protocol::udp, target.address(), target.port(), *stats_)) {
    close_session(s, false);  // its datagrams are dropped and counted
    return false;
  }
  s.at = index;
  if (!connect_upstream(s, target)) {
    bump(stats_->connect_errors);
    close_session(s, false);
    return false;
  }
  return true;
}

std::size_t udp_forward::choose_address(const std::vector<asio::ip::udp::endpoint>& targets, std::size_t from) {
  if (failed_.empty()) return from;
  const auto now = clock::now();
  for (std::size_t k = 0; k < targets.size(); ++k) {
    const auto i = (from + k) % targets.size();
    const auto it = failed_.find(targets[i]);
    if (it == failed_.end()) return i;
    if (now - it->second >= udp_fail_timeout) {
      failed_.erase(it);
      return i;
    }
  }
  return from;  // every address failed lately: the next in turn
}

void udp_forward::target_failed(session& s, int error) {
  bump(stats_->target_unreachable);
  // Before the move below, which may close the session. Down after `fall` of these, the target's
  // listener closes its sessions (this one too) a moment later, on this worker. A session on a
  // target that was down already (its passive trial, or every target down) hears of no change, so
  // it goes now: its client's next datagram picks again (with one target, it would pick the same).
  const bool was_down = s.pool->health(s.target) == target_health::down;
  s.pool->attempt_failed(s.target, "unreachable: " + std::system_category().message(error));
  if (was_down && s.pool->targets().size() > 1) return close_session(s, false);
  const auto now = clock::now();
  const auto& dead = s.targets[s.at];
  if (failed_.size() >= udp_max_failed_addresses) {
    std::erase_if(failed_, [&](const auto& f) { return now - f.second >= udp_fail_timeout; });
  }
  if (failed_.size() < udp_max_failed_addresses) failed_[dead] = now;
  if (s.targets.size() < 2) return;  // nowhere else to go: the session stays, its datagrams counted
  const auto next = choose_address(s.targets, (s.at + 1) % s.targets.size());
  spdlog::debug("forward {}: {} unreachable, session of {} moves to {}", spec_.id,
                format_endpoint(dead.address().to_string(), dead.port()),
                format_endpoint(s.client.address().to_string(), s.client.port()),
                format_endpoint(s.targets[next].address().to_string(), s.targets[next].port()));
  connect_to(s, next);
}

bool udp_forward::reachable_from_source(session& s) {
  if (!spec_.source_address) return true;
  std::error_code why;
  std::erase_if(s.targets, [&](const asio::ip::udp::endpoint& e) {
    const auto ec = check_family(e.address(), *spec_.source_address);
    if (ec) why = ec;
    return static_cast<bool>(ec);
  });
  if (!s.targets.empty()) return true;
  bump(stats_->connect_errors);
  s.pool->attempt_failed(s.target, "connect " + target_endpoint(s.pool->targets()[s.target]) + ": " + why.message());
  return false;
}

bool udp_forward::connect_upstream(session& s, const asio::ip::udp::endpoint& target) {
  std::error_code ec;
  if (s.upstream.is_open()) s.upstream.close(ec);  // a move: the old address's errors go with it
  s.gso = s.proxy_header.empty();  // a header before each datagram: one sendmmsg, never a GSO run
  s.upstream.open(target.protocol(), ec);
  if (!ec) size_buffers(s.upstream.native_handle(), session_buffer);
  if (!ec) s.upstream.non_blocking(true, ec);
  if (!ec && spec_.source_address) {
    // The source address is gone since the forward was configured: a failure of this target, as TCP counts it.
    if (ec = bind_source(s.upstream.native_handle(), *spec_.source_address, false); ec) {
      s.pool->attempt_failed(s.target, "connect " + format_endpoint(target.address().to_string(), target.port()) +
                                           ": " + ec.message());
    }
  }
  if (!ec) s.upstream.connect(target, ec);
  if (ec) {
    spdlog::debug("forward {}: connect {}: {}", spec_.id, format_endpoint(target.address().to_string(), target.port()),
                  ec.message());
    return false;
  }
  s.ready = true;
  spdlog::debug("forward {}: session {} -> {}", spec_.id, format_endpoint(s.client.address().to_string(), s.client.port()),
                format_endpoint(target.address().to_string(), target.port()));
  return true;
}

std::string udp_forward::proxy_header_for(const flow& f, const listener& via) const {
  std::error_code ec;
  auto local = via.socket->local_endpoint(ec);
  if (wildcard_) local.address(f.local);  // what the client sent to
  return proxy_v2_header({f.client.address(), f.client.port()}, {local.address(), local.port()},
                         proxy_transport::dgram);
}

void udp_forward::send_upstream(session& s, const char* data, std::size_t n) {
  std::error_code ec;
  const std::array<asio::const_buffer, 2> datagram{asio::buffer(s.proxy_header), asio::buffer(data, n)};
  s.upstream.send(datagram, 0, ec);
  if (ec) {
    bump(stats_->datagrams_dropped);  // buffer full, or the target's port is unreachable
    return;
  }
  bump(stats_->datagrams_up);
  bump(stats_->bytes_up, n);
  bump(s.state->bytes_up, n);
  bump(s.via->counters->bytes_up, n);
  s.bytes_up += n;
}

bool udp_forward::within_limit(token_bucket& bucket, std::size_t n) {
  if (!bucket.limited() || bucket.take_all(n)) return true;  // unlimited: one relaxed load
  bump(stats_->datagrams_dropped);
  return false;
}

asio::awaitable<void> udp_forward::receive_from_target(session_ptr s) {
  while (s->open) {
    auto [ec] = co_await s->upstream.async_wait(asio::ip::udp::socket::wait_read, use_tuple);
    if (!s->open) break;
    if (ec == asio::error::operation_aborted) continue;  // the session moved to a new socket
    auto& b = scratch();
    for (int round = 0; round < rounds && s->open; ++round) {
      b.arm(false, false);
      const int n = ::recvmmsg(s->upstream.native_handle(), b.in.data(), batch_space::slots, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (would_block(errno)) break;
        if (is_unreachable(errno)) target_failed(*s, errno);  // this session's alone; it may move or close
        continue;
      }
      touch(*s);
      if (!s->answered) {
        s->answered = true;
        s->pool->attempt_succeeded(s->target);
      }
      // Replies leave through the listening socket, from the address the client sent to.
      int queued = 0;
      for (int i = 0; i < n; ++i) {
        if (within_limit(bandwidth_.down, b.in[i].msg_len)) b.queue(queued++, i, &s->client, &s->source);
      }
      const auto sent = send_batch(s->via->socket->native_handle(), b, queued, s->via->reply_gso);
      bump(stats_->datagrams_down, sent.datagrams);
      bump(stats_->bytes_down, sent.bytes);
      bump(s->state->bytes_down, sent.bytes);
      s->bytes_down += sent.bytes;
      bump(s->via->counters->bytes_down, sent.bytes);
      bump(stats_->datagrams_dropped, sent.dropped);
      if (n < batch_space::slots) break;
    }
  }
}

asio::awaitable<void> udp_forward::sweep() {
  while (!stopped_) {
    const auto now = clock::now();
    while (!lru_.empty() && lru_.back()->last_active + idle_ <= now) close_session(*lru_.back(), false);
    sweep_timer_.expires_at(lru_.empty() ? now + idle_ : lru_.back()->last_active + idle_);
    co_await sweep_timer_.async_wait(use_tuple);
  }
  sweeping_ = false;
}

void udp_forward::touch(session& s) {
  s.last_active = clock::now();
  lru_.splice(lru_.begin(), lru_, s.lru_pos);
}

void udp_forward::close_session(session& s, bool evicted) {
  auto it = sessions_.find(flow{s.client, s.local, s.via->port});
  if (it == sessions_.end()) return;
  session_ptr keep = it->second;  // the session's own coroutine may hold the last other reference
  s.open = false;
  lru_.erase(s.lru_pos);
  std::error_code ignored;
  s.upstream.close(ignored);
  s.resolver.cancel();
  for (std::size_t i = 0; i < s.pending.size(); ++i) bump(stats_->datagrams_dropped);
  s.pending.clear();
  sessions_.erase(it);
  s.ticket.reset();
  lower(stats_->connections_active);
  lower(s.via->counters->connections_active);
  if (s.state) s.pool->closed(s.target);
  if (evicted) bump(stats_->sessions_evicted);
}

connection_info udp_forward::describe(const session& s) const {
  connection_info info;
  info.id = s.id;
  info.protocol = protocol::udp;
  info.client_address = unmapped(s.client.address());
  info.client_port = s.client.port();
  std::error_code ec;
  const auto local = s.via->socket->local_endpoint(ec);
  info.listen_address = unmapped(wildcard_ ? s.local : local.address());  // what the client sent to
  info.listen_port = s.via->port;
  if (s.ready) {
    const auto& t = s.pool->targets()[s.target];
    info.target = format_endpoint(t.host, static_cast<std::uint16_t>(t.port + s.offset));
  }
  info.state = connection_state::active;
  info.started_at = s.started_at;
  info.idle = std::max(clock::now() - s.last_active, clock::duration::zero());
  info.bytes_up = s.bytes_up;
  info.bytes_down = s.bytes_down;
  return info;
}

// Sessions live on the home worker: one short job there.
connection_page udp_forward::connections(std::uint64_t after, std::size_t limit) {
  return pool_.run_on(home_, [&] {
    return select_page(lru_.begin(), lru_.end(), after, limit, [](const session* s) { return s->id; },
                       [this](const session* s) { return describe(*s); });
  });
}

std::optional<connection_info> udp_forward::close_connection(std::uint64_t id) {
  return pool_.run_on(home_, [&]() -> std::optional<connection_info> {
    const auto it = std::find_if(lru_.begin(), lru_.end(), [&](const session* s) { return s->id == id; });
    if (it == lru_.end()) return std::nullopt;
    auto info = describe(**it);
    close_session(**it, false);
    return info;
  });
}

std::size_t udp_forward::close_connections(const prefix_set& clients) {
  return pool_.run_on(home_, [&] {
    std::vector<session*> matched;
    for (session* s : lru_) {
      if (clients.contains(s->client.address())) matched.push_back(s);
    }
    for (session* s : matched) close_session(*s, false);
    return matched.size();
  });
}

void udp_forward::close_all_sessions() {
  while (!lru_.empty()) close_session(*lru_.back(), false);
}

void udp_forward::enforce_cap() {
  while (sessions_.size() > spec_.udp_max_sessions && !lru_.empty()) close_session(*lru_.back(), true);
}

}  // namespace relay
