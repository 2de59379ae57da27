// proxy_protocol: headers byte-exact against doc/proxy-protocol.txt, and the parser's verdicts.
#include "relay/proxy_protocol.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <string_view>

namespace {

using namespace std::string_literals;
using relay::proxy_header_parser;
using status = proxy_header_parser::status;

asio::ip::tcp::endpoint ep(const char* address, unsigned short port) {
  return {asio::ip::make_address(address), port};
}

// Section 2.2's signature, then whatever follows.
std::string v2(std::string rest) { return "\r\n\r\n\0\r\nQUIT\n"s + rest; }

struct outcome {
  status state;
  std::size_t taken;
  std::string error;
  relay::proxy_header header;
};

outcome parse(std::string_view bytes) {
  proxy_header_parser p;
  const auto taken = p.feed(bytes);
  return {p.state(), taken, p.error(), p.header()};
}

// Fed one byte at a time; every read it asks for stays inside the header.
outcome parse_bytewise(std::string_view bytes) {
  proxy_header_parser p;
  std::size_t taken = 0;
  while (taken < bytes.size() && p.state() == status::need_more) {
    CHECK(p.safe_read_size() >= 1);
    CHECK(p.feed(bytes.substr(taken, 1)) == 1);
    ++taken;
  }
  return {p.state(), taken, p.error(), p.header()};
}

std::string to_text(const asio::ip::tcp::endpoint& e) { return e.address().to_string() + " " + std::to_string(e.port()); }

}  // namespace

TEST_CASE("a v1 header is the spec's line for IPv4 and IPv6 and TCP6 with the IPv4 side mapped when the families differ", "[engine]") {
  // Section 2.1's own example.
  CHECK(relay::proxy_v1_header(ep("192.168.0.1", 56324), ep("192.168.0.11", 443)) ==
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
  CHECK(relay::proxy_v1_header(ep("2001:db8::1", 56324), ep("2001:DB8:0:0:1:0:0:11", 443)) ==
        "PROXY TCP6 2001:db8::1 2001:db8::1:0:0:11 56324 443\r\n");
  // Hexadecimal groups only, never inet_ntop's dotted tail.
  CHECK(relay::proxy_v1_header(ep("::102:304", 0), ep("::", 65535)) == "PROXY TCP6 ::102:304 :: 0 65535\r\n");
  // IPv4-mapped addresses (a dual-stack listener's IPv4 client) are sent as IPv4.
  CHECK(relay::proxy_v1_header(ep("::ffff:10.0.0.1", 1000), ep("::ffff:10.0.0.2", 2000)) ==
        "PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\n");
  CHECK(relay::proxy_v1_header(ep("::ffff:10.0.0.1", 1000), ep("10.0.0.2", 2000)) ==
        "PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\n");
  // Mixed families: never UNKNOWN, which would lose the client; the IPv4 side goes IPv4-mapped.
  CHECK(relay::proxy_v1_header(ep("10.0.0.1", 1000), ep("2001:db8::2", 2000)) ==
        "PROXY TCP6 ::ffff:a00:1 2001:db8::2 1000 2000\r\n");
  CHECK(relay::proxy_v1_header(ep("::ffff:10.0.0.1", 1000), ep("::1", 2000)) ==
        "PROXY TCP6 ::ffff:a00:1 ::1 1000 2000\r\n");
  CHECK(relay::proxy_v1_header(ep("2001:db8::1", 1000), ep("::ffff:10.0.0.2", 2000)) ==
        "PROXY TCP6 2001:db8::1 ::ffff:a00:2 1000 2000\r\n");
  // And what it sends parses back to the same client.
  const auto back = parse(relay::proxy_v1_header(ep("10.0.0.1", 1000), ep("2001:db8::2", 2000)));
  CHECK(back.header.source == ep("::ffff:10.0.0.1", 1000));
  // The longest TCP6 line is section 2.1's 104 bytes.
  const auto full = ep("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
  CHECK(relay::proxy_v1_header(full, full).size() == 104);
}

TEST_CASE("a v2 header is the spec's signature, version and command, family, length, addresses, ports", "[engine]") {
  CHECK(relay::proxy_v2_header(ep("192.168.0.1", 56324), ep("192.168.0.11", 443)) ==
        v2("\x21\x11\x00\x0c"
           "\xc0\xa8\x00\x01"
           "\xc0\xa8\x00\x0b"
           "\xdc\x04\x01\xbb"s));
  CHECK(relay::proxy_v2_header(ep("192.168.0.1", 56324), ep("192.168.0.11", 443), relay::proxy_transport::dgram) ==
        v2("\x21\x12\x00\x0c"
           "\xc0\xa8\x00\x01"
           "\xc0\xa8\x00\x0b"
           "\xdc\x04\x01\xbb"s));
  const std::string ipv6 =
      "\x21\x21\x00\x24"
      "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
      "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x11"
      "\xdc\x04\x01\xbb"s;
  CHECK(relay::proxy_v2_header(ep("2001:db8::1", 56324), ep("2001:db8::11", 443)) == v2(ipv6));
  auto dgram6 = ipv6;
  dgram6[1] = '\x22';
  CHECK(relay::proxy_v2_header(ep("2001:db8::1", 56324), ep("2001:db8::11", 443), relay::proxy_transport::dgram) ==
        v2(dgram6));
  CHECK(relay::proxy_v2_header(ep("::ffff:127.0.0.1", 1), ep("::ffff:127.0.0.2", 2)) ==
        v2("\x21\x11\x00\x0c\x7f\x00\x00\x01\x7f\x00\x00\x02\x00\x01\x00\x02"s));
  // Mixed families: both as IPv6, the IPv4 one mapped (as HAProxy's sender does).
  CHECK(relay::proxy_v2_header(ep("127.0.0.1", 1), ep("::1", 2)) ==
        v2("\x21\x21\x00\x24"
           "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x7f\x00\x00\x01"
           "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
           "\x00\x01\x00\x02"s));
  // LOCAL: UNSPEC and no addresses, whatever the endpoints.
  CHECK(relay::proxy_v2_header(ep("127.0.0.1", 1), ep("127.0.0.2", 2), relay::proxy_transport::stream,
                               relay::proxy_command::local) == v2("\x20\x00\x00\x00"s));
}

TEST_CASE("a header built here reads back as the same addresses, whole or a byte at a time", "[engine]") {
  const std::pair<const char*, const char*> pairs[] = {
      {"192.0.2.1", "198.51.100.7"}, {"2001:db8::5", "2001:db8:1::1"}, {"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}};
  for (auto [s, d] : pairs) {
    const auto source = ep(s, 0), destination = ep(d, 65535);
    for (const auto& bytes : {relay::proxy_v1_header(source, destination), relay::proxy_v2_header(source, destination),
                              relay::proxy_v2_header(source, destination, relay::proxy_transport::dgram)}) {
      INFO(s << " " << d << " version " << (bytes[0] == 'P' ? 1 : 2));
      for (const auto& r : {parse(bytes + "after"), parse_bytewise(bytes + "after")}) {
        REQUIRE(r.state == status::done);
        CHECK(r.taken == bytes.size());
        CHECK(r.header.size == bytes.size());
        CHECK(r.header.version == (bytes[0] == 'P' ? 1u : 2u));
        CHECK(r.header.addresses == relay::proxy_addresses::carried);
        CHECK(to_text(r.header.source) == to_text(source));
        CHECK(to_text(r.header.destination) == to_text(destination));
        CHECK(r.header.transport == (bytes[0] != 'P' && (bytes[13] & 0x0f) == 2 ? relay::proxy_transport::dgram
                                                                              : relay::proxy_transport::stream));
      }
    }
  }
}

TEST_CASE("a v1 TCP6 line may carry an IPv4-mapped address as HAProxy's sender writes it", "[engine]") {
  // inet_ntop's dotted tail: not the spec's hexadecimal groups, but what HAProxy and others send.
  auto r = parse("PROXY TCP6 ::ffff:192.0.2.1 2001:DB8::2 40000 443\r\n");
  REQUIRE(r.state == status::done);
  CHECK(to_text(r.header.source) == "::ffff:192.0.2.1 40000");
  CHECK(to_text(r.header.destination) == "2001:db8::2 443");
}

TEST_CASE("the parser takes the header and not one byte of what follows it", "[engine]") {
  const std::string data = "GET / HTTP/1.1\r\n\r\n";
  for (const auto& header : {relay::proxy_v1_header(ep("10.0.0.1", 1), ep("10.0.0.2", 2)),
                             relay::proxy_v2_header(ep("10.0.0.1", 1), ep("10.0.0.2", 2)), "PROXY UNKNOWN\r\n"s,
                             relay::proxy_v2_header({}, {}, relay::proxy_transport::stream, relay::proxy_command::local)}) {
    const std::string stream = header + data;
    proxy_header_parser p;
    const auto taken = p.feed(stream);
    REQUIRE(p.state() == status::done);
    CHECK(taken == header.size());
    CHECK(stream.substr(taken) == data);
    CHECK(p.feed(data) == 0);  // done: takes nothing more
    CHECK(p.safe_read_size() == 0);
  }
  // Reading only safe_read_size() bytes at a time never reaches the data.
  const auto header = relay::proxy_v2_header(ep("2001:db8::1", 1), ep("2001:db8::2", 2));
  const std::string stream = header + data;
  proxy_header_parser p;
  std::size_t at = 0;
  while (p.state() == status::need_more) {
    const auto n = p.safe_read_size();
    REQUIRE(at + n <= header.size());
    at += p.feed(std::string_view(stream).substr(at, n));
  }
  CHECK(at == header.size());
}

TEST_CASE("UNKNOWN, LOCAL and unsupported families say to use the real addresses", "[engine]") {
  CHECK(parse("PROXY UNKNOWN\r\n").header.addresses == relay::proxy_addresses::unknown);
  // Section 2.1's worst case, 107 bytes: the rest of an UNKNOWN line is ignored.
  const std::string f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const std::string longest = "PROXY UNKNOWN " + f + " " + f + " 65535 65535\r\n";
  REQUIRE(longest.size() == 107);
  auto r = parse_bytewise(longest);
  CHECK(r.state == status::done);
  CHECK(r.header.size == 107);
  CHECK(r.header.addresses == relay::proxy_addresses::unknown);

  r = parse(v2("\x20\x00\x00\x00"s));
  CHECK(r.state == status::done);
  CHECK(r.header.addresses == relay::proxy_addresses::local);
  // LOCAL with an address block: the receiver must skip what the length says, family ignored.
  r = parse(v2("\x20\x11\x00\x0c"s + std::string(12, '\x01') + "data"));
  CHECK(r.state == status::done);
  CHECK(r.taken == 28);
  CHECK(r.header.addresses == relay::proxy_addresses::local);
  r = parse(v2("\x21\x00\x00\x03xyz"s));  // PROXY with UNSPEC
  CHECK(r.state == status::done);
  CHECK(r.header.addresses == relay::proxy_addresses::unknown);
  r = parse(v2("\x21\x31\x00\xd8"s + std::string(216, '\0')));  // AF_UNIX stream falls back to UNSPEC
  CHECK(r.state == status::done);
  CHECK(r.header.size == 232);
  CHECK(r.header.addresses == relay::proxy_addresses::unknown);
}

TEST_CASE("v2 TLVs are skipped when their framing ends at the header's end, refused otherwise", "[engine]") {
  const std::string addresses = "\x7f\x00\x00\x01\x7f\x00\x00\x02\x00\x01\x00\x02"s;
  // ALPN "h2" and an empty NOOP: 12 + 5 + 3 = 20 bytes.
  auto r = parse(v2("\x21\x11\x00\x14"s + addresses + "\x01\x00\x02h2\x04\x00\x00"s + "data"));
  REQUIRE(r.state == status::done);
  CHECK(r.taken == 36);
  CHECK(to_text(r.header.source) == "127.0.0.1 1");
  // The largest header allowed: 4 KiB, one NOOP TLV filling it.
  const std::size_t noop = relay::proxy_v2_max_size - 16 - 12 - 3;
  r = parse(v2("\x21\x11\x0f\xf0"s + addresses + "\x04"s + char(noop >> 8) + char(noop & 0xff) + std::string(noop, 'x')));
  CHECK(r.state == status::done);
  CHECK(r.taken == relay::proxy_v2_max_size);

  // A TLV that says 3 bytes where 2 are left.
  r = parse(v2("\x21\x11\x00\x11"s + addresses + "\x01\x00\x03h2"s));
  CHECK(r.state == status::error);
  CHECK_THAT(r.error, Catch::Contains("past the header's end"));
  // One or two bytes left over: too short for a TLV's type and length.
  r = parse(v2("\x21\x11\x00\x0e"s + addresses + "\x04\x00"s));
  CHECK(r.state == status::error);
  CHECK_THAT(r.error, Catch::Contains("too few for a TLV"));
}

TEST_CASE("a client that sends no PROXY header is refused on its first bytes", "[engine]") {
  for (const auto& [bytes, at] : std::initializer_list<std::pair<std::string, std::size_t>>{
           {"GET / HTTP/1.1\r\n", 1}, {"\x16\x03\x01\x02\x00"s, 1}, {"SSH-2.0-OpenSSH\r\n", 1}, {"\0"s, 1},
           {"PROXZ", 5}, {"PROXY\r\n", 6}, {"\r\n\r\n\x01"s, 5}, {"\r\n\r\n\0\r\nQUIT\r"s, 12}}) {
    INFO(bytes);
    proxy_header_parser p;
    CHECK(p.feed(bytes + "more bytes") == at);
    CHECK(p.state() == status::error);
    if (at == 1) CHECK_THAT(p.error(), Catch::Contains("neither a PROXY v1"));
  }
}

TEST_CASE("every malformed or oversized header is an error, whole or a byte at a time", "[engine]") {
  const std::string f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const std::string v4 = "\x7f\x00\x00\x01\x7f\x00\x00\x02\x00\x01\x00\x02"s;
  const std::pair<std::string, std::string> cases[] = {
      // v1 (section 2.1)
      {"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"},
      {"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "two spaces"},
      {"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "two spaces"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "four fields"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "four fields"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "four fields"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "lone LF"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "CR not followed by LF"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8\n1 2\r\n", "lone LF"},
      {"PROXY UNKNOWN\n", "lone LF"},
      {"PROXY UNKNOWNX\r\n", "protocol"},
      {"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"},
      {"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"},
      {"PROXY TCP4\r\n", "protocol"},
      {"PROXY \r\n", "protocol"},
      {"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "not an IPv4 address"},
      {"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "not an IPv4 address"},
      {"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "not an IPv4 address"},
      {"PROXY TCP4 ::1 ::1 1 2\r\n", "not part of a TCP4 line"},
      {"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "not an IPv6 address"},
      {"PROXY TCP6 fe80::1%lo ::1 1 2\r\n", "not part of a TCP6 line"},
      {"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "not an IPv6 address"},
      {"PROXY TCP6 ::g ::1 1 2\r\n", "not part of a TCP6 line"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "not a port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", "not a port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", "not a port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "not part of a TCP4 line"},
      {"PROXY TCP6 ::1 ::1 1 ab\r\n", "not a port"},
      {"PROXY UNKNOWN " + f + " " + f + " 65535 655350\r\n", "no CRLF within 107 bytes"},  // 108 bytes
      {"PROXY UNKNOWN " + std::string(200, 'x'), "no CRLF within 107 bytes"},
      // v2 (section 2.2)
      {v2("\x11\x11\x00\x0c"s + v4), "version 1 is not 2"},
      {v2("\x31\x11\x00\x0c"s + v4), "version 3 is not 2"},
      {v2("\x22\x11\x00\x0c"s + v4), "neither LOCAL nor PROXY"},
      {v2("\x2f\x11\x00\x0c"s + v4), "neither LOCAL nor PROXY"},
      {v2("\x21\x13\x00\x0c"s + v4), "not ones the spec defines"},
      {v2("\x21\x41\x00\x0c"s + v4), "not ones the spec defines"},
      {v2("\x21\x10\x00\x0c"s + v4), "not ones the spec defines"},
      {v2("\x21\x01\x00\x0c"s + v4), "not ones the spec defines"},
      {v2("\x21\x11\x00\x0b"s + v4), "too short"},
      {v2("\x21\x12\x00\x00"s), "too short"},
      {v2("\x21\x21\x00\x23"s + std::string(35, '\0')), "too short"},
      {v2("\x21\x31\x00\xd7"s + std::string(215, '\0')), "too short"},
      {v2("\x21\x11\x0f\xf1"s + v4 + std::string(4081 - 12, '\0')), "over the limit"},
      {v2("\x20\x00\xff\xff"s), "over the limit"},
      {"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c"s + v4, "byte 11"},
  };
  for (const auto& [bytes, why] : cases) {
    INFO(bytes);
    for (const auto& r : {parse(bytes + "data"), parse_bytewise(bytes + "data")}) {
      CHECK(r.state == status::error);
      CHECK_THAT(r.error, Catch::Contains(why));
    }
  }
}

TEST_CASE("a partial header waits for more", "[engine]") {
  const auto v1 = relay::proxy_v1_header(ep("10.0.0.1", 1), ep("10.0.0.2", 2));
  const auto v2h = relay::proxy_v2_header(ep("10.0.0.1", 1), ep("10.0.0.2", 2));
  for (const auto& header : {v1, v2h}) {
    proxy_header_parser p;
    CHECK(p.feed(std::string_view(header).substr(0, header.size() - 1)) == header.size() - 1);
    CHECK(p.state() == status::need_more);
    CHECK(p.safe_read_size() == 1);
    CHECK(p.feed(std::string_view(header).substr(header.size() - 1)) == 1);
    CHECK(p.state() == status::done);
  }
}
