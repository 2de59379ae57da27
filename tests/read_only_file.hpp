// read_only_file: makes a file one that no process may write, root included, until scope exit.
#pragma once

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

namespace test {

// Mode 0444, and for root, which ignores modes, the immutable attribute (chattr +i) too. Some file
// systems have no such attribute; then ok() is false as root and the caller skips its test.
class read_only_file {
 public:
  explicit read_only_file(std::string path) : path_(std::move(path)) {
    ::chmod(path_.c_str(), 0444);
    ok_ = ::geteuid() != 0 || set_immutable(true);
  }
  ~read_only_file() {
    if (::geteuid() == 0) set_immutable(false);
    ::chmod(path_.c_str(), 0600);
  }
  read_only_file(const read_only_file&) = delete;
  read_only_file& operator=(const read_only_file&) = delete;

  bool ok() const { return ok_; }

 private:
  bool set_immutable(bool on) {
    const int f = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (f < 0) return false;
    int flags = 0;
    bool done = ::ioctl(f, FS_IOC_GETFLAGS, &flags) == 0;
    flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
    done = done && ::ioctl(f, FS_IOC_SETFLAGS, &flags) == 0;
    ::close(f);
    return done;
  }

  std::string path_;
  bool ok_ = false;
};

}  // namespace test
