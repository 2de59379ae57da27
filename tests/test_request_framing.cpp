// request_framing: where a request ends, and what it may not do, over bytes that arrive in pieces.
#include "api/request_framing.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <string>

using api::framing;
using api::request_scanner;

namespace {

// Feeds `text` one byte at a time, as a slow client would send it, and returns the first verdict.
framing trickle(const std::string& text, api::request_limits limits = {}) {
  request_scanner s(limits);
  framing f;
  for (std::size_t i = 1; i <= text.size(); ++i) {
    f = s.scan(std::string_view(text).substr(0, i));
    if (f.state != framing::verdict::incomplete) return f;
  }
  return f;
}

framing whole(const std::string& text, api::request_limits limits = {}) { return request_scanner(limits).scan(text); }

}  // namespace

TEST_CASE("a request ends after its head, its Content-Length or its last chunk", "[api]") {
  const std::string get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string post = "POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
  const std::string chunked = "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n";
  for (const auto& r : {get, post, chunked, std::string("GET / HTTP/1.1\nHost: x\n\n")}) {
    INFO(r);
    for (const auto& f : {whole(r + "GET /next HTTP/1.1\r\n\r\n"), trickle(r)}) {
      REQUIRE(f.state == framing::verdict::complete);
      CHECK(f.size == r.size());
    }
  }
  CHECK(whole(post.substr(0, post.size() - 1)).state == framing::verdict::incomplete);
  CHECK(whole(chunked.substr(0, chunked.size() - 2)).state == framing::verdict::incomplete);
}

TEST_CASE("the head is bounded in bytes and in fields, whatever the line lengths", "[api]") {
  api::request_limits small{1024, 10, 4096};
  const std::string start = "GET / HTTP/1.1\r\n";
  std::string fields;
  for (int i = 0; i < 10; ++i) fields += "F" + std::to_string(i) + ": v\r\n";
  CHECK(whole(start + fields + "\r\n", small).state == framing::verdict::complete);
  auto f = whole(start + fields + "F10: v\r\n\r\n", small);
  CHECK(f.state == framing::verdict::refused);
  CHECK(f.status == 431);
  // A head that never ends, in long lines, in one line, or before its request line has ended.
  for (const auto& flood : {start + std::string(2000, 'a'), std::string(2000, 'G'),
                            start + "X: " + std::string(900, 'v') + "\r\nY: " + std::string(900, 'v') + "\r\n"}) {
    f = trickle(flood, small);
    CHECK(f.state == framing::verdict::refused);
    CHECK(f.status == 431);
  }
}

TEST_CASE("bodies over the limit are refused from their Content-Length or as their chunks add up", "[api]") {
  api::request_limits small{1024, 10, 100};
  auto f = whole("POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", small);
  CHECK(f.state == framing::verdict::refused);
  CHECK(f.status == 413);
  CHECK(whole("POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n", small).state == framing::verdict::incomplete);

  std::string chunks = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 30; ++i) chunks += "5\r\nhello\r\n";
  f = trickle(chunks, small);
  CHECK(f.state == framing::verdict::refused);
  CHECK(f.status == 413);
  // Framing without data counts too (endless extensions); trailer fields are refused.
  std::string padding = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 400; ++i) padding += "1;x\r\na\r\n";
  CHECK(trickle(padding, small).status == 413);
  CHECK(trickle("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: v\r\n\r\n", small).status == 400);
}

TEST_CASE("heads that two parsers could read two ways are refused", "[api]") {
  const std::map<std::string, int> cases{
      {"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 5\r\n 6\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\n: nameless\r\n\r\n", 400},
      {"\r\nGET / HTTP/1.1\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", 400},
  };
  for (const auto& [head, status] : cases) {
    INFO(head);
    const auto f = whole(head);
    CHECK(f.state == framing::verdict::refused);
    CHECK(f.status == status);
  }
}

TEST_CASE("Expect 100-continue is reported, with the field's place, only while a body is due", "[api]") {
  const std::string head = "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n";
  auto f = whole(head);
  CHECK(f.state == framing::verdict::incomplete);
  CHECK(f.expects_continue);
  CHECK(head.substr(f.expect_begin, f.expect_end - f.expect_begin) == "Expect: 100-Continue\r\n");
  f = whole(head + "ok");
  CHECK(f.state == framing::verdict::complete);
  CHECK(whole("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expects_continue == false);
}

TEST_CASE("a field's value is found by its name in any case, trimmed, the first of several", "[api]") {
  const std::string head = "POST / HTTP/1.1\r\nHost: x\r\nauthorization:  Bearer t  \r\nAuthorization: Bearer u\r\n\r\n";
  CHECK(api::field_value(head, "Authorization") == std::optional<std::string_view>("Bearer t"));
  CHECK(api::field_value(head, "host") == std::optional<std::string_view>("x"));
  CHECK_FALSE(api::field_value(head, "Cookie"));
  CHECK_FALSE(api::field_value(head, "POST / HTTP/1.1\r\nHost"));  // the request line is not a field
}

TEST_CASE("whatever arrives, one byte past the largest request brings a verdict", "[api]") {
  // The front reads at most max_request_size + 1 bytes of a request; it must never be left waiting
  // for more with nothing decided. Streams that try to stay undecided for as long as they can:
  const api::request_limits small{1024, 10, 4096};
  const std::string chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string padded_head = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 9; ++i) padded_head += "F" + std::to_string(i) + ": " + std::string(100, 'v') + "\r\n";
  std::string big_chunks = chunked;
  while (big_chunks.size() < 8000) big_chunks += "400;" + std::string(600, 'e') + "\r\n" + std::string(1024, 'd') + "\r\n";
  std::string small_chunks = chunked;
  while (small_chunks.size() < 8000) small_chunks += "1;" + std::string(30, 'e') + "\r\nd\r\n";
  // A head near its limit, chunk framing near its own, and then a size line that never ends.
  std::string edge = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n";
  for (int i = 0; i < 9; ++i) edge += "F" + std::to_string(i) + ": " + std::string(100, 'v') + "\r\n";
  edge += "\r\n";
  const auto edge_head = edge.size();
  while (edge.size() - edge_head < small.max_body + small.max_head - 100) edge += "1;" + std::string(60, 'e') + "\r\nd\r\n";
  edge += std::string(3000, 'f');
  const std::vector<std::string> streams{
      edge,
      padded_head + std::string(8000, 'x'),                                            // a head that never ends
      big_chunks, small_chunks,                                                        // framing beside the data
      chunked + "1000\r\n" + std::string(4096, 'd') + "\r\n" + std::string(8000, 'f'), // a size line that never ends
      "POST / HTTP/1.1\r\nContent-Length: 4096\r\n\r\n" + std::string(8000, 'b'),     // the largest body, and more
  };
  const auto cap = request_scanner::max_request_size(small) + 1;
  for (const auto& stream : streams) {
    INFO(stream.substr(0, 120));
    REQUIRE(stream.size() >= cap);
    request_scanner s(small);
    framing f;
    for (std::size_t i = 1; i <= cap && f.state == framing::verdict::incomplete; ++i) {
      f = s.scan(std::string_view(stream).substr(0, i));
    }
    CHECK(f.state != framing::verdict::incomplete);
  }
}

TEST_CASE("an Expect field is cut even without a body, and two are refused", "[api]") {
  const std::string head = "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n";
  const auto f = whole(head);
  REQUIRE(f.state == framing::verdict::complete);
  CHECK_FALSE(f.expects_continue);
  CHECK(head.substr(f.expect_begin, f.expect_end - f.expect_begin) == "Expect: 100-continue\r\n");
  CHECK(whole("POST / HTTP/1.1\r\nExpect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").status ==
        400);
  CHECK(whole("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nTrailer: x\r\n\r\n").status == 400);
}
