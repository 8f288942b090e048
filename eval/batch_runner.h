// Runs many requests through one engine for `arbor eval`: up to `max_in_flight` submitted at a
// time, so the engine batches them (continuous batching) without queueing a whole file at once.
// Events come back on the caller's thread, never the engine's.
#ifndef ARBOR_EVAL_BATCH_RUNNER_H_
#define ARBOR_EVAL_BATCH_RUNNER_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/request.h"

namespace arbor::eval {

struct BatchRun {
  int64_t count = 0;  // requests 0 .. count-1, submitted in order
  int64_t max_in_flight = 256;
  // Request i (its callback is set by the runner). An error stops the run.
  std::function<absl::StatusOr<engine::Request>(int64_t i)> make;
  // Where request i came from ("file:line"), to name it in errors.
  std::function<std::string(int64_t i)> name;
  // Each event of request i, in the order the engine sent them; an error stops the run (the
  // requests in flight are cancelled). Request i is done after its event with `finish`.
  std::function<absl::Status(int64_t i, const engine::StreamEvent& event)> on_event;
  // How many requests are done; called after each batch of events and at least every 0.25 s.
  std::function<void(int64_t done)> on_progress;
};

// Runs every request to its end. A Submit the engine refuses is an error naming the request.
absl::Status RunBatch(engine::Engine& engine, const BatchRun& run);

}  // namespace arbor::eval

#endif  // ARBOR_EVAL_BATCH_RUNNER_H_
