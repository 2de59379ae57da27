// connection_info: state names and merging the workers' pages.
#include "relay/connection_info.hpp"

namespace relay {

std::string_view to_string(connection_state s) {
  switch (s) {
    case connection_state::connecting:
      return "connecting";
    case connection_state::relaying:
      return "relaying";
    case connection_state::half_closed:
      return "half_closed";
    case connection_state::active:
      break;
  }
  return "active";
}

connection_page merge_pages(std::vector<connection_page> parts, std::size_t limit) {
  connection_page out;
  for (auto& p : parts) {
    out.more = out.more || p.more;  // a part cut short had `limit` of its own: the merged one is cut too
    std::move(p.items.begin(), p.items.end(), std::back_inserter(out.items));
  }
  std::sort(out.items.begin(), out.items.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  if (out.items.size() > limit) {
    out.more = true;
    out.items.resize(limit);
  }
  return out;
}

}  // namespace relay
