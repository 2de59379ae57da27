// ctl_process: runs `portrelay ctl ...` as a real process and captures its output and exit status.
#pragma once

#include "test_support.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <string>
#include <vector>

extern char** environ;

namespace test {

struct ctl_result {
  int status = -1;  // the exit status; -1 when it did not exit by itself within the bound
  std::string out, err;
};

// `env` ("NAME=value") is added to the test's environment, from which PORTRELAY_API and
// PORTRELAY_TOKEN are removed so that only what a test gives reaches the client. `input` is its stdin.
inline ctl_result run_ctl(std::vector<std::string> args, const std::vector<std::string>& env = {},
                          const std::string& input = {}) {
  std::vector<std::string> vars;
  for (char** e = environ; *e; ++e) {
    const std::string var(*e);
    if (!var.starts_with("PORTRELAY_API=") && !var.starts_with("PORTRELAY_TOKEN=")) vars.push_back(var);
  }
  vars.insert(vars.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  args.insert(args.begin(), {PORTRELAY_BINARY, "ctl"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) throw std::runtime_error("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, PORTRELAY_BINARY, &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  for (int f : {in[0], out[1], err[1]}) ::close(f);
  if (spawned != 0) throw std::runtime_error("cannot start " PORTRELAY_BINARY);
  ::signal(SIGPIPE, SIG_IGN);
  send_all(in[1], input);  // small: the pipe holds it whether or not the client reads it
  ::close(in[1]);

  ctl_result r;
  const auto deadline = std::chrono::steady_clock::now() + io_timeout;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  while ((fds[0].fd >= 0 || fds[1].fd >= 0) && std::chrono::steady_clock::now() < deadline) {
    if (::poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !fds[i].revents) continue;
      char buf[4096];
      const auto n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
      }
    }
  }
  for (auto& p : fds) {
    if (p.fd >= 0) ::close(p.fd);
  }
  int st = 0;
  if (!eventually([&] { return ::waitpid(pid, &st, WNOHANG) == pid; })) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &st, 0);
    return r;
  }
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace test
