// engine: keeps the running forwards by id and moves each change through prepare/apply/abandon.
#include "relay/engine.hpp"

#include <spdlog/spdlog.h>

namespace relay {

namespace {
bool is_wildcard(const std::string& host) { return host == "0.0.0.0" || host == "::"; }

bool same_listen(const forward_spec& a, const forward_spec& b) {
  return b.listen_port != 0 && a.listen_port == b.listen_port && a.listen_host == b.listen_host;
}

// Two listen addresses that the kernel would refuse to bind side by side.
bool overlaps(const forward_spec& a, const forward_spec& b) {
  return a.listen_port == b.listen_port &&
         (a.listen_host == b.listen_host || is_wildcard(a.listen_host) || is_wildcard(b.listen_host));
}

tcp_route route_of(const forward_spec& s) { return {s.id, s.target_host, s.target_port}; }
}  // namespace

engine::engine(engine_options options) : options_(options), pool_(options.workers) {}

engine::~engine() { shutdown(); }

result<acceptor_ptr> engine::bind_on(std::size_t home, const std::string& host, std::uint16_t port) {
  return pool_.run_on(home, [&] { return bind_tcp(pool_.context(home), host, port); });
}

void engine::close_on(std::size_t home, const acceptor_ptr& acceptor) {
  pool_.run_on(home, [&] {
    std::error_code ignored;
    acceptor->close(ignored);
  });
}

result<engine::prepared> engine::prepare(const forward_spec& next) {
  std::lock_guard lock(mutex_);
  if (shut_down_) return op_error{std::make_error_code(std::errc::operation_canceled), "the relay is shutting down"};
  if (next.protocol != protocol::tcp) {
    return op_error{std::make_error_code(std::errc::protocol_not_supported), "only TCP forwards are supported"};
  }
  auto it = forwards_.find(next.id);
  entry* current = it == forwards_.end() ? nullptr : &it->second;
  if (!next.enabled) return prepared{};
  if (current && current->live && same_listen(current->spec, next)) {
    return prepared{current->home, nullptr, next.listen_port, false};
  }
  const std::size_t home = current ? current->home : pool_.next();
  auto bound = bind_on(home, next.listen_host, next.listen_port);
  bool released_old = false;
  if (!bound && bound.error().code == std::errc::address_in_use && current && current->live &&
      overlaps(current->spec, next)) {
    // The new address overlaps the one this forward holds (0.0.0.0:80 -> 127.0.0.1:80): the old
    // listener has to go first. If the new bind still fails, the old address is taken back.
    current->live->close_listener();
    bound = bind_on(home, next.listen_host, next.listen_port);
    if (!bound) {
      auto again = bind_on(home, current->spec.listen_host, current->spec.listen_port);
      if (again) {
        current->live->listen(again.value());
      } else {
        current->live->stop();
        current->live.reset();
        current->error = again.error().message;
        spdlog::error("forward {}: lost its listener: {}", next.id, again.error().message);
      }
      return bound.error();
    }
    released_old = true;
  }
  if (!bound) return bound.error();
  auto acceptor = bound.value();
  auto port = pool_.run_on(home, [&] { return acceptor->local_endpoint().port(); });
  return prepared{home, acceptor, port, released_old};
}

void engine::apply(const forward_spec& next, prepared p) {
  std::lock_guard lock(mutex_);
  auto [it, created] = forwards_.try_emplace(next.id);
  entry& e = it->second;
  if (created) e.home = p.home.value_or(pool_.next());
  if (!next.enabled) {
    if (e.live) e.live->stop();
    e.live.reset();
  } else if (p.acceptor) {
    if (e.live) {
      e.live->set_target(route_of(next));
    } else {
      e.live = std::make_shared<tcp_forward>(pool_, e.home, route_of(next), e.stats, options_);
    }
    e.live->listen(std::move(p.acceptor));
  } else if (e.live && (e.spec.target_host != next.target_host || e.spec.target_port != next.target_port)) {
    e.live->set_target(route_of(next));
  }
  e.spec = next;
  e.error.clear();
}

void engine::abandon(const forward_spec& next, prepared p) {
  std::lock_guard lock(mutex_);
  if (p.acceptor) close_on(*p.home, p.acceptor);
  if (!p.released_old) return;
  auto it = forwards_.find(next.id);
  if (it == forwards_.end() || !it->second.live) return;
  entry& e = it->second;
  auto again = bind_on(e.home, e.spec.listen_host, e.spec.listen_port);
  if (again) {
    e.live->listen(again.value());
  } else {
    e.live->stop();
    e.live.reset();
    e.error = again.error().message;
    spdlog::error("forward {}: lost its listener: {}", next.id, e.error);
  }
}

void engine::fail(const forward_spec& spec, std::string reason) {
  std::lock_guard lock(mutex_);
  auto [it, created] = forwards_.try_emplace(spec.id);
  if (created) it->second.home = pool_.next();
  if (it->second.live) it->second.live->stop();
  it->second.live.reset();
  it->second.spec = spec;
  it->second.error = std::move(reason);
}

void engine::remove(std::int64_t id) {
  std::lock_guard lock(mutex_);
  auto it = forwards_.find(id);
  if (it == forwards_.end()) return;
  if (it->second.live) it->second.live->stop();
  forwards_.erase(it);
}

forward_status engine::status(std::int64_t id) const {
  std::lock_guard lock(mutex_);
  auto it = forwards_.find(id);
  if (it == forwards_.end()) return {"error", "not loaded", {}};
  const entry& e = it->second;
  forward_status s{"active", "", e.stats->read()};
  if (!e.spec.enabled) {
    s.state = "disabled";
  } else if (!e.live) {
    s.state = "error";
    s.error = e.error.empty() ? "not listening" : e.error;
  }
  return s;
}

void engine::shutdown() {
  std::lock_guard lock(mutex_);
  if (shut_down_) return;
  shut_down_ = true;
  for (auto& [id, e] : forwards_) {
    if (e.live) e.live->stop();
    e.live.reset();
  }
  pool_.stop();
}

}  // namespace relay
