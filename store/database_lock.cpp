// database_lock: flock(2) on the database file, and the holder's pid from /proc/locks.
#include "store/database_lock.hpp"

#include "store/database.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

namespace store {

namespace {

// The pid holding a flock on the file open as `fd`, from /proc/locks lines such as
// "1: FLOCK  ADVISORY  WRITE 6863 fe:00:10952883 0 EOF" (device major:minor in hex, then inode).
std::optional<long> flock_holder(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::nullopt;
  std::ifstream locks("/proc/locks");
  std::string line;
  while (std::getline(locks, line)) {
    std::istringstream in(line);
    std::string index, kind, mode, access, device;
    long pid = 0;
    if (!(in >> index >> kind)) continue;
    if (kind == "->") in >> kind;  // a waiter's line: "1: -> FLOCK ..."
    if (!(in >> mode >> access >> pid >> device) || kind != "FLOCK") continue;
    unsigned major_id = 0, minor_id = 0;
    unsigned long long inode = 0;
    if (std::sscanf(device.c_str(), "%x:%x:%llu", &major_id, &minor_id, &inode) != 3) continue;
    if (inode == st.st_ino && major_id == major(st.st_dev) && minor_id == minor(st.st_dev) && pid > 0) return pid;
  }
  return std::nullopt;
}

std::string why(int err) { return std::strerror(err); }

}  // namespace

database_lock::database_lock(const std::string& path) : path_(path) {
  // An existing file is opened read-only: flock needs no write access, and a read-only database
  // is SQLite's to report. Only a missing file is created, and then it is ours to remove on failure.
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0 && errno == ENOENT) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    created_ = fd_ >= 0;
  }
  if (fd_ < 0) throw store_error("cannot open database " + path + ": " + why(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
  const int err = errno;
  std::string message;
  if (err == EWOULDBLOCK) {
    const auto pid = flock_holder(fd_);
    message = "database " + path + " is in use by another portrelay (" +
              (pid ? "pid " + std::to_string(*pid) : std::string("pid unknown")) +
              "); only one daemon may own a database";
  } else {
    message = "cannot lock database " + path + ": " + why(err);
  }
  ::close(fd_);
  fd_ = -1;
  throw store_error(message);
}

database_lock::~database_lock() {
  if (fd_ < 0) return;
  if (created_) {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) ::unlink((path_ + suffix).c_str());
  }
  ::close(fd_);  // after the unlink: no other daemon can take the file in between
}

}  // namespace store
