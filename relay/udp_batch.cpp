// udp_batch: recvmmsg/sendmmsg/GSO batches on a worker's scratch space, with IP_PKTINFO control data.
#include "relay/udp_batch.hpp"

#include "relay/forward_stats.hpp"
#include "relay/socket_options.hpp"

#include <netinet/udp.h>

#include <cerrno>
#include <cstring>

namespace relay {

reply_source::reply_source(const asio::ip::address& local) {
  if (local.is_unspecified()) return;
  auto* c = reinterpret_cast<cmsghdr*>(space_.bytes.data());
  if (local.is_v4()) {
    // ipi_spec_dst is the source; ifindex 0 lets the routing table pick the way out, as for any reply.
    in_pktinfo info{};
    const auto bytes = local.to_v4().to_bytes();
    std::memcpy(&info.ipi_spec_dst, bytes.data(), bytes.size());
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof info);
    std::memcpy(CMSG_DATA(c), &info, sizeof info);
    size_ = CMSG_SPACE(sizeof info);
  } else {
    const auto v6 = local.to_v6();
    in6_pktinfo info{};
    const auto bytes = v6.to_bytes();
    std::memcpy(&info.ipi6_addr, bytes.data(), bytes.size());
    info.ipi6_ifindex = static_cast<unsigned>(v6.scope_id());  // 0 unless link-local: then it is required
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof info);
    std::memcpy(CMSG_DATA(c), &info, sizeof info);
    size_ = CMSG_SPACE(sizeof info);
  }
}

asio::ip::address destination(const msghdr& m) {
  if (m.msg_controllen == 0 || (m.msg_flags & MSG_CTRUNC)) return {};
  for (auto* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&m), c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      // ipi_spec_dst, not ipi_addr: the kernel's choice of local address for the reply, which is the
      // destination itself for unicast and a unicast address of ours for a broadcast or multicast one.
      in_pktinfo info;
      std::memcpy(&info, CMSG_DATA(c), sizeof info);
      asio::ip::address_v4::bytes_type bytes;
      std::memcpy(bytes.data(), &info.ipi_spec_dst, bytes.size());
      return asio::ip::address_v4(bytes);
    }
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      in6_pktinfo info;
      std::memcpy(&info, CMSG_DATA(c), sizeof info);
      asio::ip::address_v6::bytes_type bytes;
      std::memcpy(bytes.data(), &info.ipi6_addr, bytes.size());
      asio::ip::address_v6 a(bytes);
      if (a.is_multicast()) return {};  // no source address: the kernel picks one
      if (a.is_link_local()) a.scope_id(info.ipi6_ifindex);
      return a;
    }
  }
  return {};
}

void batch_space::arm(bool addresses, bool destinations) {
  for (int i = 0; i < slots; ++i) {
    in_iov[i] = {slot(i), max_datagram};
    in[i].msg_hdr = msghdr{};
    in[i].msg_hdr.msg_iov = &in_iov[i];
    in[i].msg_hdr.msg_iovlen = 1;
    if (addresses) {
      in[i].msg_hdr.msg_name = &from[i];
      in[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    if (destinations) {
      in[i].msg_hdr.msg_control = to[i].bytes.data();
      in[i].msg_hdr.msg_controllen = to[i].bytes.size();
    }
  }
}

void batch_space::queue(int count, int i, const asio::ip::udp::endpoint* to, const reply_source* source,
                        std::string_view head) {
  out_iov[count] = {slot(i), in[i].msg_len};
  out[count].msg_hdr = msghdr{};
  out[count].msg_hdr.msg_iov = &out_iov[count];
  out[count].msg_hdr.msg_iovlen = 1;
  if (!head.empty()) {  // gathered by the send: the slot's payload is not moved
    out_headed[count] = {iovec{const_cast<char*>(head.data()), head.size()}, out_iov[count]};
    out[count].msg_hdr.msg_iov = out_headed[count].data();
    out[count].msg_hdr.msg_iovlen = 2;
  }
  if (to) {
    out[count].msg_hdr.msg_name = const_cast<sockaddr*>(to->data());
    out[count].msg_hdr.msg_namelen = static_cast<socklen_t>(to->size());
  }
  if (source && source->size()) {
    out[count].msg_hdr.msg_control = source->control();
    out[count].msg_hdr.msg_controllen = source->size();
  }
}

batch_space& scratch() {
  thread_local batch_space space;
  return space;
}

namespace {

// One system call for a run of same-size datagrams to one destination (the last may be shorter):
// UDP generic segmentation offload (UDP_SEGMENT) passes the run down the stack once and cuts it
// into its datagrams at the end (on loopback, at the receiving socket). The kernel's bounds: at
// most 64 segments and one IP packet's worth of bytes.
constexpr int max_gso_segments = 64;
constexpr std::size_t max_gso_bytes = 65000;

// How many of the queued datagrams from `first` on can leave as one GSO send: same destination,
// same source (a run never mixes replies from two local addresses).
int gso_run(const batch_space& b, int first, int count) {
  const auto size = b.out_iov[first].iov_len;
  const auto& head = b.out[first].msg_hdr;
  std::size_t total = size;
  int k = 1;
  while (first + k < count && k < max_gso_segments) {
    const auto len = b.out_iov[first + k].iov_len;
    const auto& next = b.out[first + k].msg_hdr;
    if (next.msg_name != head.msg_name || next.msg_control != head.msg_control || len > size || len == 0 ||
        total + len > max_gso_bytes) {
      break;
    }
    total += len;
    ++k;
    if (len < size) break;  // a shorter one can only end the run
  }
  return k;
}

// sendmmsg of queued datagrams [first, first + count) on `fd`, counting into `t` as send_batch. A
// datagram the kernel refuses is dropped; after an ICMP error that was waiting on the socket the
// rest are dropped too (the caller moves the session elsewhere); after any other error the rest
// still go. Returns false when the rest were dropped (the socket is full, or the destination is
// unreachable): never queued.
bool send_each(int fd, batch_space& b, int first, int count, send_tally& t) {
  int done = 0;
  while (done < count) {
    const int n = ::sendmmsg(fd, b.out.data() + first + done, static_cast<unsigned>(count - done), MSG_DONTWAIT);
    if (n > 0) {
      for (int i = first + done; i < first + done + n; ++i) t.bytes += b.out[i].msg_len;
      t.datagrams += static_cast<std::uint64_t>(n);
      done += n;
      continue;
    }
    if (would_block(errno) || errno == ENOBUFS || is_unreachable(errno)) {
      if (is_unreachable(errno)) t.unreachable = errno;
      t.dropped += static_cast<std::uint64_t>(count - done);
      return false;
    }
    ++t.dropped;  // this one is refused; the next may well go
    ++done;
  }
  return true;
}

}  // namespace

send_tally send_batch(int fd, batch_space& b, int count, bool& gso) {
  send_tally t;
  if (fd < 0) {
    t.dropped = static_cast<std::uint64_t>(count);
    return t;
  }
  int singles = 0;  // queued datagrams from here on that go by sendmmsg
  int i = 0;
  while (i < count) {
    const int k = gso ? gso_run(b, i, count) : 1;
    if (k < 2) {
      ++i;
      continue;
    }
    if (i > singles && !send_each(fd, b, singles, i - singles, t)) {
      t.dropped += static_cast<std::uint64_t>(count - i);
      return t;
    }
    // The run's own control data (its source address, if any), then the segment size.
    const auto size = static_cast<std::uint16_t>(b.out_iov[i].iov_len);
    const std::size_t own = b.out[i].msg_hdr.msg_controllen;
    alignas(cmsghdr) char control[sizeof(pktinfo_space) + CMSG_SPACE(sizeof size)] = {};
    if (own) std::memcpy(control, b.out[i].msg_hdr.msg_control, own);
    msghdr m = b.out[i].msg_hdr;
    m.msg_iov = &b.out_iov[i];  // the run's buffers, in order: one payload cut every `size` bytes
    m.msg_iovlen = static_cast<std::size_t>(k);
    m.msg_control = control;
    m.msg_controllen = own + CMSG_SPACE(sizeof size);
    auto* c = reinterpret_cast<cmsghdr*>(control + own);  // `own` is a whole CMSG_SPACE: aligned
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof size);
    std::memcpy(CMSG_DATA(c), &size, sizeof size);
    const ssize_t sent = ::sendmsg(fd, &m, MSG_DONTWAIT);
    if (sent >= 0) {
      t.bytes += static_cast<std::uint64_t>(sent);
      t.datagrams += static_cast<std::uint64_t>(k);
      i += k;
      singles = i;
      continue;
    }
    if (would_block(errno) || errno == ENOBUFS || is_unreachable(errno)) {
      if (is_unreachable(errno)) t.unreachable = errno;
      t.dropped += static_cast<std::uint64_t>(count - i);
      return t;
    }
    if (errno == EINVAL || errno == EIO || errno == EOPNOTSUPP || errno == ENOPROTOOPT || errno == EMSGSIZE) {
      gso = false;  // this path cannot segment: datagram by datagram from now on
    }
    i += k;  // the run goes by sendmmsg, datagram by datagram
  }
  if (count > singles) send_each(fd, b, singles, count - singles, t);
  return t;
}

}  // namespace relay
