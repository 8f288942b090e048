// Routes (method, path pattern) to handlers. A pattern is literal segments and `{name}`
// segments, each matching one non-empty path segment: "/v1/adapters/{name}". HEAD finds the GET
// route of a path that has no HEAD route of its own (the transport then sends no body).
#ifndef ARBOR_SERVER_HTTP_ROUTER_H_
#define ARBOR_SERVER_HTTP_ROUTER_H_

#include <string>
#include <string_view>
#include <vector>

#include "server/http/message.h"

namespace arbor::server::http {

class Router {
 public:
  void Add(std::string method, std::string_view pattern, Handler handler);
  void Get(std::string_view pattern, Handler h) { Add("GET", pattern, std::move(h)); }
  void Post(std::string_view pattern, Handler h) { Add("POST", pattern, std::move(h)); }
  void Delete(std::string_view pattern, Handler h) { Add("DELETE", pattern, std::move(h)); }

  struct Match {
    const Handler* handler = nullptr;  // null: no route
    std::vector<std::string> params;
    int status = 404;   // when no handler: 404 (no such path) or 405 (other methods only)
    std::string allow;  // for 405: the methods the path takes, "GET, HEAD, POST"
  };
  Match Find(std::string_view method, std::string_view path) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;  // "{}" marks a parameter
    Handler handler;
  };
  std::vector<Route> routes_;
};

}  // namespace arbor::server::http

#endif  // ARBOR_SERVER_HTTP_ROUTER_H_
