// The HTTP/1.1 request a route handler sees, and the writer it answers through. The transport
// (server/http/listener.h) parses requests with Boost.Beast and owns the sockets; handlers never
// touch either.
#ifndef ARBOR_SERVER_HTTP_MESSAGE_H_
#define ARBOR_SERVER_HTTP_MESSAGE_H_

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace arbor::server::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;  // as sent: "GET", "POST", ...
  std::string target;  // the request-target: "/v1/models?x=1"
  std::string path;    // the target up to '?'
  Headers headers;     // in arrival order
  std::string body;
  std::vector<std::string> params;  // what the route's {name} segments matched, in order
  // The first value of header `name` (case-insensitive); "" when absent.
  std::string Header(std::string_view name) const;
};

// A handler answers once with Send, or streams: BeginStream, Write..., End. Whatever it leaves
// unsent, the transport answers with a 500.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual void Send(int status, std::string_view content_type, std::string_view body,
                    const Headers& extra = {}) = 0;
  // A chunked response (HTTP/1.1) or one closed at its end (HTTP/1.0). False: the client is gone.
  virtual bool BeginStream(int status, std::string_view content_type,
                           const Headers& extra = {}) = 0;
  virtual bool Write(std::string_view data) = 0;  // false: the client is gone
  virtual void End() = 0;
  // Whether the client has hung up, without blocking: streaming handlers ask while they wait
  // for the engine, so a disconnect is noticed even when no bytes are due.
  virtual bool ClientGone() = 0;
};

using Handler = std::function<void(const Request&, ResponseWriter&)>;

}  // namespace arbor::server::http

#endif  // ARBOR_SERVER_HTTP_MESSAGE_H_
