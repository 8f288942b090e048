#include "server/http/connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/beast/http/status.hpp>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace arbor::server::http {
namespace {

constexpr size_t kReadChunk = 64 << 10;
constexpr absl::Duration kLinger = absl::Seconds(1);
constexpr size_t kLingerMaxBytes = 16 << 20;

int MillisUntil(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return int(std::max<int64_t>(0, std::min<int64_t>(ms, 1 << 30)));
}

absl::string_view Reason(int status) {
  const auto r = boost::beast::http::obsolete_reason(
      boost::beast::http::int_to_status(static_cast<unsigned>(status)));
  return r.empty() ? absl::string_view("Unknown") : absl::string_view(r.data(), r.size());
}

absl::string_view View(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

Connection::ReadStatus Connection::ReadSome(std::string& buffer, absl::Time deadline) {
  char tmp[kReadChunk];
  while (true) {
    const ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n > 0) {
      buffer.append(tmp, size_t(n));
      return ReadStatus::kOk;
    }
    if (n == 0) return ReadStatus::kClosed;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return ReadStatus::kClosed;
    pollfd p{fd_, POLLIN, 0};
    const int ms = MillisUntil(deadline);
    if (ms == 0) return ReadStatus::kTimeout;
    const int r = ::poll(&p, 1, ms);
    if (r == 0) return ReadStatus::kTimeout;
    if (r < 0 && errno != EINTR) return ReadStatus::kClosed;
  }
}

bool Connection::WriteAll(std::string_view data) {
  if (broken_) return false;
  const absl::Time deadline = absl::Now() + write_timeout_;
  while (!data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(size_t(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      const int ms = MillisUntil(deadline);
      if (ms > 0 && ::poll(&p, 1, ms) > 0 && !(p.revents & (POLLERR | POLLHUP))) continue;
    }
    broken_ = true;
    return false;
  }
  return true;
}

void Connection::StartResponse(bool keep_alive, bool http10) {
  keep_alive_ = keep_alive;
  http10_ = http10;
  responded_ = streaming_ = ended_ = false;
}

std::string Connection::Head(int status, std::string_view content_type,
                             const Headers& extra) const {
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", Reason(status), "\r\n");
  if (!content_type.empty()) absl::StrAppend(&head, "Content-Type: ", View(content_type), "\r\n");
  for (const auto& [name, value] : extra) absl::StrAppend(&head, name, ": ", value, "\r\n");
  return head;
}

void Connection::Send(int status, std::string_view content_type, std::string_view body,
                      const Headers& extra) {
  if (responded_) return;
  responded_ = true;
  std::string out = Head(status, content_type, extra);
  absl::StrAppend(&out, "Content-Length: ", body.size(), "\r\n",
                  "Connection: ", keep_alive_ ? "keep-alive" : "close", "\r\n\r\n");
  // One write for small answers; a large body goes out without a copy.
  if (body.size() <= 16384) {
    out.append(body.data(), body.size());
    WriteAll(out);
  } else if (WriteAll(out)) {
    WriteAll(body);
  }
}

bool Connection::BeginStream(int status, std::string_view content_type, const Headers& extra) {
  if (responded_) return false;
  responded_ = streaming_ = true;
  std::string out = Head(status, content_type, extra);
  if (http10_) {
    keep_alive_ = false;  // HTTP/1.0 has no chunked coding: the end of the body is the close
    out += "Connection: close\r\n\r\n";
  } else {
    absl::StrAppend(&out, "Transfer-Encoding: chunked\r\nConnection: ",
                    keep_alive_ ? "keep-alive" : "close", "\r\n\r\n");
  }
  return WriteAll(out);
}

bool Connection::Write(std::string_view data) {
  if (!streaming_ || ended_) return false;
  if (data.empty()) return !broken_;  // an empty chunk would end the body
  if (http10_) return WriteAll(data);
  std::string out = absl::StrCat(absl::Hex(data.size()), "\r\n");
  out.append(data.data(), data.size());
  out += "\r\n";
  return WriteAll(out);
}

void Connection::End() {
  if (!streaming_ || ended_) return;
  ended_ = true;
  if (!http10_) WriteAll("0\r\n\r\n");
}

bool Connection::ClientGone() {
  if (broken_) return true;
  pollfd p{fd_, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLERR | POLLHUP | POLLRDHUP)) {
    broken_ = true;
    return true;
  }
  if (p.revents & POLLIN) {
    // Readable: a pipelined request (not a hang-up) unless the read side is at its end.
    char c;
    if (::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
      broken_ = true;
      return true;
    }
  }
  return false;
}

void Connection::LingeringClose() {
  ::shutdown(fd_, SHUT_WR);
  const absl::Time deadline = absl::Now() + kLinger;
  std::string sink;
  size_t dropped = 0;
  while (dropped < kLingerMaxBytes) {
    sink.clear();
    if (ReadSome(sink, deadline) != ReadStatus::kOk) break;
    dropped += sink.size();
  }
}

}  // namespace arbor::server::http
