// Router (server/http/router.h): literal and {param} segments, what does not match, 404 against
// 405 with the Allow list, one pattern routed by method, and HEAD on GET routes.
#include "server/http/router.h"

#include <catch2/catch.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace arbor::server::http {
namespace {

// A writer that only records what a handler sent.
class RecordingWriter : public ResponseWriter {
 public:
  void Send(int status, std::string_view, std::string_view body, const Headers&) override {
    status_ = status;
    body_ = std::string(body);
  }
  bool BeginStream(int, std::string_view, const Headers&) override { return false; }
  bool Write(std::string_view) override { return false; }
  void End() override {}
  bool ClientGone() override { return false; }

  int status_ = 0;
  std::string body_;
};

// A handler that answers with its own name, so a test can tell which one a match picked.
Handler Named(std::string name) {
  return [name](const Request&, ResponseWriter& w) { w.Send(200, "text/plain", name); };
}

// Runs the matched handler and returns the name it answered with ("" when nothing matched).
std::string Run(const Router::Match& m) {
  if (m.handler == nullptr) return "";
  RecordingWriter w;
  (*m.handler)(Request{}, w);
  return w.body_;
}

Router TestRouter() {
  Router r;
  r.Get("/", Named("root"));
  r.Get("/health", Named("health"));
  r.Get("/v1/models", Named("models"));
  r.Get("/v1/adapters/{name}", Named("get adapter"));
  r.Post("/v1/adapters/{name}", Named("post adapter"));
  r.Delete("/v1/adapters/{name}", Named("delete adapter"));
  r.Get("/v1/adapters/{name}/versions/{version}", Named("adapter version"));
  r.Post("/v1/completions", Named("completions"));
  r.Add("PUT", "/v1/completions", Named("put completions"));
  return r;
}

TEST_CASE("literal routes match exactly", "[http][router]") {
  const Router r = TestRouter();
  const auto health = r.Find("GET", "/health");
  CHECK(Run(health) == "health");
  CHECK(health.params.empty());
  CHECK(Run(r.Find("GET", "/")) == "root");
  CHECK(Run(r.Find("GET", "/v1/models")) == "models");
  CHECK(Run(r.Find("POST", "/v1/completions")) == "completions");

  for (const char* other :
       {"/healthz", "/heal", "/v1", "/v1/models/extra", "/V1/MODELS", "/v1//models", "//health"}) {
    INFO(other);
    const auto m = r.Find("GET", other);
    CHECK(m.handler == nullptr);
    CHECK(m.status == 404);
    CHECK(m.allow.empty());
  }
}

TEST_CASE("a trailing slash is a different path", "[http][router]") {
  const Router r = TestRouter();
  CHECK(r.Find("GET", "/health/").handler == nullptr);
  CHECK(r.Find("GET", "/health/").status == 404);
  CHECK(r.Find("GET", "/v1/models/").status == 404);
  CHECK(r.Find("GET", "/v1/adapters/x/").status == 404);

  Router slash;
  slash.Get("/dir/", Named("dir with slash"));
  CHECK(Run(slash.Find("GET", "/dir/")) == "dir with slash");
  CHECK(slash.Find("GET", "/dir").status == 404);
}

TEST_CASE("{param} segments match one non-empty segment each", "[http][router]") {
  const Router r = TestRouter();
  const auto one = r.Find("GET", "/v1/adapters/my-lora");
  CHECK(Run(one) == "get adapter");
  CHECK(one.params == std::vector<std::string>{"my-lora"});

  const auto two = r.Find("GET", "/v1/adapters/a.b/versions/7");
  CHECK(Run(two) == "adapter version");
  CHECK(two.params == std::vector<std::string>{"a.b", "7"});

  // An empty segment does not fill a parameter.
  CHECK(r.Find("GET", "/v1/adapters/").status == 404);
  CHECK(r.Find("GET", "/v1/adapters//versions/7").status == 404);
  CHECK(r.Find("GET", "/v1/adapters/x/versions/").status == 404);
  // A parameter is one segment: no slashes inside it.
  CHECK(r.Find("GET", "/v1/adapters/a/b").status == 404);
  CHECK(r.Find("GET", "/v1/adapters").status == 404);
}

TEST_CASE("params of a failed candidate do not leak into the match", "[http][router]") {
  Router r;
  r.Get("/a/{x}/b", Named("first"));
  r.Get("/a/{x}/{y}", Named("second"));
  const auto m = r.Find("GET", "/a/1/c");
  CHECK(Run(m) == "second");
  CHECK(m.params == std::vector<std::string>{"1", "c"});
}

TEST_CASE("a path that other methods take is 405 with the Allow list", "[http][router]") {
  const Router r = TestRouter();
  const auto put = r.Find("PUT", "/v1/adapters/x");
  CHECK(put.handler == nullptr);
  CHECK(put.status == 405);
  CHECK(put.allow == "GET, HEAD, POST, DELETE");  // in the order the routes were added; HEAD by GET

  const auto get = r.Find("GET", "/v1/completions");
  CHECK(get.status == 405);
  CHECK(get.allow == "POST, PUT");

  const auto post = r.Find("POST", "/health");
  CHECK(post.status == 405);
  CHECK(post.allow == "GET, HEAD");

  // Methods are case-sensitive tokens.
  const auto lower = r.Find("get", "/health");
  CHECK(lower.status == 405);
  CHECK(lower.allow == "GET, HEAD");

  // No route for the path at all: 404, not 405.
  const auto none = r.Find("PUT", "/nowhere");
  CHECK(none.status == 404);
  CHECK(none.allow.empty());
}

TEST_CASE("one pattern routes each method to its own handler", "[http][router]") {
  const Router r = TestRouter();
  CHECK(Run(r.Find("GET", "/v1/adapters/x")) == "get adapter");
  CHECK(Run(r.Find("POST", "/v1/adapters/x")) == "post adapter");
  CHECK(Run(r.Find("DELETE", "/v1/adapters/x")) == "delete adapter");
  CHECK(Run(r.Find("POST", "/v1/completions")) == "completions");
  CHECK(Run(r.Find("PUT", "/v1/completions")) == "put completions");
  CHECK(r.Find("DELETE", "/v1/adapters/x").params == std::vector<std::string>{"x"});
}

TEST_CASE("HEAD finds the GET route, unless the path has a HEAD route of its own",
          "[http][router]") {
  Router r = TestRouter();
  const auto head = r.Find("HEAD", "/v1/adapters/x");
  CHECK(Run(head) == "get adapter");
  CHECK(head.params == std::vector<std::string>{"x"});
  CHECK(Run(r.Find("HEAD", "/health")) == "health");
  // No GET route: 405, and the Allow list has no HEAD either.
  const auto post_only = r.Find("HEAD", "/v1/completions");
  CHECK(post_only.status == 405);
  CHECK(post_only.allow == "POST, PUT");
  CHECK(r.Find("HEAD", "/nowhere").status == 404);

  r.Add("HEAD", "/health", Named("head health"));
  CHECK(Run(r.Find("HEAD", "/health")) == "head health");
  CHECK(r.Find("POST", "/health").allow == "GET, HEAD");  // once
}

TEST_CASE("an empty router finds nothing", "[http][router]") {
  const Router r;
  const auto m = r.Find("GET", "/");
  CHECK(m.handler == nullptr);
  CHECK(m.status == 404);
}

}  // namespace
}  // namespace arbor::server::http
