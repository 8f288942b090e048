#include "engine/chat_template/budget.h"

#include "absl/strings/str_cat.h"

namespace arbor::engine::jinja {

absl::Status Budget::Work(size_t units) {
  work_ += static_cast<int64_t>(units);
  if (work_ > limits_.max_work_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("chat template rendering exceeded its work budget of ", limits_.max_work_bytes,
                     " bytes built or scanned"));
  }
  return absl::OkStatus();
}

absl::Status Budget::CheckString(size_t bytes) const {
  if (bytes > static_cast<uint64_t>(limits_.max_output_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat("chat template built a string of ", bytes,
                                                     " bytes, over the limit of ",
                                                     limits_.max_output_bytes));
  }
  return absl::OkStatus();
}

absl::Status Budget::CheckList(size_t items) const {
  if (items > static_cast<uint64_t>(limits_.max_list_items)) {
    return absl::ResourceExhaustedError(absl::StrCat("chat template built a list of ", items,
                                                     " items, over the limit of ",
                                                     limits_.max_list_items));
  }
  return absl::OkStatus();
}

absl::Status Budget::StepsExhausted() const {
  return absl::ResourceExhaustedError(
      absl::StrCat("chat template rendering exceeded its budget of ", limits_.max_steps, " steps"));
}

}  // namespace arbor::engine::jinja
