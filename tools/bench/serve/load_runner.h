// Runs one sweep point: sends the planned requests open-loop (at arrival times drawn from
// arrivals.h) or closed-loop (a fixed number in flight, the next sent as one ends), and drives
// every stream from one thread with epoll, so hundreds of concurrent streams cost a socket each
// and chunk timestamps are taken as their bytes are read.
#ifndef ARBOR_TOOLS_BENCH_SERVE_LOAD_RUNNER_H_
#define ARBOR_TOOLS_BENCH_SERVE_LOAD_RUNNER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/bench/serve/http_target.h"
#include "tools/bench/serve/request_record.h"
#include "tools/bench/serve/workload.h"

namespace arbor::bench {

// The load of one sweep point.
struct LoadPoint {
  bool closed_loop = false;
  double rate = 1;          // open loop: requests per second (+inf: all at once)
  double gamma_shape = 1;   // open loop: 1 = Poisson
  int32_t concurrency = 1;  // closed loop: requests in flight
  // A short name for progress lines and reports: "rate=4", "rate=4 gamma=0.5", "concurrency=32".
  std::string Label() const;
  // A closed-loop point keeping `concurrency` requests in flight.
  static LoadPoint ClosedLoop(int32_t concurrency);
};

struct RunOptions {
  HttpTarget target;
  std::string path = "/v1/completions";
  std::string api_key;
  double timeout_s = 600;  // a request not ended this long after its send is a timeout
  uint64_t seed = 0;       // arrival times
  // Called about once a second with a one-line status (and once at the end); may be empty.
  std::function<void(const std::string&)> progress;
};

struct PointResult {
  std::vector<RequestRecord> records;  // one per planned request, in plan order
  double duration_s = 0;               // first send to last end
};

// The progress line both runners print: sent, done, in flight, errors, output tokens/s.
std::string ProgressLine(const LoadPoint& point, double now_s, size_t sent, size_t planned,
                         size_t ended, size_t in_flight, size_t failed, int64_t output_tokens);

// Runs `requests` at `point`. Fails only for a broken setup (epoll); failed requests are
// recorded, not returned as errors.
absl::StatusOr<PointResult> RunPoint(const RunOptions& options, const LoadPoint& point,
                                     const std::vector<PlannedRequest>& requests);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_LOAD_RUNNER_H_
