// socket_options: setsockopt, getsockopt and ioctl on the relay's sockets, and the hand-made connect.
#include "relay/socket_options.hpp"

#include <ifaddrs.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace relay {

void set_connection_options(int fd) {
  const int one = 1, idle = 60, interval = 10, count = 6;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

void size_buffers(int fd, int bytes) {
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  }
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  }
}

std::error_code receive_destinations(int fd, bool v6) {
  const int on = 1;
  const int r = v6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on)
                   : ::setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
  return r == 0 ? std::error_code() : std::error_code(errno, std::system_category());
}

void reset_on_close(asio::ip::tcp::socket& s) {
  std::error_code ignored;
  s.set_option(asio::socket_base::linger(true, 0), ignored);
}

connect_start start_connect(asio::ip::tcp::socket& s, const asio::ip::tcp::endpoint& to, connect_options options,
                            const std::optional<asio::ip::address>& source) {
  std::error_code ec;
  s.close(ec);
  if (source) {
    if (ec = check_family(to.address(), *source); ec) return {connect_state::failed, ec, false};
  }
  const int fd = ::socket(to.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return {connect_state::failed, last_error(), true};
  if (options == connect_options::connection) set_connection_options(fd);
  if (s.assign(to.protocol(), fd, ec); ec) {
    ::close(fd);
    return {connect_state::failed, ec, false};
  }
  if (source) {
    if (ec = bind_source(fd, *source, true); ec) return {connect_state::failed, ec, false};
  }
  if (::connect(fd, to.data(), static_cast<socklen_t>(to.size())) == 0) return {connect_state::connected, {}, false};
  if (errno != EINPROGRESS) return {connect_state::failed, last_error(), false};
  return {connect_state::in_progress, {}, false};
}

namespace {

class source_family_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "source_address"; }
  std::string message(int e) const override {
    return static_cast<source_family_error>(e) == source_family_error::ipv6_target_ipv4_source
               ? "the target address is IPv6 but source_address is IPv4"
               : "the target address is IPv4 but source_address is IPv6";
  }
};

}  // namespace

std::error_code make_error_code(source_family_error e) {
  static const source_family_category category;
  return {static_cast<int>(e), category};
}

std::error_code check_family(const asio::ip::address& target, const asio::ip::address& source) {
  if (target.is_v6() == source.is_v6()) return {};
  return target.is_v6() ? source_family_error::ipv6_target_ipv4_source : source_family_error::ipv4_target_ipv6_source;
}

std::error_code bind_source(int fd, const asio::ip::address& source, bool no_port) {
  if (no_port) {
    const int one = 1;  // IPPROTO_IP on IPv6 sockets too: the kernel keeps the flag in the inet socket
    ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  }
  const asio::ip::tcp::endpoint at(source, 0);  // a sockaddr of the right family and size
  return ::bind(fd, at.data(), static_cast<socklen_t>(at.size())) == 0 ? std::error_code() : last_error();
}

std::error_code check_local_address(const asio::ip::address& address) {
  const asio::ip::tcp::endpoint at(address, 0);
  const int fd = ::socket(at.protocol().family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return last_error();
  const auto ec = ::bind(fd, at.data(), static_cast<socklen_t>(at.size())) == 0 ? std::error_code() : last_error();
  ::close(fd);
  return ec;
}

bool is_local_broadcast(const asio::ip::address& address) {
  if (!address.is_v4()) return false;  // IPv6 has no broadcast
  const std::uint32_t a = address.to_v4().to_uint();
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return false;  // the bind check and the connections will say
  bool found = false;
  for (const ifaddrs* i = list; i && !found; i = i->ifa_next) {
    if (!i->ifa_addr || !i->ifa_netmask || i->ifa_addr->sa_family != AF_INET) continue;
    const std::uint32_t ip = ntohl(reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
    const std::uint32_t mask = ntohl(reinterpret_cast<const sockaddr_in*>(i->ifa_netmask)->sin_addr.s_addr);
    const bool prefix_with_broadcast = (~mask & 0x3u) == 0x3u && mask != 0;  // /1 to /30
    found = prefix_with_broadcast && (a & mask) == (ip & mask) && (a | mask) == 0xffffffffu;
  }
  ::freeifaddrs(list);
  return found;
}

int send_queue(asio::ip::tcp::socket& s) {
  int queued = 0;
  return s.is_open() && ::ioctl(s.native_handle(), SIOCOUTQ, &queued) == 0 ? queued : 0;
}

bool unread(asio::ip::tcp::socket& s) {
  int queued = 0;
  return s.is_open() && ::ioctl(s.native_handle(), SIOCINQ, &queued) == 0 && queued > 0;
}

bool gone(asio::ip::tcp::socket& s) {
  tcp_info info{};
  socklen_t len = sizeof info;
  return !s.is_open() || ::getsockopt(s.native_handle(), IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
         info.tcpi_state == TCP_CLOSE;
}

std::error_code pending_error(int fd) {
  int error = 0;
  socklen_t len = sizeof error;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
  if (error == 0) return {};
  return {error, asio::error::get_system_category()};
}

}  // namespace relay
