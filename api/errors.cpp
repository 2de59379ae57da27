// errors: building error answers.
#include "api/errors.hpp"

namespace api {

reply error_reply(const api_error& e) {
  json error{{"code", e.code}, {"message", e.message}};
  if (!e.field.empty()) error["field"] = e.field;
  if (!e.forward.empty()) error["forward"] = e.forward;
  return reply{e.status, json{{"error", std::move(error)}}, {}, {}};
}

reply error_reply(int status, std::string code, std::string message) {
  return error_reply(api_error{status, std::move(code), std::move(message)});
}

json error_body_for_status(int status) {
  auto make = [&](const char* code, const char* message) {
    return error_reply(status, code, message).body;
  };
  switch (status) {
    case 400: return make("bad_request", "The HTTP request is malformed.");
    case 401: return make("unauthorized", "a valid 'Authorization: Bearer <token>' header is required");
    case 404: return make("not_found", "There is nothing at this path.");
    case 405: return make("method_not_allowed", "This path does not support that method.");
    case 408: return make("request_timeout", "The whole request did not arrive within 10 s.");
    case 413: {
      static const std::string too_large =
          "The request body is larger than " + std::to_string(max_body / 1024) + " KiB.";
      return make("payload_too_large", too_large.c_str());
    }
    case 414: return make("uri_too_long", "The request URI is too long.");
    case 416: return make("range_not_satisfiable", "Ranges are not supported.");
    case 431:
      return make("request_header_fields_too_large",
                  "The request head is larger than 64 KiB or has more than 100 header fields.");
    case 501: return make("not_implemented", "The only transfer coding accepted is chunked.");
    default:
      if (status >= 500) return make("internal_error", "The server failed to handle the request; see its log.");
      return make("error", "The request was refused.");
  }
}

}  // namespace api
