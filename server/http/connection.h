// The ResponseWriter a handler answers through, on the handler's own thread. While a handler
// runs, its socket is the handler's: the event loop (server/http/session.h) neither reads nor
// writes it until the handler returns. Writes are non-blocking sends, each part waiting at most
// the write timeout (poll) for the client to take it, so a client that reads nothing costs the
// handler no more than that.
#ifndef ARBOR_SERVER_HTTP_CONNECTION_H_
#define ARBOR_SERVER_HTTP_CONNECTION_H_

#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "server/http/message.h"

namespace arbor::server::http {

// How the response to one request must frame itself.
struct ResponseFraming {
  bool keep_alive = false;
  bool http10 = false;  // no chunked coding: a stream ends with the close
  bool head = false;    // a HEAD request: the head of the GET response, never a body
  Headers always;       // added to the response whatever it is (CORS)
};

class Connection : public ResponseWriter {
 public:
  // `fd` stays open and owned by the caller; it must be non-blocking.
  Connection(int fd, absl::Duration write_timeout, ResponseFraming framing)
      : fd_(fd), write_timeout_(write_timeout), framing_(std::move(framing)) {}

  // Writes everything, waiting at most the write timeout for the client to take each part.
  bool WriteAll(std::string_view data);

  bool responded() const { return responded_; }
  bool streaming() const { return streaming_; }
  bool ended() const { return ended_; }
  // Whether another request may follow on this connection.
  bool reusable() const { return framing_.keep_alive && !broken_ && (!streaming_ || ended_); }
  // Gives up on the response under way: nothing more is written and the connection closes.
  void Abort() { broken_ = true; }

  void Send(int status, std::string_view content_type, std::string_view body,
            const Headers& extra = {}) override;
  bool BeginStream(int status, std::string_view content_type, const Headers& extra = {}) override;
  bool Write(std::string_view data) override;
  void End() override;
  bool ClientGone() override;

 private:
  int fd_;
  absl::Duration write_timeout_;
  ResponseFraming framing_;
  bool responded_ = false;
  bool streaming_ = false;
  bool ended_ = false;
  bool broken_ = false;  // a write failed or the client hung up
};

}  // namespace arbor::server::http

#endif  // ARBOR_SERVER_HTTP_CONNECTION_H_
