// forward_spec: the configuration of one forward, a pure value with no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace relay {

enum class protocol { tcp, udp };

std::string_view to_string(protocol p);
std::optional<protocol> parse_protocol(std::string_view text);

struct forward_spec {
  std::int64_t id = 0;  // assigned by the store; 0 until then
  std::string name;
  relay::protocol protocol = protocol::tcp;
  std::string listen_host = "0.0.0.0";
  std::uint16_t listen_port = 0;  // 0 until bound: the kernel picks
  std::string target_host;
  std::uint16_t target_port = 0;
  bool enabled = true;
  // UDP only: a session idle this long either way is closed; past this many the least recent goes.
  std::uint32_t udp_idle_timeout_s = 60;
  std::uint32_t udp_max_sessions = 4096;

  bool operator==(const forward_spec&) const = default;
};

// "host:port", with brackets around IPv6 literals.
std::string format_endpoint(std::string_view host, std::uint16_t port);
std::string listen_endpoint(const forward_spec& s);
std::string target_endpoint(const forward_spec& s);

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
