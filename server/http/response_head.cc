#include "server/http/response_head.h"

// <ostream> first: Boost 1.81's string_view (under Beast's status.hpp) uses it without the include.
#include <ostream>
// clang-format off
#include <boost/beast/http/status.hpp>
// clang-format on

#include "absl/strings/str_cat.h"

namespace arbor::server::http {
namespace {

absl::string_view Reason(int status) {
  const auto r = boost::beast::http::obsolete_reason(
      boost::beast::http::int_to_status(static_cast<unsigned>(status)));
  return r.empty() ? absl::string_view("Unknown") : absl::string_view(r.data(), r.size());
}

void AppendFields(std::string* head, const Headers& fields) {
  for (const auto& [name, value] : fields) absl::StrAppend(head, name, ": ", value, "\r\n");
}

}  // namespace

std::string ResponseHead(int status, std::string_view content_type, const Headers& extra,
                         const Headers& more) {
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", Reason(status), "\r\n");
  if (!content_type.empty()) {
    absl::StrAppend(&head,
                    "Content-Type: ", absl::string_view(content_type.data(), content_type.size()),
                    "\r\n");
  }
  AppendFields(&head, extra);
  AppendFields(&head, more);
  return head;
}

bool StatusHasContent(int status) { return status >= 200 && status != 204 && status != 304; }

}  // namespace arbor::server::http
