// ip_zone: zones checked and resolved.
#include "relay/ip_zone.hpp"

#include <catch2/catch.hpp>

#include <net/if.h>

namespace {

const unsigned lo_index = if_nametoindex("lo");

}  // namespace

TEST_CASE("ip_zone: a zone names an interface by name or by index - unknown ones are told apart") {
  REQUIRE(lo_index != 0);
  CHECK(relay::split_zone("fe80::1%eth0").address == "fe80::1");
  CHECK(relay::split_zone("fe80::1%eth0").zone == "eth0");
  CHECK_FALSE(relay::split_zone("fe80::1").zone);
  CHECK(relay::split_zone("fe80::1%").zone == "");

  CHECK(relay::interface_index("lo").value() == lo_index);
  CHECK(relay::interface_index(std::to_string(lo_index)).value() == lo_index);
  for (const char* none : {"nosuchif0", "", "0", "4294967295", "99999999999", "+1", "1x", "lo/"}) {
    INFO(none);
    const auto index = relay::interface_index(none);
    REQUIRE_FALSE(index);
    CHECK(index.error().code == std::errc::no_such_device);
  }
  CHECK_FALSE(relay::check_interface("fe80::1%lo"));
  CHECK_FALSE(relay::check_interface("::1"));
  CHECK(relay::check_interface("fe80::1%nosuchif0") == "unknown network interface 'nosuchif0'");

  auto a = relay::scoped_address("fe80::1%lo");
  REQUIRE(a);
  CHECK(a.value().to_v6().scope_id() == lo_index);
  a = relay::scoped_address("fe80::1%" + std::to_string(lo_index));
  REQUIRE(a);
  CHECK(a.value().to_v6().scope_id() == lo_index);
  a = relay::scoped_address("127.0.0.1");
  REQUIRE(a);
  CHECK(a.value() == asio::ip::make_address("127.0.0.1"));
  a = relay::scoped_address("fe80::1%nosuchif0");
  REQUIRE_FALSE(a);
  CHECK(a.error().code == std::errc::no_such_device);
  CHECK(a.error().message == "unknown network interface 'nosuchif0'");
  CHECK_FALSE(relay::scoped_address("fe80::zz%lo"));
}
