// splice_pipe: opening, enlarging, splicing through and closing a relay pipe; the worker's pool of empty ones.
#include "relay/splice_pipe.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <utility>

namespace relay {

namespace {

std::atomic<std::size_t> large_pipes{0};  // enlarged pipes open in the process

}  // namespace

splice_pipe splice_pipe::open() {
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return {};
  splice_pipe p{fds[0], fds[1], default_pipe_bytes};
  if (large_pipes.fetch_add(1, std::memory_order_relaxed) < max_large_pipes &&
      ::fcntl(p.write_, F_SETPIPE_SZ, static_cast<int>(large_pipe_bytes)) >= static_cast<int>(large_pipe_bytes)) {
    p.capacity_ = large_pipe_bytes;
  } else {
    large_pipes.fetch_sub(1, std::memory_order_relaxed);  // the kernel may refuse (pipe-user-pages-soft)
  }
  return p;
}

splice_pipe::splice_pipe(splice_pipe&& other) noexcept
    : read_(std::exchange(other.read_, -1)),
      write_(std::exchange(other.write_, -1)),
      capacity_(std::exchange(other.capacity_, 0)),
      size_(std::exchange(other.size_, 0)) {}

splice_pipe& splice_pipe::operator=(splice_pipe&& other) noexcept {
  if (this != &other) {
    close();
    read_ = std::exchange(other.read_, -1);
    write_ = std::exchange(other.write_, -1);
    capacity_ = std::exchange(other.capacity_, 0);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void splice_pipe::close() {
  if (read_ < 0) return;
  ::close(read_);
  ::close(write_);
  if (capacity_ > default_pipe_bytes) large_pipes.fetch_sub(1, std::memory_order_relaxed);
  read_ = write_ = -1;
  capacity_ = size_ = 0;
}

ssize_t splice_pipe::splice_from(int fd, std::size_t most) {
  const ssize_t n = ::splice(fd, nullptr, write_, nullptr, std::min(most, capacity_ - size_),
                             SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
  if (n > 0) size_ += static_cast<std::size_t>(n);
  return n;
}

ssize_t splice_pipe::splice_to(int fd) {
  const ssize_t n = ::splice(read_, nullptr, fd, nullptr, size_, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
  if (n > 0) size_ -= static_cast<std::size_t>(n);
  return n;
}

splice_pipe pipe_pool::lease() {
  if (idle_.empty()) return splice_pipe::open();
  splice_pipe p = std::move(idle_.back());
  idle_.pop_back();
  return p;
}

void pipe_pool::give_back(splice_pipe pipe) {
  if (pipe && pipe.size() == 0 && idle_.size() < max_idle_pipes_per_worker) idle_.push_back(std::move(pipe));
  // otherwise `pipe` closes here
}

}  // namespace relay
