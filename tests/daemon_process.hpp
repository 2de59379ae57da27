// daemon_process: runs the real portrelay binary for end-to-end tests and reads its log.
#pragma once

#include "test_support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>

#include <optional>
#include <regex>

extern char** environ;

namespace test {

struct daemon_env {
  std::vector<std::string> vars;  // "NAME=value", added to (or replacing in) the test's environment
  bool journal = false;           // JOURNAL_STREAM names the log pipe, as when systemd runs it
};

class daemon_process {
 public:
  explicit daemon_process(std::vector<std::string> args, daemon_env env = {}) {
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
    // count against the daemon's limit and change what a descriptor test measures.
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    args.insert(args.begin(), PORTRELAY_BINARY);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, PORTRELAY_BINARY, &fa, nullptr, argv.data(), envp.data()) != 0) {
      throw std::runtime_error("cannot start " PORTRELAY_BINARY);
    }
    posix_spawn_file_actions_destroy(&fa);
    ::close(pipefd[1]);
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

  ~daemon_process() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      wait_exit();
    }
    reader_.join();
  }

  std::string log() const {
    std::lock_guard lock(mutex_);
    return log_;
  }

  // The API port from the start-up line, or 0 when the daemon exited (or stayed silent) instead.
  std::uint16_t wait_ready() {
    static const std::regex line(R"(listening on http://[^ ]*:(\d+)/)");
    std::smatch m;
    eventually([&] {
      auto text = log();
      return std::regex_search(text, m, line) || exited();
    }, 60s);
    auto text = log();
    if (!std::regex_search(text, m, line)) return 0;
    return static_cast<std::uint16_t>(std::stoi(m[1]));
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
