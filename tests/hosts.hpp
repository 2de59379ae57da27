// test_hosts: the host names the tests resolve, the same on every machine (see tests/main.cpp).
#pragma once

namespace test_hosts {

// Set by main: the tests' own /etc/hosts is in place.
extern bool installed;

// `localhost` as Debian lists it: getaddrinfo gives ::1 first (RFC 6724 order), then 127.0.0.1.
inline constexpr const char* localhost = "localhost";
// Only 127.0.0.1.
inline constexpr const char* v4_only = "v4.portrelay.test";
// Only ::1.
inline constexpr const char* v6_only = "v6.portrelay.test";
// ::1 first, then 127.0.0.1, as localhost (a name no other part of the machine answers for).
inline constexpr const char* dual = "dual.portrelay.test";

inline constexpr const char* file =
    "127.0.0.1 localhost v4.portrelay.test dual.portrelay.test\n"
    "::1 localhost ip6-localhost ip6-loopback v6.portrelay.test dual.portrelay.test\n";

}  // namespace test_hosts
