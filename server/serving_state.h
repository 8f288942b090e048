// Whether this process should receive traffic: /health and Admin.Health report it.
#ifndef ARBOR_SERVER_SERVING_STATE_H_
#define ARBOR_SERVER_SERVING_STATE_H_

#include <atomic>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "kernels/backend.h"

namespace arbor::server {

enum class Phase { kLoading, kReady, kDraining, kFailed };

class ServingState {
 public:
  void set_phase(Phase p) { phase_.store(p); }
  Phase phase() const { return phase_.load(); }
  void set_backend(kernels::Backend* backend) { backend_.store(backend); }
  void set_engine(const engine::Engine* engine) { engine_.store(engine); }

  // Ok when ready and the device and the engine are healthy; Unavailable with the reason
  // otherwise. A device or engine failure is sticky: the phase becomes kFailed.
  absl::Status Check();

 private:
  absl::Status Fail(const std::string& why);

  std::atomic<Phase> phase_{Phase::kLoading};
  std::atomic<kernels::Backend*> backend_{nullptr};
  std::atomic<const engine::Engine*> engine_{nullptr};
  std::mutex mu_;        // serializes device health queries; guards failure_
  std::string failure_;  // why the phase became kFailed
};

}  // namespace arbor::server

#endif  // ARBOR_SERVER_SERVING_STATE_H_
