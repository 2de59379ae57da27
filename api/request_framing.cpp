// request_framing: the head scan, the field checks that decide the body's length, the chunk parser.
#include "api/request_framing.hpp"

#include <algorithm>
#include <cctype>
#include <utility>

namespace api {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string_view without_cr(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

// Longest chunk-size line accepted (size, extensions): far above any real client's.
constexpr std::size_t max_chunk_line = 1024;

}  // namespace

std::optional<std::string_view> field_value(std::string_view head, std::string_view name) {
  std::size_t at = head.find('\n');
  while (at != std::string_view::npos && at + 1 < head.size()) {
    const std::size_t begin = at + 1;
    at = head.find('\n', begin);
    const auto line = without_cr(head.substr(begin, at == std::string_view::npos ? at : at - begin));
    const auto colon = line.find(':');
    if (colon != std::string_view::npos && iequals(line.substr(0, colon), name)) return trim(line.substr(colon + 1));
  }
  return std::nullopt;
}

framing request_scanner::refuse(int status, std::string reason) {
  result_.state = framing::verdict::refused;
  result_.status = status;
  result_.reason = std::move(reason);
  return result_;
}

framing request_scanner::done(std::size_t size) {
  result_.state = framing::verdict::complete;
  result_.size = size;
  return result_;
}

framing request_scanner::scan(std::string_view buffered) {
  if (result_.state != framing::verdict::incomplete) return result_;
  if (!head_done_) {
    auto f = scan_head(buffered);
    if (!head_done_ || f.state != framing::verdict::incomplete) return f;
  }
  switch (body_) {
    case body_kind::none: return done(result_.head_size);
    case body_kind::length:
      if (buffered.size() - result_.head_size >= content_length_) {
        return done(result_.head_size + static_cast<std::size_t>(content_length_));
      }
      return result_;
    case body_kind::chunked: return scan_chunks(buffered);
  }
  return result_;
}

framing request_scanner::scan_head(std::string_view buffered) {
  const auto too_large = [&] {
    return refuse(431, "the request head is larger than " + std::to_string(limits_.max_head / 1024) + " KiB");
  };
  for (; pos_ < buffered.size(); ++pos_) {
    if (buffered[pos_] != '\n') continue;
    if (pos_ + 1 > limits_.max_head) return too_large();
    const auto line = without_cr(buffered.substr(line_start_, pos_ - line_start_));
    line_start_ = ++pos_;
    if (line.empty()) {
      if (lines_ == 0) return refuse(400, "the request begins with an empty line");
      head_done_ = true;
      result_.head_size = pos_;
      return parse_fields(buffered.substr(0, pos_));
    }
    if (++lines_ > limits_.max_header_fields + 1) {
      return refuse(431, "the request has more than " + std::to_string(limits_.max_header_fields) + " header fields");
    }
    --pos_;  // the loop's increment
  }
  if (buffered.size() > limits_.max_head) return too_large();
  return result_;
}

framing request_scanner::parse_fields(std::string_view head) {
  bool has_length = false, chunked = false, expect = false;
  std::size_t at = head.find('\n') + 1;  // past the request line
  while (at < head.size()) {
    const std::size_t begin = at;
    const std::size_t end = head.find('\n', at) + 1;
    const auto line = without_cr(head.substr(begin, end - begin - 1));
    at = end;
    if (line.empty()) break;
    // A folded line or a space before the colon can be read two ways: RFC 9112 5.1 and 5.2 say refuse.
    if (line.front() == ' ' || line.front() == '\t') return refuse(400, "a header field is folded over lines");
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return refuse(400, "a header line has no field name");
    const auto name = line.substr(0, colon);
    if (name.find_first_of(" \t") != std::string_view::npos) {
      return refuse(400, "whitespace between a header field's name and its colon");
    }
    const auto value = trim(line.substr(colon + 1));
    if (iequals(name, "Content-Length")) {
      if (has_length) return refuse(400, "more than one Content-Length");
      has_length = true;
      if (value.empty() || value.size() > 18 ||
          !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return refuse(400, "Content-Length is not a decimal number");
      }
      content_length_ = std::stoull(std::string(value));
    } else if (iequals(name, "Transfer-Encoding")) {
      if (chunked) return refuse(400, "more than one Transfer-Encoding");
      if (!iequals(value, "chunked")) return refuse(501, "the only transfer coding accepted is chunked");
      chunked = true;
    } else if (iequals(name, "Expect")) {
      // The front answers the expectation and cuts the field, so httplib must not see a second one.
      if (std::exchange(expect, true)) return refuse(400, "more than one Expect");
      if (iequals(value, "100-continue")) {
        result_.expects_continue = true;
        result_.expect_begin = begin;
        result_.expect_end = end;
      }
    }
  }
  // Both would let a proxy in front of us and this server disagree on where the request ends.
  if (has_length && chunked) return refuse(400, "both Content-Length and Transfer-Encoding");
  if (has_length && content_length_ > limits_.max_body) return body_too_large();
  body_ = chunked ? body_kind::chunked : content_length_ > 0 ? body_kind::length : body_kind::none;
  result_.has_body = body_ != body_kind::none;
  if (!result_.has_body) result_.expects_continue = false;
  chunk_pos_ = result_.head_size;
  return result_;
}

framing request_scanner::body_too_large() {
  return refuse(413, "the request body is larger than " + std::to_string(limits_.max_body / 1024) + " KiB");
}

framing request_scanner::scan_chunks(std::string_view buffered) {
  for (;;) {
    // Chunk sizes, extensions and trailers may add at most max_head bytes to the body.
    if (chunk_pos_ - result_.head_size > limits_.max_body + limits_.max_head) return body_too_large();
    switch (chunk_) {
      case chunk_step::size_line: {
        const auto nl = buffered.find('\n', chunk_pos_);
        if (nl == std::string_view::npos) {
          if (buffered.size() - result_.head_size > limits_.max_body + limits_.max_head) return body_too_large();
          if (buffered.size() - chunk_pos_ > max_chunk_line) return refuse(400, "a chunk size line is too long");
          return result_;
        }
        const auto line = without_cr(buffered.substr(chunk_pos_, nl - chunk_pos_));
        if (line.size() > max_chunk_line) return refuse(400, "a chunk size line is too long");
        std::size_t digits = 0;
        std::uint64_t size = 0;
        for (; digits < line.size() && std::isxdigit(static_cast<unsigned char>(line[digits])); ++digits) {
          if (digits == 15) return refuse(400, "a chunk size is too large");
          const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(line[digits])));
          size = size * 16 + static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
        }
        const auto rest = line.substr(digits);
        if (digits == 0 || !(rest.empty() || rest.front() == ';' || rest.front() == ' ' || rest.front() == '\t')) {
          return refuse(400, "a chunk size is not a hexadecimal number");
        }
        chunk_pos_ = nl + 1;
        if (size == 0) {
          chunk_ = chunk_step::trailers;
          break;
        }
        decoded_ += size;
        if (decoded_ > limits_.max_body) return body_too_large();
        chunk_left_ = size;
        chunk_ = chunk_step::data;
        break;
      }
      case chunk_step::data: {
        const auto take = std::min<std::uint64_t>(buffered.size() - chunk_pos_, chunk_left_);
        chunk_pos_ += static_cast<std::size_t>(take);
        chunk_left_ -= take;
        if (chunk_left_ > 0) return result_;
        chunk_ = chunk_step::data_end;
        break;
      }
      case chunk_step::data_end: {
        const auto rest = buffered.substr(chunk_pos_);
        if (rest.empty() || (rest.front() == '\r' && rest.size() < 2)) return result_;
        if (rest.substr(0, 1) == "\n") chunk_pos_ += 1;
        else if (rest.substr(0, 2) == "\r\n") chunk_pos_ += 2;
        else return refuse(400, "a chunk's data is longer than its size");
        chunk_ = chunk_step::size_line;
        break;
      }
      case chunk_step::trailers: {
        // Only the empty line: httplib 0.11.4 fails a chunked body that has trailer fields.
        const auto rest = buffered.substr(chunk_pos_);
        if (rest.empty() || (rest.front() == '\r' && rest.size() < 2)) return result_;
        if (rest.substr(0, 1) == "\n") return done(chunk_pos_ + 1);
        if (rest.substr(0, 2) == "\r\n") return done(chunk_pos_ + 2);
        return refuse(400, "trailer fields are not accepted");
      }
    }
  }
}

}  // namespace api
