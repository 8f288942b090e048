// One accepted socket: deadline-bounded reads, and the ResponseWriter handlers answer through.
// The socket is non-blocking; every wait is a poll() with a deadline, so no client can hold a
// connection thread longer than the listener's timeouts allow.
#ifndef ARBOR_SERVER_HTTP_CONNECTION_H_
#define ARBOR_SERVER_HTTP_CONNECTION_H_

#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "server/http/message.h"

namespace arbor::server::http {

class Connection : public ResponseWriter {
 public:
  Connection(int fd, absl::Duration write_timeout) : fd_(fd), write_timeout_(write_timeout) {}

  enum class ReadStatus { kOk, kClosed, kTimeout };
  // Appends what arrives (at most 64 KiB) to `buffer`, waiting until `deadline`.
  ReadStatus ReadSome(std::string& buffer, absl::Time deadline);
  // Writes everything, waiting at most the write timeout for the client to take each part.
  bool WriteAll(std::string_view data);

  // Before each request: how the response must frame itself.
  void StartResponse(bool keep_alive, bool http10);
  bool responded() const { return responded_; }
  bool streaming() const { return streaming_; }
  bool ended() const { return ended_; }
  // Whether another request may follow on this connection.
  bool reusable() const { return keep_alive_ && !broken_ && (!streaming_ || ended_); }
  // Stops writing, then reads and drops what the client still sends for a moment, so a client
  // that is mid-body when refused gets the refusal rather than a reset.
  void LingeringClose();
  // Gives up on the response under way: nothing more is written and the connection closes.
  void Abort() { broken_ = true; }

  void Send(int status, std::string_view content_type, std::string_view body,
            const Headers& extra = {}) override;
  bool BeginStream(int status, std::string_view content_type, const Headers& extra = {}) override;
  bool Write(std::string_view data) override;
  void End() override;
  bool ClientGone() override;

 private:
  std::string Head(int status, std::string_view content_type, const Headers& extra) const;

  int fd_;
  absl::Duration write_timeout_;
  bool keep_alive_ = false;
  bool http10_ = false;
  bool responded_ = false;
  bool streaming_ = false;
  bool ended_ = false;
  bool broken_ = false;  // a write failed or the client hung up
};

}  // namespace arbor::server::http

#endif  // ARBOR_SERVER_HTTP_CONNECTION_H_
