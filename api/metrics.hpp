// metrics: the daemon's state and counters in the Prometheus text exposition format (version 0.0.4).
#pragma once

#include "api/http_front.hpp"
#include "relay/engine.hpp"
#include "relay/result.hpp"

#include <string>

namespace api {

inline constexpr const char* metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

// Per forward (labels id, name, protocol): state, connections or sessions, bytes and datagrams by
// direction, connect errors, drops and evictions. Per target of each active forward (labels id,
// name, target): up (unchecked counts as up, as HAProxy does), connections, bytes, connect errors.
// Daemon-wide: forwards by state, workers,
// build_info, the API's connections (`api`: what its front has counted), and the standard
// process_* metrics (descriptors, resident memory, CPU, start time).
// An error when a process figure cannot be read: the scrape then fails visibly (the server answers
// 503) rather than report a 0 that would silence an alert. Counting descriptors needs none, so the
// count stays right at the descriptor limit.
relay::result<std::string> render_metrics(const relay::engine& engine, const http_front::figures& api = {});

// A label value as the format wants it: backslash, double quote and newline escaped. Names pass
// relay::printable first, so a label is valid UTF-8 whatever the store holds.
std::string escape_label_value(const std::string& value);

}  // namespace api
