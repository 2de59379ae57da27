// descriptor_limit: the test process held at its descriptor limit, with every descriptor below it in
// use, and restored on scope exit.
#pragma once

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace test {

// Lowers RLIMIT_NOFILE to a little above the highest open descriptor and opens /dev/null until the
// kernel refuses (EMFILE). Descriptors are allocated lowest first, so then every descriptor below
// the limit is open and the process holds exactly limit() of them. Nothing else in the process may
// open or close a descriptor meanwhile: use it with idle workers and no HTTP server.
class descriptors_exhausted {
 public:
  descriptors_exhausted() {
    getrlimit(RLIMIT_NOFILE, &saved_);
    int highest = 0;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
      highest = std::max(highest, std::stoi(entry.path().filename().string()));
    }
    limit_ = static_cast<std::uint64_t>(highest) + 1 + 8;
    const rlimit low{static_cast<rlim_t>(limit_), saved_.rlim_max};
    setrlimit(RLIMIT_NOFILE, &low);
    for (;;) {
      const int f = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (f < 0) {
        refused_with_ = errno;
        break;
      }
      held_.push_back(f);
    }
  }
  ~descriptors_exhausted() { release(); }
  descriptors_exhausted(const descriptors_exhausted&) = delete;
  descriptors_exhausted& operator=(const descriptors_exhausted&) = delete;

  // Closes what this opened and restores the limit; idempotent.
  void release() {
    for (int f : held_) ::close(f);
    held_.clear();
    setrlimit(RLIMIT_NOFILE, &saved_);
  }

  std::uint64_t limit() const { return limit_; }
  // The errno of the open that ended the filling: EMFILE when the limit was reached.
  int refused_with() const { return refused_with_; }

 private:
  rlimit saved_{};
  std::uint64_t limit_ = 0;
  std::vector<int> held_;
  int refused_with_ = 0;
};

}  // namespace test
