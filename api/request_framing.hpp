// request_framing: where one HTTP/1.1 request ends in the bytes received so far, within set limits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace api {

// What one request may make the API hold before a handler sees it.
struct request_limits {
  std::size_t max_head = 64 * 1024;     // request line, header fields and the blank line, in bytes
  std::size_t max_header_fields = 100;  // header field lines (HAProxy's tune.http.maxhdr is 101)
  std::size_t max_body = 64 * 1024;     // decoded body, in bytes
};

// A request's framing, as far as the bytes seen tell (RFC 9112 sections 2, 5, 6 and 7.1).
struct framing {
  enum class verdict { incomplete, complete, refused };
  verdict state = verdict::incomplete;
  // refused: the status to answer (400, 413, 431, 501) and why, for the log.
  int status = 0;
  std::string reason;
  // complete: the request is the first `size` bytes; the head the first `head_size`.
  std::size_t head_size = 0;
  std::size_t size = 0;
  bool has_body = false;  // known once head_size is: Content-Length above 0, or chunked
  // The head asks "Expect: 100-continue" and a body is due: the client may be waiting for an interim
  // 100 before it sends it. The field's bytes, [expect_begin, expect_end), are cut before the request
  // goes on (with or without a body), since the front answers the expectation itself.
  bool expects_continue = false;
  std::size_t expect_begin = 0;
  std::size_t expect_end = 0;
};

// The value of the first header field named `name` (case-insensitive) in a complete head, trimmed.
std::optional<std::string_view> field_value(std::string_view head, std::string_view name);

// Scans the bytes of one request as they arrive: the head each byte once, so a client that trickles
// it in one byte at a time costs linear work; a chunk-size line at most 1 KiB again per read. Bodies
// come with Content-Length or chunked Transfer-Encoding (without trailer fields); a chunked body's
// framing is bounded too.
class request_scanner {
 public:
  explicit request_scanner(request_limits limits) : limits_(limits) {}

  // `buffered` is everything received for this request so far: the same bytes as at the last call,
  // and possibly more after them.
  framing scan(std::string_view buffered);
  // The most bytes a request can take without being refused (its framing included): a connection
  // that buffers one byte more always learns the verdict.
  static std::size_t max_request_size(const request_limits& l) { return 2 * l.max_head + l.max_body; }
  // Forgets the request, for the next one on the connection.
  void reset() { *this = request_scanner(limits_); }

 private:
  enum class body_kind { none, length, chunked };
  enum class chunk_step { size_line, data, data_end, trailers };

  framing refuse(int status, std::string reason);
  framing body_too_large();
  framing scan_head(std::string_view buffered);
  framing parse_fields(std::string_view head);
  framing scan_chunks(std::string_view buffered);
  framing done(std::size_t size);

  request_limits limits_;
  framing result_;
  // Head: scanned up to pos_, lines_ complete lines so far, line_start_ where the current one begins.
  std::size_t pos_ = 0;
  std::size_t lines_ = 0;
  std::size_t line_start_ = 0;
  bool head_done_ = false;
  body_kind body_ = body_kind::none;
  std::uint64_t content_length_ = 0;
  // Chunked: where the step at hand begins, the data left in the current chunk, the decoded total.
  chunk_step chunk_ = chunk_step::size_line;
  std::size_t chunk_pos_ = 0;
  std::uint64_t chunk_left_ = 0;
  std::uint64_t decoded_ = 0;
};

}  // namespace api
