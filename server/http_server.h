// The HTTP front end (cpp-httplib, Debian's libcpp-httplib-dev): OpenAI-style REST routes.
#ifndef ARBOR_SERVER_HTTP_SERVER_H_
#define ARBOR_SERVER_HTTP_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/context.h"

namespace httplib {
class Server;
}

namespace arbor::server {

class HttpServer {
 public:
  explicit HttpServer(ServerContext* ctx);
  ~HttpServer();

  // Binds host:port (port 0 picks a free one) and serves on a background thread.
  absl::StatusOr<int> Start(const std::string& host, int port);
  // Stops accepting and closes connections; returns when the serving thread has ended.
  void Stop();

 private:
  void Routes();
  ServerContext* ctx_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
  int listen_fd_ = -1;  // the listening socket, seen through httplib's socket-options hook
};

}  // namespace arbor::server

#endif  // ARBOR_SERVER_HTTP_SERVER_H_
