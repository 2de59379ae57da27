// service: how the daemon meets its service manager: readiness, status, watchdog and stop
// notifications (sd_notify), journald-aware logging, and the token passed as a credential.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace service {

// Sets up the default logger on stderr. When stderr is the journal (JOURNAL_STREAM names it), each
// line starts with its syslog priority (<3> error ... <7> debug) and carries no timestamp of its
// own, so `journalctl -p warning` filters by level; otherwise lines carry a UTC timestamp.
void setup_logging(const std::string& level);

// True when JOURNAL_STREAM names the device and inode of this process's stderr.
bool stderr_is_journal();

// The API token systemd passed with LoadCredential=token:..., read from $CREDENTIALS_DIRECTORY/token.
// Nothing when there is no credentials directory, no token credential, or an empty one (the unit's
// SetCredential= fallback when no token file is installed).
std::optional<std::string> credential_token();
// Any credential systemd passed (LoadCredential=NAME:...), trimmed; nothing when absent or empty.
std::optional<std::string> credential(const std::string& name);

// Reads a token file: surrounding whitespace is dropped; an unreadable or empty file is an error,
// whose message starts with `flag`.
std::optional<std::string> read_token_file(const std::string& path, std::string& error,
                                           const std::string& flag = "--token-file");

// The sd_notify protocol via libsystemd. Outside systemd (no NOTIFY_SOCKET) every call does nothing.
class notifier {
 public:
  notifier();
  void ready(const std::string& status);
  void status(const std::string& status);
  void stopping(const std::string& status);
  void watchdog();
  // How often WATCHDOG=1 is due (half of WatchdogSec=), or nothing when the watchdog is off.
  std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_interval_; }

 private:
  void send(const std::string& message);
  std::optional<std::chrono::microseconds> watchdog_interval_;
  std::string last_status_;
};

}  // namespace service
