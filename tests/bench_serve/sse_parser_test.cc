// SSE framing: events split anywhere across reads (inside CRLF too), multi-line data, comments,
// and `[DONE]`.
#include "tools/bench/serve/sse_parser.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace arbor::bench {
namespace {

std::vector<SseEvent> FeedInPieces(const std::string& stream, size_t piece) {
  SseParser p;
  std::vector<SseEvent> out;
  for (size_t i = 0; i < stream.size(); i += piece) p.Feed(stream.substr(i, piece), &out);
  return out;
}

TEST_CASE("SSE: events come out whole whatever the read boundaries", "[bench]") {
  const std::string stream =
      ": keep-alive\n\n"
      "data: {\"a\":1}\n\n"
      "event: note\r\ndata: line one\r\ndata: line two\r\n\r\n"
      "data:no-space\r\rdata: [DONE]\n\n";
  for (size_t piece = 1; piece <= stream.size(); ++piece) {
    INFO("piece " << piece);
    const std::vector<SseEvent> ev = FeedInPieces(stream, piece);
    REQUIRE(ev.size() == 4);
    CHECK(ev[0].data == "{\"a\":1}");
    CHECK(ev[0].event.empty());
    CHECK(ev[1].event == "note");
    CHECK(ev[1].data == "line one\nline two");
    CHECK(ev[2].data == "no-space");
    CHECK(ev[3].data == "[DONE]");
  }
}

TEST_CASE("SSE: an unfinished event is held back, not emitted", "[bench]") {
  SseParser p;
  std::vector<SseEvent> out;
  p.Feed("data: {\"x\"", &out);
  CHECK(out.empty());
  CHECK(p.HasPartial());
  p.Feed(":2}\n", &out);
  CHECK(out.empty());  // the blank line has not come yet
  CHECK(p.HasPartial());
  p.Feed("\n", &out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].data == "{\"x\":2}");
  CHECK_FALSE(p.HasPartial());
}

}  // namespace
}  // namespace arbor::bench
