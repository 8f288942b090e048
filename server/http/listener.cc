#include "server/http/listener.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/http/connection.h"
#include "server/http/cors.h"
#include "server/http/session.h"

namespace arbor::server::http {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr int kListenBacklog = 1024;
constexpr size_t kReadChunk = 64 << 10;
// Descriptors the process needs besides HTTP connections: model files, gRPC, logs.
constexpr rlim_t kDescriptorMargin = 256;
// How soon to accept again after a failure that no eviction could cure.
constexpr auto kAcceptRetry = std::chrono::milliseconds(50);

// Each connection is a descriptor, and the soft limit is often 1024 where the hard one is far
// higher: take the hard limit.
void RaiseDescriptorLimit(int max_connections) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  const rlim_t want = rlim_t(max_connections) + kDescriptorMargin;
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
    spdlog::warn(
        "http: the open-file limit ({}) is below server.max_connections ({}) + {}: when "
        "descriptors run out, idle connections are closed to admit new ones",
        lim.rlim_cur, max_connections, kDescriptorMargin);
  }
}

// A listening socket on host:port; its descriptor and address family.
absl::StatusOr<std::pair<int, int>> Bind(const std::string& host, int port) {
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
  int listen_fd = -1;
  int family = AF_INET;
  for (addrinfo* a = found; a != nullptr && listen_fd < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    // SO_REUSEADDR for a quick restart; never SO_REUSEPORT, which would let a second server
    // bind the same port and silently take part of its traffic.
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, kListenBacklog) == 0) {
      listen_fd = fd;
      family = a->ai_family;
    } else {
      why = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (listen_fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("http: cannot listen on ", host, ":", port, ": ", why));
  }
  return std::make_pair(listen_fd, family);
}

}  // namespace

// The loop and its connections. Connection bookkeeping (sessions_, idle_, admitted_) belongs
// to the loop thread; handler threads only post their results back to it.
class Listener::Loop final : public Session::Host {
 public:
  Loop(const Router* router, ListenerOptions options);
  ~Loop() override { Stop(); }

  absl::StatusOr<int> Start(const std::string& host, int port);
  void Stop();

 private:
  struct Entry {
    std::shared_ptr<Session> session;
    bool counted = false;  // holds one of max_connections
    bool busy = false;     // a handler holds its socket
    bool listed = false;   // in idle_
    std::list<Session*>::iterator idle;
  };

  void Accept();
  void Admit(tcp::socket socket);
  bool EvictLongestIdle();
  void CloseAll();
  void Unlist(Entry& e);

  void OnRequest(const std::shared_ptr<Session>& session, Request request) override;
  void OnIdle(Session* session) override;
  void OnRelease(Session* session) override;
  void OnClosed(Session* session) override;

  void Preflight(const std::shared_ptr<Session>& session, Request request, bool keep);
  void Dispatch(const std::shared_ptr<Session>& session, const Handler* handler, Request request,
                bool keep);
  void RunHandler(const Handler& handler, const Request& request, Connection& conn) const;
  void Resumed(const std::shared_ptr<Session>& session, bool reusable);

  const Router* router_;
  ListenerOptions options_;
  CorsPolicy cors_;
  // Destroyed after the sockets and timers declared below it, which belong to it; a session
  // still held by a pending operation goes with it.
  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  asio::steady_timer accept_retry_{io_};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<char> scratch_;
  Session::Shared shared_;
  std::thread loop_thread_;
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  bool stopped_ = false;
  bool warned_descriptors_ = false;

  std::unordered_map<Session*, Entry> sessions_;
  std::list<Session*> idle_;  // sessions not inside a handler, the longest idle first
  int admitted_ = 0;          // sessions that count against max_connections

  // Handler threads, counted so that Stop() can wait for them.
  std::mutex mu_;
  std::condition_variable handlers_done_;
  int handlers_ = 0;
};

Listener::Loop::Loop(const Router* router, ListenerOptions options)
    : router_(router),
      options_(std::move(options)),
      cors_(options_.cors_allowed_origins),
      scratch_(kReadChunk) {
  if (!options_.error_body) {
    options_.error_body = [](int, const std::string& message) { return message; };
  }
  shared_.options = &options_;
  shared_.cors = &cors_;
  shared_.host = this;
  shared_.scratch = &scratch_;
}

absl::StatusOr<int> Listener::Loop::Start(const std::string& host, int port) {
  if (started_) return absl::FailedPreconditionError("http: the listener is already started");
  RaiseDescriptorLimit(options_.max_connections);
  absl::StatusOr<std::pair<int, int>> bound = Bind(host, port);
  if (!bound.ok()) return bound.status();
  const auto [fd, family] = *bound;
  error_code ec;
  acceptor_.assign(family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
  if (ec) {
    ::close(fd);
    return absl::InternalError(
        absl::StrCat("http: cannot use the listening socket: ", ec.message()));
  }
  const int bound_port = acceptor_.local_endpoint(ec).port();
  work_.emplace(io_.get_executor());
  Accept();
  started_ = true;
  loop_thread_ = std::thread([this] {
    // A handler that throws must not take the loop down.
    while (true) {
      try {
        io_.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("http: the event loop caught: {}", e.what());
      }
    }
  });
  return bound_port;
}

void Listener::Loop::Accept() {
  acceptor_.async_accept([this](const error_code& ec, tcp::socket socket) {
    if (stopping_.load() || ec == asio::error::operation_aborted) return;
    if (!ec) {
      Admit(std::move(socket));
      return Accept();
    }
    if (ec == asio::error::connection_aborted) return Accept();  // gone before it was accepted
    // Out of descriptors (or memory): an idle connection makes room; with none, retry shortly.
    if (!warned_descriptors_) {
      warned_descriptors_ = true;
      spdlog::warn(
          "http: accept failed ({}) with {} connections open; closing idle ones to make "
          "room",
          ec.message(), admitted_);
    }
    if (EvictLongestIdle()) return Accept();
    accept_retry_.expires_after(kAcceptRetry);
    accept_retry_.async_wait([this](const error_code& wait_ec) {
      if (!wait_ec && !stopping_.load()) Accept();
    });
  });
}

void Listener::Loop::Admit(tcp::socket socket) {
  error_code ec;
  socket.set_option(tcp::no_delay(true), ec);  // SSE events go out at once
  socket.non_blocking(true, ec);  // handlers' sends must never block past their deadline
  ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
  auto session = std::make_shared<Session>(std::move(socket), shared_);
  Entry& e = sessions_[session.get()];
  e.session = session;
  if (admitted_ >= options_.max_connections && !EvictLongestIdle()) {
    // Every connection is inside a handler: refuse this one, which never counts.
    session->Error(503,
                   absl::StrCat("too many open connections (", options_.max_connections,
                                "), all of them busy"),
                   {}, /*keep_open=*/false);
    return;
  }
  e.counted = true;
  ++admitted_;
  session->Start();
}

bool Listener::Loop::EvictLongestIdle() {
  if (idle_.empty()) return false;
  Session* victim = idle_.front();
  Unlist(sessions_.at(victim));
  spdlog::debug("http: {} connections open: closing the longest-idle one", admitted_);
  victim->Close();
  return true;
}

void Listener::Loop::Unlist(Entry& e) {
  if (!e.listed) return;
  idle_.erase(e.idle);
  e.listed = false;
}

void Listener::Loop::OnIdle(Session* session) {
  Entry& e = sessions_.at(session);
  if (!e.counted) return;
  Unlist(e);
  e.idle = idle_.insert(idle_.end(), session);
  e.listed = true;
}

void Listener::Loop::OnRelease(Session* session) {
  Entry& e = sessions_.at(session);
  Unlist(e);
  if (!e.counted) return;
  e.counted = false;
  --admitted_;
}

void Listener::Loop::OnClosed(Session* session) {
  OnRelease(session);
  sessions_.erase(session);
}

void Listener::Loop::OnRequest(const std::shared_ptr<Session>& session, Request request) {
  const bool keep = !stopping_.load();
  if (cors_.enabled() && request.method == "OPTIONS" && !request.Header("Origin").empty()) {
    return Preflight(session, std::move(request), keep);
  }
  Router::Match m = router_->Find(request.method, request.path);
  if (m.handler == nullptr) {
    if (m.status == 405) {
      return session->Error(405,
                            absl::StrCat("method ", request.method, " not allowed on ",
                                         request.path, " (allowed: ", m.allow, ")"),
                            {{"Allow", m.allow}}, keep);
    }
    return session->Error(
        m.status, absl::StrCat("no route for ", request.method, " ", request.path), {}, keep);
  }
  request.params = std::move(m.params);
  Dispatch(session, m.handler, std::move(request), keep);
}

// A browser asks whether it may send a cross-origin request: answered here, never by a handler
// (the preflight carries no credentials, so a handler would refuse it).
void Listener::Loop::Preflight(const std::shared_ptr<Session>& session, Request request,
                               bool keep) {
  Router::Match m = router_->Find("OPTIONS", request.path);
  if (m.handler != nullptr) {  // a route of its own for OPTIONS
    request.params = std::move(m.params);
    return Dispatch(session, m.handler, std::move(request), keep);
  }
  if (m.status == 404) {
    return session->Error(404, absl::StrCat("no route for OPTIONS ", request.path), {}, keep);
  }
  const std::string origin = request.Header("Origin");
  if (!cors_.Allows(origin)) {
    return session->Error(
        403, absl::StrCat("origin ", origin, " is not allowed (server.cors_allowed_origins)"), {},
        keep);
  }
  session->Respond(204, "", "",
                   CorsPolicy::Preflight(m.allow, request.Header("Access-Control-Request-Headers")),
                   keep);
}

void Listener::Loop::Dispatch(const std::shared_ptr<Session>& session, const Handler* handler,
                              Request request, bool keep) {
  const Session::RequestInfo& info = session->request_info();
  ResponseFraming framing{keep && info.keep_alive, info.http10, info.head, info.cors};
  Entry& e = sessions_.at(session.get());
  const int fd = session->Handover();
  Unlist(e);
  e.busy = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++handlers_;
  }
  try {
    // `session = session`: a copy the thread can move from (a plain capture of the const
    // reference would be const, and the thread would keep its reference to the end).
    std::thread([this, session = session, fd, handler, framing = std::move(framing),
                 request = std::move(request)]() mutable {
      Connection conn(fd, options_.write_timeout, std::move(framing));
      RunHandler(*handler, request, conn);
      const bool reusable = conn.reusable() && !stopping_.load();
      // The loop gets this thread's reference: a session is destroyed on the loop thread (or
      // with the loop), never here after Stop() has returned.
      asio::post(io_,
                 [this, session = std::move(session), reusable] { Resumed(session, reusable); });
      std::lock_guard<std::mutex> lock(mu_);
      --handlers_;
      // Under the lock: Stop() cannot return (and destroy us) before this ends.
      handlers_done_.notify_all();
    }).detach();
  } catch (const std::system_error& err) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --handlers_;
    }
    spdlog::error("http: cannot start a handler thread: {}", err.what());
    e.busy = false;
    session->Reclaim();
    session->Error(503, "server overloaded: no thread for the request", {}, /*keep_open=*/false);
  }
}

// On the handler's thread.
void Listener::Loop::RunHandler(const Handler& handler, const Request& request,
                                Connection& conn) const {
  // A bug in a handler must cost one request, not the process.
  std::string raised;
  try {
    handler(request, conn);
  } catch (const std::exception& e) {
    raised = e.what();
  } catch (...) {
    raised = "an exception that is not a std::exception";
  }
  if (!raised.empty()) {
    spdlog::error("http: {} {} raised: {}", request.method, request.path, raised);
    if (!conn.responded()) {
      return conn.Send(500, "application/json", options_.error_body(500, "internal error"));
    }
    // A stream cut short must not look complete: no final chunk, and the connection closes.
    if (conn.streaming() && !conn.ended()) conn.Abort();
    return;
  }
  if (!conn.responded()) {
    if (conn.ClientGone()) {
      // The handler saw its client hang up (as a generation does while it waits on the engine)
      // and had no one to answer: not a server error.
      spdlog::debug("http: {} {}: the client hung up before the response", request.method,
                    request.path);
      return conn.Abort();
    }
    spdlog::error("http: {} {} sent no response", request.method, request.path);
    conn.Send(500, "application/json", options_.error_body(500, "internal error: no response"));
  }
  if (conn.streaming()) conn.End();
}

void Listener::Loop::Resumed(const std::shared_ptr<Session>& session, bool reusable) {
  const auto it = sessions_.find(session.get());
  if (it == sessions_.end()) return;
  it->second.busy = false;
  session->Resume(reusable && !stopping_.load());
}

void Listener::Loop::CloseAll() {
  error_code ec;
  acceptor_.close(ec);
  accept_retry_.cancel();
  std::vector<std::pair<std::shared_ptr<Session>, bool>> all;
  all.reserve(sessions_.size());
  for (const auto& [ptr, e] : sessions_) all.emplace_back(e.session, e.busy);
  for (const auto& [session, busy] : all) {
    if (busy) {
      session->ShutdownUnderHandler();  // its handler sees the client gone and returns
    } else {
      session->Close();
    }
  }
}

void Listener::Loop::Stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  stopping_.store(true);
  asio::post(io_, [this] { CloseAll(); });
  {
    std::unique_lock<std::mutex> lock(mu_);
    handlers_done_.wait(lock, [this] { return handlers_ == 0; });
  }
  // Every handler has posted its connection back, ahead of this: those close (stopping_), and
  // whatever is left goes now. Operations still pending complete when io_ is destroyed.
  asio::post(io_, [this] {
    CloseAll();
    work_.reset();
    io_.stop();
  });
  loop_thread_.join();
}

Listener::Listener(const Router* router, ListenerOptions options)
    : loop_(std::make_unique<Loop>(router, std::move(options))) {}

Listener::~Listener() = default;

absl::StatusOr<int> Listener::Start(const std::string& host, int port) {
  return loop_->Start(host, port);
}

void Listener::Stop() { loop_->Stop(); }

}  // namespace arbor::server::http
