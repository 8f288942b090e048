// Server-Sent Events framing (the WHATWG "event stream" format): lines ending in LF, CRLF or CR;
// `data:` lines of one event joined by LF; an empty line dispatches the event; lines starting
// with ':' are comments. Fed the decoded HTTP body as it arrives, so an event split across reads
// (even inside a CRLF) comes out once, whole.
#ifndef ARBOR_TOOLS_BENCH_SERVE_SSE_PARSER_H_
#define ARBOR_TOOLS_BENCH_SERVE_SSE_PARSER_H_

#include <string>
#include <string_view>
#include <vector>

namespace arbor::bench {

struct SseEvent {
  std::string event;  // the `event:` field ("" when absent: a "message")
  std::string data;   // the `data:` lines, joined by '\n'
};

class SseParser {
 public:
  // Appends the events that `bytes` complete to `*out`.
  void Feed(std::string_view bytes, std::vector<SseEvent>* out);
  // Bytes of an unfinished line or event held back (a stream that ends here was cut short).
  bool HasPartial() const { return !line_.empty() || has_data_; }

 private:
  void Line(std::string_view line, std::vector<SseEvent>* out);

  std::string line_;       // the current line so far
  bool after_cr_ = false;  // the last byte was a CR: an LF right after it ends nothing
  bool has_data_ = false;  // the current event has a data line
  SseEvent current_;
};

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_SSE_PARSER_H_
