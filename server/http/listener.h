// The HTTP/1.1 server: a listening socket, an accept thread, and one thread per connection
// (a streaming response holds its thread to the end). Requests are parsed by RequestReader
// (Boost.Beast) under hard limits and routed by a Router; errors the transport raises itself
// (400, 404, 405, 408, 413, 431, 500, 503) get the body `error_body` writes.
#ifndef ARBOR_SERVER_HTTP_LISTENER_H_
#define ARBOR_SERVER_HTTP_LISTENER_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/http/request_reader.h"
#include "server/http/router.h"

namespace arbor::server::http {

struct ListenerOptions {
  Limits limits;
  int max_connections = 256;  // open connections; one more gets a 503 and is closed
  absl::Duration idle_timeout = absl::Seconds(5);      // keep-alive wait for the next request
  absl::Duration request_timeout = absl::Seconds(30);  // first byte to whole request (slowloris)
  absl::Duration write_timeout = absl::Seconds(30);    // a client that reads nothing is dropped
  // The JSON body of a transport-level error.
  std::function<std::string(int status, const std::string& message)> error_body;
};

class Listener {
 public:
  Listener(const Router* router, ListenerOptions options);
  ~Listener();

  // Binds host:port (port 0 picks a free one) and accepts on a background thread.
  absl::StatusOr<int> Start(const std::string& host, int port);
  // Stops accepting, shuts every open connection and waits for their threads to end.
  void Stop();

 private:
  void AcceptLoop();
  void Serve(int fd);
  void Dispatch(Request& request, class Connection& conn);
  void SendError(Connection& conn, int status, const std::string& message,
                 const Headers& extra = {});
  void Release(int fd);

  const Router* router_;
  ListenerOptions options_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // a pipe: writing to it ends the accept loop
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable idle_;
  std::set<int> open_;  // connection sockets being served
};

}  // namespace arbor::server::http

#endif  // ARBOR_SERVER_HTTP_LISTENER_H_
