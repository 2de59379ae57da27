// netns: network namespaces of the test's own, so that several processes can listen on the same
// loopback ports, and a way to run test code (clients, servers, process starts) inside one.
#pragma once

#include "test_support.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <future>
#include <system_error>
#include <type_traits>

namespace test {

// A fresh network namespace whose only interface, `lo`, is up (127.0.0.0/8 and ::1). It lives as
// long as this object holds its descriptor, whatever runs in it, so a process killed in it and
// started again comes back in the same namespace and the clients of its forwards reach it as before.
// A thread of the test makes it (unshare and setns change the calling thread only), rather than a
// holder process: nothing to reap, and nothing left behind when a test fails half-way.
// Throws std::system_error when the kernel refuses (creating one needs CAP_SYS_ADMIN).
class netns {
 public:
  netns() {
    std::exception_ptr failed;
    std::thread maker([&] {
      try {
        if (::unshare(CLONE_NEWNET) != 0) fail("unshare(CLONE_NEWNET)");
        loopback_up();
        ns_ = fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
        if (!ns_) fail("open /proc/thread-self/ns/net");
      } catch (...) {
        failed = std::current_exception();
      }
    });
    maker.join();
    if (failed) std::rethrow_exception(failed);
  }

  // The namespace's descriptor, for setns().
  int handle() const { return ns_.get(); }

 private:
  [[noreturn]] static void fail(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

  // Done by hand (SIOCSIFFLAGS on a socket made in the namespace) so that no `ip` binary is needed.
  static void loopback_up() {
    fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) fail("SIOCGIFFLAGS lo");
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) fail("SIOCSIFFLAGS lo");
  }

  fd ns_;
};

// Runs `fn` on a thread of its own that has entered `ns` first, and returns what it returns (or
// throws what it throws). Sockets made by `fn` belong to `ns` for their whole life and may be used
// from any thread afterwards; so do the processes it starts (they inherit the starting thread's
// namespace) and the threads it starts. `fn` must not use Catch2's assertions (not thread-safe):
// return what is to be checked instead.
template <class Fn>
std::invoke_result_t<Fn&> in_netns(const netns& ns, Fn&& fn) {
  using result = std::invoke_result_t<Fn&>;
  std::packaged_task<result()> task([&]() -> result {
    if (::setns(ns.handle(), CLONE_NEWNET) != 0) throw std::system_error(errno, std::generic_category(), "setns");
    return fn();
  });
  auto answer = task.get_future();
  std::thread(std::move(task)).join();
  return answer.get();
}

}  // namespace test
