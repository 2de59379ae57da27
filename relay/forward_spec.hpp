// forward_spec: the configuration of one forward, a pure value with no I/O.
#pragma once

#include "relay/ip_prefix.hpp"

#include <asio/ip/address.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace relay {

enum class protocol { tcp, udp };

std::string_view to_string(protocol p);
std::optional<protocol> parse_protocol(std::string_view text);

// One entry of a forward's pool of targets.
struct target_spec {
  std::string host;  // check_target_host's rules; a name is resolved per connection attempt and per check
  std::uint16_t port = 0;
  std::uint32_t weight = 1;  // 1-1000; balance_policy::first ignores it
  bool backup = false;       // serves only while no non-backup target is up

  bool operator==(const target_spec&) const = default;
};

inline constexpr std::size_t max_targets = 64;
// The most ports one forward's range may hold (listen_port_end is at most listen_port + 16,383).
inline constexpr std::uint32_t max_range_ports = 16384;

// How a new connection or UDP session picks among the usable targets (the names are nginx's and
// HAProxy's; each policy's rules are target_pool::pick's).
enum class balance_policy {
  round_robin,  // smooth weighted round robin (nginx's): weights 3 and 1 go A A B A, A A B A
  least_conn,   // fewest active connections relative to weight; ties broken round robin
  source_hash,  // the client IP picks: weighted rendezvous hashing, so a target going down moves only its clients
  first,        // the first usable target in list order: ordered failover
};

std::string_view to_string(balance_policy b);
std::optional<balance_policy> parse_balance(std::string_view text);

// Active health checking: a TCP connect to each target (or to `port`) every interval_s seconds,
// which must complete within timeout_s. `fall` consecutive failures mark a target down, `rise`
// consecutive successes mark a down target up. fall also counts real connection failures, and is
// the passive checking's threshold when there is no health_check (see target_pool).
struct health_check_spec {
  std::uint32_t interval_s = 5;  // 1-3600
  std::uint32_t timeout_s = 2;   // 1-60, at most interval_s
  std::uint32_t rise = 2;        // 1-100
  std::uint32_t fall = 3;        // 1-100
  std::optional<std::uint16_t> port;  // 1-65535; required on UDP forwards (UDP has no handshake)

  bool operator==(const health_check_spec&) const = default;
};

// Bandwidth limits of one forward: a token bucket per direction, shared by all its connections or
// sessions ("up" is client to target). A direction without a rate is not limited.
struct bandwidth_limit_spec {
  std::optional<std::uint64_t> up_bytes_per_s;    // bytes per second, 1,024 to 10^11
  std::optional<std::uint64_t> down_bytes_per_s;  // bytes per second, 1,024 to 10^11
  // Bytes a bucket holds at most (a burst at full speed after a quiet spell), 65,536 to 10^11, so a
  // whole datagram always fits. Nothing: burst_bytes_for's default.
  std::optional<std::uint64_t> burst_bytes;

  bool operator==(const bandwidth_limit_spec&) const = default;
};

inline constexpr std::uint64_t min_rate_bytes_per_s = 1024;
inline constexpr std::uint64_t max_rate_bytes_per_s = 100'000'000'000;
inline constexpr std::uint64_t min_burst_bytes = 65536;

// The burst of a direction limited to `rate` bytes/s: burst_bytes when given, else a tenth of a
// second's worth, at least min_burst_bytes.
std::uint64_t burst_bytes_for(const bandwidth_limit_spec& limit, std::uint64_t rate);

struct forward_spec {
  std::int64_t id = 0;  // assigned by the store; 0 until then
  std::string name;
  relay::protocol protocol = protocol::tcp;
  std::string listen_host = "0.0.0.0";
  std::uint16_t listen_port = 0;  // 0 until bound: the kernel picks
  // A range of ports listen_port..listen_port_end (at most max_range_ports, listen_port not 0): port
  // p forwards to each target's port + (p - listen_port). Nothing: listen_port alone.
  std::optional<std::uint16_t> listen_port_end{};
  std::vector<target_spec> targets{};  // 1-64, at least one not a backup, no host:port twice
  balance_policy balance = balance_policy::round_robin;
  // The local address connections, UDP sessions and health checks to targets leave from (bound
  // before connecting); nothing: the kernel chooses. A unicast address of this host, in canonical
  // form (an IPv4-mapped IPv6 one as IPv4), not link-local.
  std::optional<asio::ip::address> source_address{};
  std::optional<health_check_spec> health_check{};  // nothing: passive checking only
  // Who may connect (nginx's allow and deny): a client is admitted when no deny prefix contains its
  // address and the allow list is empty or has a prefix that does. At most max_prefixes each, in
  // canonical form, none twice.
  std::vector<ip_prefix> allow{};
  std::vector<ip_prefix> deny{};
  // Live TCP connections or UDP sessions at once, of the whole forward and per client IP address;
  // 0 is no limit, else 1 to 1,000,000. Over it, new ones are refused.
  std::uint32_t max_connections = 0;
  std::uint32_t max_connections_per_source = 0;
  std::optional<bandwidth_limit_spec> bandwidth_limit{};  // nothing: not limited
  // The PROXY protocol header (relay/proxy_protocol) each connection to a target starts with: 0 none,
  // 1 or 2 its version. UDP: 2 only, a v2 header before each datagram to the target.
  std::uint8_t proxy_protocol = 0;
  // TCP only: clients must start with a PROXY header (v1 or v2), whose source is then the client.
  bool accept_proxy_protocol = false;
  bool enabled = true;
  // UDP only: a session idle this long either way is closed; past this many the least recent goes.
  std::uint32_t udp_idle_timeout_s = 60;
  std::uint32_t udp_max_sessions = 4096;

  bool operator==(const forward_spec&) const = default;
};

// "host:port", with brackets around IPv6 literals.
std::string format_endpoint(std::string_view host, std::uint16_t port);
// "host:port", or "host:first-last" for a range.
std::string listen_endpoint(const forward_spec& s);
// How many ports the forward listens on (1 without a range), and its last one.
std::uint32_t range_size(const forward_spec& s);
std::uint16_t last_port(const forward_spec& s);
std::string target_endpoint(const target_spec& t);
// The targets as "host:port, host:port" (for logs and the page's one-line summaries).
std::string targets_summary(const forward_spec& s);

// Field checks shared by every way a spec is built. Each returns why the value is bad, or nothing.
// Names: valid UTF-8, at most 64 characters, no control or bidirectional formatting characters
// (joiners such as U+200D, which emoji sequences need, are allowed). Hosts: no control characters,
// checked before any address parsing; a zone only as check_zone allows, and a link-local listen_host
// needs one. Whether a zone's interface exists is not checked here (see check_interface).
std::optional<std::string> check_name(std::string_view name);
std::optional<std::string> check_listen_host(std::string_view host);
std::optional<std::string> check_target_host(std::string_view host);

// Decodes one UTF-8 code point at s[i], advancing i; nothing when the sequence is malformed (overlong
// forms, surrogates and values past U+10FFFF included), with i unchanged.
std::optional<char32_t> next_code_point(std::string_view s, std::size_t& i);

// `text` fit for a page or a metric label: each malformed UTF-8 byte, control character and
// bidirectional formatting character becomes U+FFFD. The identity on any value the checks accept.
std::string printable(std::string_view text);

// The canonical text of an IP literal ("::0001" -> "::1", "FE80::1%Eth0" -> "fe80::1%Eth0": a zone
// stays as typed); the input when it is not one.
std::string canonical_address(std::string_view host);

}  // namespace relay
