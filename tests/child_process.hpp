// child_process: runs a program as a child of the test, its stdout and stderr collected as one log.
#pragma once

#include "test_support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <optional>

extern char** environ;

namespace test {

struct child_env {
  std::vector<std::string> vars;  // "NAME=value", added to (or replacing in) the test's environment
  bool journal = false;           // JOURNAL_STREAM names the log pipe, as when systemd runs it
};

class child_process {
 public:
  // Starts `program` (a path) with `args` (without argv[0]) in directory `cwd` (empty: the test's);
  // throws when it cannot be started.
  child_process(const std::string& program, std::vector<std::string> args, child_env env = {},
                const std::string& cwd = {}) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    if (env.journal) {
      struct stat st {};
      fstat(pipefd[1], &st);
      env.vars.push_back("JOURNAL_STREAM=" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino));
    }
    std::vector<std::string> vars;
    for (char** e = environ; *e; ++e) {
      const std::string var(*e);
      const auto name = var.substr(0, var.find('=') + 1);
      const bool replaced = std::any_of(env.vars.begin(), env.vars.end(), [&](const std::string& v) { return v.rfind(name, 0) == 0; });
      // What a service manager around the test run may have set is never passed on by accident.
      static const std::vector<std::string> service_vars{"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=",
                                                         "CREDENTIALS_DIRECTORY=", "JOURNAL_STREAM="};
      const bool service = std::find(service_vars.begin(), service_vars.end(), name) != service_vars.end();
      if (!replaced && !service) vars.push_back(var);
    }
    vars.insert(vars.end(), env.vars.begin(), env.vars.end());
    std::vector<char*> envp;
    for (auto& v : vars) envp.push_back(v.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    // Only what it is given: descriptors the test runner left open (a shell's, a job server's) would
    // count against the child's limit and change what a descriptor test measures.
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
    args.insert(args.begin(), program);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int spawned = posix_spawn(&pid_, program.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    ::close(pipefd[1]);
    if (spawned != 0) {
      ::close(pipefd[0]);
      throw std::runtime_error("cannot start " + program);
    }
    reader_ = std::thread([this, rd = pipefd[0]] {
      char buf[4096];
      for (;;) {
        auto n = ::read(rd, buf, sizeof buf);
        if (n <= 0) break;
        std::lock_guard lock(mutex_);
        log_.append(buf, static_cast<std::size_t>(n));
      }
      ::close(rd);
      log_complete_ = true;
    });
  }

  ~child_process() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      wait_exit();
    }
    reader_.join();
  }

  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  std::string log() const {
    std::lock_guard lock(mutex_);
    return log_;
  }

  void signal(int sig) { ::kill(pid_, sig); }
  pid_t pid() const { return pid_; }

  bool exited() {
    if (status_) return true;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) status_ = st;
    return status_.has_value();
  }

  // The wait status once the process has ended and its whole log is read (bounded), or nothing
  // when it is still running.
  std::optional<int> wait_exit(std::chrono::milliseconds limit = 30s) {
    if (!eventually([&] { return exited() && log_complete_; }, limit)) return std::nullopt;
    return status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  mutable std::mutex mutex_;
  std::string log_;
  std::atomic<bool> log_complete_{false};
  std::thread reader_;
};

}  // namespace test
