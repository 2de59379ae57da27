// metrics: the daemon's state and counters in the Prometheus text exposition format (version 0.0.4).
#pragma once

#include "relay/engine.hpp"

#include <string>

namespace api {

inline constexpr const char* metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

// Per forward (labels id, name, protocol): state, connections or sessions, bytes and datagrams by
// direction, connect errors, drops and evictions. Daemon-wide: forwards by state, workers,
// build_info, and the standard process_* metrics (descriptors, resident memory, CPU, start time).
std::string render_metrics(const relay::engine& engine);

// A label value as the format wants it: backslash, double quote and newline escaped.
std::string escape_label_value(const std::string& value);

}  // namespace api
