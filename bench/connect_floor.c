// bench/connect_floor.c: the floor under bench/health_check_cost.sh. 4,000 non-blocking connects a
// second to 4 loopback listeners (accepted in a child process), 40 every 10 ms, each closed with a
// reset once connected, as the health checks do; prints this process's CPU over the window.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double cpu(void) { struct rusage u; getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char** argv) {
  int secs = argc > 1 ? atoi(argv[1]) : 30;
  int l[4]; struct sockaddr_in a[4];
  for (int i = 0; i < 4; ++i) {
    l[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in s = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(l[i], (void*)&s, sizeof s); listen(l[i], 4096);
    socklen_t n = sizeof a[i]; getsockname(l[i], (void*)&a[i], &n);
  }
  pid_t c = fork();
  if (c == 0) { struct pollfd p[4]; for (int i = 0; i < 4; ++i) p[i] = (struct pollfd){l[i], POLLIN, 0};
    for (;;) { poll(p, 4, -1); for (int i = 0; i < 4; ++i) { int f; while ((f = accept4(l[i], 0, 0, SOCK_NONBLOCK)) >= 0) close(f); } } }
  for (int i = 0; i < 4; ++i) close(l[i]);
  int ep = epoll_create1(0); long done = 0;
  double c0 = cpu(), t0 = now(), next = t0; int k = 0;
  while (now() - t0 < secs) {
    double wait = next - now();
    struct epoll_event ev[64];
    int n = epoll_wait(ep, ev, 64, wait > 0 ? (int)(wait * 1000) : 0);
    for (int i = 0; i < n; ++i) { int f = ev[i].data.fd, e = 0; socklen_t len = sizeof e;
      getsockopt(f, SOL_SOCKET, SO_ERROR, &e, &len);
      struct linger lg = {1, 0}; setsockopt(f, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      epoll_ctl(ep, EPOLL_CTL_DEL, f, 0); close(f); ++done; }
    if (now() >= next) { next += 0.01;
      for (int j = 0; j < 40; ++j) { int f = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct epoll_event e = {.events = EPOLLOUT, .data.fd = f}; epoll_ctl(ep, EPOLL_CTL_ADD, f, &e);
        connect(f, (void*)&a[k++ % 4], sizeof a[0]); } }
  }
  double used = cpu() - c0, wall = now() - t0;
  printf("floor: %ld connects in %.1f s: %.2f s CPU = %.1f %% of one core\n", done, wall, used, 100 * used / wall);
  kill(c, SIGKILL); waitpid(c, 0, 0);
}
