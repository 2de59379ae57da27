// connection_info: what the connections list shows of one live TCP connection or UDP session, and
// the page of them one listing answers.
#pragma once

#include "relay/forward_spec.hpp"

#include <asio/ip/address.hpp>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace relay {

// CLOCK_MONOTONIC_COARSE: the time of the last tick (a few ms old), read for a few nanoseconds
// without a system call, so a connection can note its last activity on every transfer.
struct coarse_clock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<coarse_clock>;
  static constexpr bool is_steady = true;
  static time_point now() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
  }
};

// TCP: until the target's connection is made (a PROXY header being read included), then both ways,
// then one direction finished. A UDP session is always `active`.
enum class connection_state : std::uint8_t { connecting, relaying, half_closed, active };
std::string_view to_string(connection_state s);

// A plain copy, made on the connection's worker and read anywhere.
struct connection_info {
  std::uint64_t id = 0;  // engine-wide, taken at accept (or a session's first datagram): ascending
  relay::protocol protocol = relay::protocol::tcp;
  asio::ip::address client_address;  // the PROXY-carried one when there is one; IPv4-mapped unmapped
  std::uint16_t client_port = 0;
  asio::ip::address listen_address;  // the local address and port it came in on
  std::uint16_t listen_port = 0;
  std::optional<std::string> target;  // host:port of the target it goes to; none while resolving
  connection_state state = connection_state::connecting;
  std::chrono::system_clock::time_point started_at;
  std::chrono::nanoseconds idle{0};  // since bytes last moved (or since it began)
  std::uint64_t bytes_up = 0;
  std::uint64_t bytes_down = 0;
};

// Up to `limit` connections in ascending id order, and whether more come after the last of them.
struct connection_page {
  std::vector<connection_info> items;
  bool more = false;
};

// One worker's part of a listing: of the connections in [first, last) whose id (id_of; 0: closed,
// never listed) is above `after`, the `limit` lowest, described (describe). A worker's connections
// are not in id order, so they are selected, and only those are described.
template <class It, class IdOf, class Describe>
connection_page select_page(It first, It last, std::uint64_t after, std::size_t limit, IdOf id_of,
                            Describe describe) {
  std::vector<std::pair<std::uint64_t, It>> found;
  for (auto it = first; it != last; ++it) {
    if (const std::uint64_t id = id_of(*it); id > after) found.emplace_back(id, it);
  }
  connection_page page;
  const auto by_id = [](const auto& a, const auto& b) { return a.first < b.first; };
  if (found.size() > limit) {
    page.more = true;
    std::nth_element(found.begin(), found.begin() + static_cast<std::ptrdiff_t>(limit), found.end(), by_id);
    found.resize(limit);
  }
  std::sort(found.begin(), found.end(), by_id);
  page.items.reserve(found.size());
  for (const auto& [id, it] : found) page.items.push_back(describe(*it));
  return page;
}

// The workers' parts as one page: merged in id order, cut to `limit`.
connection_page merge_pages(std::vector<connection_page> parts, std::size_t limit);

}  // namespace relay
