// The running account of one render against ChatTemplateLimits.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_BUDGET_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_BUDGET_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "engine/chat_template/limits.h"

namespace arbor::engine::jinja {

class Budget {
 public:
  explicit Budget(const ChatTemplateLimits& limits) : limits_(limits) {}

  // One evaluation step.
  absl::Status Step() {
    if (++steps_ > limits_.max_steps) return StepsExhausted();
    return absl::OkStatus();
  }
  // `units` bytes or items built or scanned.
  absl::Status Work(size_t units);
  // Before building a string of `bytes` or a list of `items`.
  absl::Status CheckString(size_t bytes) const;
  absl::Status CheckList(size_t items) const;
  const ChatTemplateLimits& limits() const { return limits_; }

 private:
  absl::Status StepsExhausted() const;
  const ChatTemplateLimits& limits_;
  int64_t steps_ = 0;
  int64_t work_ = 0;
};

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_BUDGET_H_
