// database_lock: one daemon per database file, held with flock(2) for the process's life.
#pragma once

#include <string>

namespace store {

// Takes an exclusive flock(2) on the database file itself (creating the file only when it does not
// exist). The kernel drops the lock when its holder dies, so kill -9 never leaves a stale lock.
// flock locks are separate from the fcntl(2) locks SQLite takes on the same file, so neither
// disturbs the other.
//
// The lock is verified to be on the file the path names once it is taken (another daemon's failed
// start may unlink a file between our open and our flock); if not, it is taken again.
//
// Throws store_error when the file is held by another process, naming the file and that process's
// pid (read from /proc/locks; "not visible" where /proc/locks is hidden, as under the unit's
// ProcSubset=pid), or when it cannot be opened.
//
// A file this lock created (mode 0600) is removed again, with SQLite's -wal, -shm and -journal
// files, when the lock is released before keep() was called: a daemon that fails to start leaves no
// file behind.
class database_lock {
 public:
  explicit database_lock(const std::string& path);
  ~database_lock();
  database_lock(const database_lock&) = delete;
  database_lock& operator=(const database_lock&) = delete;

  // Start-up succeeded: the files stay, whatever happens later.
  void keep() { created_ = false; }

 private:
  std::string path_;
  int fd_ = -1;
  bool created_ = false;
};

}  // namespace store
