// proxy_protocol: the PROXY protocol header (HAProxy's doc/proxy-protocol.txt, versions 1 and 2)
// built for a target and read from a client, as bytes only: no sockets, no I/O.
#pragma once

#include <asio/ip/tcp.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace relay {

// The spec's limits. Section 2.1: a v1 line is at most 107 bytes including its CRLF ("PROXY UNKNOWN"
// with two full IPv6 addresses and ports). Section 2.2 allows a v2 length field up to 65535; a receiver
// here refuses a v2 header whose total (16 + length) is over 4 KiB, which leaves room for every TLV
// the spec defines.
inline constexpr std::size_t proxy_v1_max_line = 107;
inline constexpr std::size_t proxy_v2_fixed_size = 16;
inline constexpr std::size_t proxy_v2_max_size = 4096;

// Section 2.2, the 14th byte's low four bits: the transport the addresses belong to.
enum class proxy_transport : std::uint8_t { stream = 1, dgram = 2 };
// Section 2.2, the 13th byte's low four bits. LOCAL: the proxy's own connection (a health check);
// the receiver keeps the connection's real addresses.
enum class proxy_command : std::uint8_t { local = 0, proxy = 1 };

// Addresses and ports as both versions carry them. An IPv4-mapped IPv6 address (::ffff:a.b.c.d, what
// a dual-stack listener on :: reports for an IPv4 client) counts as IPv4 when a header is built, so a
// target sees the IPv4 client it would have seen itself. Then, as HAProxy's senders do:
//
// Version 1 (section 2.1): "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" when both addresses are
// IPv4, "PROXY TCP6 ..." when both are IPv6 (written as hexadecimal groups, RFC 5952's compression,
// never a dotted IPv4 tail), and also TCP6 when the families differ, the IPv4 address written
// IPv4-mapped (as HAProxy's make_proxy_line_v1 does), so the client is never lost. 22 to 104 bytes.
std::string proxy_v1_header(const asio::ip::tcp::endpoint& source, const asio::ip::tcp::endpoint& destination);

// Version 2 (section 2.2): the 12-byte signature, 0x21 (version 2, PROXY) or 0x20 (LOCAL), the
// family/transport byte, the big-endian length of what follows, then source address, destination
// address, source port, destination port, all in network byte order. Both IPv4: family 0x1, 12 address
// bytes (28 in all); otherwise family 0x2 with any IPv4 address written IPv4-mapped, 36 address bytes
// (52 in all). proxy_command::local ignores the endpoints: "\x20\x00" and length 0 (16 bytes), as
// the spec asks of a LOCAL sender. No TLVs.
std::string proxy_v2_header(const asio::ip::tcp::endpoint& source, const asio::ip::tcp::endpoint& destination,
                            proxy_transport transport = proxy_transport::stream,
                            proxy_command command = proxy_command::proxy);

// What a received header says about the connection.
enum class proxy_addresses {
  carried,  // source and destination hold the client's addresses
  local,    // v2 LOCAL: use the connection's real addresses (section 2.2)
  unknown,  // v1 UNKNOWN, or v2 PROXY with an unspecified or AF_UNIX family: use the real addresses
};

struct proxy_header {
  unsigned version = 0;      // 1 or 2
  std::size_t size = 0;      // bytes of the stream the header took (v1 with its CRLF; v2 16 + length)
  proxy_addresses addresses = proxy_addresses::unknown;
  proxy_transport transport = proxy_transport::stream;  // v1 is always stream
  // Only when addresses == carried. As sent: a v1 TCP6 or v2 family 0x2 header keeps an IPv4-mapped
  // address as IPv6; the caller decides whether to unmap it.
  asio::ip::tcp::endpoint source;
  asio::ip::tcp::endpoint destination;
};

// Reads one header from the start of a client's stream, fed in pieces as they arrive. The version is
// told by the first byte: 'P' begins v1's "PROXY ", 0x0D v2's signature (section 2.2's detection);
// anything else is refused at once, so a client that sends something else fails on its first byte.
// Every field is refused as the moment it cannot be valid any more (a wrong signature byte, a bad v2
// version, command or family, a v2 length over the limit or too short for the family's addresses,
// a character that no v1 field allows, a v1 line that reaches 107 bytes without its CRLF), and the
// rest when the header is complete:
//   v1 (section 2.1): "PROXY", single spaces, "TCP4", "TCP6" or "UNKNOWN" (whose rest up to the CRLF
//      is ignored), two addresses of that family (IPv4 dotted decimal without leading zeros; IPv6 as
//      inet_pton reads it, no zone), two decimal ports 0-65535 without leading zeros, then CRLF; a lone
//      CR or LF is an error.
//   v2 (section 2.2): version 2, command LOCAL or PROXY, family/transport one of 0x00 0x11 0x12 0x21
//      0x22 0x31 0x32 (LOCAL ignores the family and the whole address block), length at least the
//      family's addresses (12, 36, 216), 16 + length at most 4 KiB; after the addresses, TLVs (section
//      2.2.1-2.2.8) whose framing must end exactly at the header's end; their contents are skipped.
class proxy_header_parser {
 public:
  enum class status { need_more, done, error };

  // Takes bytes from the front of `bytes` and returns how many it took: never one past the header's
  // end, so after `done`, bytes.substr(taken) is the client's first data. Nothing once done or failed.
  std::size_t feed(std::string_view bytes);

  status state() const { return state_; }
  // A read of at most this many bytes cannot go past the header's end (0 once done or failed): for a
  // caller that reads the header straight from a socket and leaves everything after it there.
  std::size_t safe_read_size() const;
  // Valid when state() == done.
  const proxy_header& header() const { return header_; }
  // Why, when state() == error: a sentence such as "v2 header: command 0x3 is neither LOCAL nor PROXY".
  const std::string& error() const { return error_; }

 private:
  bool accept_byte(char c);  // false once done or failed
  bool check_v1_byte();
  void finish_v1();
  bool check_v2_fixed();
  void finish_v2();
  bool fail(std::string why);

  status state_ = status::need_more;
  std::string buffer_;  // the header so far, at most 4 KiB
  std::size_t v2_size_ = 0;  // 16 + length once the length is known
  proxy_header header_;
  std::string error_;
};

}  // namespace relay
