#include "server/http/cors.h"

#include "absl/strings/match.h"

namespace arbor::server::http {
namespace {

// Browsers cap this (Chromium at 2 hours); 10 minutes keeps a config change visible soon.
constexpr char kMaxAgeSeconds[] = "600";
// When the browser names none: what OpenAI-style clients send.
constexpr char kDefaultAllowHeaders[] = "Authorization, Content-Type";

// An echoed value goes into a response head: nothing that could end a line in it.
bool PrintableField(std::string_view v) {
  for (const char c : v) {
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

}  // namespace

CorsPolicy::CorsPolicy(std::vector<std::string> allowed_origins) {
  for (std::string& o : allowed_origins) {
    if (o == "*") {
      any_ = true;
    } else {
      origins_.push_back(std::move(o));
    }
  }
}

bool CorsPolicy::Allows(std::string_view origin) const {
  if (origin.empty()) return false;
  if (any_) return true;
  const absl::string_view o(origin.data(), origin.size());
  for (const std::string& allowed : origins_) {
    if (absl::EqualsIgnoreCase(allowed, o)) return true;
  }
  return false;
}

Headers CorsPolicy::ForOrigin(std::string_view origin) const {
  if (!Allows(origin)) return {};
  return {{"Access-Control-Allow-Origin", any_ ? "*" : std::string(origin)}, {"Vary", "Origin"}};
}

Headers CorsPolicy::Preflight(std::string_view methods, std::string_view request_headers) {
  Headers h;
  h.emplace_back("Access-Control-Allow-Methods", std::string(methods));
  const bool echo = !request_headers.empty() && PrintableField(request_headers);
  h.emplace_back("Access-Control-Allow-Headers",
                 echo ? std::string(request_headers) : std::string(kDefaultAllowHeaders));
  h.emplace_back("Access-Control-Max-Age", kMaxAgeSeconds);
  return h;
}

}  // namespace arbor::server::http
