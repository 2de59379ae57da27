// proxy_protocol: PROXY protocol headers built and read byte by byte (doc/proxy-protocol.txt).
#include "relay/proxy_protocol.hpp"

#include "relay/ip_prefix.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>

namespace relay {

namespace {

constexpr std::string_view v1_prefix = "PROXY ";
constexpr std::string_view v2_signature{"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A", 12};
// The shortest header of either version: "PROXY UNKNOWN\r\n" (a v2 header is at least 16 bytes).
constexpr std::size_t shortest_header = 15;

std::string hex_byte(unsigned char b) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%02x", b);
  return text;
}

// Section 2.1 wants hexadecimal groups; inet_ntop would write ::ffff:1.2.3.4 and ::1.2.3.4 dotted.
// RFC 5952: lower case, no leading zeros, the longest run of two or more zero groups (the first of
// equals) as "::".
std::string ipv6_text(const asio::ip::address_v6& a) {
  const auto bytes = a.to_bytes();
  std::array<unsigned, 8> groups{};
  for (std::size_t i = 0; i < 8; ++i) groups[i] = bytes[2 * i] << 8 | bytes[2 * i + 1];
  std::size_t best = 8, best_len = 1;
  for (std::size_t i = 0; i < 8;) {
    std::size_t j = i;
    while (j < 8 && groups[j] == 0) ++j;
    if (j - i > best_len) best = i, best_len = j - i;
    i = j == i ? i + 1 : j;
  }
  std::string out;
  char group[8];
  for (std::size_t i = 0; i < 8; ++i) {
    if (i == best) {
      out += "::";
      i += best_len - 1;
      continue;
    }
    if (!out.empty() && out.back() != ':') out += ':';
    std::snprintf(group, sizeof group, "%x", groups[i]);
    out += group;
  }
  return out;
}

void put_port(std::string& out, unsigned short port) {
  out += static_cast<char>(port >> 8);
  out += static_cast<char>(port & 0xff);
}

template <class Bytes>
void put_bytes(std::string& out, const Bytes& bytes) {
  out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

asio::ip::address_v6 as_v6(const asio::ip::address& a) {
  return a.is_v6() ? a.to_v6() : asio::ip::make_address_v6(asio::ip::v4_mapped, a.to_v4());
}

// Section 2.2: the family/transport bytes a receiver knows, and the address bytes each carries.
std::size_t v2_address_size(unsigned char family) {
  switch (family) {
    case 0x00: return 0;
    case 0x11: case 0x12: return 12;
    case 0x21: case 0x22: return 36;
    case 0x31: case 0x32: return 216;
    default: return SIZE_MAX;
  }
}

// Section 2.1: decimal 0-65535 without leading zeros.
bool parse_port(std::string_view text, unsigned short& port) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return false;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value > 65535) return false;
  port = static_cast<unsigned short>(value);
  return true;
}

// Section 2.2's address block for TCP/UDP: source, destination, source port, destination port.
template <class Address>
void read_addresses(const unsigned char* block, proxy_header& header) {
  typename Address::bytes_type source, destination;
  const std::size_t n = source.size();
  std::copy(block, block + n, source.begin());
  std::copy(block + n, block + 2 * n, destination.begin());
  const unsigned char* ports = block + 2 * n;
  header.source = {Address(source), static_cast<unsigned short>(ports[0] << 8 | ports[1])};
  header.destination = {Address(destination), static_cast<unsigned short>(ports[2] << 8 | ports[3])};
  header.addresses = proxy_addresses::carried;
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

}  // namespace

std::string proxy_v1_header(const asio::ip::tcp::endpoint& source, const asio::ip::tcp::endpoint& destination) {
  const auto a = unmapped(source.address()), b = unmapped(destination.address());
  std::string line;
  if (a.is_v4() && b.is_v4())
    line = "PROXY TCP4 " + a.to_string() + " " + b.to_string();
  else  // both IPv6, or mixed: the IPv4 one IPv4-mapped, so the target still learns the client
    line = "PROXY TCP6 " + ipv6_text(as_v6(a)) + " " + ipv6_text(as_v6(b));
  return line + " " + std::to_string(source.port()) + " " + std::to_string(destination.port()) + "\r\n";
}

std::string proxy_v2_header(const asio::ip::tcp::endpoint& source, const asio::ip::tcp::endpoint& destination,
                            proxy_transport transport, proxy_command command) {
  std::string out(v2_signature);
  out += static_cast<char>(0x20 | static_cast<unsigned char>(command));
  if (command == proxy_command::local) {
    out.append(3, '\0');  // family UNSPEC, length 0
    return out;
  }
  const auto src = unmapped(source.address()), dst = unmapped(destination.address());
  const bool v4 = src.is_v4() && dst.is_v4();
  out += static_cast<char>((v4 ? 0x10 : 0x20) | static_cast<unsigned char>(transport));
  put_port(out, v4 ? 12 : 36);
  if (v4) {
    put_bytes(out, src.to_v4().to_bytes());
    put_bytes(out, dst.to_v4().to_bytes());
  } else {
    put_bytes(out, as_v6(src).to_bytes());
    put_bytes(out, as_v6(dst).to_bytes());
  }
  put_port(out, source.port());
  put_port(out, destination.port());
  return out;
}

std::size_t proxy_header_parser::feed(std::string_view bytes) {
  std::size_t taken = 0;
  while (taken < bytes.size() && state_ == status::need_more) accept_byte(bytes[taken++]);
  return taken;
}

std::size_t proxy_header_parser::safe_read_size() const {
  if (state_ != status::need_more) return 0;
  const std::size_t n = buffer_.size();
  if (v2_size_ != 0) return v2_size_ - n;
  if (n == 0) return shortest_header;
  if (buffer_[0] != 'P') return proxy_v2_fixed_size - n;
  return n < shortest_header ? shortest_header - n : 1;
}

bool proxy_header_parser::fail(std::string why) {
  state_ = status::error;
  error_ = std::move(why);
  return false;
}

bool proxy_header_parser::accept_byte(char c) {
  buffer_ += c;
  if (buffer_.size() == 1 && c != 'P' && c != '\x0D')
    return fail("neither a PROXY v1 (\"PROXY \") nor a v2 header: the first byte is " + hex_byte(c));
  return buffer_[0] == 'P' ? check_v1_byte() : check_v2_fixed();
}

bool proxy_header_parser::check_v1_byte() {
  const std::size_t n = buffer_.size();
  const char c = buffer_.back();
  const char previous = n > 1 ? buffer_[n - 2] : '\0';
  if (n <= v1_prefix.size()) {
    if (c != v1_prefix[n - 1]) return fail("v1 header: does not begin with \"PROXY \"");
    return true;
  }
  if (previous == '\r' && c != '\n') return fail("v1 header: a CR not followed by LF");
  if (c == '\n') {
    if (previous != '\r') return fail("v1 header: a lone LF instead of CRLF");
    finish_v1();
    return state_ == status::done;
  }
  if (n >= proxy_v1_max_line || (n == proxy_v1_max_line - 1 && c != '\r'))
    return fail("v1 header: no CRLF within " + std::to_string(proxy_v1_max_line) + " bytes");

  const std::string_view rest = std::string_view(buffer_).substr(v1_prefix.size());
  static constexpr std::array<std::string_view, 4> protocols{"TCP4 ", "TCP6 ", "UNKNOWN ", "UNKNOWN\r"};
  bool known = false;
  for (auto p : protocols) known = known || rest.substr(0, p.size()) == p.substr(0, rest.size());
  if (!known) return fail("v1 header: the protocol is not TCP4, TCP6 or UNKNOWN");
  if (rest[0] == 'U' || rest.size() <= 5) return true;  // UNKNOWN: the rest of its line is ignored

  const bool v4 = rest[3] == '4';
  if (c == ' ' && previous == ' ') return fail("v1 header: two spaces in a row");
  const bool address_char = v4 ? (c >= '0' && c <= '9') || c == '.' : is_hex(c) || c == ':' || c == '.';
  const bool allowed = address_char || c == ' ' || c == '\r';
  if (!allowed)
    return fail(std::string("v1 header: ") + hex_byte(c) + " is not part of a " + (v4 ? "TCP4" : "TCP6") + " line");
  return true;
}

void proxy_header_parser::finish_v1() {
  const std::string_view line = std::string_view(buffer_).substr(0, buffer_.size() - 2);  // without CRLF
  header_.version = 1;
  header_.size = buffer_.size();
  header_.transport = proxy_transport::stream;
  if (line.substr(v1_prefix.size(), 7) == "UNKNOWN") {
    header_.addresses = proxy_addresses::unknown;
    state_ = status::done;
    return;
  }
  const bool v4 = line[v1_prefix.size() + 3] == '4';
  std::array<std::string_view, 4> fields;  // source, destination, source port, destination port
  std::string_view rest = line.substr(v1_prefix.size() + 5);
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const auto space = rest.find(' ');
    if ((space == std::string_view::npos) != (i == fields.size() - 1) || space == 0 || rest.empty()) {
      fail("v1 header: a TCP4 or TCP6 line has exactly four fields after the protocol, one space apart");
      return;
    }
    fields[i] = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view{} : rest.substr(space + 1);
  }
  asio::ip::address addresses[2];
  for (int i = 0; i < 2; ++i) {
    const std::string text(fields[i]);
    std::error_code ec;
    if (v4)
      addresses[i] = asio::ip::make_address_v4(text.c_str(), ec);
    else
      addresses[i] = asio::ip::make_address_v6(text.c_str(), ec);
    if (ec) {
      fail("v1 header: \"" + text + "\" is not an " + (v4 ? "IPv4" : "IPv6") + " address");
      return;
    }
  }
  unsigned short ports[2];
  for (int i = 0; i < 2; ++i)
    if (!parse_port(fields[2 + i], ports[i])) {
      fail("v1 header: \"" + std::string(fields[2 + i]) + "\" is not a port (0-65535, no leading zeros)");
      return;
    }
  header_.addresses = proxy_addresses::carried;
  header_.source = {addresses[0], ports[0]};
  header_.destination = {addresses[1], ports[1]};
  state_ = status::done;
}

bool proxy_header_parser::check_v2_fixed() {
  const std::size_t n = buffer_.size();
  const auto c = static_cast<unsigned char>(buffer_.back());
  if (n <= v2_signature.size()) {
    if (buffer_.back() != v2_signature[n - 1])
      return fail("v2 header: byte " + std::to_string(n) + " is " + hex_byte(c) + ", not the signature's");
    return true;
  }
  const auto command = static_cast<unsigned char>(buffer_[12]) & 0x0f;
  if (n == 13) {
    if (c >> 4 != 2) return fail("v2 header: version " + std::to_string(c >> 4) + " is not 2");
    if (command > 1) return fail("v2 header: command " + hex_byte(command) + " is neither LOCAL nor PROXY");
  } else if (n == 14) {
    if (command == 1 && v2_address_size(c) == SIZE_MAX)
      return fail("v2 header: family and transport " + hex_byte(c) + " are not ones the spec defines");
  } else if (n == 16) {
    const std::size_t length = static_cast<unsigned char>(buffer_[14]) << 8 | c;
    v2_size_ = proxy_v2_fixed_size + length;
    if (v2_size_ > proxy_v2_max_size)
      return fail("v2 header: " + std::to_string(v2_size_) + " bytes is over the limit of " +
                  std::to_string(proxy_v2_max_size));
    const auto family = static_cast<unsigned char>(buffer_[13]);
    if (command == 1 && length < v2_address_size(family))
      return fail("v2 header: length " + std::to_string(length) + " is too short for family " + hex_byte(family) +
                  "'s " + std::to_string(v2_address_size(family)) + " address bytes");
  }
  if (n == v2_size_) finish_v2();
  return state_ != status::error;
}

void proxy_header_parser::finish_v2() {
  header_.version = 2;
  header_.size = v2_size_;
  const auto* p = reinterpret_cast<const unsigned char*>(buffer_.data());
  const unsigned char family = p[13];
  header_.transport = (family & 0x0f) == 2 ? proxy_transport::dgram : proxy_transport::stream;
  if ((p[12] & 0x0f) == 0 || family == 0x00) {
    // LOCAL discards the block, family included; UNSPEC's address information is to be ignored.
    header_.addresses = (p[12] & 0x0f) == 0 ? proxy_addresses::local : proxy_addresses::unknown;
    state_ = status::done;
    return;
  }
  const std::size_t address_size = v2_address_size(family);
  const unsigned char* a = p + proxy_v2_fixed_size;
  if (address_size == 12) {
    read_addresses<asio::ip::address_v4>(a, header_);
  } else if (address_size == 36) {
    read_addresses<asio::ip::address_v6>(a, header_);
  } else {
    header_.addresses = proxy_addresses::unknown;  // AF_UNIX: falls back to UNSPEC (section 2.2)
  }
  // Sections 2.2.1-2.2.8: type (1 byte), length (2 bytes, big-endian), value; skipped, but each must
  // end within the header.
  for (std::size_t at = proxy_v2_fixed_size + address_size; at < v2_size_;) {
    if (v2_size_ - at < 3) {
      fail("v2 header: " + std::to_string(v2_size_ - at) + " bytes at the end are too few for a TLV");
      return;
    }
    const std::size_t value_size = p[at + 1] << 8 | p[at + 2];
    if (value_size > v2_size_ - at - 3) {
      fail("v2 header: TLV of type " + hex_byte(p[at]) + " runs " + std::to_string(value_size - (v2_size_ - at - 3)) +
           " bytes past the header's end");
      return;
    }
    at += 3 + value_size;
  }
  state_ = status::done;
}

}  // namespace relay
