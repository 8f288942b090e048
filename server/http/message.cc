#include "server/http/message.h"

#include "absl/strings/match.h"

namespace arbor::server::http {

std::string Request::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, absl::string_view(name.data(), name.size()))) return value;
  }
  return "";
}

}  // namespace arbor::server::http
