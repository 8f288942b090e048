// libFuzzer target: any byte string, fed to a RequestReader (small limits) in pieces the way a
// connection feeds it, must end in kNeedMore (input used up) or kError, never in a crash, a leak
// or a sanitizer report. Invariants checked on the way:
// - after kError every Feed returns kError, with the same 400, 413, 431 or 501 and a message;
// - kHeaderDone comes once per request, before its kComplete;
// - a Taken request's path is its target up to the first '?' (less "http://host" for the
//   absolute form), and its body is within the limit;
// - Feed never grows the caller's buffer.
//
// Input: byte 0 picks the piece sizes, the rest is the byte stream. Piece k starts at offset o
// of the stream and is 1 + (stream[o] * 31 + byte0) % span bytes long, span = 1 + byte0 * 8
// (byte0 0: one byte at a time; 255: up to 2 KiB). The seed corpus
// (tests/data/fuzz/http_request) starts each file with its piece-size byte.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "server/http/request_reader.h"

namespace {

using arbor::server::http::Limits;
using arbor::server::http::Request;
using arbor::server::http::RequestReader;
using Result = RequestReader::Result;

constexpr size_t kHeaderLimit = 4 << 10;
constexpr size_t kBodyLimit = 16 << 10;
constexpr size_t kChunkLimit = 64;

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckRequest(const Request& r) {
  const std::string before_query = r.target.substr(0, r.target.find('?'));
  const auto starts = [&](const char* scheme) {
    const size_t n = std::strlen(scheme);
    if (before_query.size() < n) return false;
    for (size_t i = 0; i < n; ++i) {
      if (std::tolower(static_cast<unsigned char>(before_query[i])) != scheme[i]) return false;
    }
    return true;
  };
  if (starts("http://") || starts("https://")) {
    // The absolute form "http://host/p" names "/p", the tail of the target before its query.
    Check(!r.path.empty() && r.path[0] == '/');
    Check(r.path == "/" ||
          before_query.compare(before_query.size() - r.path.size(), r.path.size(), r.path) == 0);
  } else {
    Check(r.path == before_query);  // the path is the target up to its query
  }
  Check(r.body.size() <= kBodyLimit);
  Check(r.params.empty());
  for (const auto& field : r.headers) Check(!field.first.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const unsigned mode = data[0];
  const size_t span = 1 + size_t(mode) * 8;
  const char* stream = reinterpret_cast<const char*>(data + 1);
  const size_t n = size - 1;

  Limits limits;
  limits.max_header_bytes = kHeaderLimit;
  limits.max_body_bytes = kBodyLimit;
  limits.max_chunks = kChunkLimit;
  RequestReader reader(limits);

  std::string buffer;
  size_t at = 0;
  bool header_seen = false;
  while (true) {
    const size_t before = buffer.size();
    const Result r = reader.Feed(buffer);
    Check(buffer.size() <= before);
    if (r == Result::kError) {
      const int status = reader.error_status();
      Check(status == 400 || status == 413 || status == 431 || status == 501);
      Check(!reader.error_message().empty());
      const std::string message = reader.error_message();
      const std::string left = buffer;
      buffer += "GET / HTTP/1.1\r\n\r\n";  // more input, valid or not, changes nothing
      Check(reader.Feed(buffer) == Result::kError);
      Check(reader.Feed(buffer) == Result::kError);
      Check(buffer == left + "GET / HTTP/1.1\r\n\r\n");
      Check(reader.error_status() == status && reader.error_message() == message);
      return 0;
    }
    if (r == Result::kHeaderDone) {
      Check(!header_seen);
      header_seen = true;
      (void)reader.keep_alive();
      (void)reader.http10();
      (void)reader.expects_continue();
      continue;
    }
    if (r == Result::kComplete) {
      Check(header_seen);
      header_seen = false;
      CheckRequest(reader.Take());
      continue;
    }
    // kNeedMore: everything offered was taken or is waiting for more; feed the next piece.
    if (at >= n) return 0;
    const size_t piece = 1 + (size_t(uint8_t(stream[at])) * 31 + mode) % span;
    const size_t take = piece < n - at ? piece : n - at;
    buffer.append(stream + at, take);
    at += take;
  }
}
