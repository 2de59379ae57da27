// daemon_process: runs the real portrelay binary for end-to-end tests and reads its log.
#pragma once

#include "child_process.hpp"

#include <regex>

namespace test {

using daemon_env = child_env;

class daemon_process : public child_process {
 public:
  explicit daemon_process(std::vector<std::string> args, daemon_env env = {})
      : child_process(PORTRELAY_BINARY, std::move(args), std::move(env)) {}

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
};

}  // namespace test
