// The client's HTTP/1.1 response parser: chunked bodies split at every byte, Content-Length,
// close-delimited bodies, 1xx interim heads, and broken framing.
#include "tools/bench/serve/http_response_parser.h"

#include <catch2/catch.hpp>
#include <string>

namespace arbor::bench {
namespace {

// Feeds `bytes` in pieces of `piece`; returns the body.
std::string Run(HttpResponseParser& p, const std::string& bytes, size_t piece) {
  std::string body;
  for (size_t i = 0; i < bytes.size(); i += piece) p.Feed(bytes.substr(i, piece), &body);
  return body;
}

TEST_CASE("HTTP response: a chunked stream decodes the same at any split", "[bench]") {
  const std::string response =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream\r\nTRANSFER-ENCODING: chunked\r\n\r\n"
      "d\r\ndata: first\n\n\r\n"
      "E;ext=1\r\ndata: second\n\n\r\n"
      "0\r\nX-Trailer: 1\r\n\r\n"
      "HTTP/1.1 200 OK\r\n";  // bytes after the response are ignored
  for (size_t piece = 1; piece <= response.size(); ++piece) {
    INFO("piece " << piece);
    HttpResponseParser p;
    const std::string body = Run(p, response, piece);
    CHECK(p.state() == HttpResponseParser::State::kDone);
    CHECK(p.status() == 200);
    CHECK(p.content_type() == "text/event-stream");
    CHECK(body == "data: first\n\ndata: second\n\n");
  }
}

TEST_CASE("HTTP response: Content-Length and close-delimited bodies", "[bench]") {
  HttpResponseParser sized;
  CHECK(Run(sized, "HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhello+extra", 3) == "hello");
  CHECK(sized.state() == HttpResponseParser::State::kDone);
  CHECK(sized.status() == 404);

  HttpResponseParser closed;
  CHECK(Run(closed, "HTTP/1.0 200 OK\r\n\r\ndata: x\n\n", 4) == "data: x\n\n");
  CHECK(closed.state() == HttpResponseParser::State::kBody);
  closed.FeedEof();
  CHECK(closed.state() == HttpResponseParser::State::kDone);

  HttpResponseParser empty;
  Run(empty, "HTTP/1.1 204 No Content\r\n\r\n", 100);
  CHECK(empty.state() == HttpResponseParser::State::kDone);
}

TEST_CASE("HTTP response: broken framing and early ends are errors", "[bench]") {
  HttpResponseParser bad_status;
  Run(bad_status, "SSH-2.0-OpenSSH\r\n\r\n", 100);
  CHECK(bad_status.state() == HttpResponseParser::State::kError);

  HttpResponseParser bad_chunk;
  Run(bad_chunk, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 100);
  CHECK(bad_chunk.state() == HttpResponseParser::State::kError);

  HttpResponseParser long_chunk;
  Run(long_chunk, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 100);
  CHECK(long_chunk.state() == HttpResponseParser::State::kError);

  HttpResponseParser cut;
  Run(cut, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 100);
  cut.FeedEof();
  CHECK(cut.state() == HttpResponseParser::State::kError);

  HttpResponseParser short_length;
  Run(short_length, "HTTP/1.1 500 Oops\r\nContent-Length: 10\r\n\r\nabc", 100);
  short_length.FeedEof();
  CHECK(short_length.state() == HttpResponseParser::State::kError);

  HttpResponseParser no_head;
  no_head.FeedEof();
  CHECK(no_head.state() == HttpResponseParser::State::kError);

  HttpResponseParser huge;
  Run(huge, "HTTP/1.1 200 OK\r\nX: " + std::string(70000, 'a'), 1000);
  CHECK(huge.state() == HttpResponseParser::State::kError);
}

}  // namespace
}  // namespace arbor::bench
