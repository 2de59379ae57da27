// error_wake: what woke a TCP socket's error wait (asio's wait_error): the peer's reset, or nothing to act on.
#pragma once

#include "relay/socket_options.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <system_error>

namespace relay {

struct error_wake {
  std::error_code error;  // the socket's pending error (SO_ERROR, cleared by reading it): the connection is over
  bool wait_again = false;  // nothing happened that a new wait would not report at once again
};

// The wait completes on EPOLLPRI, EPOLLERR or EPOLLHUP, and asio re-reads the socket's readiness
// each time a wait is queued, so a condition that persists would wake a new wait at once, forever:
// - urgent data (EPOLLPRI until it is read): its byte is never part of the relayed stream (no
//   SO_OOBINLINE), so it is read and dropped here, and the wait goes on;
// - EPOLLHUP without an error: both directions were shut down in order, and what the socket still
//   holds is read as usual; nothing more can arrive on it, so there is nothing left to wait for.
inline error_wake check_error_wake(int fd) {
  if (auto error = pending_error(fd)) return {error, false};
  pollfd p{fd, POLLPRI, 0};
  if (::poll(&p, 1, 0) == 1 && (p.revents & POLLPRI) != 0) {
    char urgent;
    ::recv(fd, &urgent, 1, MSG_OOB | MSG_DONTWAIT);
    p.revents = 0;
    ::poll(&p, 1, 0);
  }
  return {{}, (p.revents & (POLLPRI | POLLERR | POLLHUP | POLLNVAL)) == 0};
}

}  // namespace relay
