// udp_forward: per-client UDP sessions with connected upstream sockets, LRU eviction and one sweep timer.
#include "relay/udp_forward.hpp"

#include "relay/bind_steps.hpp"
#include "relay/forward_spec.hpp"
#include "relay/target_guard.hpp"

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <netinet/udp.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <functional>

namespace relay {

namespace {
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t max_datagram = 65536;        // larger than any UDP payload, so none is truncated
constexpr int rounds = 4;                          // recvmmsg batches per wake-up, so one forward cannot starve a worker
constexpr std::size_t max_pending = 8;             // per session while its target's name resolves
constexpr int listener_buffer = 4 * 1024 * 1024;  // bursts wait in the kernel, not in the relay
constexpr int session_buffer = 1024 * 1024;       // a target's burst of replies to one client

// Room for bursts: SO_RCVBUFFORCE passes the sysctl cap when we may (root or CAP_NET_ADMIN). A
// limit, not an allocation: memory is used only while datagrams wait.
void size_buffers(int fd, int bytes) {
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  }
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  }
}
// A worker's scratch space for batched I/O, shared by all its UDP forwards (used only between waits):
// `slots` datagram buffers of the largest size, so nothing is ever truncated. Pages are touched only
// as large datagrams arrive, so small traffic costs little resident memory.
struct batch_space {
  static constexpr int slots = 32;
  std::vector<char> data = std::vector<char>(slots * max_datagram);
  std::array<mmsghdr, slots> in{};
  std::array<iovec, slots> in_iov{};
  std::array<sockaddr_storage, slots> from{};
  std::array<mmsghdr, slots> out{};
  std::array<iovec, slots> out_iov{};

  char* slot(int i) { return data.data() + static_cast<std::size_t>(i) * max_datagram; }
  // Sets up `in` to receive into every slot (with the sender's address when `addresses`).
  void arm(bool addresses) {
    for (int i = 0; i < slots; ++i) {
      in_iov[i] = {slot(i), max_datagram};
      in[i].msg_hdr = msghdr{};
      in[i].msg_hdr.msg_iov = &in_iov[i];
      in[i].msg_hdr.msg_iovlen = 1;
      if (addresses) {
        in[i].msg_hdr.msg_name = &from[i];
        in[i].msg_hdr.msg_namelen = sizeof from[i];
      }
    }
  }
  // Queues slot `i`'s datagram for the next send_batch, to `to` (nullptr on a connected socket).
  void queue(int count, int i, const asio::ip::udp::endpoint* to) {
    out_iov[count] = {slot(i), in[i].msg_len};
    out[count].msg_hdr = msghdr{};
    out[count].msg_hdr.msg_iov = &out_iov[count];
    out[count].msg_hdr.msg_iovlen = 1;
    if (to) {
      out[count].msg_hdr.msg_name = const_cast<sockaddr*>(to->data());
      out[count].msg_hdr.msg_namelen = static_cast<socklen_t>(to->size());
    }
  }
};

batch_space& scratch() {
  thread_local batch_space space;
  return space;
}

// One system call for a run of same-size datagrams to one destination (the last may be shorter):
// UDP generic segmentation offload (UDP_SEGMENT) passes the run down the stack once and cuts it
// into its datagrams at the end (on loopback, at the receiving socket). The kernel's bounds: at
// most 64 segments and one IP packet's worth of bytes.
constexpr int max_gso_segments = 64;
constexpr std::size_t max_gso_bytes = 65000;

// How many of the queued datagrams from `first` on can leave as one GSO send.
int gso_run(const batch_space& b, int first, int count) {
  const auto size = b.out_iov[first].iov_len;
  std::size_t total = size;
  int k = 1;
  while (first + k < count && k < max_gso_segments) {
    const auto len = b.out_iov[first + k].iov_len;
    if (b.out[first + k].msg_hdr.msg_name != b.out[first].msg_hdr.msg_name || len > size || len == 0 ||
        total + len > max_gso_bytes) {
      break;
    }
    total += len;
    ++k;
    if (len < size) break;  // a shorter one can only end the run
  }
  return k;
}

// The errors an ICMP message leaves on a connected UDP socket saying the destination does not take
// datagrams: port, host or network unreachable, protocol unreachable, administratively prohibited
// (Linux's icmp_err_convert and icmpv6_err_convert). Not EMSGSIZE: that one is about the datagram.
bool is_unreachable(int error) {
  switch (error) {
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EHOSTDOWN:
    case ENONET:
    case ENOPROTOOPT:
    case EACCES:
      return true;
    default:
      return false;
  }
}

// sendmmsg of queued datagrams [first, first + count) on `fd`, counting each one as sent
// (`datagrams`, `bytes`) or `dropped`. A datagram the kernel refuses is dropped; after an ICMP
// error that was queued on the socket (then in `unreachable`) the rest are dropped too, since the
// caller moves the session elsewhere; after any other error the rest still go. Returns false when
// the rest were dropped (the socket is full, or the destination is unreachable): never queued.
bool send_each(int fd, batch_space& b, int first, int count, std::atomic<std::uint64_t>& datagrams,
               std::atomic<std::uint64_t>& bytes, std::atomic<std::uint64_t>& dropped, int& unreachable) {
  int done = 0;
  while (done < count) {
    const int n = ::sendmmsg(fd, b.out.data() + first + done, static_cast<unsigned>(count - done), MSG_DONTWAIT);
    if (n > 0) {
      for (int i = first + done; i < first + done + n; ++i) bump(bytes, b.out[i].msg_len);
      bump(datagrams, static_cast<std::uint64_t>(n));
      done += n;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || is_unreachable(errno)) {
      if (is_unreachable(errno)) unreachable = errno;
      bump(dropped, static_cast<std::uint64_t>(count - done));
      return false;
    }
    bump(dropped);  // this one is refused; the next may well go
    ++done;
  }
  return true;
}

// Sends the `count` queued datagrams on `fd` (-1: nowhere to send; all are dropped). Runs that can
// go as one GSO send do, while `gso` holds; a socket whose path refuses GSO (a segment above the
// MTU, no checksum offload) clears it and uses sendmmsg from then on. Counting as in send_each.
// Returns the ICMP error (is_unreachable) that was waiting on the socket, or 0.
int send_batch(int fd, batch_space& b, int count, bool& gso, std::atomic<std::uint64_t>& datagrams,
               std::atomic<std::uint64_t>& bytes, std::atomic<std::uint64_t>& dropped) {
  int unreachable = 0;
  if (fd < 0) {
    bump(dropped, static_cast<std::uint64_t>(count));
    return unreachable;
  }
  int singles = 0;  // queued datagrams from here on that go by sendmmsg
  int i = 0;
  while (i < count) {
    const int k = gso ? gso_run(b, i, count) : 1;
    if (k < 2) {
      ++i;
      continue;
    }
    if (i > singles && !send_each(fd, b, singles, i - singles, datagrams, bytes, dropped, unreachable)) {
      bump(dropped, static_cast<std::uint64_t>(count - i));
      return unreachable;
    }
    const auto size = static_cast<std::uint16_t>(b.out_iov[i].iov_len);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof size)] = {};
    msghdr m = b.out[i].msg_hdr;
    m.msg_iov = &b.out_iov[i];  // the run's buffers, in order: one payload cut every `size` bytes
    m.msg_iovlen = static_cast<std::size_t>(k);
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof size);
    std::memcpy(CMSG_DATA(c), &size, sizeof size);
    const ssize_t sent = ::sendmsg(fd, &m, MSG_DONTWAIT);
    if (sent >= 0) {
      bump(bytes, static_cast<std::uint64_t>(sent));
      bump(datagrams, static_cast<std::uint64_t>(k));
      i += k;
      singles = i;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || is_unreachable(errno)) {
      if (is_unreachable(errno)) unreachable = errno;
      bump(dropped, static_cast<std::uint64_t>(count - i));
      return unreachable;
    }
    if (errno == EINVAL || errno == EIO || errno == EOPNOTSUPP || errno == ENOPROTOOPT || errno == EMSGSIZE) {
      gso = false;  // this path cannot segment: datagram by datagram from now on
    }
    i += k;  // the run goes by sendmmsg (which meets a queued ICMP error datagram by datagram)
  }
  if (count > singles) send_each(fd, b, singles, count - singles, datagrams, bytes, dropped, unreachable);
  return unreachable;
}

}  // namespace

struct udp_forward::session {
  session(const asio::any_io_executor& ex, asio::ip::udp::endpoint c) : client(c), upstream(ex), resolver(ex) {}
  asio::ip::udp::endpoint client;
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
};

std::size_t endpoint_hash::operator()(const asio::ip::udp::endpoint& e) const noexcept {
  std::size_t h = std::hash<unsigned short>()(e.port());
  if (e.address().is_v4()) {
    h ^= std::hash<std::uint32_t>()(e.address().to_v4().to_uint()) * 0x9E3779B97F4A7C15ull;
  } else {
    for (auto b : e.address().to_v6().to_bytes()) h = h * 131 + b;
  }
  return h;
}

result<udp_socket_ptr> bind_udp(asio::io_context& io, const std::string& host, std::uint16_t port) {
  auto socket = std::make_shared<asio::ip::udp::socket>(io);
  if (auto e = open_and_bind(*socket, host, port, false)) return *e;
  size_buffers(socket->native_handle(), listener_buffer);
  std::error_code ignored;
  socket->non_blocking(true, ignored);
  return socket;
}

udp_forward::udp_forward(worker_pool& pool, std::size_t home, const forward_spec& spec,
                         std::shared_ptr<forward_stats> stats, std::chrono::milliseconds drain_idle)
    : pool_(pool),
      home_(home),
      stats_(std::move(stats)),
      id_(spec.id),
      target_host_(spec.target_host),
      target_port_(spec.target_port),
      idle_(std::chrono::seconds(spec.udp_idle_timeout_s)),
      drain_idle_(drain_idle),
      max_sessions_(spec.udp_max_sessions),
      sweep_timer_(pool.context(home)) {}

udp_forward::~udp_forward() = default;

void udp_forward::listen(bound_socket socket) {
  pool_.run_on(home_, [&] {
    if (socket_) socket_->close();
    close_all_sessions();
    socket_ = std::get<udp_socket_ptr>(std::move(socket));
    reply_gso_ = true;
    auto self = shared_from_this();
    asio::co_spawn(pool_.context(home_), [self, s = socket_] { return self->receive_from_clients(s); },
                   log_coroutine_exception);
    if (!sweeping_) {
      sweeping_ = true;
      asio::co_spawn(pool_.context(home_), [self] { return self->sweep(); }, log_coroutine_exception);
    }
  });
}

void udp_forward::close_listener() {
  pool_.run_on(home_, [&] {
    if (socket_) socket_->close();
    socket_.reset();
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

void udp_forward::configure(const forward_spec& spec) {
  pool_.run_on(home_, [&] {
    target_host_ = spec.target_host;
    target_port_ = spec.target_port;
    idle_ = std::chrono::seconds(spec.udp_idle_timeout_s);
    max_sessions_ = spec.udp_max_sessions;
    enforce_cap();
    sweep_timer_.cancel();  // the sweep re-arms for the new idle timeout
  });
}

void udp_forward::stop() {
  pool_.run_on(home_, [&] {
    stopped_ = true;
    if (socket_) socket_->close();
    socket_.reset();
    close_all_sessions();
    sweep_timer_.cancel();
  });
}

asio::awaitable<void> udp_forward::receive_from_clients(udp_socket_ptr socket) {
  while (socket->is_open()) {
    auto [ec] = co_await socket->async_wait(asio::ip::udp::socket::wait_read, use_tuple);
    if (!socket->is_open() || ec == asio::error::operation_aborted) break;
    auto& b = scratch();
    for (int round = 0; round < rounds && socket->is_open(); ++round) {
      b.arm(true);
      const int n = ::recvmmsg(socket->native_handle(), b.in.data(), batch_space::slots, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        continue;  // an error queued on the socket (ICMP); it is consumed, nothing else is hurt
      }
      // Consecutive datagrams of one session leave together on its upstream socket (send_batch).
      session* batch_for = nullptr;
      int queued = 0;
      auto flush = [&] {
        if (!batch_for || queued == 0) return;
        const int unreachable = send_batch(batch_for->upstream.native_handle(), b, queued, batch_for->gso,
                                           stats_->datagrams_up, stats_->bytes_up, stats_->datagrams_dropped);
        queued = 0;
        if (unreachable) target_failed(*batch_for);
      };
      for (int i = 0; i < n; ++i) {
        asio::ip::udp::endpoint from;
        std::memcpy(from.data(), &b.from[i], std::min<std::size_t>(b.in[i].msg_hdr.msg_namelen, sizeof b.from[i]));
        session* s = client_datagram(from);
        if (!s) continue;
        if (!s->ready) {
          hold(*s, b.slot(i), b.in[i].msg_len);
          continue;
        }
        if (s != batch_for) {
          flush();
          batch_for = s;
        }
        b.queue(queued++, i, nullptr);
      }
      flush();
      if (n < batch_space::slots) break;  // the socket's queue is empty (UDP has no EOF to miss)
    }
  }
}

udp_forward::session* udp_forward::client_datagram(const asio::ip::udp::endpoint& from) {
  auto it = sessions_.find(from);
  session* s = it != sessions_.end() ? it->second.get() : draining_ ? nullptr : open_session(from);
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

udp_forward::session* udp_forward::open_session(const asio::ip::udp::endpoint& client) {
  if (sessions_.size() >= max_sessions_ && !lru_.empty()) close_session(*lru_.back(), true);
  auto s = std::make_shared<session>(pool_.context(home_).get_executor(), client);
  s->last_active = clock::now();
  lru_.push_front(s.get());
  s->lru_pos = lru_.begin();
  sessions_.emplace(client, s);
  bump(stats_->connections_total);
  bump(stats_->connections_active);
  // The lambda owns the forward for as long as the coroutine runs (co_spawn keeps it in its frame).
  asio::co_spawn(pool_.context(home_), [self = shared_from_this(), s] { return self->start_session(s); },
                 log_coroutine_exception);
  // co_spawn runs the session inline up to its first wait, so a target that cannot be reached at
  // once (no descriptor left, a family the host lacks) has closed it already, and `s` is its last owner.
  return s->open ? s.get() : nullptr;
}

asio::awaitable<void> udp_forward::start_session(session_ptr s) {
  const std::string host = target_host_;  // taken now: a later PATCH affects only later sessions
  const std::uint16_t port = target_port_;
  std::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (!ec) {
    s->targets.emplace_back(address, port);
  } else {
    auto [rec, results] = co_await s->resolver.async_resolve(host, std::to_string(port),
                                                             asio::ip::udp::resolver::numeric_service, use_tuple);
    if (!s->open) co_return;
    if (rec || results.empty()) {
      spdlog::debug("forward {}: resolve {}: {}", id_, host, rec ? rec.message() : "no address");
      bump(stats_->connect_errors);
      close_session(*s, false);
      co_return;
    }
    for (const auto& entry : results) s->targets.push_back(entry.endpoint());
  }
  if (!connect_to(*s, choose_address(s->targets, 0))) co_return;
  for (const auto& d : s->pending) send_upstream(*s, d.data(), d.size());
  s->pending.clear();
  co_await receive_from_target(s);
}

bool udp_forward::connect_to(session& s, std::size_t index) {
  const auto target = s.targets[index];
  if (leads_back(id_, protocol::udp, target.address(), target.port(), *stats_)) {
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

void udp_forward::target_failed(session& s) {
  bump(stats_->target_unreachable);
  const auto now = clock::now();
  const auto& dead = s.targets[s.at];
  if (failed_.size() >= udp_max_failed_addresses) {
    std::erase_if(failed_, [&](const auto& f) { return now - f.second >= udp_fail_timeout; });
  }
  if (failed_.size() < udp_max_failed_addresses) failed_[dead] = now;
  if (s.targets.size() < 2) return;  // nowhere else to go: the session stays, its datagrams counted
  const auto next = choose_address(s.targets, (s.at + 1) % s.targets.size());
  spdlog::debug("forward {}: {} unreachable, session of {} moves to {}", id_,
                format_endpoint(dead.address().to_string(), dead.port()),
                format_endpoint(s.client.address().to_string(), s.client.port()),
                format_endpoint(s.targets[next].address().to_string(), s.targets[next].port()));
  connect_to(s, next);
}

bool udp_forward::connect_upstream(session& s, const asio::ip::udp::endpoint& target) {
  std::error_code ec;
  if (s.upstream.is_open()) s.upstream.close(ec);  // a move: the old address's errors go with it
  s.gso = true;
  s.upstream.open(target.protocol(), ec);
  if (!ec) size_buffers(s.upstream.native_handle(), session_buffer);
  if (!ec) s.upstream.non_blocking(true, ec);
  if (!ec) s.upstream.connect(target, ec);
  if (ec) {
    spdlog::debug("forward {}: connect {}: {}", id_, format_endpoint(target.address().to_string(), target.port()),
                  ec.message());
    return false;
  }
  s.ready = true;
  spdlog::debug("forward {}: session {} -> {}", id_, format_endpoint(s.client.address().to_string(), s.client.port()),
                format_endpoint(target.address().to_string(), target.port()));
  return true;
}

void udp_forward::send_upstream(session& s, const char* data, std::size_t n) {
  std::error_code ec;
  s.upstream.send(asio::buffer(data, n), 0, ec);
  if (ec) {
    bump(stats_->datagrams_dropped);  // buffer full, or the target's port is unreachable
    return;
  }
  bump(stats_->datagrams_up);
  bump(stats_->bytes_up, n);
}

asio::awaitable<void> udp_forward::receive_from_target(session_ptr s) {
  while (s->open) {
    auto [ec] = co_await s->upstream.async_wait(asio::ip::udp::socket::wait_read, use_tuple);
    if (!s->open) break;
    if (ec == asio::error::operation_aborted) continue;  // the session moved to a new socket
    auto& b = scratch();
    for (int round = 0; round < rounds && s->open; ++round) {
      b.arm(false);
      const int n = ::recvmmsg(s->upstream.native_handle(), b.in.data(), batch_space::slots, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (is_unreachable(errno)) target_failed(*s);  // this session's alone; it may move or close
        continue;
      }
      touch(*s);
      for (int i = 0; i < n; ++i) b.queue(i, i, &s->client);  // replies leave through the listening socket
      send_batch(socket_ ? socket_->native_handle() : -1, b, n, reply_gso_, stats_->datagrams_down,
                 stats_->bytes_down, stats_->datagrams_dropped);
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
  auto it = sessions_.find(s.client);
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
  lower(stats_->connections_active);
  if (evicted) bump(stats_->sessions_evicted);
}

void udp_forward::close_all_sessions() {
  while (!lru_.empty()) close_session(*lru_.back(), false);
}

void udp_forward::enforce_cap() {
  while (sessions_.size() > max_sessions_ && !lru_.empty()) close_session(*lru_.back(), true);
}

}  // namespace relay
