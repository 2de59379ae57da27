// ctl_output: tables, units and diffs for `portrelay ctl`, from the API's JSON as it answers it.
#include "api/ctl_output.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace api {

namespace {

// Characters, not bytes: "●" is three bytes and one column.
std::size_t width(const std::string& s) {
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

std::string pad(const std::string& s, std::size_t to, bool right) {
  const std::string fill(to > width(s) ? to - width(s) : 0, ' ');
  return right ? fill + s : s + fill;
}

// A member, or null when there is none (a const json's operator[] would assert).
const ctl_json& field(const ctl_json& v, const char* key) {
  static const ctl_json none;
  if (!v.is_object()) return none;
  const auto it = v.find(key);
  return it == v.end() ? none : *it;
}

std::string text(const ctl_json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::uint64_t count(const ctl_json& v, const char* key) {
  return v.contains(key) && v[key].is_number_unsigned() ? v[key].get<std::uint64_t>() : 0;
}

std::string host_port(const std::string& host, const ctl_json& port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + text(port);
}

std::string listen_text(const ctl_json& f) {
  std::string s = host_port(text(field(f, "listen_host")), field(f, "listen_port"));
  if (f.contains("listen_port_end") && !field(f, "listen_port_end").is_null()) s += "-" + text(field(f, "listen_port_end"));
  return s;
}

// "a:80 up, b:80 down": each target with its health, unless it has not been checked.
std::string targets_text(const ctl_json& f) {
  std::string out;
  const auto& rows = field(field(f, "stats"), "targets");
  for (std::size_t i = 0; i < field(f, "targets").size(); ++i) {
    const auto& t = field(f, "targets")[i];
    if (!out.empty()) out += ", ";
    out += host_port(text(field(t, "host")), field(t, "port"));
    const std::string health = i < rows.size() ? text(field(rows[i], "health")) : "unchecked";
    if (health != "unchecked") out += " " + health;
  }
  return out;
}

std::chrono::system_clock::time_point parse_time(const std::string& rfc3339) {
  std::tm tm{};
  if (std::sscanf(rfc3339.c_str(), "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec) != 6) {
    return {};
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

}  // namespace

std::string human_bytes(std::uint64_t bytes) {
  static constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes) / 1024;
  std::size_t unit = 0;
  while (v >= 1023.95 && unit + 1 < std::size(units)) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[unit]);
  return buf;
}

std::string human_duration(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  if (seconds < 10) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.1fs", std::floor(seconds * 10) / 10);
    return buf;
  }
  const auto s = static_cast<std::uint64_t>(seconds);
  const auto two = [](std::uint64_t v) { return (v < 10 ? "0" : "") + std::to_string(v); };
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + two(s % 60) + "s";
  if (s < 86400) return std::to_string(s / 3600) + "h" + two(s % 3600 / 60) + "m";
  return std::to_string(s / 86400) + "d" + two(s % 86400 / 3600) + "h";
}

std::string state_mark(const std::string& state) {
  if (state == "active") return "● active";
  if (state == "disabled") return "○ disabled";
  if (state == "error") return "✖ error";
  return state;
}

text_table::text_table(std::vector<std::string> header, std::vector<bool> right) : right_(std::move(right)) {
  right_.resize(header.size(), false);
  rows_.push_back(std::move(header));
}

void text_table::add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

std::string text_table::str() const {
  std::vector<std::size_t> widths(right_.size(), 0);
  for (const auto& row : rows_) {
    for (std::size_t c = 0; c < row.size() && c < widths.size(); ++c) widths[c] = std::max(widths[c], width(row[c]));
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t c = 0; c < row.size() && c < widths.size(); ++c) {
      const bool last = c + 1 == row.size();
      line += (c ? "  " : "") + (last && !right_[c] ? row[c] : pad(row[c], widths[c], right_[c]));
    }
    out += line + "\n";
  }
  return out;
}

std::string forwards_text(const ctl_json& forwards) {
  if (forwards.empty()) return "no forwards\n";
  text_table t({"ID", "NAME", "PROTO", "LISTEN", "STATE", "CONNS", "UP", "DOWN", "TARGETS"},
               {true, false, false, false, false, true, true, true, false});
  for (const auto& f : forwards) {
    const auto& stats = field(f, "stats");
    t.add({text(field(f, "id")), text(field(f, "name")).empty() ? "-" : text(field(f, "name")), text(field(f, "protocol")),
           listen_text(f), state_mark(text(field(f, "state"))), std::to_string(count(stats, "connections_active")),
           human_bytes(count(stats, "bytes_up")), human_bytes(count(stats, "bytes_down")), targets_text(f)});
  }
  return t.str();
}

std::string forward_line(const ctl_json& f) {
  std::string line = "forward " + text(field(f, "id"));
  if (!text(field(f, "name")).empty()) line += " (" + text(field(f, "name")) + ")";
  line += ": " + state_mark(text(field(f, "state")));
  if (!field(f, "error").is_null()) line += ": " + text(field(f, "error"));
  return line + "\n";
}

std::string forward_text(const ctl_json& f) {
  // What the header, the listen line and the targets table already show is not listed again.
  static const std::vector<std::string> shown{"id", "name", "state", "error", "listen_host", "listen_port",
                                              "listen_port_end", "targets", "target_host", "target_port", "stats"};
  text_table fields({"forward", text(field(f, "id"))});
  fields.add({"name", text(field(f, "name")).empty() ? "-" : text(field(f, "name"))});
  fields.add({"state", state_mark(text(field(f, "state"))) + (field(f, "error").is_null() ? "" : ": " + text(field(f, "error")))});
  fields.add({"listen", listen_text(f)});
  for (const auto& [key, value] : f.items()) {
    if (std::find(shown.begin(), shown.end(), key) == shown.end()) fields.add({key, text(value)});
  }
  const auto& s = field(f, "stats");
  fields.add({"connections", std::to_string(count(s, "connections_active")) + " active, " +
                                 std::to_string(count(s, "connections_total")) + " in all"});
  fields.add({"bytes", human_bytes(count(s, "bytes_up")) + " up, " + human_bytes(count(s, "bytes_down")) + " down"});
  // Every other counter the API gives (refusals, errors, UDP datagrams), so a refused client shows.
  static const std::vector<std::string> counted{"connections_active", "connections_total", "bytes_up", "bytes_down", "targets"};
  std::string others;
  for (const auto& [key, value] : s.items()) {
    if (value.is_number() && std::find(counted.begin(), counted.end(), key) == counted.end()) {
      others += (others.empty() ? "" : ", ") + key + " " + text(value);
    }
  }
  if (!others.empty()) fields.add({"counters", others});

  text_table targets({"TARGET", "WEIGHT", "BACKUP", "HEALTH", "CONNS", "UP", "DOWN", "ERRORS"},
                     {false, true, false, false, true, true, true, true});
  for (std::size_t i = 0; i < field(f, "targets").size(); ++i) {
    const auto& t = field(f, "targets")[i];
    const auto row = i < field(s, "targets").size() ? field(s, "targets")[i] : ctl_json::object();
    targets.add({host_port(text(field(t, "host")), field(t, "port")), text(field(t, "weight")), field(t, "backup") == true ? "backup" : "-",
                 row.contains("health") ? text(field(row, "health")) : "unchecked",
                 std::to_string(count(row, "connections_active")), human_bytes(count(row, "bytes_up")),
                 human_bytes(count(row, "bytes_down")), std::to_string(count(row, "connect_errors"))});
  }
  return fields.str() + "\n" + targets.str();
}

std::string connections_text(const ctl_json& connections, std::chrono::system_clock::time_point now) {
  if (connections.empty()) return "no connections\n";
  text_table t({"ID", "PROTO", "CLIENT", "LISTEN", "TARGET", "STATE", "AGE", "IDLE", "UP", "DOWN"},
               {true, false, false, false, false, false, true, true, true, true});
  for (const auto& c : connections) {
    const auto age = std::chrono::duration<double>(now - parse_time(text(field(c, "started_at")))).count();
    t.add({text(field(c, "id")), text(field(c, "protocol")), text(field(c, "client")), text(field(c, "listen")), text(field(c, "target")),
           // started_at is to the second: whole seconds, not a tenth that would be made up
           text(field(c, "state")), age < 10 ? std::to_string(static_cast<int>(std::max(age, 0.0))) + "s" : human_duration(age), human_duration(field(c, "idle_s").is_number() ? field(c, "idle_s").get<double>() : 0),
           human_bytes(count(c, "bytes_up")), human_bytes(count(c, "bytes_down"))});
  }
  return t.str();
}

std::string plan_text(const ctl_json& plan) {
  std::string out;
  const auto list = [&](const char* key) { return plan.contains(key) ? plan[key] : ctl_json::array(); };
  for (const auto& name : list("create")) out += "+ " + text(name) + " (create)\n";
  for (const auto& u : list("update")) {
    for (const auto& [name, change] : field(u, "changes").items()) {
      if (!change.is_array() || change.size() != 2) continue;
      out += "~ " + text(field(u, "name")) + ": " + name + " " + change[0].dump() + " -> " + change[1].dump() + "\n";
    }
  }
  for (const auto& name : list("delete")) out += "- " + text(name) + " (delete)\n";
  out += "= " + text(plan.value("unchanged", ctl_json(0))) + " unchanged\n";
  for (const auto& e : list("errors")) {
    out += "✖ " + text(field(e, "name")) + ": " + (e.contains("field") ? text(field(e, "field")) + ": " : "") + text(field(e, "message")) + "\n";
  }
  return out;
}

}  // namespace api
