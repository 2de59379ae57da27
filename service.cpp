// service: sd_notify, journald priority prefixes, and credentials.
#include "service.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace service {

namespace {

// %* in a pattern: the line's syslog priority as journald reads it from a stream, "<N>".
class syslog_priority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const char* prefix = "<6>";
    switch (msg.level) {
      case spdlog::level::critical: prefix = "<2>"; break;
      case spdlog::level::err: prefix = "<3>"; break;
      case spdlog::level::warn: prefix = "<4>"; break;
      case spdlog::level::info: prefix = "<6>"; break;
      default: prefix = "<7>"; break;  // debug, trace
    }
    dest.append(prefix, prefix + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<syslog_priority>(); }
};

std::string trim(std::string text) {
  const char* space = " \t\r\n";
  text.erase(0, text.find_first_not_of(space));
  const auto last = text.find_last_not_of(space);
  text.erase(last == std::string::npos ? 0 : last + 1);
  return text;
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (!stream) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("portrelay");
  if (stderr_is_journal()) {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<syslog_priority>('*').set_pattern("%*%v");
    logger->set_formatter(std::move(formatter));
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  }
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

std::optional<std::string> credential_token() { return credential("token"); }

std::optional<std::string> credential(const std::string& name) {
  const char* dir = std::getenv("CREDENTIALS_DIRECTORY");
  if (!dir || !*dir) return std::nullopt;
  auto text = read_file((std::filesystem::path(dir) / name).string());
  if (!text) return std::nullopt;
  auto token = trim(*text);
  if (token.empty()) return std::nullopt;
  return token;
}

std::optional<std::string> read_token_file(const std::string& path, std::string& error, const std::string& flag) {
  auto text = read_file(path);
  if (!text) {
    error = flag + ": cannot read " + path;
    return std::nullopt;
  }
  auto token = trim(*text);
  if (token.empty()) {
    error = flag + ": " + path + " is empty";
    return std::nullopt;
  }
  return token;
}

notifier::notifier() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) watchdog_interval_ = std::chrono::microseconds(usec / 2);
}

void notifier::send(const std::string& message) { sd_notify(0, message.c_str()); }

void notifier::ready(const std::string& status) {
  last_status_ = status;
  send("READY=1\nSTATUS=" + status);
}

void notifier::status(const std::string& status) {
  if (status == last_status_) return;
  last_status_ = status;
  send("STATUS=" + status);
}

void notifier::stopping(const std::string& status) {
  last_status_ = status;
  send("STOPPING=1\nSTATUS=" + status);
}

void notifier::watchdog() { send("WATCHDOG=1"); }

}  // namespace service
