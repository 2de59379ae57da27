// ip_prefix: parsing CIDR prefixes strictly, and matching addresses against a list of them.
#include "relay/ip_prefix.hpp"

#include "relay/forward_spec.hpp"

#include <algorithm>
#include <charconv>

namespace relay {

namespace {

// The text as an error message quotes it: printable, and cut short, since a client chose it.
std::string quoted(std::string_view text) {
  constexpr std::size_t shown = 64;
  std::string out = "'";  // appended to, not `"'" + ...`: GCC 12 warns falsely (-Wrestrict) on that
  out += printable(text.substr(0, shown));
  out += text.size() > shown ? "...'" : "'";
  return out;
}

std::array<unsigned char, 16> bytes_of(const asio::ip::address& a) {
  if (a.is_v6()) return a.to_v6().to_bytes();
  return asio::ip::make_address_v6(asio::ip::v4_mapped, a.to_v4()).to_bytes();
}

// `bytes` with every bit from `bits` on cleared.
std::array<unsigned char, 16> masked(std::array<unsigned char, 16> bytes, unsigned bits) {
  for (unsigned i = 0; i < 16; ++i) {
    const unsigned kept = bits > i * 8 ? std::min(8u, bits - i * 8) : 0u;
    bytes[i] &= static_cast<unsigned char>(kept == 0 ? 0 : 0xFF << (8 - kept));
  }
  return bytes;
}

// The prefix's length in the IPv6 space where the set keeps every prefix.
unsigned v6_length(const ip_prefix& p) { return p.address.is_v4() ? 96 + p.length : p.length; }

}  // namespace

std::variant<ip_prefix, std::string> parse_prefix(std::string_view text) {
  const auto not_prefix = quoted(text) + " is not an IP address or a CIDR prefix (such as 192.0.2.0/24 or 2001:db8::/32)";
  const auto slash = text.find('/');
  const auto address_text = text.substr(0, slash);
  // inet_pton reads a C string: a NUL would end the address there and hide the rest of the entry.
  if (address_text.find('\0') != std::string_view::npos) return not_prefix;
  if (address_text.find('%') != std::string_view::npos) {
    return quoted(text) + " has a zone: a prefix matches client addresses on every interface";
  }
  std::error_code ec;
  const bool v6 = address_text.find(':') != std::string_view::npos;
  const auto address = v6 ? asio::ip::address(asio::ip::make_address_v6(std::string(address_text), ec))
                          : asio::ip::address(asio::ip::make_address_v4(std::string(address_text), ec));
  if (ec) return not_prefix;
  const unsigned max = v6 ? 128 : 32;
  unsigned length = max;
  if (slash != std::string_view::npos) {
    const auto digits = text.substr(slash + 1);
    const auto end = digits.data() + digits.size();
    if (digits.empty() || digits.size() > 3 || digits.find_first_not_of("0123456789") != std::string_view::npos ||
        (digits.size() > 1 && digits.front() == '0') ||
        std::from_chars(digits.data(), end, length).ptr != end) {
      return not_prefix;
    }
    if (length > max) {
      return quoted(text) + ": an " + (v6 ? "IPv6" : "IPv4") + " prefix length must be from 0 to " + std::to_string(max);
    }
  }
  const auto bytes = bytes_of(address);
  const auto network = masked(bytes, v6_length(ip_prefix{address, length}));
  // The prefix in the IPv6 space, as IPv4 when it lies within ::ffff:0:0/96: an IPv4-mapped prefix
  // ("::ffff:10.0.0.0/104") matches exactly the clients its IPv4 form (10.0.0.0/8) does, so it is
  // stored, shown and compared for repeats as that.
  const asio::ip::address_v6 in_v6(network);
  const bool mapped = in_v6.is_v4_mapped() && v6_length(ip_prefix{address, length}) >= 96;
  const ip_prefix canonical{mapped ? asio::ip::address(asio::ip::make_address_v4(asio::ip::v4_mapped, in_v6))
                                   : asio::ip::address(in_v6),
                            v6_length(ip_prefix{address, length}) - (mapped ? 96 : 0)};
  if (network != bytes) return quoted(text) + " has host bits set: the prefix is " + to_string(canonical);
  return canonical;
}

asio::ip::address unmapped(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  return a;
}

std::string to_string(const ip_prefix& p) { return p.address.to_string() + "/" + std::to_string(p.length); }

prefix_set::key prefix_set::key_of(const asio::ip::address& a) {
  const auto b = bytes_of(a);
  key k{0, 0};
  for (int i = 0; i < 8; ++i) k.first = k.first << 8 | b[static_cast<std::size_t>(i)];
  for (int i = 8; i < 16; ++i) k.second = k.second << 8 | b[static_cast<std::size_t>(i)];
  return k;
}

prefix_set::prefix_set(const std::vector<ip_prefix>& prefixes) {
  std::vector<std::pair<key, key>> spans;
  spans.reserve(prefixes.size());
  for (const auto& p : prefixes) {
    const auto first = key_of(p.address);
    const unsigned bits = v6_length(p);
    // The host part: the low 128 - bits bits, all ones.
    const std::uint64_t high_host = bits >= 64 ? 0 : (bits == 0 ? ~0ULL : ~0ULL >> bits);
    const std::uint64_t low_host = bits >= 128 ? 0 : (bits <= 64 ? ~0ULL : ~0ULL >> (bits - 64));
    spans.push_back({first, {first.first | high_host, first.second | low_host}});
  }
  std::sort(spans.begin(), spans.end());
  for (const auto& s : spans) {
    if (!ranges_.empty()) {
      auto& last = ranges_.back().second;
      // Overlapping, or adjacent (last + 1 == s.first): one range.
      key next = last.second == ~0ULL ? key{last.first + 1, 0} : key{last.first, last.second + 1};
      const bool at_end = last == key{~0ULL, ~0ULL};
      if (at_end || s.first <= last || s.first == next) {
        last = std::max(last, s.second);
        continue;
      }
    }
    ranges_.push_back(s);
  }
}

bool prefix_set::contains(const asio::ip::address& a) const {
  if (ranges_.empty()) return false;
  const auto k = key_of(a);
  // The last range that starts at or before k.
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), k,
                             [](const key& x, const std::pair<key, key>& r) { return x < r.first; });
  if (it == ranges_.begin()) return false;
  return k <= std::prev(it)->second;
}

}  // namespace relay
