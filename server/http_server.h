// The HTTP front end: OpenAI-style REST routes on the server's own HTTP/1.1 transport
// (server/http: an event loop for connections, Boost.Beast's parser under hard limits, a thread
// per running handler).
#ifndef ARBOR_SERVER_HTTP_SERVER_H_
#define ARBOR_SERVER_HTTP_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/context.h"
#include "server/http/listener.h"
#include "server/http/router.h"

namespace arbor::server {

class HttpServer {
 public:
  explicit HttpServer(ServerContext* ctx);
  ~HttpServer();

  // Binds host:port (port 0 picks a free one) and serves on background threads.
  absl::StatusOr<int> Start(const std::string& host, int port);
  // Stops accepting and closes connections; returns when every handler thread has ended.
  void Stop();

 private:
  void Routes();
  ServerContext* ctx_;
  http::Router router_;
  std::unique_ptr<http::Listener> listener_;
};

}  // namespace arbor::server

#endif  // ARBOR_SERVER_HTTP_SERVER_H_
