// metrics_support: the exposition format checked by the Prometheus client library's parser, and a
// scrape read back as numbers. METRICS_CHECK is defined for the api_tests target.
#pragma once

#include "test_support.hpp"

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace test {

struct check_result {
  int status = -1;
  std::string output;
};

// metrics_check.py parses the exposition format with prometheus_client's parser and lints names, types
// and help as `promtool check metrics` does.
inline check_result metrics_check(const std::string& text, const temp_dir& dir) {
  const auto file = dir.path / "scrape.txt";
  std::ofstream(file) << text;
  const std::string cmd = std::string(METRICS_CHECK) + " < " + file.string() + " 2>&1";
  check_result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// sample line -> value, e.g. `portrelay_forward_bytes_total{id="1",...,direction="up"}` -> 5.
inline std::map<std::string, double> samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

}  // namespace test
