// ip_prefix: IP address prefixes in CIDR notation (RFC 4632 for IPv4, RFC 4291 section 2.3 for
// IPv6), as a forward's `allow` and `deny` lists take them, and a set of them matched in O(log n).
#pragma once

#include <asio/ip/address.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace relay {

// An address and how many of its leading bits a client address must share with it. The bits past
// `length` are zero: "10.1.2.3/8" is not a prefix (parse_prefix says which one was meant).
struct ip_prefix {
  asio::ip::address address;
  unsigned length = 0;  // 0-32 for IPv4, 0-128 for IPv6

  bool operator==(const ip_prefix&) const = default;
};

// Entries an allow or deny list may hold.
inline constexpr std::size_t max_prefixes = 1024;

// "192.0.2.0/24", "2001:db8::/32", or a bare address, which is the prefix of that one address
// ("192.0.2.7" is 192.0.2.7/32, "::1" is ::1/128). The address is as inet_pton reads it (no zone, no
// leading zeros in IPv4 octets), the length decimal digits. Otherwise why not, as a sentence that
// begins with the text in quotes: host bits set (naming the prefix meant), a length out of range, or
// not an address at all.
std::variant<ip_prefix, std::string> parse_prefix(std::string_view text);

// The canonical text: "192.0.2.7/32", "2001:db8::/32" (RFC 5952's form of the address).
std::string to_string(const ip_prefix& p);

// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address a.b.c.d; any other as it is. The
// form the connections list shows and an IPv4 list entry matches, and a PROXY header carries.
asio::ip::address unmapped(const asio::ip::address& a);

// A list of prefixes as sorted, merged ranges of the IPv6 address space (IPv4 ones as their
// IPv4-mapped range, ::ffff:0:0/96), so a look-up is a binary search however long the list, and
// an IPv4-mapped IPv6 client address (::ffff:192.0.2.7) matches IPv4 entries. Built once when a
// forward is configured; immutable after, so any thread may match against it.
class prefix_set {
 public:
  prefix_set() = default;
  explicit prefix_set(const std::vector<ip_prefix>& prefixes);

  // Whether some prefix of the list contains `a`. False for an empty list.
  bool contains(const asio::ip::address& a) const;
  bool empty() const { return ranges_.empty(); }
  // Disjoint ranges after merging (for tests: overlapping and adjacent entries become one).
  std::size_t ranges() const { return ranges_.size(); }

 private:
  using key = std::pair<std::uint64_t, std::uint64_t>;  // an IPv6 address, high and low 64 bits
  static key key_of(const asio::ip::address& a);
  std::vector<std::pair<key, key>> ranges_;  // [first, last], sorted by first, disjoint, not adjacent
};

}  // namespace relay
