// splice_pipe: a pipe that carries one TCP direction's bytes by splice(2), and a worker's pool of empty ones.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace relay {

// A new pipe's capacity (pipe(7): 16 pages), so the most one splice moves through it.
inline constexpr std::size_t default_pipe_bytes = 64 * 1024;

// Splice pipes are enlarged from the default to this (a quarter of the system calls per byte
// moved), up to `max_large_pipes` at a time in the process. The kernel counts a pipe's capacity
// against its user (pipe-user-pages-soft, 64 MiB by default, after which an unprivileged user's new
// pipes get 8 KiB): the bound keeps the large ones to half of that, and pipes beyond it keep the
// default size.
inline constexpr std::size_t large_pipe_bytes = 256 * 1024;
inline constexpr std::size_t max_large_pipes = 128;

// Empty pipes a worker keeps for the next connections' splices; more are closed when given back.
inline constexpr std::size_t max_idle_pipes_per_worker = 64;

// Both ends of one non-blocking pipe, and how many bytes are in it. Move-only: the last owner
// closes both ends and gives back its share of the large-pipe bound, on any thread (a session may
// be destroyed off its worker).
class splice_pipe {
 public:
  splice_pipe() = default;  // no pipe
  // A new pipe, enlarged while the process holds fewer than `max_large_pipes` large ones; no pipe
  // (false) when none can be had (out of descriptors).
  static splice_pipe open();

  splice_pipe(splice_pipe&& other) noexcept;
  splice_pipe& operator=(splice_pipe&& other) noexcept;
  splice_pipe(const splice_pipe&) = delete;
  splice_pipe& operator=(const splice_pipe&) = delete;
  ~splice_pipe() { close(); }

  explicit operator bool() const { return read_ >= 0; }
  int read_fd() const { return read_; }
  int write_fd() const { return write_; }
  // Bytes it holds at most: `default_pipe_bytes` or `large_pipe_bytes`.
  std::size_t capacity() const { return capacity_; }
  // Bytes spliced in and not spliced out yet.
  std::size_t size() const { return size_; }

  // One non-blocking splice(2) from `fd` into the pipe's free space (at most `most` bytes: a
  // bandwidth limit's grant), and one from the pipe to `fd` of what it holds. Each returns what the
  // call returned (bytes moved, 0 at `fd`'s end, or -1 with errno set) and counts the bytes moved.
  ssize_t splice_from(int fd, std::size_t most = SIZE_MAX);
  ssize_t splice_to(int fd);

 private:
  splice_pipe(int read, int write, std::size_t capacity) : read_(read), write_(write), capacity_(capacity) {}
  void close();

  int read_ = -1;
  int write_ = -1;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
};

// A worker's empty pipes, ready for lease to its connections (one pool per worker thread, touched
// only there). Only an empty pipe is kept: one given back with bytes in it (a connection cut off
// mid-transfer) is closed, and so is one beyond `max_idle_pipes_per_worker`.
class pipe_pool {
 public:
  pipe_pool() { idle_.reserve(max_idle_pipes_per_worker); }
  pipe_pool(const pipe_pool&) = delete;
  pipe_pool& operator=(const pipe_pool&) = delete;

  // An idle pipe, else a new one; no pipe (false) when none can be had.
  splice_pipe lease();
  void give_back(splice_pipe pipe);
  std::size_t idle() const { return idle_.size(); }

 private:
  std::vector<splice_pipe> idle_;
};

}  // namespace relay
