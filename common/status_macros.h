// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status and absl::StatusOr.
#ifndef ARBOR_COMMON_STATUS_MACROS_H_
#define ARBOR_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ARBOR_CONCAT_INNER(a, b) a##b
#define ARBOR_CONCAT(a, b) ARBOR_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    const ::absl::Status arbor_status_ = (expr);   \
    if (!arbor_status_.ok()) return arbor_status_; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ARBOR_ASSIGN_OR_RETURN_IMPL(ARBOR_CONCAT(arbor_statusor_, __LINE__), lhs, expr)

#define ARBOR_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(*tmp)

#endif  // ARBOR_COMMON_STATUS_MACROS_H_
