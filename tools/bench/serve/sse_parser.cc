#include "tools/bench/serve/sse_parser.h"

namespace arbor::bench {

void SseParser::Feed(std::string_view bytes, std::vector<SseEvent>* out) {
  for (char c : bytes) {
    if (after_cr_) {
      after_cr_ = false;
      if (c == '\n') continue;  // the LF of a CRLF
    }
    if (c == '\r' || c == '\n') {
      after_cr_ = c == '\r';
      Line(line_, out);
      line_.clear();
      continue;
    }
    line_.push_back(c);
  }
}

void SseParser::Line(std::string_view line, std::vector<SseEvent>* out) {
  if (line.empty()) {
    // Dispatch: an event without data lines is dropped, as browsers do.
    if (has_data_) out->push_back(std::move(current_));
    current_ = SseEvent();
    has_data_ = false;
    return;
  }
  if (line[0] == ':') return;  // comment (keep-alive pings)
  const size_t colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
  if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) current_.data.push_back('\n');
    current_.data.append(value.data(), value.size());
    has_data_ = true;
  } else if (field == "event") {
    current_.event.assign(value.data(), value.size());
  }
  // id and retry concern reconnecting, which a benchmark never does.
}

}  // namespace arbor::bench
