#include "server/http/session.h"

#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/http/response_head.h"

namespace arbor::server::http {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;

// After an error answer: how long, and how much, the client may go on sending before the close,
// so that a client still mid-body reads the answer rather than a reset.
constexpr auto kLinger = std::chrono::seconds(1);
constexpr size_t kLingerMaxBytes = 16 << 20;
// A connection keeps at most this much buffer capacity while it waits for a request.
constexpr size_t kKeepCapacity = 64 << 10;
// Bytes one connection may read before the loop turns to the others (a fast upload, a flood).
constexpr size_t kReadTurn = 1 << 20;

Session::Clock::duration Chrono(absl::Duration d) {
  return std::chrono::duration_cast<Session::Clock::duration>(absl::ToChronoNanoseconds(d));
}

bool WouldBlock(const error_code& ec) {
  return ec == asio::error::would_block || ec == asio::error::try_again;
}

}  // namespace

Session::Session(asio::ip::tcp::socket socket, const Shared& shared)
    : socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      shared_(shared),
      reader_(shared.options->limits) {}

void Session::Start() { NextRequest(); }

void Session::NextRequest() {
  info_ = RequestInfo{};
  if (in_.empty() && in_.capacity() > kKeepCapacity) std::string().swap(in_);
  shared_.host->OnIdle(this);
  if (in_.empty()) {
    phase_ = Phase::kIdle;
    SetDeadline(Clock::now() + Chrono(shared_.options->idle_timeout));
  } else {
    BeginRequest();  // pipelined: its bytes are here already
  }
  Pump();
}

// The request's first byte is here: its head must follow within the header timeout, all of it
// within the request timeout.
void Session::BeginRequest() {
  phase_ = Phase::kHead;
  first_byte_ = Clock::now();
  const ListenerOptions& o = *shared_.options;
  SetDeadline(first_byte_ + Chrono(std::min(o.header_timeout, o.request_timeout)));
}

void Session::CaptureHeader() {
  info_.keep_alive = reader_.keep_alive();
  info_.http10 = reader_.http10();
  info_.head = reader_.method() == "HEAD";
  info_.cors = shared_.cors->ForOrigin(reader_.Field("Origin"));
}

// Parses what is buffered and reads what the socket holds, until a request is complete, an
// answer or a close takes over, or the socket is empty (then waits for it to be readable).
void Session::Pump() {
  std::vector<char>& scratch = *shared_.scratch;
  size_t turn = 0;
  while (ParseBuffered()) {
    if (turn >= kReadTurn) {
      // Let the other connections have the loop; go on after them.
      return asio::post(socket_.get_executor(),
                        [self = shared_from_this()] { self->OnReadable(); });
    }
    error_code ec;
    const size_t n = socket_.read_some(asio::buffer(scratch), ec);
    if (WouldBlock(ec)) return WaitReadable();
    // The client closed or the connection broke: half a request gets no answer.
    if (ec) return Close();
    if (phase_ == Phase::kIdle) BeginRequest();
    in_.append(scratch.data(), n);
    turn += n;
  }
}

// False when the session has moved on (a complete request, an answer, a close).
bool Session::ParseBuffered() {
  while (true) {
    if (phase_ == Phase::kIdle) {
      if (in_.empty()) return true;
      BeginRequest();
    }
    switch (reader_.Feed(in_)) {
      case RequestReader::Result::kNeedMore:
        return true;
      case RequestReader::Result::kHeaderDone:
        CaptureHeader();
        phase_ = Phase::kBody;
        SetDeadline(first_byte_ + Chrono(shared_.options->request_timeout));
        // HTTP/1.0 clients' expectations are ignored (RFC 9110 10.1.1).
        if (reader_.expects_continue() && !info_.http10) {
          Write("HTTP/1.1 100 Continue\r\n\r\n", After::kBody);
          return false;
        }
        continue;
      case RequestReader::Result::kError:
        CaptureHeader();  // what there is of it: no body for HEAD, CORS for a browser
        Error(reader_.error_status(), reader_.error_message(), {}, /*keep_open=*/false);
        return false;
      case RequestReader::Result::kComplete:
        phase_ = Phase::kDispatch;
        CancelDeadline();
        shared_.host->OnRequest(shared_from_this(), reader_.Take());
        return false;
    }
  }
}

void Session::WaitReadable() {
  if (read_waiting_) return;
  read_waiting_ = true;
  socket_.async_wait(asio::ip::tcp::socket::wait_read,
                     [self = shared_from_this()](const error_code& ec) {
                       self->read_waiting_ = false;
                       if (self->phase_ == Phase::kClosed || ec == asio::error::operation_aborted) {
                         return;
                       }
                       if (ec) return self->Close();
                       self->OnReadable();
                     });
}

void Session::OnReadable() {
  switch (phase_) {
    case Phase::kIdle:
    case Phase::kHead:
    case Phase::kBody:
      return Pump();
    case Phase::kLinger:
      return Drain();
    default:
      return;  // a write or a handler is under way; reading resumes after it
  }
}

void Session::Respond(int status, std::string_view content_type, std::string_view body,
                      const Headers& extra, bool keep_open) {
  const bool keep = keep_open && info_.keep_alive;
  std::string out = ResponseHead(status, content_type, extra, info_.cors);
  if (StatusHasContent(status)) absl::StrAppend(&out, "Content-Length: ", body.size(), "\r\n");
  absl::StrAppend(&out, "Connection: ", keep ? "keep-alive" : "close", "\r\n\r\n");
  if (!info_.head && StatusHasContent(status)) out.append(body.data(), body.size());
  Write(std::move(out), keep ? After::kNextRequest : After::kLinger);
}

void Session::Error(int status, const std::string& message, const Headers& extra, bool keep_open) {
  Respond(status, "application/json", shared_.options->error_body(status, message), extra,
          keep_open);
}

void Session::Write(std::string out, After after) {
  out_ = std::move(out);
  after_ = after;
  phase_ = Phase::kWriting;
  SetDeadline(Clock::now() + Chrono(shared_.options->write_timeout));
  asio::async_write(
      socket_, asio::buffer(out_),
      [self = shared_from_this()](const error_code& ec, size_t) { self->OnWritten(ec); });
}

void Session::OnWritten(const error_code& ec) {
  if (phase_ != Phase::kWriting) return;  // closed meanwhile
  out_.clear();
  if (ec) return Close();
  switch (after_) {
    case After::kBody:
      phase_ = Phase::kBody;
      SetDeadline(first_byte_ + Chrono(shared_.options->request_timeout));
      return Pump();
    case After::kNextRequest:
      return NextRequest();
    case After::kLinger:
      return Linger();
  }
}

// Stops sending, then reads and drops what the client still sends for a moment before closing.
void Session::Linger() {
  error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  phase_ = Phase::kLinger;
  shared_.host->OnRelease(this);
  std::string().swap(in_);
  drained_ = 0;
  SetDeadline(Clock::now() + kLinger);
  Drain();
}

void Session::Drain() {
  std::vector<char>& scratch = *shared_.scratch;
  while (drained_ < kLingerMaxBytes) {
    error_code ec;
    const size_t n = socket_.read_some(asio::buffer(scratch), ec);
    if (WouldBlock(ec)) return WaitReadable();
    if (ec) break;
    drained_ += n;
  }
  Close();
}

// After a handler's last response: a lingering close only when the client has sent more, which
// a plain close would answer with a reset that can destroy the response in flight.
void Session::Finish() {
  error_code ec;
  if (in_.empty() && socket_.available(ec) == 0 && !ec) return Close();
  Linger();
}

int Session::Handover() {
  phase_ = Phase::kHandler;
  CancelDeadline();
  return socket_.native_handle();
}

void Session::Reclaim() { phase_ = Phase::kDispatch; }

void Session::Resume(bool reusable) {
  if (phase_ != Phase::kHandler) return;
  phase_ = Phase::kDispatch;
  if (!reusable) return Finish();
  NextRequest();
}

void Session::Close() {
  // The handler's thread writes to the socket; it is closed after the handler returns.
  if (phase_ == Phase::kClosed || phase_ == Phase::kHandler) return;
  const auto self = shared_from_this();  // the host drops its reference in OnClosed
  phase_ = Phase::kClosed;
  CancelDeadline();
  error_code ec;
  socket_.close(ec);
  shared_.host->OnClosed(this);
}

void Session::ShutdownUnderHandler() {
  if (phase_ == Phase::kHandler) ::shutdown(socket_.native_handle(), SHUT_RDWR);
}

void Session::SetDeadline(Clock::time_point at) {
  const uint64_t gen = ++deadline_gen_;
  timer_.expires_at(at);
  timer_.async_wait([self = shared_from_this(), gen](const error_code& ec) {
    // A wait that an older deadline started may complete without an error: the generation
    // tells it apart.
    if (ec || gen != self->deadline_gen_) return;
    self->OnDeadline();
  });
}

void Session::CancelDeadline() {
  ++deadline_gen_;
  timer_.cancel();
}

void Session::OnDeadline() {
  const ListenerOptions& o = *shared_.options;
  switch (phase_) {
    case Phase::kIdle:  // nothing asked: closed without a word
    case Phase::kWriting:
    case Phase::kLinger:
      return Close();
    case Phase::kHead:
      if (o.header_timeout < o.request_timeout) {
        return Error(408,
                     absl::StrCat("request headers not received within ",
                                  absl::FormatDuration(o.header_timeout)),
                     {}, /*keep_open=*/false);
      }
      [[fallthrough]];
    case Phase::kBody:
      return Error(408,
                   absl::StrCat("request not received whole within ",
                                absl::FormatDuration(o.request_timeout)),
                   {}, /*keep_open=*/false);
    default:
      return;
  }
}

}  // namespace arbor::server::http
