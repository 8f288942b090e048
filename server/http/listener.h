// The HTTP/1.1 server: a listening socket and one event-loop thread (Boost.Asio) that accepts
// connections, reads and parses requests (RequestReader, under hard limits), keeps every
// connection's deadlines and writes the transport's own answers. An idle or slow connection
// costs a socket and a few KB, not a thread. Only a complete request that reaches a route
// handler gets a thread of its own: handlers block (on the engine, on a slow client) and write
// their response straight to the socket, which they hold until they return; a connection that may
// carry another request then goes back to the loop.
//
// Errors the transport raises itself (400, 403, 404, 405, 408, 413, 431, 500, 501, 503) get the
// body `error_body` writes. HEAD is answered as GET without the body, and no answer to HEAD has
// one. With `cors_allowed_origins`, CORS preflights are answered here and every answer carries
// the CORS headers (server/http/cors.h).
#ifndef ARBOR_SERVER_HTTP_LISTENER_H_
#define ARBOR_SERVER_HTTP_LISTENER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/http/request_reader.h"
#include "server/http/router.h"

namespace arbor::server::http {

struct ListenerOptions {
  Limits limits;
  // Open connections. At the limit a new client closes the longest-idle connection (one not
  // inside a handler: waiting for a request, or part way through sending one); only when every
  // connection is inside a handler does it get a 503.
  int max_connections = 10000;
  // A connection waiting for a request (fresh, or kept alive after a response) is closed after
  // this without an answer.
  absl::Duration idle_timeout = absl::Seconds(5);
  // From a request's first byte: its request line and headers within header_timeout, all of it
  // within request_timeout; else 408 and the connection closes (slow clients).
  absl::Duration header_timeout = absl::Seconds(10);
  absl::Duration request_timeout = absl::Seconds(30);
  absl::Duration write_timeout = absl::Seconds(30);  // a client that reads nothing is dropped
  // Origins browsers may call from ("https://app.example"), or {"*"}; empty: no CORS.
  std::vector<std::string> cors_allowed_origins;
  // The JSON body of a transport-level error.
  std::function<std::string(int status, const std::string& message)> error_body;
};

class Listener {
 public:
  Listener(const Router* router, ListenerOptions options);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Binds host:port (port 0 picks a free one) and serves on a background loop thread. Raises
  // the process's soft open-file limit to its hard limit first.
  absl::StatusOr<int> Start(const std::string& host, int port);
  // Stops accepting, closes idle connections, shuts the sockets under handlers (which then see
  // their client gone) and waits for every handler thread to end.
  void Stop();

 private:
  class Loop;
  std::unique_ptr<Loop> loop_;
};

}  // namespace arbor::server::http

#endif  // ARBOR_SERVER_HTTP_LISTENER_H_
