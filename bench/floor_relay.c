// floor_relay: the least a readiness relay can do per TCP connection and per UDP datagram, to
// measure the floor of relay CPU per new connection and of the time added to a round trip on this
// machine (not a product: no timeouts, no limits, no resets passed on, a 16 KiB buffer per
// direction, at most 64 UDP clients, no error handling beyond closing).
//
// Each of N threads has its own epoll. The one listening socket is in every epoll with
// EPOLLEXCLUSIVE (one thread woken per connection); accept4 gives a non-blocking socket; the
// target's socket is created non-blocking; both are registered once, edge-triggered, for
// everything, and never modified; a short read with no EPOLLRDHUP means drained (no read to see
// EAGAIN); close removes them. Options: TCP_NODELAY on the target's socket (the client's inherits
// it from the listener), nothing else. UDP, on the first thread: the listening socket and one
// connected socket per client, level-triggered, one datagram per wake-up (no read to see EAGAIN).
//
//   cc -O2 -pthread -o floor_relay bench/floor_relay.c
//   ./floor_relay LISTEN_PORT TARGET_PORT [THREADS]     (127.0.0.1 both)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { BUF = 16384 };

struct side;
struct conn {
  int fd[2];            // 0: client, 1: target
  char buf[2][BUF];     // buf[i]: read from fd[i], to be sent to fd[1 - i]
  size_t len[2], off[2];
  int eof[2], ended[2];  // eof[i]: fd[i] sent FIN; ended[i]: direction i done (FIN passed on)
  int rdhup[2];          // fd[i]'s peer shut down (an edge seen once, kept until read to the end)
  int refs;
};
struct side {  // epoll's data: which socket of which connection
  struct conn* c;
  int i;
};

static int listener, udp_listener;
static struct sockaddr_in target;

// UDP: epoll's data is (index << 1) | 1, index 0 the listening socket, k + 1 client k's socket
// (TCP's are pointers, even).
enum { UDP_CLIENTS = 64 };
static struct {
  struct sockaddr_in client;
  int fd;
} udp[UDP_CLIENTS];
static int udp_count;

static void udp_event(int ep, unsigned index) {
  char buf[65536];
  if (index == 0) {
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(udp_listener, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr*)&from, &len);
    if (n < 0) return;
    int k = 0;
    while (k < udp_count && memcmp(&udp[k].client, &from, sizeof from) != 0) ++k;
    if (k == udp_count) {
      if (udp_count == UDP_CLIENTS) return;
      int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      connect(fd, (struct sockaddr*)&target, sizeof target);
      udp[k].client = from;
      udp[k].fd = fd;
      ++udp_count;
      struct epoll_event e = {.events = EPOLLIN, .data.u64 = ((uint64_t)(k + 1) << 1) | 1};
      epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
    }
    send(udp[k].fd, buf, (size_t)n, MSG_DONTWAIT);
    return;
  }
  const int k = (int)index - 1;
  ssize_t n = recv(udp[k].fd, buf, sizeof buf, MSG_DONTWAIT);
  if (n >= 0) sendto(udp_listener, buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr*)&udp[k].client, sizeof udp[k].client);
}

static void finish(struct conn* c) {
  close(c->fd[0]);
  close(c->fd[1]);
  free(c);
}

// Moves what it can in direction i (fd[i] -> fd[1 - i]); returns 1 when the connection is done.
static int pump(struct conn* c, int i, int rdhup) {
  c->rdhup[i] |= rdhup;
  for (;;) {
    while (c->len[i] > c->off[i]) {
      ssize_t n = send(c->fd[1 - i], c->buf[i] + c->off[i], c->len[i] - c->off[i], MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) return errno == EAGAIN ? 0 : 1;
      c->off[i] += (size_t)n;
    }
    c->len[i] = c->off[i] = 0;
    if (c->ended[i]) return c->ended[1 - i];
    if (c->eof[i]) {
      shutdown(c->fd[1 - i], SHUT_WR);
      c->ended[i] = 1;
      return c->ended[1 - i];
    }
    ssize_t n = recv(c->fd[i], c->buf[i], BUF, MSG_DONTWAIT);
    if (n < 0) return errno == EAGAIN ? 0 : 1;
    if (n == 0) {
      c->eof[i] = 1;
      continue;
    }
    c->len[i] = (size_t)n;
    if ((size_t)n < BUF && !c->rdhup[i]) {  // drained: send, then wait for the next edge
      while (c->off[i] < c->len[i]) {
        ssize_t s = send(c->fd[1 - i], c->buf[i] + c->off[i], c->len[i] - c->off[i], MSG_NOSIGNAL | MSG_DONTWAIT);
        if (s < 0) return errno == EAGAIN ? 0 : 1;
        c->off[i] += (size_t)s;
      }
      c->len[i] = c->off[i] = 0;
      return 0;
    }
  }
}

static void* run(void* arg) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  if (arg == NULL) {  // the first thread
    struct epoll_event u = {.events = EPOLLIN, .data.u64 = 1};
    epoll_ctl(ep, EPOLL_CTL_ADD, udp_listener, &u);
  }
  struct epoll_event events[64];
  for (;;) {
    int n = epoll_wait(ep, events, 64, -1);
    struct conn* done[64];
    int ndone = 0;
    for (int k = 0; k < n; ++k) {
      if (events[k].data.u64 & 1) {
        udp_event(ep, (unsigned)(events[k].data.u64 >> 1));
        continue;
      }
      struct side* s = events[k].data.ptr;
      if (!s) {
        for (;;) {
          int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          int up = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
          int one = 1;
          setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct conn* c = malloc(sizeof *c + 2 * sizeof(struct side));  // the buffers are not cleared
          struct side* sides = (struct side*)(c + 1);
          memset(c->len, 0, sizeof c->len);
          memset(c->off, 0, sizeof c->off);
          memset(c->eof, 0, sizeof c->eof);
          memset(c->ended, 0, sizeof c->ended);
          memset(c->rdhup, 0, sizeof c->rdhup);
          c->refs = 0;
          c->fd[0] = fd;
          c->fd[1] = up;
          for (int i = 0; i < 2; ++i) {
            sides[i] = (struct side){c, i};
            struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &sides[i]};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd[i], &e);
          }
          connect(up, (struct sockaddr*)&target, sizeof target);
        }
        continue;
      }
      struct conn* c = s->c;
      if (c->refs < 0) continue;  // done earlier in this batch
      const unsigned e = events[k].events;
      const int rdhup = (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
      // Readable: the direction that reads this socket; writable: the one that writes to it, if it
      // holds bytes (no read is tried that cannot give anything).
      const int o = 1 - s->i;
      if (((e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && pump(c, s->i, rdhup)) ||
          ((e & EPOLLOUT) && c->len[o] > c->off[o] && pump(c, o, 0))) {
        c->refs = -1;
        done[ndone++] = c;
      }
    }
    for (int k = 0; k < ndone; ++k) finish(done[k]);
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s LISTEN_PORT TARGET_PORT [THREADS]\n", argv[0]);
    return 2;
  }
  int threads = argc > 3 ? atoi(argv[3]) : 2;
  listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(listener, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
  inet_pton(AF_INET, "127.0.0.1", &at.sin_addr);
  if (bind(listener, (struct sockaddr*)&at, sizeof at) != 0 || listen(listener, 4096) != 0) {
    perror("listen");
    return 1;
  }
  udp_listener = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (bind(udp_listener, (struct sockaddr*)&at, sizeof at) != 0) {
    perror("bind udp");
    return 1;
  }
  target = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
  inet_pton(AF_INET, "127.0.0.1", &target.sin_addr);
  pthread_t t[64];
  for (int i = 0; i < threads && i < 64; ++i) pthread_create(&t[i], NULL, run, (void*)(intptr_t)i);
  pthread_join(t[0], NULL);
  return 0;
}
