// One client connection while the event loop owns it (server/http/listener.h). It reads and
// parses requests (RequestReader, under its limits), keeps the idle, header and request
// deadlines, writes the transport's own answers (errors, 100 Continue, preflights) without
// blocking the loop, and closes with a lingering close after an error. A complete request goes to
// the Host, which answers it here (Respond, Error) or hands the socket to a handler thread
// (Handover) until Resume().
//
// Everything here runs on the loop thread. An idle session costs its socket, a timer, an empty
// parser and the bytes of a partial request: reads go through one scratch buffer that every
// session shares, taking what the socket holds before waiting for more.
#ifndef ARBOR_SERVER_HTTP_SESSION_H_
#define ARBOR_SERVER_HTTP_SESSION_H_

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "server/http/cors.h"
#include "server/http/listener.h"
#include "server/http/message.h"
#include "server/http/request_reader.h"

namespace arbor::server::http {

class Session : public std::enable_shared_from_this<Session> {
 public:
  using Clock = std::chrono::steady_clock;

  // The listener that owns the session. Called on the loop thread.
  class Host {
   public:
    virtual ~Host() = default;
    // A complete request. Before returning, the host calls Respond()/Error() or Handover().
    virtual void OnRequest(const std::shared_ptr<Session>& session, Request request) = 0;
    // Waiting for a request (its first, or the next on a kept-alive connection): it is now the
    // most recently idle connection.
    virtual void OnIdle(Session* session) = 0;
    // Closing (a lingering close) or closed: it no longer counts against max_connections.
    virtual void OnRelease(Session* session) = 0;
    // Closed: the host drops its reference.
    virtual void OnClosed(Session* session) = 0;
  };

  // What every session of one listener shares; owned by the listener.
  struct Shared {
    const ListenerOptions* options = nullptr;
    const CorsPolicy* cors = nullptr;
    Host* host = nullptr;
    std::vector<char>* scratch = nullptr;  // the loop's read buffer
  };

  // How the current request wants its answer, known once its header is parsed.
  struct RequestInfo {
    bool keep_alive = false;
    bool http10 = false;
    bool head = false;  // a HEAD request: answers carry no body
    Headers cors;       // CORS headers every answer carries (CorsPolicy::ForOrigin)
  };

  // `socket` is connected and non-blocking.
  Session(boost::asio::ip::tcp::socket socket, const Shared& shared);

  // Waits for the first request.
  void Start();
  // Answers the current request. With `keep_open` and a keep-alive request the next request
  // follows; otherwise the connection closes (lingering: the client may still be sending).
  void Respond(int status, std::string_view content_type, std::string_view body,
               const Headers& extra, bool keep_open);
  // Respond() with error_body's JSON.
  void Error(int status, const std::string& message, const Headers& extra, bool keep_open);

  // A handler takes the socket (returned): no reads, writes or deadlines here until Resume().
  int Handover();
  // The handler could not start: the session answers the request itself after all.
  void Reclaim();
  // The handler is done: the next request follows (bytes already read first), or the
  // connection closes.
  void Resume(bool reusable);

  // Closes now, without an answer (eviction, idle timeout, shutdown). Not while a handler holds
  // the socket.
  void Close();
  // Shuts the socket down under a handler, which then sees its client gone (server shutdown).
  void ShutdownUnderHandler();

  const RequestInfo& request_info() const { return info_; }

 private:
  enum class Phase {
    kIdle,      // waiting for the first byte of a request
    kHead,      // reading the request line and headers
    kBody,      // reading the body
    kDispatch,  // a complete request, with the host
    kWriting,   // writing an answer of the transport's own
    kHandler,   // a handler thread holds the socket
    kLinger,    // answered and closing: draining what the client still sends
    kClosed,
  };
  // What follows a write.
  enum class After { kBody, kNextRequest, kLinger };

  void NextRequest();
  void BeginRequest();
  void CaptureHeader();
  void Pump();
  bool ParseBuffered();
  void WaitReadable();
  void OnReadable();
  void Write(std::string out, After after);
  void OnWritten(const boost::system::error_code& ec);
  void Linger();
  void Drain();
  void Finish();
  void SetDeadline(Clock::time_point at);
  void CancelDeadline();
  void OnDeadline();

  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer timer_;
  const Shared shared_;
  RequestReader reader_;
  Phase phase_ = Phase::kDispatch;  // until Start(): the host may answer (refuse) at once
  RequestInfo info_;
  std::string in_;   // bytes read and not yet parsed (a partial or a pipelined request)
  std::string out_;  // the answer being written
  After after_ = After::kLinger;
  Clock::time_point first_byte_;  // of the current request
  uint64_t deadline_gen_ = 0;     // a timer wait from an older deadline is ignored
  bool read_waiting_ = false;     // an async wait for readability is pending
  size_t drained_ = 0;            // bytes dropped while lingering
};

}  // namespace arbor::server::http

#endif  // ARBOR_SERVER_HTTP_SESSION_H_
