#include "server/http/listener.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/http/connection.h"

namespace arbor::server::http {
namespace {

constexpr int kListenBacklog = 1024;

}  // namespace

Listener::Listener(const Router* router, ListenerOptions options)
    : router_(router), options_(std::move(options)) {
  if (!options_.error_body) {
    options_.error_body = [](int, const std::string& message) { return message; };
  }
}

Listener::~Listener() { Stop(); }

absl::StatusOr<int> Listener::Start(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc =
          ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found);
      rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("server.host: cannot resolve '", host, "': ", ::gai_strerror(rc)));
  }
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr && listen_fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    // SO_REUSEADDR for a quick restart; never SO_REUSEPORT, which would let a second server
    // bind the same port and silently take part of its traffic.
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, kListenBacklog) == 0) {
      listen_fd_ = fd;
    } else {
      why = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (listen_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("http: cannot listen on ", host, ":", port, ": ", why));
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  const int bound = addr.ss_family == AF_INET6
                        ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                        : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (::pipe2(wake_, O_CLOEXEC) != 0) return absl::InternalError("http: pipe2 failed");
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return bound;
}

void Listener::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("http: poll on the listening socket: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if (!(fds[0].revents & POLLIN)) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;  // the client gave up, or fds ran out for a moment
    int yes = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));  // SSE events go out at once
    bool admitted = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (int(open_.size()) < options_.max_connections) {
        open_.insert(fd);
        admitted = true;
      }
    }
    if (!admitted) {
      // Best effort and never blocking the accept loop: the socket buffer takes a short answer.
      Connection conn(fd, absl::ZeroDuration());
      conn.StartResponse(/*keep_alive=*/false, /*http10=*/false);
      SendError(conn, 503,
                absl::StrCat("too many open connections (", options_.max_connections, ")"));
      ::close(fd);
      continue;
    }
    std::thread([this, fd] {
      Serve(fd);
      Release(fd);
    }).detach();
  }
}

void Listener::Release(int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  ::close(fd);
  open_.erase(fd);
  idle_.notify_all();  // under the lock: Stop() cannot return (and destroy us) before this ends
}

void Listener::SendError(Connection& conn, int status, const std::string& message,
                         const Headers& extra) {
  conn.Send(status, "application/json", options_.error_body(status, message), extra);
}

void Listener::Serve(int fd) {
  Connection conn(fd, options_.write_timeout);
  RequestReader reader(options_.limits);
  std::string buffer;
  while (!stopping_.load()) {
    // The next request: it must start within the idle timeout and be whole within the request
    // timeout of its first byte.
    bool started = !buffer.empty();
    absl::Time deadline =
        absl::Now() + (started ? options_.request_timeout : options_.idle_timeout);
    RequestReader::Result r;
    while ((r = reader.Feed(buffer)) == RequestReader::Result::kNeedMore ||
           r == RequestReader::Result::kHeaderDone) {
      if (r == RequestReader::Result::kHeaderDone) {
        // HTTP/1.0 clients' expectations are ignored (RFC 9110 10.1.1).
        if (reader.expects_continue() && !reader.http10() &&
            !conn.WriteAll("HTTP/1.1 100 Continue\r\n\r\n")) {
          return;
        }
        continue;
      }
      const Connection::ReadStatus rs = conn.ReadSome(buffer, deadline);
      if (rs == Connection::ReadStatus::kClosed) return;
      if (rs == Connection::ReadStatus::kTimeout) {
        if (!started || stopping_.load()) return;  // an idle keep-alive connection: just close
        conn.StartResponse(false, false);
        SendError(conn, 408,
                  absl::StrCat("request not received whole within ",
                               absl::FormatDuration(options_.request_timeout)));
        return;
      }
      if (!started) {
        started = true;
        deadline = absl::Now() + options_.request_timeout;
      }
    }
    if (r == RequestReader::Result::kError) {
      conn.StartResponse(false, false);
      SendError(conn, reader.error_status(), reader.error_message());
      conn.LingeringClose();
      return;
    }
    conn.StartResponse(reader.keep_alive() && !stopping_.load(), reader.http10());
    Request request = reader.Take();
    Dispatch(request, conn);
    if (!conn.reusable()) return;
  }
}

void Listener::Dispatch(Request& request, Connection& conn) {
  Router::Match m = router_->Find(request.method, request.path);
  if (m.handler == nullptr) {
    Headers extra;
    if (m.status == 405) extra.emplace_back("Allow", m.allow);
    return SendError(conn, m.status,
                     m.status == 405
                         ? absl::StrCat("method ", request.method, " not allowed on ", request.path,
                                        " (allowed: ", m.allow, ")")
                         : absl::StrCat("no route for ", request.method, " ", request.path),
                     extra);
  }
  request.params = std::move(m.params);
  // A bug in a handler must cost one request, not the process.
  std::string raised;
  try {
    (*m.handler)(request, conn);
  } catch (const std::exception& e) {
    raised = e.what();
  } catch (...) {
    raised = "an exception that is not a std::exception";
  }
  if (!raised.empty()) {
    spdlog::error("http: {} {} raised: {}", request.method, request.path, raised);
    if (!conn.responded()) return SendError(conn, 500, "internal error");
    // A stream cut short must not look complete: no final chunk, and the connection closes.
    if (conn.streaming() && !conn.ended()) conn.Abort();
    return;
  }
  if (!conn.responded()) {
    spdlog::error("http: {} {} sent no response", request.method, request.path);
    SendError(conn, 500, "internal error: no response");
  }
  if (conn.streaming()) conn.End();
}

void Listener::Stop() {
  if (listen_fd_ < 0) return;
  stopping_.store(true);
  if (wake_[1] >= 0) (void)!::write(wake_[1], "x", 1);
  if (accept_thread_.joinable()) accept_thread_.join();
  ::close(listen_fd_);
  listen_fd_ = -1;
  std::unique_lock<std::mutex> lock(mu_);
  // Wake every connection thread blocked on its socket; handlers waiting on the engine see
  // their client gone and return.
  for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
  idle_.wait(lock, [this] { return open_.empty(); });
  lock.unlock();
  for (int& fd : wake_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

}  // namespace arbor::server::http
