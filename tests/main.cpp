// Catch2's main for every test executable; the code under test logs only warnings and worse.
//
// Host names resolve the same way on every machine: where the tests may (root), they run in a mount
// namespace of their own whose /etc/hosts is tests/hosts.hpp's, and so does every daemon they start.
// Without it, `localhost` is whatever the machine lists (Debian lists ::1 first, some hosts have no
// ::1 at all), and the tests that need test_hosts fail saying so.
#define CATCH_CONFIG_RUNNER
#include "tests/hosts.hpp"

#include <catch2/catch.hpp>
#include <spdlog/spdlog.h>

#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

// Before any thread exists: unshare(CLONE_NEWNS) acts on the calling thread only.
bool install_private_hosts() {
  if (::unshare(CLONE_NEWNS) != 0) return false;
  // Nothing mounted here may reach the machine's namespace.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  char path[] = "/tmp/portrelay-test-hosts-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return false;
  const std::string text = test_hosts::file;
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  const bool mounted = written && ::mount(path, "/etc/hosts", nullptr, MS_BIND, nullptr) == 0;
  ::unlink(path);  // the bind mount keeps the file itself
  return mounted;
}

}  // namespace

bool test_hosts::installed = false;

int main(int argc, char* argv[]) {
  spdlog::set_level(spdlog::level::warn);
  test_hosts::installed = install_private_hosts();
  if (!test_hosts::installed) {
    std::fprintf(stderr, "note: no private /etc/hosts (not root?): tests that resolve test host names fail\n");
  }
  return Catch::Session().run(argc, argv);
}
