// forward_spec: printing and field validation of the forward configuration value.
#include "relay/forward_spec.hpp"

#include "relay/ip_zone.hpp"

#include <asio/ip/address.hpp>

#include <algorithm>
#include <array>
#include <utility>

namespace relay {

std::string_view to_string(protocol p) { return p == protocol::tcp ? "tcp" : "udp"; }

std::optional<protocol> parse_protocol(std::string_view text) {
  if (text == "tcp") return protocol::tcp;
  if (text == "udp") return protocol::udp;
  return std::nullopt;
}

std::string format_endpoint(std::string_view host, std::uint16_t port) {
  std::string out;
  if (host.find(':') != std::string_view::npos) {
    out.append("[").append(host).append("]");
  } else {
    out.append(host);
  }
  return out.append(":").append(std::to_string(port));
}

std::string listen_endpoint(const forward_spec& s) {
  const auto one = format_endpoint(s.listen_host, s.listen_port);
  return s.listen_port_end ? one + "-" + std::to_string(*s.listen_port_end) : one;
}

std::uint32_t range_size(const forward_spec& s) {
  return s.listen_port_end && *s.listen_port_end > s.listen_port ? *s.listen_port_end - s.listen_port + 1u : 1u;
}

std::uint16_t last_port(const forward_spec& s) {
  return static_cast<std::uint16_t>(s.listen_port + range_size(s) - 1);
}
std::string target_endpoint(const target_spec& t) { return format_endpoint(t.host, t.port); }

std::string targets_summary(const forward_spec& s) {
  std::string out;
  for (const auto& t : s.targets) {
    if (!out.empty()) out += ", ";
    out += target_endpoint(t);
  }
  return out;
}

namespace {
constexpr std::array<std::pair<balance_policy, std::string_view>, 4> balance_names{{
    {balance_policy::round_robin, "round_robin"},
    {balance_policy::least_conn, "least_conn"},
    {balance_policy::source_hash, "source_hash"},
    {balance_policy::first, "first"},
}};
}  // namespace

std::string_view to_string(balance_policy b) {
  for (const auto& [value, name] : balance_names) {
    if (value == b) return name;
  }
  return "round_robin";
}

std::optional<balance_policy> parse_balance(std::string_view text) {
  for (const auto& [value, name] : balance_names) {
    if (name == text) return value;
  }
  return std::nullopt;
}

namespace {

bool is_ip_literal(std::string_view host) {
  std::error_code ec;
  asio::ip::make_address(std::string(host), ec);
  return !ec;
}


bool is_control(char32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp < 0xA0); }

// The explicit bidirectional formatting characters: with them a name can display as another name.
bool is_bidi_control(char32_t cp) {
  return cp == 0x200E || cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

// Why a host field is unusable before any address parsing looks at it: the parsers read C strings,
// so a NUL would end the value early and what follows would be stored unchecked.
std::optional<std::string> check_host_characters(std::string_view field, std::string_view host) {
  for (std::size_t i = 0; i < host.size();) {
    auto cp = next_code_point(host, i);
    if (!cp) return std::string(field) + " must be valid UTF-8";
    if (is_control(*cp)) return std::string(field) + " must not contain control characters";
  }
  return std::nullopt;
}

}  // namespace

std::optional<char32_t> next_code_point(std::string_view s, std::size_t& i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char lead = byte(i);
  std::size_t len = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > s.size()) return std::nullopt;
  char32_t cp = len == 1 ? lead : lead & (0x7F >> len);
  for (std::size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return std::nullopt;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  constexpr char32_t shortest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < shortest[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return std::nullopt;
  i += len;
  return cp;
}

std::optional<std::string> check_name(std::string_view name) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < name.size();) {
    auto cp = next_code_point(name, i);
    if (!cp) return "name must be valid UTF-8";
    if (is_control(*cp)) return "name must contain only printable characters";
    if (is_bidi_control(*cp)) {
      return "name must not contain bidirectional control characters (U+200E, U+200F, U+202A to U+202E, "
             "U+2066 to U+2069)";
    }
    if (++count > 64) return "name must be at most 64 characters";
  }
  return std::nullopt;
}

std::optional<std::string> check_listen_host(std::string_view host) {
  if (auto bad = check_host_characters("listen_host", host)) return bad;
  if (!is_ip_literal(host)) return "listen_host must be an IPv4 or IPv6 address literal, e.g. \"0.0.0.0\" or \"::1\"";
  if (auto bad = check_zone("listen_host", host)) return bad;
  if (lacks_zone(host)) return "listen_host: a link-local address needs a zone naming its interface, e.g. \"fe80::1%eth0\"";
  return std::nullopt;
}

std::optional<std::string> check_target_host(std::string_view host) {
  if (auto bad = check_host_characters("target_host", host)) return bad;
  if (host.empty() || host.size() > 253) return "target_host must be 1 to 253 characters long";
  if (is_ip_literal(host)) return check_zone("target_host", host);
  const std::string_view bad = "target_host must be a host name or an IP address literal (without brackets)";
  std::string_view rest = host.back() == '.' ? host.substr(0, host.size() - 1) : host;
  if (rest.empty()) return std::string(bad);
  while (!rest.empty()) {
    auto dot = rest.find('.');
    std::string_view label = rest.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return std::string(bad);
    for (char c : label) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
      if (!ok) return std::string(bad);
    }
    rest = dot == std::string_view::npos ? std::string_view{} : rest.substr(dot + 1);
    if (dot != std::string_view::npos && rest.empty()) return std::string(bad);
  }
  return std::nullopt;
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t start = i;
    auto cp = next_code_point(text, i);
    if (!cp) ++i;  // one replacement per bad byte, then decoding resumes
    if (!cp || is_control(*cp) || is_bidi_control(*cp)) {
      out += "\xEF\xBF\xBD";  // U+FFFD
    } else {
      out.append(text.substr(start, i - start));
    }
  }
  return out;
}

std::string canonical_address(std::string_view host) {
  const auto [text, zone] = split_zone(host);
  std::error_code ec;
  auto addr = asio::ip::make_address(std::string(text), ec);
  if (ec) return std::string(host);
  return zone ? addr.to_string() + "%" + std::string(*zone) : addr.to_string();
}

std::uint64_t burst_bytes_for(const bandwidth_limit_spec& limit, std::uint64_t rate) {
  return limit.burst_bytes ? *limit.burst_bytes : std::max(rate / 10, min_burst_bytes);
}

}  // namespace relay
