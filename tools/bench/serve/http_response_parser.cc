#include "tools/bench/serve/http_response_parser.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace arbor::bench {
namespace {

// Chunk-size lines and trailer lines are short; a longer one means a broken peer.
constexpr size_t kMaxLineBytes = 4096;

}  // namespace

void HttpResponseParser::Fail(std::string why) {
  state_ = State::kError;
  error_ = std::move(why);
  buf_.clear();
}

void HttpResponseParser::Feed(std::string_view bytes, std::string* body) {
  if (state_ == State::kHead) {
    buf_.append(bytes.data(), bytes.size());
    ParseHead();
    if (state_ != State::kBody) return;
    bytes = {};  // what followed the head is in buf_ now
  }
  if (state_ != State::kBody) return;
  if (chunked_) {
    buf_.append(bytes.data(), bytes.size());
    ParseChunked(body);
    return;
  }
  // Content-Length or close-delimited: what came with the head first, then the new bytes.
  std::string_view parts[2] = {buf_, bytes};
  for (std::string_view part : parts) {
    if (remaining_ >= 0) part = part.substr(0, size_t(std::min<int64_t>(remaining_, part.size())));
    body->append(part.data(), part.size());
    if (remaining_ >= 0) remaining_ -= int64_t(part.size());
  }
  buf_.clear();
  if (remaining_ == 0) state_ = State::kDone;
}

void HttpResponseParser::FeedEof() {
  if (state_ == State::kBody && !chunked_ && remaining_ < 0) {
    state_ = State::kDone;
  } else if (state_ == State::kHead || state_ == State::kBody) {
    Fail(state_ == State::kHead ? "connection closed before the response head"
                                : "connection closed inside the response body");
  }
}

void HttpResponseParser::ParseHead() {
  while (state_ == State::kHead) {
    const size_t end = buf_.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (buf_.size() > kMaxHeadBytes) Fail("response head over 64 KiB");
      return;
    }
    const std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
    // "HTTP/1.1 200 OK"
    const absl::string_view status_line = lines[0];
    if (!absl::StartsWith(status_line, "HTTP/1.") || status_line.size() < 12 ||
        status_line[8] != ' ' || !absl::SimpleAtoi(status_line.substr(9, 3), &status_)) {
      return Fail("bad status line: " + std::string(status_line.substr(0, 80)));
    }
    bool has_length = false;
    chunked_ = false;
    remaining_ = -1;
    content_type_.clear();
    for (size_t i = 1; i < lines.size(); ++i) {
      const size_t colon = lines[i].find(':');
      if (colon == absl::string_view::npos) return Fail("bad header line");
      const std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
      const std::string value =
          absl::AsciiStrToLower(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
      if (name == "transfer-encoding") {
        chunked_ = absl::EndsWith(value, "chunked");
      } else if (name == "content-length") {
        if (!absl::SimpleAtoi(value, &remaining_) || remaining_ < 0) {
          return Fail("bad Content-Length: " + value);
        }
        has_length = true;
      } else if (name == "content-type") {
        content_type_ = value;
      }
    }
    if (status_ >= 100 && status_ < 200) continue;  // interim: the real head follows
    if (chunked_) remaining_ = -1;
    state_ = (!chunked_ && has_length && remaining_ == 0) || status_ == 204 || status_ == 304
                 ? State::kDone
                 : State::kBody;
  }
}

void HttpResponseParser::ParseChunked(std::string* body) {
  size_t pos = 0;
  while (state_ == State::kBody) {
    if (chunk_state_ == ChunkState::kData) {
      const size_t take = size_t(std::min<int64_t>(chunk_left_, int64_t(buf_.size() - pos)));
      body->append(buf_, pos, take);
      pos += take;
      chunk_left_ -= int64_t(take);
      if (chunk_left_ > 0) break;
      chunk_state_ = ChunkState::kDataEnd;
      continue;
    }
    const size_t eol = buf_.find("\r\n", pos);
    if (eol == std::string::npos) {
      if (buf_.size() - pos > kMaxLineBytes) Fail("chunk line over 4 KiB");
      break;
    }
    const absl::string_view line(buf_.data() + pos, eol - pos);
    pos = eol + 2;
    switch (chunk_state_) {
      case ChunkState::kSize: {
        const absl::string_view hex = absl::StripAsciiWhitespace(line.substr(0, line.find(';')));
        char* end = nullptr;
        const std::string h(hex);
        const long long size = std::strtoll(h.c_str(), &end, 16);
        if (h.empty() || *end != '\0' || size < 0 ||
            !std::isxdigit(static_cast<unsigned char>(h[0]))) {
          Fail("bad chunk size: " + h.substr(0, 40));
          return;
        }
        chunk_left_ = size;
        chunk_state_ = size == 0 ? ChunkState::kTrailer : ChunkState::kData;
        break;
      }
      case ChunkState::kDataEnd:
        if (!line.empty()) {
          Fail("chunk data longer than its size");
          return;
        }
        chunk_state_ = ChunkState::kSize;
        break;
      case ChunkState::kTrailer:
        if (line.empty()) state_ = State::kDone;  // trailer lines before it are skipped
        break;
      case ChunkState::kData:
        break;
    }
  }
  if (state_ != State::kError) buf_.erase(0, pos);
}

}  // namespace arbor::bench
