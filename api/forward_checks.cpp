// forward_checks: bind errors, foreign source addresses, store failures and missing forwards as the API's answers.
#include "api/forward_checks.hpp"

#include "relay/engine.hpp"
#include "relay/socket_options.hpp"

#include <spdlog/spdlog.h>

namespace api {

namespace {
// The host ran out of something a listener needs: a 503, not the client's fault and not its field.
std::optional<std::string> exhausted_resource(const std::error_code& code) {
  if (!relay::is_resource_error(code)) return std::nullopt;
  if (code == std::errc::too_many_files_open) return "file descriptors of the portrelay process (RLIMIT_NOFILE)";
  if (code == std::errc::too_many_files_open_in_system) return "file descriptors of the system (fs.file-max)";
  return "kernel memory";  // ENOBUFS, ENOMEM
}
}  // namespace

api_error bind_refusal(const relay::forward_spec& next, const relay::op_error& e) {
  if (e.code == std::errc::address_in_use) {
    // A range's message names the port that is taken ("listen port 40012 is in use: bind ...").
    const auto where = relay::listen_endpoint(next);
    return api_error{409, "address_in_use",
                     next.listen_port_end ? e.message + " (range " + where + "; nothing was bound)"
                                          : "listen address " + where + " is already in use (" + e.message + ")",
                     "listen_port"};
  }
  if (e.code == relay::range_over_budget) {
    return api_error{409, "descriptor_limit", "cannot listen on " + relay::listen_endpoint(next) + ": " + e.message,
                     "listen_port_end"};
  }
  if (auto resource = exhausted_resource(e.code)) {
    return api_error{503, "resource_exhausted",
                     "cannot listen on " + relay::listen_endpoint(next) + ": the host is out of " + *resource +
                         " (" + e.message + "); try again later"};
  }
  return api_error{400, "bind_failed", "cannot listen on " + relay::listen_endpoint(next) + ": " + e.message,
                   "listen_host"};
}

std::optional<api_error> foreign_source(const relay::forward_spec& next, const relay::forward_spec* was) {
  if (!next.source_address || (was && was->source_address == next.source_address)) return std::nullopt;
  const auto address = next.source_address->to_string();
  if (relay::is_local_broadcast(*next.source_address)) {
    return api_error{400, "invalid_field",
                     "source_address " + address +
                         " is a broadcast address of this host: connections leave from a unicast address",
                     "source_address"};
  }
  const auto ec = relay::check_local_address(*next.source_address);
  if (!ec || relay::is_resource_error(ec)) return std::nullopt;
  return api_error{400, "invalid_field",
                   ec.value() == EADDRNOTAVAIL
                       ? "source_address " + address + " is not an address of this host"
                       : "source_address " + address + " cannot be bound: " + ec.message(),
                   "source_address"};
}

api_error target_refusal(const relay::forward_spec& next, const relay::refusal& r) {
  // The field is the port: a local target host is ordinary, it is the port that makes it the API or
  // a listener of this daemon.
  const bool api = r.kind == relay::refusal::kind::api;
  return api_error{400, api ? "target_is_api" : "forward_loop", r.message,
                   next.targets.size() == 1 ? "target_port" : "targets"};
}

reply storage_failed(const std::exception& e) {
  spdlog::error("store: {}", e.what());
  return error_reply(500, "storage_error", "the change could not be saved; nothing was changed");
}

reply forward_not_found(std::int64_t id) {
  return error_reply(404, "not_found", "there is no forward with id " + std::to_string(id));
}

}  // namespace api
