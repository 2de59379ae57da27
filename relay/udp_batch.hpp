// udp_batch: a worker's batched UDP I/O (recvmmsg, sendmmsg, GSO) and the reply-source control data it carries.
#pragma once

#include <asio/ip/address.hpp>
#include <asio/ip/udp.hpp>

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>
#include <vector>

namespace relay {

constexpr std::size_t max_datagram = 65536;  // larger than any UDP payload, so none is truncated

// Room for one IP_PKTINFO or IPV6_PKTINFO control message, the larger of the two.
struct pktinfo_space {
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(in6_pktinfo))> bytes{};
};

// The local address a reply leaves from, as the control data of the send that carries it
// (IP_PKTINFO / IPV6_PKTINFO), built once per session. Empty: the kernel picks, which is right for
// a listener bound to one address (it is that address).
class reply_source {
 public:
  reply_source() = default;
  // `local` unspecified: empty. A scope id (link-local IPv6) names the interface to send on.
  explicit reply_source(const asio::ip::address& local);
  void* control() const { return size_ ? const_cast<char*>(space_.bytes.data()) : nullptr; }
  std::size_t size() const { return size_; }

 private:
  pktinfo_space space_;
  std::size_t size_ = 0;
};

// The address a datagram was sent to, from its control data: the one to reply from. Unspecified
// when there is none, or it cannot be a source (IPv6 multicast). Link-local IPv6 keeps the
// receiving interface as its scope id.
asio::ip::address destination(const msghdr& m);

// A worker's scratch space for batched I/O, shared by all its UDP forwards (used only between waits):
// `slots` datagram buffers of the largest size, so nothing is ever truncated. Pages are touched only
// as large datagrams arrive, so small traffic costs little resident memory.
struct batch_space {
  static constexpr int slots = 32;
  std::vector<char> data = std::vector<char>(slots * max_datagram);
  std::array<mmsghdr, slots> in{};
  std::array<iovec, slots> in_iov{};
  std::array<sockaddr_storage, slots> from{};
  std::array<pktinfo_space, slots> to{};
  std::array<mmsghdr, slots> out{};
  std::array<iovec, slots> out_iov{};
  std::array<std::array<iovec, 2>, slots> out_headed{};  // a datagram with a header before it: both

  char* slot(int i) { return data.data() + static_cast<std::size_t>(i) * max_datagram; }
  // Sets up `in` to receive into every slot (with the sender's address when `addresses`, and the
  // destination address's control data when `destinations`).
  void arm(bool addresses, bool destinations);
  // Queues slot `i`'s datagram for the next send_batch, to `to` (nullptr on a connected socket),
  // from `source` (nullptr: the kernel picks), after `head` (a PROXY header; it must outlive the
  // send, and a datagram with one must not go by GSO, which would cut through it).
  void queue(int count, int i, const asio::ip::udp::endpoint* to, const reply_source* source = nullptr,
             std::string_view head = {});
};

batch_space& scratch();

// What one send_batch did.
struct send_tally {
  std::uint64_t datagrams = 0;  // sent
  std::uint64_t bytes = 0;      // payload bytes sent
  std::uint64_t dropped = 0;    // not sent, and never kept for later
  int unreachable = 0;          // the ICMP error (is_unreachable) that was waiting on the socket, or 0
};

// Sends the `count` queued datagrams on `fd` (-1: nowhere to send; all are dropped). Runs to one
// destination from one source go as one GSO send while `gso` holds; a socket whose path refuses GSO
// clears it and uses sendmmsg from then on. Control data rides on the same calls: no system call
// per datagram. After an ICMP error the rest of the batch is dropped.
send_tally send_batch(int fd, batch_space& b, int count, bool& gso);

}  // namespace relay
