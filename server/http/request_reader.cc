#include "server/http/request_reader.h"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <optional>

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
  s.on_chunk = [this](std::uint64_t, boost::beast::string_view, boost::beast::error_code& ec) {
    if (++state_->chunks > limits_.max_chunks) {
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

RequestReader::Result RequestReader::Feed(std::string& buffer) {
  State& s = *state_;
  if (error_status_ != 0) return Result::kError;
  while (!s.parser->is_done()) {
    if (s.parser->is_header_done() && !s.header_reported) {
      s.header_reported = true;
      s.parser->eager(true);  // from here on, take as much body as there is
      return Result::kHeaderDone;
    }
    if (buffer.empty()) return Result::kNeedMore;
    boost::beast::error_code ec;
    const bool in_body = s.parser->is_header_done();
    const size_t used = s.parser->put(boost::asio::buffer(buffer.data(), buffer.size()), ec);
    buffer.erase(0, used);
    (in_body ? s.body_wire_bytes : s.header_bytes) += used;
    // Beast's own header_limit is not cumulative over put() calls when it consumes a partial
    // header: count the header bytes here, consumed and still pending.
    if (!s.parser->is_header_done() &&
        s.header_bytes + (ec == beast_http::error::need_more ? buffer.size() : 0) >
            limits_.max_header_bytes) {
      ec = beast_http::error::header_limit;
    } else if (!in_body && s.parser->is_header_done() &&
               s.header_bytes > limits_.max_header_bytes) {
      ec = beast_http::error::header_limit;
    }
    // Chunk framing is not body: bound it too, or a flood of tiny chunks grows without limit.
    if (s.body_wire_bytes > 2 * limits_.max_body_bytes + limits_.max_header_bytes) {
      return Fail(413, absl::StrCat("chunked request body framing exceeds ",
                                    2 * limits_.max_body_bytes, " bytes"));
    }
    if (ec == beast_http::error::need_more) {
      if (used == 0) return Result::kNeedMore;
      continue;
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

Request RequestReader::Take() {
  auto msg = state_->parser->release();
  Request r;
  const auto method = msg.method_string();
  r.method.assign(method.data(), method.size());
  const auto target = msg.target();
  r.target.assign(target.data(), target.size());
  r.path = r.target.substr(0, r.target.find('?'));
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
