// forward_spec: printing and field validation of the forward configuration value.
#include "relay/forward_spec.hpp"

#include <asio/ip/address.hpp>

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

std::string listen_endpoint(const forward_spec& s) { return format_endpoint(s.listen_host, s.listen_port); }
std::string target_endpoint(const forward_spec& s) { return format_endpoint(s.target_host, s.target_port); }

namespace {

bool is_ip_literal(std::string_view host) {
  std::error_code ec;
  asio::ip::make_address(std::string(host), ec);
  return !ec;
}

// Decodes one UTF-8 code point at s[i], advancing i; nothing when the sequence is malformed.
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
  i += len;
  return cp;
}

}  // namespace

std::optional<std::string> check_name(std::string_view name) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < name.size();) {
    auto cp = next_code_point(name, i);
    if (!cp) return "name must be valid UTF-8";
    if (*cp < 0x20 || (*cp >= 0x7F && *cp < 0xA0)) return "name must contain only printable characters";
    if (++count > 64) return "name must be at most 64 characters";
  }
  return std::nullopt;
}

std::optional<std::string> check_listen_host(std::string_view host) {
  if (!is_ip_literal(host)) return "listen_host must be an IPv4 or IPv6 address literal, e.g. \"0.0.0.0\" or \"::1\"";
  return std::nullopt;
}

std::optional<std::string> check_target_host(std::string_view host) {
  if (host.empty() || host.size() > 253) return "target_host must be 1 to 253 characters long";
  if (is_ip_literal(host)) return std::nullopt;
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

std::string canonical_address(std::string_view host) {
  std::error_code ec;
  auto addr = asio::ip::make_address(std::string(host), ec);
  return ec ? std::string(host) : addr.to_string();
}

}  // namespace relay
