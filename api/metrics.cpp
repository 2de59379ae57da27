// metrics: renders one scrape; each family's samples are written together, HELP and TYPE first.
#include "api/metrics.hpp"

#include "api/forward_json.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>

namespace api {

namespace {

using relay::engine;
using relay::protocol;

class exposition {
 public:
  // One metric family: its header, then a sample per call of `add`.
  void family(const char* name, const char* type, const char* help) {
    name_ = name;
    out_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  }
  template <class Number>
  void add(const std::string& labels, Number value) {
    char digits[64];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);  // shortest exact form
    out_ << name_;
    if (!labels.empty()) out_ << '{' << labels << '}';
    out_ << ' ' << std::string_view(digits, static_cast<std::size_t>(end - digits)) << '\n';
  }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::string name_;
};

std::string forward_labels(const relay::forward_spec& spec) {
  return "id=\"" + std::to_string(spec.id) + "\",name=\"" + escape_label_value(relay::printable(spec.name)) +
         "\",protocol=\"" + std::string(relay::to_string(spec.protocol)) + '"';
}

// A per-forward family over the forwards of one protocol (or all when `only` is empty).
void per_forward(exposition& e, const std::vector<engine::view>& forwards, std::optional<protocol> only,
                 const char* name, const char* type, const char* help,
                 const std::function<void(const std::string& labels, const engine::view&)>& samples) {
  bool header = false;
  for (const auto& f : forwards) {
    if (only && f.spec.protocol != *only) continue;
    if (!header) e.family(name, type, help);
    header = true;
    samples(forward_labels(f.spec), f);
  }
}

// A per-target family: one sample set per target of each running forward (a disabled forward or one
// in error has no live targets, so none), labelled id, name and target ("host:port").
void per_target(exposition& e, const std::vector<engine::view>& forwards, const char* name, const char* type,
                const char* help, const std::function<void(const std::string& labels, const relay::target_stats&)>& samples) {
  bool header = false;
  for (const auto& f : forwards) {
    if (f.status.state != relay::forward_state::active) continue;
    const std::string forward = "id=\"" + std::to_string(f.spec.id) + "\",name=\"" +
                                escape_label_value(relay::printable(f.spec.name)) + "\",target=\"";
    for (const auto& t : target_rows(f.spec, f.status)) {
      if (!header) e.family(name, type, help);
      header = true;
      samples(forward + escape_label_value(relay::printable(relay::format_endpoint(t.host, t.port))) + '"', t);
    }
  }
}

struct process_figures {
  std::uint64_t open_fds = 0;
  std::uint64_t max_fds = 0;
  std::uint64_t resident_bytes = 0;
  std::uint64_t virtual_bytes = 0;
  double cpu_seconds = 0;
  double start_time_seconds = 0;
};

// Taken as the program loads: /proc/stat (for the boot time) is hidden under the unit's ProcSubset=pid.
const double start_time =
    std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

relay::op_error os_error(int errno_value, const std::string& what) {
  std::error_code code(errno_value, std::system_category());
  return {code, "cannot read " + what + ": " + code.message()};
}

// /proc/self/fd and /proc/self/statm, opened once as the program loads: counting descriptors with a
// descriptor of its own would read 0 exactly when the process is at its limit, which is when the
// figure matters. Each scrape rewinds the same two descriptors instead (the directory's offset is
// shared, hence the mutex); the kernel generates both afresh from offset 0.
class proc_self {
 public:
  proc_self()
      : fd_dir_(::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC)),
        fd_dir_errno_(errno),
        statm_(::open("/proc/self/statm", O_RDONLY | O_CLOEXEC)),
        statm_errno_(errno) {}
  ~proc_self() {
    if (fd_dir_ >= 0) ::close(fd_dir_);
    if (statm_ >= 0) ::close(statm_);
  }
  proc_self(const proc_self&) = delete;
  proc_self& operator=(const proc_self&) = delete;

  // Every open descriptor, the directory's own included (it is open, like any other).
  relay::result<std::uint64_t> open_fds() {
    std::lock_guard lock(mutex_);
    if (fd_dir_ < 0) return os_error(fd_dir_errno_, "/proc/self/fd");
    if (::lseek(fd_dir_, 0, SEEK_SET) < 0) return os_error(errno, "/proc/self/fd");
    std::uint64_t count = 0;
    alignas(dirent64) char buf[8192];
    for (;;) {
      const auto got = ::getdents64(fd_dir_, buf, sizeof buf);
      if (got < 0) return os_error(errno, "/proc/self/fd");
      if (got == 0) return count;
      for (std::size_t at = 0; at < static_cast<std::size_t>(got);) {
        const auto* entry = reinterpret_cast<const dirent64*>(buf + at);
        const std::string_view name(entry->d_name);
        if (name != "." && name != "..") ++count;
        at += entry->d_reclen;
      }
    }
  }

  // Virtual and resident size in pages.
  relay::result<std::pair<std::uint64_t, std::uint64_t>> statm() {
    if (statm_ < 0) return os_error(statm_errno_, "/proc/self/statm");
    char buf[256];
    const auto got = ::pread(statm_, buf, sizeof buf - 1, 0);
    if (got < 0) return os_error(errno, "/proc/self/statm");
    buf[got] = '\0';
    unsigned long long size = 0, resident = 0;
    if (std::sscanf(buf, "%llu %llu", &size, &resident) != 2) return os_error(EIO, "/proc/self/statm");
    return std::pair<std::uint64_t, std::uint64_t>{size, resident};
  }

 private:
  std::mutex mutex_;
  const int fd_dir_;
  const int fd_dir_errno_;
  const int statm_;
  const int statm_errno_;
};

proc_self self_at_load;

// Every figure or the reason one could not be read: a figure that cannot be read is never shown as 0.
relay::result<process_figures> read_process() {
  process_figures p;
  const auto fds = self_at_load.open_fds();
  if (!fds) return fds.error();
  p.open_fds = fds.value();
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return os_error(errno, "RLIMIT_NOFILE");
  p.max_fds = limit.rlim_cur;
  const auto pages = self_at_load.statm();
  if (!pages) return pages.error();
  const auto page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  p.virtual_bytes = pages.value().first * page;
  p.resident_bytes = pages.value().second * page;
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return os_error(errno, "getrusage");
  p.cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                  static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  p.start_time_seconds = start_time;
  return p;
}

}  // namespace

std::string escape_label_value(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

relay::result<std::string> render_metrics(const relay::engine& engine, const http_front::figures& api) {
  const auto figures = read_process();
  if (!figures) return figures.error();
  const auto& p = figures.value();
  const auto forwards = engine.snapshot();
  std::map<relay::forward_state, std::uint64_t> by_state;
  for (const auto state : relay::all_forward_states) by_state[state] = 0;
  for (const auto& f : forwards) ++by_state[f.status.state];
  exposition e;

  e.family("portrelay_build_info", "gauge", "Always 1; the version of the running portrelay is in its label.");
  e.add(std::string("version=\"") + PORTRELAY_VERSION + '"', std::uint64_t{1});
  e.family("portrelay_workers", "gauge", "Data-plane worker threads.");
  e.add("", std::uint64_t{engine.workers()});
  e.family("portrelay_forwards", "gauge", "Forwards by state: active, disabled or error.");
  for (const auto& [state, count] : by_state) e.add("state=\"" + std::string(to_string(state)) + '"', count);

  e.family("portrelay_api_connections", "gauge", "Open connections to the API.");
  e.add("", std::uint64_t{api.open});
  e.family("portrelay_api_connections_total", "counter", "Connections the API accepted.");
  e.add("", api.accepted);
  e.family("portrelay_api_connections_evicted_total", "counter",
           "API connections closed at the total or per-source cap to make room for a new one.");
  e.add("", api.evicted);
  e.family("portrelay_api_connections_turned_away_total", "counter",
           "API connections closed at once at a cap because every open one was busy being answered.");
  e.add("", api.turned_away);
  e.family("portrelay_api_timeouts_total", "counter",
           "API connections ended by a deadline: a request not whole in time (answered 408), or an answer "
           "not read in time.");
  e.add("", api.timed_out);
  e.family("portrelay_api_requests_refused_total", "counter",
           "Requests the API refused before routing them: a limit, bad framing, the request deadline, or a body "
           "without the token.");
  e.add("", api.refused);
  e.family("portrelay_api_accept_errors_total", "counter",
           "Times the API could not accept a connection for lack of descriptors or memory.");
  e.add("", api.accept_errors);

  per_forward(e, forwards, std::nullopt, "portrelay_forward_state", "gauge",
              "1 for the state the forward is in (active, disabled or error), 0 for the others.",
              [&](const std::string& l, const engine::view& f) {
                for (const auto state : relay::all_forward_states) {
                  e.add(l + ",state=\"" + std::string(to_string(state)) + '"', std::uint64_t{f.status.state == state});
                }
              });
  per_forward(e, forwards, protocol::tcp, "portrelay_forward_connections_active", "gauge",
              "Open client connections of a TCP forward.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.connections_active); });
  per_forward(e, forwards, protocol::tcp, "portrelay_forward_connections_total", "counter",
              "Client connections accepted by a TCP forward.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.connections_total); });
  per_forward(e, forwards, protocol::udp, "portrelay_forward_sessions_active", "gauge",
              "Live client sessions of a UDP forward.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.connections_active); });
  per_forward(e, forwards, protocol::udp, "portrelay_forward_sessions_total", "counter",
              "Client sessions opened by a UDP forward.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.connections_total); });
  per_forward(e, forwards, protocol::udp, "portrelay_forward_sessions_evicted_total", "counter",
              "UDP sessions closed early because the forward reached udp_max_sessions.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.sessions_evicted); });
  per_forward(e, forwards, std::nullopt, "portrelay_forward_bytes_total", "counter",
              "Payload bytes relayed; direction up is client to target, down is target to client.",
              [&](const std::string& l, const engine::view& f) {
                e.add(l + ",direction=\"up\"", f.status.stats.bytes_up);
                e.add(l + ",direction=\"down\"", f.status.stats.bytes_down);
              });
  per_forward(e, forwards, protocol::udp, "portrelay_forward_datagrams_total", "counter",
              "Datagrams relayed by a UDP forward; direction up is client to target, down is target to client.",
              [&](const std::string& l, const engine::view& f) {
                e.add(l + ",direction=\"up\"", f.status.stats.datagrams_up);
                e.add(l + ",direction=\"down\"", f.status.stats.datagrams_down);
              });
  per_forward(e, forwards, protocol::udp, "portrelay_forward_dropped_datagrams_total", "counter",
              "Datagrams a UDP forward could not relay (no session possible, send failed, or queue full).",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.datagrams_dropped); });
  per_forward(e, forwards, protocol::udp, "portrelay_forward_target_unreachable_total", "counter",
              "ICMP errors (port, host or network unreachable, prohibited) reported on a UDP forward's sessions.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.target_unreachable); });
  per_forward(e, forwards, std::nullopt, "portrelay_forward_connect_errors_total", "counter",
              "Failures to reach the target: refused, timed out, or not resolved.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.connect_errors); });
  per_forward(e, forwards, std::nullopt, "portrelay_forward_loops_refused_total", "counter",
              "Connections (TCP) or sessions (UDP) refused because the target leads back into this daemon.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.loops_refused); });

  per_forward(e, forwards, std::nullopt, "portrelay_forward_refused_total", "counter",
              "Connections (TCP, reset right after accept) or first datagrams of sessions (UDP, dropped) refused: "
              "reason acl by the allow and deny lists, limit by max_connections or max_connections_per_source.",
              [&](const std::string& l, const engine::view& f) {
                e.add(l + ",reason=\"acl\"", f.status.stats.refused_acl);
                e.add(l + ",reason=\"limit\"", f.status.stats.refused_limit);
              });
  per_forward(e, forwards, protocol::tcp, "portrelay_forward_proxy_errors_total", "counter",
              "Connections to a TCP forward with accept_proxy_protocol closed for a missing, partial, malformed or "
              "oversized PROXY header, or none within 3 seconds.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.proxy_errors); });

  per_target(e, forwards, "portrelay_target_up", "gauge",
             "1 while a target of a running forward may be given connections (health up, or unchecked: not yet "
             "tested), 0 while it is down.",
             [&](const std::string& l, const relay::target_stats& t) {
               e.add(l, std::uint64_t{t.health != relay::target_health::down});
             });
  per_target(e, forwards, "portrelay_target_connections_active", "gauge",
             "Open connections (TCP) or live sessions (UDP) on a target.",
             [&](const std::string& l, const relay::target_stats& t) { e.add(l, t.connections_active); });
  per_target(e, forwards, "portrelay_target_connections_total", "counter",
             "Connections (TCP) or sessions (UDP) opened to a target.",
             [&](const std::string& l, const relay::target_stats& t) { e.add(l, t.connections_total); });
  per_target(e, forwards, "portrelay_target_bytes_total", "counter",
             "Payload bytes relayed through a target; direction up is client to target, down is target to client.",
             [&](const std::string& l, const relay::target_stats& t) {
               e.add(l + ",direction=\"up\"", t.bytes_up);
               e.add(l + ",direction=\"down\"", t.bytes_down);
             });
  per_target(e, forwards, "portrelay_target_connect_errors_total", "counter",
             "Failed attempts to reach a target: refused, timed out, not resolved, or ICMP unreachable (UDP).",
             [&](const std::string& l, const relay::target_stats& t) { e.add(l, t.connect_errors); });

  e.family("process_open_fds", "gauge", "Open file descriptors.");
  e.add("", p.open_fds);
  e.family("process_max_fds", "gauge", "Limit on open file descriptors (RLIMIT_NOFILE).");
  e.add("", p.max_fds);
  e.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  e.add("", p.resident_bytes);
  e.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  e.add("", p.virtual_bytes);
  e.family("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
  e.add("", p.cpu_seconds);
  e.family("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.");
  e.add("", p.start_time_seconds);
  return e.text();
}

}  // namespace api
