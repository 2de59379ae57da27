// assets: the admin page's files, embedded into the binary at build time (no files read at runtime).
#pragma once

#include <string_view>

namespace web {

struct asset {
  std::string_view path;          // "/", "/app.js", "/style.css"
  std::string_view content_type;  // all are UTF-8 text
  std::string_view body;
  std::string_view etag;          // quoted, from the content's SHA-256
};

// The asset served at `path`, or nullptr.
const asset* find_asset(std::string_view path);

}  // namespace web
