// target_guard: the reaches rule, the walk along forwards' targets, and the per-worker guard.
#include "relay/target_guard.hpp"

#include "relay/ip_zone.hpp"

#include <spdlog/spdlog.h>

#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace relay {

namespace {

using address = asio::ip::address;

address normalised(const address& a) {
  if (!a.is_v6()) return a;
  auto v6 = a.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6);
  if (!v6.is_link_local()) v6.scope_id(0);  // the kernel reads a scope id for link-local addresses only
  return v6;
}

// Where a connect to `a` goes.
address destination(const address& a) {
  const auto n = normalised(a);
  if (!n.is_unspecified()) return n;
  return n.is_v4() ? address(asio::ip::address_v4::loopback()) : address(asio::ip::address_v6::loopback());
}

std::string endpoint_text(const address& a, std::uint16_t port, std::uint16_t last = 0) {
  const auto one = format_endpoint(a.to_string(), port);
  return last > port ? one + "-" + std::to_string(last) : one;
}

std::string listen_text(const listen_point& l) { return endpoint_text(l.address, l.port, l.last()); }

std::string describe(const guard_node& n) {
  return "forward " + std::to_string(n.id) + " (" + listen_text(n.listen) + ")";
}

bool by_port(const guard_node& n, int port) { return n.listen.port < port; }

// A hop's port for a node's port p: the target's port plus p's offset in the node's range, at most 65535.
std::uint16_t hop_port(const guard_hop& hop, const guard_node& n, std::uint16_t p) {
  return static_cast<std::uint16_t>(std::min(65535, hop.port + (p - n.listen.port)));
}

}  // namespace

bool reaches(const address& to, std::uint16_t port, relay::protocol protocol, const listen_point& l,
             const local_test& is_local) {
  if (port < l.port || port > l.last() || protocol != l.protocol) return false;
  const auto t = destination(to);
  const auto a = normalised(l.address);
  if (t == a) return true;
  if (!a.is_unspecified()) return false;
  const bool family = a.is_v4() ? t.is_v4() : t.is_v6() || !l.v6_only;
  return family && (t.is_loopback() || is_local(t));
}

std::vector<address> interface_addresses() {
  std::vector<address> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (auto* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      out.push_back(asio::ip::address_v4(ntohl(in->sin_addr.s_addr)));
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
      asio::ip::address_v6::bytes_type bytes;
      std::memcpy(bytes.data(), in6->sin6_addr.s6_addr, bytes.size());
      out.push_back(normalised(asio::ip::address_v6(bytes, in6->sin6_scope_id)));
    }
  }
  ::freeifaddrs(list);
  return out;
}

local_test fresh_local_test() {
  return [read = std::make_shared<std::optional<std::vector<address>>>()](const address& a) {
    if (!*read) *read = interface_addresses();
    return std::find((*read)->begin(), (*read)->end(), a) != (*read)->end();
  };
}

std::optional<guard_node> node_of(const forward_spec& spec) {
  const auto listen = scoped_address(spec.listen_host);
  if (!listen || spec.listen_port == 0) return std::nullopt;
  guard_node n{spec.id, {spec.protocol, listen.value(), spec.listen_port, true, last_port(spec)}, {}};
  for (const auto& t : spec.targets) {
    std::error_code ec;  // parsed as the sessions parse it, so a zone means the interface they connect on
    const auto target = asio::ip::make_address(t.host, ec);
    if (!ec) n.targets.push_back({target, t.port});
  }
  return n;
}

target_guard::target_guard(std::vector<listen_point> api, std::vector<guard_node> forwards)
    : api_(std::move(api)), nodes_(std::move(forwards)) {
  std::sort(nodes_.begin(), nodes_.end(),
            [](const guard_node& a, const guard_node& b) { return a.listen.port < b.listen.port; });
  for (const auto& n : nodes_) widest_ = std::max(widest_, n.listen.last() - n.listen.port + 1);
}

std::vector<std::size_t> target_guard::nodes_on(std::uint16_t first, std::uint16_t last) const {
  std::vector<std::size_t> out;
  // No node that starts more than widest_ ports below `first` reaches it.
  for (auto it = std::lower_bound(nodes_.begin(), nodes_.end(), first - widest_ + 1, by_port);
       it != nodes_.end() && it->listen.port <= last; ++it) {
    if (it->listen.last() >= first) out.push_back(static_cast<std::size_t>(it - nodes_.begin()));
  }
  return out;
}

bool target_guard::listens_on(std::uint16_t port) const {
  if (!nodes_on(port, port).empty()) return true;
  return std::any_of(api_.begin(), api_.end(), [&](const listen_point& l) { return l.port == port; });
}

std::optional<refusal> target_guard::check(std::int64_t id, relay::protocol protocol, const address& to,
                                           std::uint16_t port, const local_test& is_local,
                                           std::uint16_t port_end) const {
  const auto last = std::max(port, port_end);
  const auto target = endpoint_text(to, port, last);
  for (const auto& l : api_) {
    if (l.port >= port && l.port <= last && reaches(to, l.port, protocol, l, is_local)) {
      return refusal{refusal::kind::api, "target " + target + " is this daemon's API (" + listen_text(l) +
                                             "): a forward must not expose it"};
    }
  }
  std::vector<std::size_t> path;
  std::vector<std::vector<std::pair<int, int>>> seen(nodes_.size());
  auto r = walk(id, protocol, to, port, last, is_local, path, seen);
  if (r) r->message = "target " + target + r->message;
  return r;
}

std::optional<refusal> target_guard::check(const forward_spec& next) const {
  const auto is_local = fresh_local_test();
  for (const auto& t : next.targets) {
    std::error_code ec;
    const auto to = asio::ip::make_address(t.host, ec);
    if (ec) continue;  // a host name: checked when a connection resolves it
    const auto last = static_cast<std::uint16_t>(std::min<std::uint32_t>(65535, t.port + range_size(next) - 1));
    if (auto r = check(next.id, next.protocol, to, t.port, is_local, last)) return r;
  }
  return std::nullopt;
}

// Depth first along IP-literal targets; `path` holds the forwards passed so far, `seen` the ports
// of each forward entered, so the walk ends even where other forwards already go round without
// `origin` (a node is entered again only for ports it was not entered with).
std::optional<refusal> target_guard::walk(std::int64_t origin, relay::protocol protocol, const address& to,
                                          std::uint16_t first, std::uint16_t last, const local_test& is_local,
                                          std::vector<std::size_t>& path,
                                          std::vector<std::vector<std::pair<int, int>>>& seen) const {
  for (const auto index : nodes_on(first, last)) {
    const auto& n = nodes_[index];
    // The ports of first..last that n listens on; the address decides whether they reach it.
    const auto from = std::max(first, n.listen.port);
    const auto to_port = std::min(last, n.listen.last());
    if (!reaches(to, from, protocol, n.listen, is_local)) continue;
    if (n.id == origin) {
      const auto own = listen_text(n.listen);
      if (path.empty()) {
        return refusal{refusal::kind::own_listener, " is this forward's own listen address " + own +
                                                        ": each connection would connect to itself again"};
      }
      std::string via;
      for (auto i : path) via += (via.empty() ? "" : " -> ") + describe(nodes_[i]);
      return refusal{refusal::kind::cycle, " leads back to this forward's listen address " + own + " through " +
                                               via + ": each connection would go round again"};
    }
    auto& entered = seen[index];
    const auto within = [&](const std::pair<int, int>& r) { return r.first <= from && to_port <= r.second; };
    if (std::any_of(entered.begin(), entered.end(), within)) continue;
    entered.emplace_back(from, to_port);
    path.push_back(index);
    for (const auto& hop : n.targets) {
      if (auto r = walk(origin, protocol, hop.address, hop_port(hop, n, from), hop_port(hop, n, to_port), is_local,
                        path, seen)) {
        return r;
      }
    }
    path.pop_back();
  }
  return std::nullopt;
}

namespace {

using clock = std::chrono::steady_clock;

thread_local std::shared_ptr<const target_guard> installed;  // per worker, from its engine

// Interface addresses as a worker last read them, read again when a second old.
bool locally_configured(const address& a) {
  thread_local std::vector<address> known;
  thread_local clock::time_point read{};
  const auto now = clock::now();
  if (read == clock::time_point{} || now - read >= std::chrono::seconds(1)) {
    known = interface_addresses();
    read = now;
  }
  return std::find(known.begin(), known.end(), a) != known.end();
}

}  // namespace

void install_guard(std::shared_ptr<const target_guard> guard) { installed = std::move(guard); }

bool leads_back(std::int64_t id, relay::protocol protocol, const address& to, std::uint16_t port,
                forward_stats& stats) {
  const auto* guard = installed.get();
  if (!guard || !guard->listens_on(port)) return false;
  static const local_test is_local = locally_configured;
  const auto r = guard->check(id, protocol, to, port, is_local);
  if (!r) return false;
  bump(stats.loops_refused);
  thread_local clock::time_point last_warning{};
  if (clock::now() - last_warning >= std::chrono::seconds(1)) {
    last_warning = clock::now();
    spdlog::warn("forward {}: connection refused: {}", id, r->message);
  }
  return true;
}

}  // namespace relay
