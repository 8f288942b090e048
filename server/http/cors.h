// Cross-origin resource sharing for browser clients (server.cors_allowed_origins). With no
// origins configured the transport adds no CORS header and OPTIONS is just another method.
//
// For a request whose Origin is allowed, every response (a handler's, and the transport's own
// errors, so that a browser can read a 401 or a 429) carries Access-Control-Allow-Origin and
// Vary: Origin. A preflight (OPTIONS with an Origin) is answered by the transport itself, never
// by a handler: 204 with the path's methods for an allowed origin, 403 without CORS headers for
// any other.
#ifndef ARBOR_SERVER_HTTP_CORS_H_
#define ARBOR_SERVER_HTTP_CORS_H_

#include <string>
#include <string_view>
#include <vector>

#include "server/http/message.h"

namespace arbor::server::http {

class CorsPolicy {
 public:
  // `allowed_origins`: exact origins ("https://app.example", compared case-insensitively) or
  // the single entry "*" for any origin.
  explicit CorsPolicy(std::vector<std::string> allowed_origins);

  bool enabled() const { return any_ || !origins_.empty(); }
  bool Allows(std::string_view origin) const;
  // What a response to a request from `origin` ("" when it sent none) carries: nothing unless
  // the origin is allowed.
  Headers ForOrigin(std::string_view origin) const;
  // What a 204 answer to an allowed preflight adds to ForOrigin's headers: the path's methods
  // ("GET, HEAD"), the request headers the browser asked for (or the ones API clients send), and
  // how long the browser may cache the answer.
  static Headers Preflight(std::string_view methods, std::string_view request_headers);

 private:
  std::vector<std::string> origins_;
  bool any_ = false;
};

}  // namespace arbor::server::http

#endif  // ARBOR_SERVER_HTTP_CORS_H_
