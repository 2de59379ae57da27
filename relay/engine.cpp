// engine: keeps the running forwards by id and moves each change through prepare/apply/abandon.
#include "relay/engine.hpp"

#include "relay/forward_fields.hpp"
#include "relay/ip_zone.hpp"
#include "relay/listen_socket.hpp"
#include "relay/tcp_forward.hpp"
#include "relay/udp_forward.hpp"

#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <algorithm>
#include <filesystem>

namespace relay {

namespace {
bool is_wildcard(const std::string& host) { return host == "0.0.0.0" || host == "::"; }

// Whether two listen_hosts are one address to bind, however a zone is spelt: "fe80::1%eth0" and
// "fe80::1%2" when eth0 is interface 2.
bool same_listen_address(const std::string& a, const std::string& b) {
  if (a == b) return true;
  const auto x = scoped_address(a);
  const auto y = scoped_address(b);
  return x && y && x.value() == y.value();
}

// Whether `spec` needs another pool than `current`: its targets, balance, health_check, the source
// address its checks leave from, or its name (in the pool's log lines) changed.
bool new_pool_for(const target_pool& current, const forward_spec& now, const forward_spec& next) {
  return current.targets() != next.targets || current.policy() != next.balance ||
         current.health_check() != next.health_check || current.source_address() != next.source_address ||
         now.name != next.name;
}

// Whether `next` keeps the listeners of `now` whose ports it keeps: the same protocol and address,
// and explicit ports (a range that moves, grows or shrinks).
bool same_listen_address_and_protocol(const forward_spec& now, const forward_spec& next) {
  return next.listen_port != 0 && now.protocol == next.protocol && same_listen_address(now.listen_host, next.listen_host);
}

// The ports a spec listens on: its range, or its one port (0: the kernel's choice).
std::vector<std::uint16_t> ports_of(const forward_spec& s) {
  std::vector<std::uint16_t> out;
  out.reserve(range_size(s));
  for (std::uint32_t p = s.listen_port; p <= last_port(s); ++p) out.push_back(static_cast<std::uint16_t>(p));
  return out;
}

// The ports of `a` that are not ports of `b`.
std::vector<std::uint16_t> ports_without(const forward_spec& a, const forward_spec& b) {
  std::vector<std::uint16_t> out;
  for (const auto p : ports_of(a)) {
    if (p < b.listen_port || p > last_port(b)) out.push_back(p);
  }
  return out;
}

// Two listen addresses that the kernel would refuse to bind side by side: ranges as sets of ports.
bool overlaps(const forward_spec& a, const forward_spec& b) {
  return a.protocol == b.protocol && a.listen_port <= last_port(b) && b.listen_port <= last_port(a) &&
         (same_listen_address(a.listen_host, b.listen_host) || is_wildcard(a.listen_host) ||
          is_wildcard(b.listen_host));
}

}  // namespace

bool listen_overlaps(const forward_spec& a, const forward_spec& b) { return overlaps(a, b); }

namespace {

// Descriptors the process has open now (control plane only: it reads /proc/self/fd).
std::uint64_t open_descriptors() {
  std::error_code ec;
  std::uint64_t n = 0;
  const std::filesystem::directory_iterator end;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != end; it.increment(ec)) {
    ++n;
  }
  return n;
}
}  // namespace

engine::engine(engine_options options) : options_(options), pool_(options.workers) {}

engine::~engine() { shutdown(); }

result<listen_sockets> engine::bind_on(std::size_t home, const forward_spec& spec,
                                       const std::vector<std::uint16_t>& ports) {
  std::uint16_t failed = 0;
  auto bound = pool_.run_on(home, [&] { return bind_listeners(pool_.context(home), spec, ports, failed); });
  if (bound || !spec.listen_port_end) return bound;
  auto e = bound.error();
  const auto port = std::to_string(failed);
  e.message = (e.code == std::errc::address_in_use ? "listen port " + port + " is in use"
                                                   : "cannot listen on port " + port) + ": " + e.message;
  return e;
}

void engine::close_on(std::size_t home, const listen_sockets& sockets) {
  pool_.run_on(home, [&] {
    for (const auto& [port, socket] : sockets) close_socket(socket);
  });
}

std::optional<op_error> engine::over_budget(const forward_spec& spec, std::size_t count) const {
  if (!spec.listen_port_end || count == 0) return std::nullopt;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return std::nullopt;
  const std::uint64_t per_port = spec.protocol == protocol::tcp ? pool_.size() : 1;
  const std::uint64_t needed = count * per_port;
  const std::uint64_t max = limit.rlim_cur;
  const std::uint64_t headroom = std::min<std::uint64_t>(max / 4, descriptor_headroom);
  const std::uint64_t open = open_descriptors();
  if (open + needed + headroom <= max) return std::nullopt;
  return op_error{std::make_error_code(range_over_budget),
                  std::to_string(count) + " more listening port" + (count == 1 ? "" : "s") + " need " +
                      std::to_string(needed) + " descriptors (" +
                      (per_port > 1 ? "one per port on each of " + std::to_string(per_port) + " workers"
                                    : std::string("one per port")) +
                      "), but the process may have " + std::to_string(max) + " (RLIMIT_NOFILE), has " +
                      std::to_string(open) + " open and keeps " + std::to_string(headroom) +
                      " free for connections: raise LimitNOFILE or make the range smaller"};
}

std::shared_ptr<running_forward> engine::make_forward(const entry& e, const forward_spec& spec) {
  if (spec.protocol == protocol::udp) {
    return std::make_shared<udp_forward>(pool_, e.home, spec, e.stats, e.ports, options_.udp_drain_idle_timeout,
                                         e.targets, connection_ids_);
  }
  return std::make_shared<tcp_forward>(pool_, e.home, spec, e.stats, e.ports, options_, e.targets, connection_ids_);
}

void engine::renew_targets(entry& e, const forward_spec& spec) {
  auto label = "forward " + std::to_string(spec.id) + (spec.name.empty() ? "" : " (" + spec.name + ")");
  e.targets = std::make_shared<target_pool>(spec, std::move(label), e.targets.get());
}

void engine::sync_checks(entry& e) {
  const bool wanted = e.live && e.targets && e.targets->health_check();
  if (e.checker && (!wanted || e.checker->pool() != e.targets.get())) {
    pool_.run_on(e.home, [&] { e.checker->stop(); });
    e.checker.reset();
  }
  if (wanted && !e.checker && !shut_down_) {
    e.checker = pool_.run_on(e.home, [&] {  // health_checker::start runs on the loop it uses
      return health_checker::start(pool_.context(e.home), e.targets);
    });
  }
}

result<engine::prepared> engine::prepare(const forward_spec& next) {
  std::lock_guard lock(mutex_);
  if (shut_down_ || draining_) return op_error{std::make_error_code(std::errc::operation_canceled), "the relay is shutting down"};
  auto it = forwards_.find(next.id);
  entry* current = it == forwards_.end() ? nullptr : &it->second;
  if (!next.enabled) return prepared{};
  const std::size_t home = current ? current->home : pool_.next();
  // A forward that keeps its address keeps the sockets of the ports it keeps: only new ones are bound.
  const bool keeps =
      current && current->live && !current->released && same_listen_address_and_protocol(current->spec, next);
  const auto ports = keeps ? ports_without(next, current->spec) : ports_of(next);
  if (keeps && ports.empty()) return prepared{home, {}, false, next.listen_port, false};
  if (auto e = over_budget(next, ports.size())) return *e;
  auto bound = bind_on(home, next, ports);
  bool released_old = false;
  if (!bound && bound.error().code == std::errc::address_in_use && current && current->live && !keeps &&
      !current->released && overlaps(current->spec, next)) {
    // The new address overlaps the one this forward holds (0.0.0.0:80 -> 127.0.0.1:80): the old
    // listeners have to go first. If the new bind still fails, the old address is taken back.
    current->live->close_listener();
    bound = bind_on(home, next, ports);
    if (!bound) {
      take_back_listener(*current);
      return bound.error();
    }
    released_old = true;
  }
  if (!bound) return bound.error();
  auto& sockets = bound.value();
  const auto port = next.listen_port != 0 ? next.listen_port : sockets.begin()->first;
  return prepared{home, std::move(sockets), !keeps, port, released_old};
}

void engine::apply(const forward_spec& next, prepared p) {
  std::lock_guard lock(mutex_);
  auto [it, created] = forwards_.try_emplace(next.id);
  entry& e = it->second;
  if (created) e.home = p.home.value_or(pool_.next());
  if (e.live && (!next.enabled || e.spec.protocol != next.protocol)) {
    e.live->stop();
    e.live.reset();
  }
  const bool new_pool = !e.targets || new_pool_for(*e.targets, e.spec, next);
  // A connection's target port is its listen port's offset in the range: a moved range is configured.
  const bool moved = next.listen_port != e.spec.listen_port || next.listen_port_end != e.spec.listen_port_end;
  if (next.enabled && p.replace) {
    if (e.live) {
      if (new_pool) renew_targets(e, next);
      e.live->configure(next, e.targets);
    } else {
      renew_targets(e, next);  // a fresh pool for each start: the forward registers its listeners first
      e.live = make_forward(e, next);
    }
    e.live->listen(std::move(p.sockets), true);
  } else if (next.enabled && e.live && p.home) {
    // The same address: new ports join (bound in prepare), then the ports that left close.
    if (new_pool) renew_targets(e, next);
    if (new_pool || moved || changes(e.spec, next, change_effect::reconfigure)) e.live->configure(next, e.targets);
    if (!p.sockets.empty()) e.live->listen(std::move(p.sockets), false);
    const auto left = ports_without(e.spec, next);
    if (!left.empty()) e.live->close_ports(left);
  } else if (e.live && (new_pool || changes(e.spec, next, change_effect::reconfigure))) {
    if (new_pool) renew_targets(e, next);  // the forward must use it: its listeners are registered on it
    e.live->configure(next, e.targets);
  } else if (new_pool) {
    renew_targets(e, next);  // not serving: what status shows
  }
  e.spec = next;
  e.error.clear();
  e.released = false;
  sync_checks(e);
  publish_guard();
}

void engine::abandon(const forward_spec& next, prepared p) {
  std::lock_guard lock(mutex_);
  if (!p.sockets.empty()) close_on(*p.home, p.sockets);
  if (!p.released_old) return;
  auto it = forwards_.find(next.id);
  if (it != forwards_.end() && it->second.live) take_back_listener(it->second);
  publish_guard();
}

void engine::take_back_listener(entry& e) {
  e.released = false;
  auto again = bind_on(e.home, e.spec, ports_of(e.spec));
  if (again) {
    e.live->listen(std::move(again.value()), true);
    return;
  }
  // Someone took the address in the moment it was free: the forward is in error, not silently gone.
  e.live->stop();
  e.live.reset();
  sync_checks(e);
  e.error = again.error().message;
  spdlog::error("forward {}: lost its listener: {}", e.spec.id, e.error);
}

void engine::fail(const forward_spec& spec, std::string reason) {
  std::lock_guard lock(mutex_);
  auto [it, created] = forwards_.try_emplace(spec.id);
  if (created) it->second.home = pool_.next();
  auto& e = it->second;
  if (e.live) e.live->stop();
  e.live.reset();
  if (!e.targets || new_pool_for(*e.targets, e.spec, spec)) renew_targets(e, spec);
  e.spec = spec;
  e.error = std::move(reason);
  sync_checks(e);
  publish_guard();
}

void engine::remove(std::int64_t id) {
  std::lock_guard lock(mutex_);
  auto it = forwards_.find(id);
  if (it == forwards_.end()) return;
  if (it->second.live) it->second.live->stop();
  it->second.live.reset();
  sync_checks(it->second);
  forwards_.erase(it);
  publish_guard();
}

void engine::set_api_endpoints(const std::vector<std::string>& addresses, std::uint16_t port) {
  std::lock_guard lock(mutex_);
  api_.clear();
  for (const auto& a : addresses) {
    std::error_code ec;
    const auto address = asio::ip::make_address(a, ec);
    if (!ec) api_.push_back({protocol::tcp, address, port, false});
  }
  publish_guard();
}

std::optional<refusal> engine::check_target(const forward_spec& next) const {
  if (!next.enabled) return std::nullopt;  // it sends nothing anywhere; enabling it is checked
  std::lock_guard lock(mutex_);
  std::vector<guard_node> nodes;
  for (const auto& [id, e] : forwards_) {
    if (id == next.id || !e.spec.enabled) continue;  // a stored forward in error still counts: it will listen
    if (auto n = node_of(e.spec)) nodes.push_back(*n);
  }
  if (auto n = node_of(next)) nodes.push_back(*n);
  return target_guard(api_, std::move(nodes)).check(next);
}

std::optional<std::pair<std::size_t, refusal>> engine::check_targets(const std::vector<forward_spec>& set) const {
  std::vector<guard_node> nodes;
  for (const auto& s : set) {
    if (!s.enabled) continue;
    if (auto n = node_of(s)) nodes.push_back(*n);
  }
  std::unique_lock lock(mutex_);
  const target_guard guard(api_, std::move(nodes));
  lock.unlock();
  for (std::size_t i = 0; i < set.size(); ++i) {
    if (!set[i].enabled) continue;
    if (auto r = guard.check(set[i])) return std::pair{i, std::move(*r)};
  }
  return std::nullopt;
}

std::vector<std::int64_t> engine::release_for(const std::vector<std::int64_t>& leaving,
                                              const std::vector<forward_spec>& wanted) {
  std::lock_guard lock(mutex_);
  std::vector<std::int64_t> released;
  for (const auto id : leaving) {
    auto it = forwards_.find(id);
    if (it == forwards_.end() || !it->second.live || it->second.released) continue;
    auto& e = it->second;
    const auto in_the_way = [&](const forward_spec& w) { return w.enabled && w.id != id && overlaps(e.spec, w); };
    if (std::none_of(wanted.begin(), wanted.end(), in_the_way)) continue;
    e.live->close_listener();
    e.released = true;
    released.push_back(id);
  }
  return released;
}

void engine::take_back(const std::vector<std::int64_t>& ids) {
  std::lock_guard lock(mutex_);
  for (const auto id : ids) {
    auto it = forwards_.find(id);
    if (it != forwards_.end() && it->second.live && it->second.released) take_back_listener(it->second);
  }
  publish_guard();
}

std::vector<std::pair<std::size_t, op_error>> engine::probe(const std::vector<forward_spec>& wanted,
                                                            const std::vector<std::int64_t>& leaving) {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::size_t, op_error>> failed;
  std::vector<listen_sockets> held;
  for (std::size_t i = 0; i < wanted.size(); ++i) {
    const auto& next = wanted[i];
    if (!next.enabled || next.listen_port == 0) continue;  // the kernel's choice of port does not clash
    auto it = forwards_.find(next.id);
    const entry* current = it == forwards_.end() ? nullptr : &it->second;
    const bool keeps = current && current->live && same_listen_address_and_protocol(current->spec, next);
    std::vector<std::uint16_t> ports;
    for (const auto p : keeps ? ports_without(next, current->spec) : ports_of(next)) {
      auto one = next;
      one.listen_port = p;
      one.listen_port_end.reset();
      const auto freed = [&](std::int64_t id) {
        auto f = forwards_.find(id);
        return f != forwards_.end() && f->second.live && overlaps(f->second.spec, one);
      };
      if (std::none_of(leaving.begin(), leaving.end(), freed)) ports.push_back(p);
    }
    if (ports.empty()) continue;
    if (auto e = over_budget(next, ports.size())) {
      failed.emplace_back(i, *e);
      continue;
    }
    auto bound = bind_on(0, next, ports);
    if (bound) {
      held.push_back(std::move(bound.value()));
    } else {
      failed.emplace_back(i, bound.error());
    }
  }
  for (const auto& sockets : held) close_on(0, sockets);
  return failed;
}

void engine::publish_guard() {
  if (shut_down_) return;
  std::vector<guard_node> nodes;
  for (const auto& [id, e] : forwards_) {
    if (!e.live) continue;
    if (auto n = node_of(e.spec)) nodes.push_back(*n);
  }
  auto guard = std::make_shared<const target_guard>(api_, std::move(nodes));
  for (std::size_t k = 0; k < pool_.size(); ++k) pool_.run_on(k, [&] { install_guard(guard); });
}

std::string_view to_string(forward_state s) {
  switch (s) {
    case forward_state::active:
      return "active";
    case forward_state::disabled:
      return "disabled";
    case forward_state::error:
      break;
  }
  return "error";
}

forward_status engine::status_of(const entry& e) {
  forward_status s{forward_state::active, "", e.stats->read(), {}};
  if (e.targets) s.targets = e.targets->snapshot();
  if (!e.spec.enabled && e.error.empty()) {
    s.state = forward_state::disabled;  // a disabled forward is in error only when fail() said why (an invalid row)
  } else if (!e.live) {
    s.state = forward_state::error;
    s.error = e.error.empty() ? "not listening" : e.error;
  }
  return s;
}

std::vector<port_snapshot> engine::port_status(std::int64_t id) const {
  std::lock_guard lock(mutex_);
  auto it = forwards_.find(id);
  if (it == forwards_.end() || !it->second.live) return {};
  const auto& spec = it->second.spec;
  return it->second.ports->read(spec.listen_port, last_port(spec));
}

forward_status engine::status(std::int64_t id) const {
  std::lock_guard lock(mutex_);
  auto it = forwards_.find(id);
  if (it == forwards_.end()) return {forward_state::error, "not loaded", {}, {}};
  return status_of(it->second);
}

std::vector<engine::view> engine::snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<view> out;
  out.reserve(forwards_.size());
  for (const auto& [id, e] : forwards_) out.push_back({e.spec, status_of(e)});
  return out;
}

engine::census engine::count() const {
  std::lock_guard lock(mutex_);
  census c;
  for (const auto& [id, e] : forwards_) {
    const auto s = status_of(e);
    c.active += s.state == forward_state::active;
    c.disabled += s.state == forward_state::disabled;
    c.error += s.state == forward_state::error;
    c.live += s.stats.connections_active;
  }
  return c;
}

void engine::drain() {
  std::lock_guard lock(mutex_);
  draining_ = true;
  for (auto& [id, e] : forwards_) {
    if (e.live) e.live->drain();
  }
}

void engine::shutdown() {
  std::unique_lock running(running_);
  std::lock_guard lock(mutex_);
  if (shut_down_) return;
  shut_down_ = true;
  for (auto& [id, e] : forwards_) {
    if (e.live) e.live->stop();
    e.live.reset();
    sync_checks(e);
  }
  pool_.stop();
}

std::shared_ptr<running_forward> engine::live(std::int64_t id) const {
  std::lock_guard lock(mutex_);
  if (shut_down_) return nullptr;
  const auto it = forwards_.find(id);
  return it == forwards_.end() ? nullptr : it->second.live;
}

connection_page engine::connections(std::int64_t id, std::uint64_t after, std::size_t limit) {
  std::shared_lock running(running_);
  const auto forward = live(id);
  return forward ? forward->connections(after, limit) : connection_page{};
}

std::optional<connection_info> engine::close_connection(std::int64_t id, std::uint64_t connection) {
  std::shared_lock running(running_);
  const auto forward = live(id);
  return forward ? forward->close_connection(connection) : std::nullopt;
}

std::size_t engine::close_connections(std::int64_t id, const prefix_set& clients) {
  std::shared_lock running(running_);
  const auto forward = live(id);
  return forward ? forward->close_connections(clients) : 0;
}

}  // namespace relay
