#include "server/serving_state.h"

#include "absl/strings/str_cat.h"

namespace arbor::server {

absl::Status ServingState::Check() {
  switch (phase()) {
    case Phase::kLoading:
      return absl::UnavailableError("loading");
    case Phase::kDraining:
      return absl::UnavailableError("shutting down");
    case Phase::kFailed:
      return absl::UnavailableError("device failure");
    case Phase::kReady:
      break;
  }
  if (kernels::Backend* be = backend_.load(); be != nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s = be->Health(); !s.ok()) {
      set_phase(Phase::kFailed);
      return absl::UnavailableError(absl::StrCat("device failure: ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace arbor::server
