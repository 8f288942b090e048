#include "server/http/connection.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/http/response_head.h"

namespace arbor::server::http {
namespace {

int MillisUntil(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return int(std::max<int64_t>(0, std::min<int64_t>(ms, 1 << 30)));
}

}  // namespace

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

void Connection::Send(int status, std::string_view content_type, std::string_view body,
                      const Headers& extra) {
  if (responded_) return;
  responded_ = true;
  std::string out = ResponseHead(status, content_type, extra, framing_.always);
  if (StatusHasContent(status)) absl::StrAppend(&out, "Content-Length: ", body.size(), "\r\n");
  absl::StrAppend(&out, "Connection: ", framing_.keep_alive ? "keep-alive" : "close", "\r\n\r\n");
  // HEAD: the Content-Length of the body GET would get, and not the body.
  if (framing_.head || !StatusHasContent(status)) body = {};
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
  std::string out = ResponseHead(status, content_type, extra, framing_.always);
  if (framing_.head) {
    // No body follows, so the connection needs no close to end one.
    absl::StrAppend(&out, "Connection: ", framing_.keep_alive ? "keep-alive" : "close", "\r\n\r\n");
  } else if (framing_.http10) {
    // HTTP/1.0 has no chunked coding: the end of the body is the close.
    framing_.keep_alive = false;
    out += "Connection: close\r\n\r\n";
  } else {
    absl::StrAppend(&out, "Transfer-Encoding: chunked\r\nConnection: ",
                    framing_.keep_alive ? "keep-alive" : "close", "\r\n\r\n");
  }
  return WriteAll(out);
}

bool Connection::Write(std::string_view data) {
  if (!streaming_ || ended_) return false;
  if (data.empty() || framing_.head) return !broken_;  // an empty chunk would end the body
  if (framing_.http10) return WriteAll(data);
  std::string out = absl::StrCat(absl::Hex(data.size()), "\r\n");
  out.append(data.data(), data.size());
  out += "\r\n";
  return WriteAll(out);
}

void Connection::End() {
  if (!streaming_ || ended_) return;
  ended_ = true;
  if (!framing_.http10 && !framing_.head) WriteAll("0\r\n\r\n");
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

}  // namespace arbor::server::http
