// database_lock: flock(2) on the database file, and the holder's pid from /proc/locks.
#include "store/database_lock.hpp"

#include "store/database.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

namespace store {

namespace {

// How often the open-then-lock step is retried when the file it locked was unlinked or replaced
// meanwhile (another daemon's failed start removing the file it had just created).
constexpr int max_lock_attempts = 100;

// The pid holding a flock on the file open as `fd`, from /proc/locks lines such as
// "1: FLOCK  ADVISORY  WRITE 6863 fe:00:10952883 0 EOF" (device major:minor in hex, then inode).
// The device can differ from st_dev (btrfs subvolumes, overlayfs), so an inode that only one
// FLOCK line names is taken too. Nothing when /proc/locks is hidden (the unit's ProcSubset=pid).
std::optional<long> flock_holder(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::nullopt;
  std::ifstream locks("/proc/locks");
  std::string line;
  std::optional<long> exact;
  std::vector<long> same_inode;
  while (std::getline(locks, line)) {
    std::istringstream in(line);
    std::string index, kind, mode, access, device;
    long pid = 0;
    if (!(in >> index >> kind)) continue;
    if (kind == "->") in >> kind;  // a waiter's line: "1: -> FLOCK ..."
    if (!(in >> mode >> access >> pid >> device) || kind != "FLOCK" || pid <= 0) continue;
    unsigned major_id = 0, minor_id = 0;
    unsigned long long inode = 0;
    if (std::sscanf(device.c_str(), "%x:%x:%llu", &major_id, &minor_id, &inode) != 3 || inode != st.st_ino) continue;
    if (major_id == major(st.st_dev) && minor_id == minor(st.st_dev)) exact = pid;
    same_inode.push_back(pid);
  }
  if (exact) return exact;
  if (same_inode.size() == 1) return same_inode.front();
  return std::nullopt;
}

// True while `path` still names the file open as `fd`.
bool names(const std::string& path, int fd) {
  struct stat open_file {}, named {};
  return ::fstat(fd, &open_file) == 0 && open_file.st_nlink > 0 && ::stat(path.c_str(), &named) == 0 &&
         named.st_dev == open_file.st_dev && named.st_ino == open_file.st_ino;
}

std::string why(int err) { return std::strerror(err); }

}  // namespace

database_lock::database_lock(const std::string& path) : path_(path) {
  for (int attempt = 0; attempt < max_lock_attempts; ++attempt) {
    // An existing file is opened read-only: flock needs no write access, and a read-only database
    // is SQLite's to report. Only a missing file is created, and then it is ours to remove on
    // failure. Losing a race to create it means it exists now: open it as it is.
    bool created = false;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
      fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      created = fd >= 0;
      if (fd < 0 && errno == EEXIST) continue;
    }
    if (fd < 0) throw store_error("cannot open database " + path + ": " + why(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      std::string message;
      if (err == EWOULDBLOCK) {
        const auto pid = flock_holder(fd);
        message = "database " + path + " is locked by another process (" +
                  (pid ? "pid " + std::to_string(*pid) : std::string("its pid is not visible here")) +
                  "): only one portrelay may own a database";
      } else {
        message = "cannot lock database " + path + ": " + why(err);
      }
      ::close(fd);
      throw store_error(message);
    }
    // The lock is on the file the path names only if nobody unlinked or replaced it between the
    // open and the flock; otherwise start again with whatever the path names now.
    if (!names(path, fd)) {
      ::close(fd);
      continue;
    }
    fd_ = fd;
    created_ = created;
    return;
  }
  throw store_error("cannot lock database " + path + ": it keeps being replaced");
}

database_lock::~database_lock() {
  if (fd_ < 0) return;
  // Still holding the lock, so no daemon can be using the file or its companions: SQLite's own
  // files first, then the database itself, and only while the path still names the file we made.
  if (created_ && names(path_, fd_)) {
    for (const char* suffix : {"-wal", "-shm", "-journal"}) ::unlink((path_ + suffix).c_str());
    ::unlink(path_.c_str());
  }
  ::close(fd_);
}

}  // namespace store
