// ctl_output: what `portrelay ctl` prints for people: aligned tables, human units, marks and plans.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace api {

using ctl_json = nlohmann::ordered_json;

// 0 B, 999 B, 1.0 KiB, 12.3 MiB, 4.0 GiB, 2.5 TiB: powers of 1024, one decimal from KiB on.
std::string human_bytes(std::uint64_t bytes);
// 0.4s, 12s, 3m05s, 2h03m, 4d02h: the two largest units.
std::string human_duration(double seconds);
// "● active", "○ disabled", "✖ error"; any other state as it is.
std::string state_mark(const std::string& state);

// Columns padded to their widest cell (counted in characters, not bytes), two spaces apart, the
// last one unpadded; the columns flagged in `right` are aligned right (numbers).
class text_table {
 public:
  text_table(std::vector<std::string> header, std::vector<bool> right = {});
  void add(std::vector<std::string> row);
  std::string str() const;

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_;
};

// GET /api/v1/forwards as a table; "no forwards" when there are none.
std::string forwards_text(const ctl_json& forwards);
// One forward, field by field, with its targets as a table.
std::string forward_text(const ctl_json& forward);
// "forward 3 (web): ● active", and the reason of an error.
std::string forward_line(const ctl_json& forward);
// The entries of GET /api/v1/forwards/{id}/connections as a table, ages measured from `now`.
std::string connections_text(const ctl_json& connections, std::chrono::system_clock::time_point now);
// PUT /api/v1/config's plan as a diff: "+ web (create)", "~ db: listen_port 5432 -> 5433",
// "- old (delete)", "= 3 unchanged", "✖ web: listen_port: ..." for each error.
std::string plan_text(const ctl_json& plan);

}  // namespace api
