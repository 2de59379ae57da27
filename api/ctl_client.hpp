// ctl_client: how `portrelay ctl` reaches the API: its address, its token, and one request at a time.
#pragma once

#include <httplib.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace api {

// The exit statuses of `portrelay ctl`.
enum ctl_status : int { ctl_ok = 0, ctl_failed = 1, ctl_usage = 2, ctl_unreachable = 3 };

// Why a command stops, with the status it exits with. Only the top of `portrelay ctl` catches it: a
// command is a straight line that either finishes or stops at the first thing that goes wrong.
struct ctl_error : std::runtime_error {
  ctl_error(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

struct ctl_endpoint {
  std::string host;  // without brackets
  std::uint16_t port = 7410;
};

// "http://HOST:PORT" or "HOST:PORT", IPv6 in brackets, a trailing "/" allowed; nothing for anything
// else, a HOST or PORT alone included (a bare number would read as an IPv4 address).
std::optional<ctl_endpoint> parse_endpoint(std::string_view text);
std::string endpoint_url(const ctl_endpoint& e);

// The address: --api, else PORTRELAY_API, else 127.0.0.1:7410. The token: --token-file (read as the
// daemon reads it), else PORTRELAY_TOKEN, else none. A bad value is a ctl_error with ctl_usage.
ctl_endpoint resolve_endpoint(const std::string& api_flag);
std::string resolve_token(const std::string& token_file_flag);

struct ctl_answer {
  int status = 0;
  std::string body;
  std::string etag;
};

// One request per call, no retries: 5 s to connect, 30 s for each read or write. An answer of 400 or
// more is a ctl_error (ctl_failed) carrying the API's message; no answer is one with ctl_unreachable.
class ctl_client {
 public:
  ctl_client(ctl_endpoint endpoint, const std::string& token);
  ctl_answer call(const std::string& method, const std::string& path, const std::string& body = {},
                  const httplib::Headers& headers = {});

 private:
  ctl_endpoint endpoint_;
  httplib::Client client_;
  bool sent_token_ = false;  // so a 401 can say the token was refused rather than missing
};

// "10.0.0.0/8" as a query value: everything but unreserved characters percent-encoded.
std::string query_value(std::string_view text);

}  // namespace api
