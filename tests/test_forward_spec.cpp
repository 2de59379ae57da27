// forward_spec: field checks and printing.
#include "relay/forward_spec.hpp"

#include <catch2/catch.hpp>

using namespace relay;

TEST_CASE("names: up to 64 printable characters, UTF-8 counted by character", "[api]") {
  CHECK_FALSE(check_name(""));
  CHECK_FALSE(check_name("web frontend #1"));
  CHECK_FALSE(check_name(std::string(64, 'a')));
  CHECK(check_name(std::string(65, 'a')));
  std::string accents;
  for (int i = 0; i < 64; ++i) accents += "\xC3\xA9";  // 64 x "é": 128 bytes, 64 characters
  CHECK_FALSE(check_name(accents));
  CHECK(check_name(accents + "e"));
  CHECK(check_name("tab\there"));
  CHECK(check_name("new\nline"));
  CHECK(check_name(std::string("nul\0x", 5)));
  CHECK(check_name("del\x7f"));
  CHECK(check_name("\xC2\x85"));      // C1 control (NEL)
  CHECK(check_name("\xC3"));          // truncated sequence
  CHECK(check_name("\xFF\xFE"));      // not UTF-8
}

TEST_CASE("listen_host: IP literals only", "[api]") {
  CHECK_FALSE(check_listen_host("0.0.0.0"));
  CHECK_FALSE(check_listen_host("127.0.0.1"));
  CHECK_FALSE(check_listen_host("::"));
  CHECK_FALSE(check_listen_host("::1"));
  CHECK(check_listen_host("localhost"));
  CHECK(check_listen_host(""));
  CHECK(check_listen_host("[::1]"));
  CHECK(check_listen_host("256.0.0.1"));
  CHECK(check_listen_host("127.0.0.1:80"));
  CHECK(canonical_address("::0001") == "::1");
}

TEST_CASE("target_host: host names and IP literals, 1 to 253 characters", "[api]") {
  for (const char* ok : {"example.com", "db-1.internal", "localhost", "10.0.0.1", "::1", "fe80::1", "my_service",
                         "a.b.c.", "xn--bcher-kva.example"}) {
    INFO(ok);
    CHECK_FALSE(check_target_host(ok));
  }
  for (const char* bad : {"", ".", "-bad.com", "bad-.com", "a..b", "[::1]", "host:80", "spa ce", "ex!ample.com",
                          "http://example.com", "a/b", ".leading"}) {
    INFO(bad);
    CHECK(check_target_host(bad));
  }
  CHECK(check_target_host(std::string(64, 'a') + ".com"));  // label over 63
  std::string long_name;
  while (long_name.size() < 252) long_name += "abcdefghi.";
  CHECK(check_target_host(long_name.substr(0, 254)));
  CHECK_FALSE(check_target_host(long_name.substr(0, 249) + "abc"));
}

TEST_CASE("IPv6 zones: only on link-local addresses, an interface name or index, kept as typed", "[api]") {
  // The interface need not exist for the form to pass: check_interface asks that, of a request only.
  for (const char* ok : {"fe80::1%eth0", "FE80::1%Eth0", "fe80::1%2", "fe80::1%nosuchif0", "fe80::1%" "abcdefghijklmno",
                         "febf::1%wlan0"}) {
    INFO(ok);
    CHECK_FALSE(check_listen_host(ok));
    CHECK_FALSE(check_target_host(ok));
  }
  for (const char* bad : {"fe80::1%", "fe80::1%a/b", "fe80::1%a:b", "fe80::1%a b", "fe80::1%eth0%1", "fe80::1%.",
                          "fe80::1%" "abcdefghijklmnop", "2001:db8::1%eth0", "2001:db8::1%2", "::1%lo", "::%lo",
                          "::ffff:127.0.0.1%lo", "fec0::1%eth0"}) {
    INFO(bad);
    CHECK(check_listen_host(bad));
    CHECK(check_target_host(bad));
  }
  CHECK(check_target_host("2001:db8::1%eth0")->find("link-local") != std::string::npos);
  // Nothing can listen on a link-local address without its link; a target's connect reports it.
  CHECK(check_listen_host("fe80::1")->find("needs a zone") != std::string::npos);
  CHECK_FALSE(check_target_host("fe80::1"));
  CHECK(check_listen_host("127.0.0.1%lo"));

  CHECK(canonical_address("FE80::0001%Eth0") == "fe80::1%Eth0");
  CHECK(canonical_address("fe80::1%1") == "fe80::1%1");
  CHECK(canonical_address("fe80::1%nosuchif0") == "fe80::1%nosuchif0");
  CHECK(format_endpoint("fe80::1%eth0", 80) == "[fe80::1%eth0]:80");
}

TEST_CASE("endpoints print with brackets around IPv6", "[api]") {
  CHECK(format_endpoint("127.0.0.1", 80) == "127.0.0.1:80");
  CHECK(format_endpoint("::1", 443) == "[::1]:443");
  CHECK(parse_protocol("tcp") == protocol::tcp);
  CHECK(parse_protocol("udp") == protocol::udp);
  CHECK_FALSE(parse_protocol("TCP"));
}
