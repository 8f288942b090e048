// Incremental HTTP/1.1 request parsing (Boost.Beast's parser) with hard limits: bytes in from a
// socket, whole requests out. Pure: no I/O, so tests and the fuzzer drive it with plain strings.
//
// Limits (robustness case 10): request line + headers over `max_header_bytes` -> 431; a body
// over `max_body_bytes` (by Content-Length, before any of it is read, or as chunks arrive) ->
// 413; a chunked body of more than `max_chunks` data chunks, whose framing grows past twice the
// body limit, or with a chunk-size line or trailers longer than `max_header_bytes` -> 413; a
// Transfer-Encoding that does not end in chunked -> 400, other codings -> 501. Memory is bounded
// by the limits whatever the client sends.
#ifndef ARBOR_SERVER_HTTP_REQUEST_READER_H_
#define ARBOR_SERVER_HTTP_REQUEST_READER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "server/http/message.h"

namespace arbor::server::http {

struct Limits {
  size_t max_header_bytes = 64 << 10;
  size_t max_body_bytes = 8 << 20;
  size_t max_chunks = 1 << 16;
};

class RequestReader {
 public:
  explicit RequestReader(const Limits& limits);
  ~RequestReader();

  enum class Result { kNeedMore, kHeaderDone, kComplete, kError };
  // Parses from the front of `buffer`, erasing what it consumed (bytes of a following
  // pipelined request stay). kHeaderDone is returned once per request, when its header is
  // complete and the body is still to come (the caller may answer "100 Continue"); call again to
  // go on. After kComplete, Take() the request; after kError, answer error_status() and close.
  Result Feed(std::string& buffer);

  bool expects_continue() const;  // "Expect: 100-continue" on the current request
  bool keep_alive() const;        // valid once the header is done
  bool http10() const;            // HTTP/1.0 request: no chunked responses
  Request Take();                 // the completed request; the reader is ready for the next
  int error_status() const { return error_status_; }  // 400, 413, 431 or 501
  const std::string& error_message() const { return error_message_; }
  // The current request's method and the first value of its header field `name` ("" when
  // absent or not parsed yet): whole after kHeaderDone; after a kError, what was parsed before
  // it (the request line, often the fields). Transport errors use them to frame their answer
  // (HEAD, CORS).
  std::string method() const;
  std::string Field(std::string_view name) const;

 private:
  struct State;
  void Reset();
  Result Fail(int status, std::string message);
  Result CheckFraming();

  Limits limits_;
  std::unique_ptr<State> state_;
  int error_status_ = 0;
  std::string error_message_;
};

}  // namespace arbor::server::http

#endif  // ARBOR_SERVER_HTTP_REQUEST_READER_H_
