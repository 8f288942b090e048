#include "server/serving_state.h"

#include "absl/strings/str_cat.h"

namespace arbor::server {

absl::Status ServingState::Check() {
  switch (phase()) {
    case Phase::kLoading:
      return absl::UnavailableError("loading");
    case Phase::kDraining:
      return absl::UnavailableError("shutting down");
    case Phase::kFailed: {
      std::lock_guard<std::mutex> lock(mu_);
      return absl::UnavailableError(failure_);
    }
    case Phase::kReady:
      break;
  }
  // The device first: when it has failed, that is the root cause of an engine failure too.
  if (kernels::Backend* be = backend_.load(); be != nullptr) {
    absl::Status s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      s = be->Health();
    }
    if (!s.ok()) return Fail(absl::StrCat("device failure: ", s.message()));
  }
  if (const engine::Engine* e = engine_.load(); e != nullptr) {
    if (absl::Status s = e->Health(); !s.ok()) return Fail(std::string(s.message()));
  }
  return absl::OkStatus();
}

absl::Status ServingState::Fail(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (phase() != Phase::kFailed) failure_ = why;
  set_phase(Phase::kFailed);
  return absl::UnavailableError(failure_);
}

}  // namespace arbor::server
