// One streamed request on its own non-blocking TCP connection, driven by the runner's epoll
// loop: connect, write the POST, then read the chunked SSE response, timestamping every chunk
// that carries generated output the moment its bytes are read.
#ifndef ARBOR_TOOLS_BENCH_SERVE_STREAM_REQUEST_H_
#define ARBOR_TOOLS_BENCH_SERVE_STREAM_REQUEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "tools/bench/serve/http_response_parser.h"
#include "tools/bench/serve/http_target.h"
#include "tools/bench/serve/request_record.h"
#include "tools/bench/serve/sse_parser.h"

namespace arbor::bench {

class StreamRequest {
 public:
  // `request`: the bytes to send (http_target.h's PostRequest); `model` goes into the record.
  StreamRequest(std::string request, std::string model);
  ~StreamRequest();
  StreamRequest(const StreamRequest&) = delete;
  StreamRequest& operator=(const StreamRequest&) = delete;

  // Opens the socket and starts connecting at `now_s`. False when it failed at once (the record
  // holds a connect error and the request is finished).
  bool Start(const HttpTarget& target, double now_s);
  int fd() const { return fd_; }
  // The epoll events to wait for: EPOLLOUT until the request is written, then EPOLLIN.
  uint32_t WantedEvents() const;
  // Handles epoll's `events` for fd() at `now_s`. True when the request is finished.
  bool OnReady(uint32_t events, double now_s);
  // Ends the request as a timeout. The record is final afterwards.
  void TimeOut(double now_s);

  bool finished() const { return finished_; }
  RequestRecord& record() { return record_; }

 private:
  void Finish(ErrorKind error, double now_s, std::string detail = "");
  // Feeds bytes read at `now_s` through HTTP, SSE and chunk parsing. True when finished.
  bool Consume(const char* data, size_t size, double now_s);
  bool OnBody(const std::string& body, double now_s);
  bool OnEnd(double now_s);  // the response is complete (or the peer closed)

  std::string out_;  // bytes of the request not yet written
  size_t written_ = 0;
  int fd_ = -1;
  bool connected_ = false;
  bool finished_ = false;
  bool got_bytes_ = false;  // any response byte arrived
  bool saw_done_ = false;   // `data: [DONE]` arrived
  int64_t token_chunks_ = 0;
  int64_t usage_completion_tokens_ = -1;
  HttpResponseParser http_;
  SseParser sse_;
  std::vector<SseEvent> events_;
  std::string error_body_;  // a non-200 response's body (its first KiB), for the error detail
  RequestRecord record_;
};

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_STREAM_REQUEST_H_
