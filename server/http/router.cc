#include "server/http/router.h"

#include <algorithm>

#include "absl/strings/str_join.h"

namespace arbor::server::http {
namespace {

// "/a/b/" -> {"a", "b", ""}: a trailing slash is a segment of its own, so "/v1/models/" is not
// "/v1/models".
std::vector<std::string_view> Segments(std::string_view path) {
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  std::vector<std::string_view> out;
  while (true) {
    const size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) return out;
    path.remove_prefix(slash + 1);
  }
}

bool Matches(const std::vector<std::string>& pattern, const std::vector<std::string_view>& parts,
             std::vector<std::string>* params) {
  if (pattern.size() != parts.size()) return false;
  params->clear();
  for (size_t i = 0; i < parts.size(); ++i) {
    if (pattern[i] == "{}") {
      if (parts[i].empty()) return false;
      params->emplace_back(parts[i]);
    } else if (pattern[i] != parts[i]) {
      return false;
    }
  }
  return true;
}

}  // namespace

void Router::Add(std::string method, std::string_view pattern, Handler handler) {
  Route r{std::move(method), {}, std::move(handler)};
  for (std::string_view s : Segments(pattern)) {
    const bool param = s.size() >= 2 && s.front() == '{' && s.back() == '}';
    r.segments.push_back(param ? "{}" : std::string(s));
  }
  routes_.push_back(std::move(r));
}

Router::Match Router::Find(std::string_view method, std::string_view path) const {
  Match m;
  const std::vector<std::string_view> parts = Segments(path);
  std::vector<std::string> allowed, params, get_params;
  const Route* get = nullptr;  // the path's first GET route: HEAD's unless it has a HEAD route
  bool has_head = false;
  for (const Route& r : routes_) {
    if (!Matches(r.segments, parts, &params)) continue;
    if (r.method == method) {
      m.handler = &r.handler;
      m.params = std::move(params);
      return m;
    }
    allowed.push_back(r.method);
    if (r.method == "HEAD") has_head = true;
    if (r.method == "GET" && get == nullptr) {
      get = &r;
      get_params = params;
    }
  }
  if (get != nullptr && !has_head) {
    if (method == "HEAD") {
      m.handler = &get->handler;
      m.params = std::move(get_params);
      return m;
    }
    allowed.insert(std::find(allowed.begin(), allowed.end(), "GET") + 1, "HEAD");
  }
  if (!allowed.empty()) {
    m.status = 405;
    m.allow = absl::StrJoin(allowed, ", ");
  }
  return m;
}

}  // namespace arbor::server::http
