// errors: the API's answer type and the one JSON shape every error answer has.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace api {

// The largest request body the API reads, in bytes (a 413 beyond it).
inline constexpr std::size_t max_body = 128 * 1024;

using json = nlohmann::ordered_json;

// What a route answers: a status, a JSON body (none for 204) and an optional Location.
struct reply {
  int status = 200;
  json body;
  std::string location;
  std::string allow;  // for 405
  std::string etag = {};  // a strong ETag with its quotes (GET and PUT /api/v1/config)
};

// {"error": {"code": "<stable machine code>", "message": "<sentence>", "field": "<name>"}}; "field"
// only when one field of the request is at fault, so a form can show the message beside it; and
// "forward": "<name>" when the fault is in one forward of a configuration document.
struct api_error {
  int status;
  std::string code;
  std::string message;
  std::string field = {};
  std::string forward = {};
};

reply error_reply(const api_error& e);
reply error_reply(int status, std::string code, std::string message);

// The body for an error that arose outside a route (httplib's own 400, 413, ...).
json error_body_for_status(int status);

}  // namespace api
