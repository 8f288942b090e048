#include "tools/bench/serve/stream_request.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "tools/bench/serve/stream_chunk.h"

namespace arbor::bench {
namespace {

constexpr size_t kReadBytes = 64 * 1024;
constexpr size_t kErrorBodyBytes = 1024;

}  // namespace

StreamRequest::StreamRequest(std::string request, std::string model) : out_(std::move(request)) {
  record_.model = std::move(model);
}

StreamRequest::~StreamRequest() {
  if (fd_ >= 0) close(fd_);
}

bool StreamRequest::Start(const HttpTarget& target, double now_s) {
  record_.sent_s = now_s;
  fd_ = socket(target.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    Finish(ErrorKind::kConnect, now_s, absl::StrCat("socket: ", std::strerror(errno)));
    return false;
  }
  // Small writes (the request) go out at once; the server's chunks are what we time.
  const int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd_, reinterpret_cast<const sockaddr*>(&target.addr), target.addr_len) == 0) {
    connected_ = true;
  } else if (errno != EINPROGRESS) {
    Finish(ErrorKind::kConnect, now_s, absl::StrCat("connect: ", std::strerror(errno)));
    return false;
  }
  return true;
}

uint32_t StreamRequest::WantedEvents() const {
  return written_ < out_.size() ? EPOLLOUT : EPOLLIN | EPOLLRDHUP;
}

void StreamRequest::Finish(ErrorKind error, double now_s, std::string detail) {
  if (finished_) return;
  finished_ = true;
  record_.error = error;
  record_.end_s = now_s;
  record_.error_detail = std::move(detail);
  record_.output_tokens = usage_completion_tokens_ >= 0 ? usage_completion_tokens_ : token_chunks_;
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

void StreamRequest::TimeOut(double now_s) {
  Finish(ErrorKind::kTimeout, now_s, "no end of stream within the timeout");
}

bool StreamRequest::OnReady(uint32_t events, double now_s) {
  if (finished_) return true;
  if (!connected_) {
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      Finish(ErrorKind::kConnect, now_s, absl::StrCat("connect: ", std::strerror(err)));
      return true;
    }
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return false;
    connected_ = true;
  }
  while (written_ < out_.size()) {
    const ssize_t n = send(fd_, out_.data() + written_, out_.size() - written_, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      if (errno == EINTR) continue;
      Finish(ErrorKind::kConnect, now_s, absl::StrCat("send: ", std::strerror(errno)));
      return true;
    }
    written_ += size_t(n);
  }
  char buf[kReadBytes];
  for (;;) {
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      got_bytes_ = true;
      if (Consume(buf, size_t(n), now_s)) return true;
      continue;
    }
    if (n == 0) {
      http_.FeedEof();
      if (http_.state() == HttpResponseParser::State::kError) {
        Finish(got_bytes_ ? ErrorKind::kMalformedStream : ErrorKind::kConnect, now_s,
               http_.error());
        return true;
      }
      return OnEnd(now_s);
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    if (errno == EINTR) continue;
    Finish(got_bytes_ ? ErrorKind::kMalformedStream : ErrorKind::kConnect, now_s,
           absl::StrCat("recv: ", std::strerror(errno)));
    return true;
  }
}

bool StreamRequest::Consume(const char* data, size_t size, double now_s) {
  std::string body;
  http_.Feed(std::string_view(data, size), &body);
  if (http_.state() == HttpResponseParser::State::kError) {
    Finish(ErrorKind::kMalformedStream, now_s, http_.error());
    return true;
  }
  if (!body.empty() && OnBody(body, now_s)) return true;
  if (http_.state() == HttpResponseParser::State::kDone) return OnEnd(now_s);
  return false;
}

bool StreamRequest::OnBody(const std::string& body, double now_s) {
  if (http_.status() != 200) {
    error_body_.append(body, 0, kErrorBodyBytes - std::min(error_body_.size(), kErrorBodyBytes));
    return false;
  }
  events_.clear();
  sse_.Feed(body, &events_);
  for (const SseEvent& ev : events_) {
    if (saw_done_) break;  // nothing counts after [DONE]
    auto chunk = ParseStreamChunk(ev.data);
    if (!chunk.ok()) {
      Finish(ErrorKind::kMalformedStream, now_s, std::string(chunk.status().message()));
      return true;
    }
    if (chunk->error) {
      Finish(ErrorKind::kStreamError, now_s, chunk->error_message);
      return true;
    }
    if (chunk->done) {
      saw_done_ = true;
      record_.end_s = now_s;
      continue;
    }
    if (chunk->has_token) {
      ++token_chunks_;
      record_.token_s.push_back(now_s);
    }
    if (chunk->completion_tokens >= 0) usage_completion_tokens_ = chunk->completion_tokens;
    if (chunk->prompt_tokens >= 0) record_.prompt_tokens = chunk->prompt_tokens;
  }
  return false;
}

bool StreamRequest::OnEnd(double now_s) {
  if (http_.status() != 200) {
    record_.http_status = http_.status();
    Finish(ErrorKind::kHttpStatus, now_s, absl::StrCat("HTTP ", http_.status(), ": ", error_body_));
    return true;
  }
  record_.http_status = 200;
  if (!saw_done_) {
    Finish(ErrorKind::kMalformedStream, now_s, "the stream ended without data: [DONE]");
    return true;
  }
  // The stream's end is when [DONE] arrived, not when the connection closed after it.
  const double done_s = record_.end_s;
  Finish(ErrorKind::kNone, now_s);
  record_.end_s = done_s;
  return true;
}

}  // namespace arbor::bench
