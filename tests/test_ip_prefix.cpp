// ip_prefix: CIDR prefixes parsed strictly into their canonical form, and matched as merged ranges.
#include "relay/ip_prefix.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <variant>

namespace {

std::string canonical(std::string_view text) {
  auto parsed = relay::parse_prefix(text);
  if (auto* why = std::get_if<std::string>(&parsed)) return "error: " + *why;
  return relay::to_string(std::get<relay::ip_prefix>(parsed));
}

relay::prefix_set set_of(std::initializer_list<std::string_view> texts) {
  std::vector<relay::ip_prefix> list;
  for (auto t : texts) list.push_back(std::get<relay::ip_prefix>(relay::parse_prefix(t)));
  return relay::prefix_set(list);
}

bool has(const relay::prefix_set& s, const char* address) { return s.contains(asio::ip::make_address(address)); }

}  // namespace

TEST_CASE("a prefix reads into its canonical form and a bare address is a prefix of one address", "[engine]") {
  CHECK(canonical("192.0.2.7") == "192.0.2.7/32");
  CHECK(canonical("10.0.0.0/8") == "10.0.0.0/8");
  CHECK(canonical("0.0.0.0/0") == "0.0.0.0/0");
  CHECK(canonical("2001:DB8:0:0::/32") == "2001:db8::/32");
  CHECK(canonical("::1") == "::1/128");
  CHECK(canonical("::/0") == "::/0");
  // An IPv4-mapped prefix is its IPv4 form: it matches the same clients.
  CHECK(canonical("::ffff:10.0.0.0/104") == "10.0.0.0/8");
  CHECK(canonical("::ffff:192.0.2.7") == "192.0.2.7/32");
  CHECK(canonical("::ffff:0.0.0.0/96") == "0.0.0.0/0");
  CHECK(canonical("::fffe:0:0/95") == "::fffe:0:0/95");
}

TEST_CASE("a bad prefix is refused with the reason and for host bits the prefix meant", "[engine]") {
  CHECK(canonical("10.1.2.3/8") == "error: '10.1.2.3/8' has host bits set: the prefix is 10.0.0.0/8");
  CHECK(canonical("2001:db8::1/32") == "error: '2001:db8::1/32' has host bits set: the prefix is 2001:db8::/32");
  CHECK(canonical("::ffff:10.1.2.3/104") == "error: '::ffff:10.1.2.3/104' has host bits set: the prefix is 10.0.0.0/8");
  CHECK(canonical("10.0.0.0/33") == "error: '10.0.0.0/33': an IPv4 prefix length must be from 0 to 32");
  CHECK(canonical("::/129") == "error: '::/129': an IPv6 prefix length must be from 0 to 128");
  for (const char* bad : {"nonsense", "", "/8", "10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0.0/8/8",
                          "010.0.0.0/8", "10.0.0/8", "10.0.0.0/0008", "10.0.0.0/08", " 10.0.0.0/8", "example.com"}) {
    INFO(bad);
    CHECK(canonical(bad).find("is not an IP address or a CIDR prefix") != std::string::npos);
  }
  CHECK(canonical("fe80::1%lo/128").find("has a zone") != std::string::npos);
  CHECK(canonical(std::string(200, '1')).size() < 200);  // the message quotes a long text cut short
}

TEST_CASE("a prefix set matches what its prefixes contain and nothing else", "[engine]") {
  const auto s = set_of({"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"});
  CHECK(has(s, "10.0.0.0"));
  CHECK(has(s, "10.255.255.255"));
  CHECK_FALSE(has(s, "11.0.0.0"));
  CHECK_FALSE(has(s, "9.255.255.255"));
  CHECK(has(s, "192.0.2.7"));
  CHECK_FALSE(has(s, "192.0.2.6"));
  CHECK_FALSE(has(s, "192.0.2.8"));
  CHECK(has(s, "2001:db8:ffff::1"));
  CHECK_FALSE(has(s, "2001:db9::"));
  // An IPv4-mapped IPv6 client (a dual-stack listener's, or a PROXY header's) matches IPv4 entries.
  CHECK(has(s, "::ffff:10.1.2.3"));
  CHECK(has(s, "::ffff:192.0.2.7"));
  CHECK_FALSE(has(s, "::ffff:192.0.2.8"));
  CHECK_FALSE(relay::prefix_set().contains(asio::ip::make_address("10.0.0.1")));
}

TEST_CASE("a prefix set merges overlapping and adjacent prefixes and covers the whole space", "[engine]") {
  CHECK(set_of({"10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16"}).ranges() == 1);
  CHECK(set_of({"10.0.0.0/24", "10.0.2.0/24"}).ranges() == 2);
  const auto all = set_of({"::/0", "0.0.0.0/0"});
  CHECK(all.ranges() == 1);
  CHECK(has(all, "::"));
  CHECK(has(all, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
  CHECK(has(all, "255.255.255.255"));
  const auto v4all = set_of({"0.0.0.0/0"});
  CHECK(has(v4all, "0.0.0.0"));
  CHECK(has(v4all, "255.255.255.255"));
  CHECK_FALSE(has(v4all, "::1"));
  CHECK_FALSE(has(v4all, "2001:db8::1"));
  const auto top = set_of({"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"});
  CHECK(top.ranges() == 1);
  CHECK(has(top, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"));
  // A list of the most entries, every other /24: each its own range, each found.
  std::vector<relay::ip_prefix> many;
  for (unsigned i = 0; i < relay::max_prefixes; ++i) {
    many.push_back({asio::ip::make_address_v4((10u << 24) | ((2 * i) << 8)), 24});
  }
  const relay::prefix_set big(many);
  CHECK(big.ranges() == relay::max_prefixes);
  for (unsigned i = 0; i < 2 * relay::max_prefixes; ++i) {
    CHECK(big.contains(asio::ip::make_address_v4((10u << 24) | (i << 8) | 7)) == (i % 2 == 0));
  }
}
