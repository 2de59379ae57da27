// ctl: `portrelay ctl`, the command-line client of the daemon's REST API.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace api {

// Runs `portrelay ctl ARGS...` (args without "portrelay ctl") and returns its exit status (see
// ctl_status: 0 done, 1 refused by the API or a file, 2 usage, 3 the API cannot be reached). What a
// command shows goes to `out`, every error to `err`.
int run_ctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace api
