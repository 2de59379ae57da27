// metrics: renders one scrape; each family's samples are written together, HELP and TYPE first.
#include "api/metrics.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
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
  return "id=\"" + std::to_string(spec.id) + "\",name=\"" + escape_label_value(spec.name) + "\",protocol=\"" +
         std::string(relay::to_string(spec.protocol)) + '"';
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

process_figures read_process() {
  process_figures p;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end; it.increment(ec)) {
    ++p.open_fds;
  }
  if (p.open_fds > 0) --p.open_fds;  // the directory iterator's own descriptor
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) p.max_fds = limit.rlim_cur;
  const auto page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  if (statm >> size >> resident) {
    p.virtual_bytes = size * page;
    p.resident_bytes = resident * page;
  }
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) {
    p.cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                    static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  }
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

std::string render_metrics(const relay::engine& engine) {
  const auto forwards = engine.snapshot();
  std::map<std::string, std::uint64_t> by_state{{"active", 0}, {"disabled", 0}, {"error", 0}};
  for (const auto& f : forwards) ++by_state[f.status.state];
  exposition e;

  e.family("portrelay_build_info", "gauge", "Always 1; the version of the running portrelay is in its label.");
  e.add(std::string("version=\"") + PORTRELAY_VERSION + '"', std::uint64_t{1});
  e.family("portrelay_workers", "gauge", "Data-plane worker threads.");
  e.add("", std::uint64_t{engine.workers()});
  e.family("portrelay_forwards", "gauge", "Forwards by state: active, disabled or error.");
  for (const auto& [state, count] : by_state) e.add("state=\"" + state + '"', count);

  per_forward(e, forwards, std::nullopt, "portrelay_forward_state", "gauge",
              "1 for the state the forward is in (active, disabled or error), 0 for the others.",
              [&](const std::string& l, const engine::view& f) {
                for (const char* state : {"active", "disabled", "error"}) {
                  e.add(l + ",state=\"" + state + '"', std::uint64_t{f.status.state == state});
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
  per_forward(e, forwards, std::nullopt, "portrelay_forward_connect_errors_total", "counter",
              "Failures to reach the target: refused, timed out, or not resolved.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.connect_errors); });
  per_forward(e, forwards, std::nullopt, "portrelay_forward_loops_refused_total", "counter",
              "Connections (TCP) or sessions (UDP) refused because the target leads back into this daemon.",
              [&](const std::string& l, const engine::view& f) { e.add(l, f.status.stats.loops_refused); });

  const auto p = read_process();
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
