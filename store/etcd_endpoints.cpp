// etcd_endpoints: the --etcd-endpoints list, and etcd's prefix range end.
#include "store/etcd_client.hpp"

#include <charconv>

namespace store::etcd {

namespace {

bool parse_port(std::string_view text, std::uint16_t& port) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty() || value == 0 || value > 65535) return false;
  port = static_cast<std::uint16_t>(value);
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// One endpoint, or why not.
std::optional<endpoint> parse_endpoint(std::string_view text, std::string& why) {
  endpoint e;
  e.text = std::string(text);
  if (text.starts_with("unix://")) {
    e.scheme = endpoint::kind::unix_socket;
    e.socket_path = std::string(text.substr(7));
    if (!e.socket_path.starts_with('/')) {
      why = "a unix endpoint names an absolute path: unix:///PATH";
      return std::nullopt;
    }
    if (e.socket_path.size() > 107) {  // sockaddr_un's sun_path holds 108 bytes with the NUL
      why = "the socket path is longer than 107 bytes";
      return std::nullopt;
    }
    return e;
  }
  if (text.starts_with("http://")) {
    text.remove_prefix(7);
  } else if (text.starts_with("https://")) {
    e.scheme = endpoint::kind::https;
    text.remove_prefix(8);
  } else {
    why = "the scheme is none of http://, https://, unix://";
    return std::nullopt;
  }
  if (text.ends_with('/')) text.remove_suffix(1);
  std::string_view port;
  const bool bracketed = text.starts_with('[');
  if (bracketed) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      why = "an IPv6 host is written [ADDRESS]:PORT";
      return std::nullopt;
    }
    e.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      why = "no port (HOST:PORT)";
      return std::nullopt;
    }
    e.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  if (e.host.empty() || e.host.find_first_of("/@?#[] ") != std::string::npos ||
      (e.host.find(':') != std::string::npos && !bracketed)) {
    why = "no valid host";
    return std::nullopt;
  }
  if (!parse_port(port, e.port)) {
    why = "the port is not a number from 1 to 65535";
    return std::nullopt;
  }
  return e;
}

}  // namespace

std::optional<std::vector<endpoint>> parse_endpoints(std::string_view list, std::string& error) {
  std::vector<endpoint> out;
  if (trim(list).empty()) {
    error = "no etcd endpoint given";
    return std::nullopt;
  }
  for (;;) {
    const auto comma = list.find(',');
    const auto item = trim(list.substr(0, comma));
    std::string why;
    auto e = parse_endpoint(item, why);
    if (!e) {
      error = "etcd endpoint \"" + std::string(item) + "\": " + why;
      return std::nullopt;
    }
    out.push_back(std::move(*e));
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key: etcd reads range_end "\0" as "to the end"
}

}  // namespace store::etcd
