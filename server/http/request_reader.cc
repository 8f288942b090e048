#include "server/http/request_reader.h"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace arbor::server::http {

namespace beast_http = boost::beast::http;

struct RequestReader::State {
  std::optional<beast_http::request_parser<beast_http::string_body>> parser;
  // Beast keeps a reference to the chunk callback: it lives here, beside the parser.
  std::function<void(std::uint64_t, boost::beast::string_view, boost::beast::error_code&)> on_chunk;
  size_t chunks = 0;
  size_t header_bytes = 0;     // request line + headers consumed so far
  size_t body_wire_bytes = 0;  // bytes consumed after the header (body + chunk framing)
  bool header_reported = false;
  bool too_many_chunks = false;
};

RequestReader::RequestReader(const Limits& limits)
    : limits_(limits), state_(std::make_unique<State>()) {
  Reset();
}

RequestReader::~RequestReader() = default;

void RequestReader::Reset() {
  State& s = *state_;
  s.parser.reset();
  s.parser.emplace();
  s.parser->header_limit(static_cast<std::uint32_t>(limits_.max_header_bytes));
  s.parser->body_limit(static_cast<std::uint64_t>(limits_.max_body_bytes));
  s.chunks = 0;
  s.header_bytes = 0;
  s.body_wire_bytes = 0;
  s.header_reported = false;
  s.too_many_chunks = false;
  // Counts data chunks (the final, empty one is not one of them).
  s.on_chunk = [this](std::uint64_t size, boost::beast::string_view, boost::beast::error_code& ec) {
    if (size != 0 && ++state_->chunks > limits_.max_chunks) {
      state_->too_many_chunks = true;
      ec = beast_http::error::body_limit;
    }
  };
  s.parser->on_chunk_header(s.on_chunk);
}

RequestReader::Result RequestReader::Fail(int status, std::string message) {
  error_status_ = status;
  error_message_ = std::move(message);
  return Result::kError;
}

// Called once the header is complete: refuses bodies whose framing is ambiguous. Beast treats a
// Transfer-Encoding that does not end in "chunked" as no body at all, which would let the body
// be read as the next request (smuggling); RFC 9112 6.3 asks for a 400 and a close.
RequestReader::Result RequestReader::CheckFraming() {
  const auto& msg = state_->parser->get();
  std::vector<std::string> codings;
  for (auto it = msg.find(beast_http::field::transfer_encoding);
       it != msg.end() && it->name() == beast_http::field::transfer_encoding; ++it) {
    const auto v = it->value();
    codings.emplace_back(v.data(), v.size());
  }
  if (codings.empty()) return Result::kHeaderDone;
  if (!state_->parser->chunked()) {
    return Fail(400, "malformed HTTP request: Transfer-Encoding must end with chunked");
  }
  if (codings.size() != 1 ||
      !absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(codings[0]), "chunked")) {
    return Fail(501, "Transfer-Encoding: only chunked is supported");
  }
  return Result::kHeaderDone;
}

RequestReader::Result RequestReader::Feed(std::string& buffer) {
  State& s = *state_;
  if (error_status_ != 0) return Result::kError;
  while (!s.parser->is_done()) {
    if (s.parser->is_header_done() && !s.header_reported) {
      s.header_reported = true;
      if (CheckFraming() == Result::kError) return Result::kError;
      s.parser->eager(true);  // from here on, take as much body as there is
      return Result::kHeaderDone;
    }
    const bool in_body = s.parser->is_header_done();
    // Beast asserts that a final chunk is parsed from at least 5 bytes ("0\r\n\r\n"); fewer
    // bytes can never end a chunked body, so wait for more rather than call it.
    if (buffer.empty() || (in_body && s.parser->chunked() && buffer.size() < 5)) {
      return Result::kNeedMore;
    }
    boost::beast::error_code ec;
    const size_t used = s.parser->put(boost::asio::buffer(buffer.data(), buffer.size()), ec);
    buffer.erase(0, used);
    if (!in_body) {
      // Beast's header_limit is not cumulative over put() calls when it consumes part of a
      // header: count the header bytes here, consumed and still pending.
      s.header_bytes += used;
      const size_t pending = ec == beast_http::error::need_more ? buffer.size() : 0;
      if (s.header_bytes + pending > limits_.max_header_bytes) {
        return Fail(431, absl::StrCat("request line and headers exceed ", limits_.max_header_bytes,
                                      " bytes"));
      }
    } else {
      // Chunk framing is not body: bound it too, or a flood of tiny chunks grows without limit.
      s.body_wire_bytes += used;
      const size_t max_wire = 2 * limits_.max_body_bytes + limits_.max_header_bytes;
      if (s.body_wire_bytes > max_wire) {
        return Fail(
            413, absl::StrCat("chunked request body and its framing exceed ", max_wire, " bytes"));
      }
    }
    if (ec == beast_http::error::need_more) {
      if (used > 0) continue;
      // Nothing taken: Beast waits for a whole line (a chunk-size line or the trailers), which
      // has no business being longer than a header section.
      if (in_body && buffer.size() > limits_.max_header_bytes) {
        return Fail(413, absl::StrCat("a chunk-size line or the trailers exceed ",
                                      limits_.max_header_bytes, " bytes"));
      }
      return Result::kNeedMore;
    }
    if (ec == beast_http::error::header_limit) {
      return Fail(431, absl::StrCat("request line and headers exceed ", limits_.max_header_bytes,
                                    " bytes"));
    }
    if (s.too_many_chunks) {
      return Fail(
          413, absl::StrCat("chunked request body has more than ", limits_.max_chunks, " chunks"));
    }
    if (ec == beast_http::error::body_limit) {
      return Fail(413, absl::StrCat("request body exceeds ", limits_.max_body_bytes, " bytes"));
    }
    if (ec) return Fail(400, absl::StrCat("malformed HTTP request: ", ec.message()));
  }
  // A body-less request completes with its header: report the header first all the same.
  if (!s.header_reported) {
    s.header_reported = true;
    if (CheckFraming() == Result::kError) return Result::kError;
    return Result::kHeaderDone;
  }
  return Result::kComplete;
}

bool RequestReader::expects_continue() const {
  const auto& msg = state_->parser->get();
  const auto it = msg.find(beast_http::field::expect);
  if (it == msg.end()) return false;
  const auto v = it->value();
  return absl::EqualsIgnoreCase(absl::string_view(v.data(), v.size()), "100-continue");
}

bool RequestReader::keep_alive() const { return state_->parser->get().keep_alive(); }

bool RequestReader::http10() const { return state_->parser->get().version() < 11; }

std::string RequestReader::method() const {
  const auto m = state_->parser->get().method_string();
  return std::string(m.data(), m.size());
}

std::string RequestReader::Field(std::string_view name) const {
  const auto& msg = state_->parser->get();
  const auto it = msg.find(boost::beast::string_view(name.data(), name.size()));
  if (it == msg.end()) return "";
  const auto v = it->value();
  return std::string(v.data(), v.size());
}

Request RequestReader::Take() {
  auto msg = state_->parser->release();
  Request r;
  const auto method = msg.method_string();
  r.method.assign(method.data(), method.size());
  const auto target = msg.target();
  r.target.assign(target.data(), target.size());
  r.path = r.target.substr(0, r.target.find('?'));
  // The absolute form ("http://host/v1/models", which proxies send) names the same path.
  for (const char* scheme : {"http://", "https://"}) {
    if (absl::StartsWithIgnoreCase(r.path, scheme)) {
      const size_t slash = r.path.find('/', std::strlen(scheme));
      r.path = slash == std::string::npos ? "/" : r.path.substr(slash);
    }
  }
  for (const auto& field : msg) {
    const auto name = field.name_string();
    const auto value = field.value();
    r.headers.emplace_back(std::string(name.data(), name.size()),
                           std::string(value.data(), value.size()));
  }
  r.body = std::move(msg.body());
  Reset();
  return r;
}

}  // namespace arbor::server::http
