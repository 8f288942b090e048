// An incremental HTTP/1.1 response parser for the load generator's client: bytes go in as they
// arrive from the socket, in pieces of any size; the decoded body comes out as it arrives, so a
// streamed (chunked) Server-Sent Events body can be timed chunk by chunk.
//
// Handles a status line and headers (up to kMaxHeadBytes), then a body framed by
// `Transfer-Encoding: chunked` (extensions and trailers skipped), by `Content-Length`, or by the
// end of the connection. 1xx interim responses are skipped.
#ifndef ARBOR_TOOLS_BENCH_SERVE_HTTP_RESPONSE_PARSER_H_
#define ARBOR_TOOLS_BENCH_SERVE_HTTP_RESPONSE_PARSER_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace arbor::bench {

class HttpResponseParser {
 public:
  static constexpr size_t kMaxHeadBytes = 64 * 1024;

  enum class State { kHead, kBody, kDone, kError };

  // Consumes `bytes`; appends any body bytes they complete to `*body`. Bytes after the end of
  // the response are ignored (the client sends one request per connection).
  void Feed(std::string_view bytes, std::string* body);
  // The peer closed the connection: ends a close-delimited body; anything else unfinished is an
  // error.
  void FeedEof();

  State state() const { return state_; }
  int status() const { return status_; }
  // The final response's Content-Type, lower-cased ("" if absent).
  const std::string& content_type() const { return content_type_; }
  const std::string& error() const { return error_; }

 private:
  enum class ChunkState { kSize, kData, kDataEnd, kTrailer };

  void ParseHead();
  void Fail(std::string why);
  // Advances the chunked body through `buf_`; appends data to `*body`.
  void ParseChunked(std::string* body);

  State state_ = State::kHead;
  std::string buf_;  // bytes not yet consumed (the head, or a partial chunk-size line)
  int status_ = 0;
  std::string content_type_;
  std::string error_;
  bool chunked_ = false;
  int64_t remaining_ = -1;  // Content-Length body bytes left; -1: close-delimited
  ChunkState chunk_state_ = ChunkState::kSize;
  int64_t chunk_left_ = 0;
};

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_HTTP_RESPONSE_PARSER_H_
