#include "tools/bench/serve/grpc_load_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "proto/arbor.grpc.pb.h"
#include "tools/bench/serve/arrivals.h"
#include "tools/bench/serve/grpc_request.h"
#include "tools/bench/serve/grpc_stream.h"

namespace arbor::bench {
namespace {

constexpr double kProgressEvery_s = 1.0;
// The longest the loop sleeps in the queue: a bound, not a poll (events wake it at once).
constexpr double kMaxWait_s = 0.25;

std::chrono::system_clock::duration Seconds(double s) {
  return std::chrono::duration_cast<std::chrono::system_clock::duration>(
      std::chrono::duration<double>(s));
}

}  // namespace

absl::StatusOr<PointResult> RunGrpcPoint(const GrpcRunOptions& options, const LoadPoint& point,
                                         const std::vector<PlannedRequest>& requests) {
  if (options.channel == nullptr) return absl::InvalidArgumentError("no gRPC channel");
  const size_t n = requests.size();
  std::vector<GrpcRequest> messages;
  messages.reserve(n);
  for (const PlannedRequest& p : requests) {
    auto m = GrpcRequestFromBody(p.body);
    if (!m.ok()) return m.status();
    messages.push_back(std::move(*m));
  }
  auto stub = arbor::v1::Generation::NewStub(options.channel);
  grpc::CompletionQueue cq;
  const auto origin = std::chrono::steady_clock::now();
  auto Now = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - origin).count();
  };

  PointResult result;
  result.records.resize(n);
  // In-flight streams by their place in the plan; a finished one is released at once.
  std::vector<std::unique_ptr<GrpcStream>> streams(n);
  size_t sent = 0, ended = 0, failed = 0, in_flight = 0;
  int64_t output_tokens = 0;

  auto Launch = [&](double now) {
    const size_t i = sent++;
    streams[i] = std::make_unique<GrpcStream>(i, requests[i].model);
    streams[i]->Start(*stub, &cq, messages[i], options.api_key,
                      std::chrono::system_clock::now() + Seconds(options.timeout_s), now);
    ++in_flight;
  };
  auto End = [&](size_t i) {
    RequestRecord& r = result.records[i];
    r = std::move(streams[i]->record());
    streams[i].reset();
    --in_flight;
    ++ended;
    if (!r.ok()) ++failed;
    output_tokens += r.output_tokens;
  };
  ArrivalProcess arrivals(point.rate, point.gamma_shape, options.seed);
  double next_arrival = 0;
  double next_progress = kProgressEvery_s;
  auto Progress = [&](double now) {
    if (!options.progress) return;
    options.progress(ProgressLine(point, now, sent, n, ended, in_flight, failed, output_tokens));
  };

  while (ended < n) {
    double now = Now();
    if (point.closed_loop) {
      while (sent < n && in_flight < size_t(point.concurrency)) Launch(now);
    } else {
      while (sent < n && next_arrival <= now) {
        Launch(now);
        next_arrival += arrivals.NextGap();
      }
    }
    if (now >= next_progress) {
      next_progress = now + kProgressEvery_s;
      Progress(now);
    }
    double wake = std::min(next_progress, now + kMaxWait_s);
    if (!point.closed_loop && sent < n) wake = std::min(wake, next_arrival);
    void* tag = nullptr;
    bool ok = false;
    const auto got = cq.AsyncNext(
        &tag, &ok, std::chrono::system_clock::now() + Seconds(std::max(0.0, wake - now)));
    if (got == grpc::CompletionQueue::SHUTDOWN) {
      return absl::InternalError("the gRPC completion queue shut down during the run");
    }
    if (got != grpc::CompletionQueue::GOT_EVENT) continue;
    GrpcStream* stream = static_cast<GrpcStream::Tag*>(tag)->stream;
    if (stream->OnEvent(ok, Now())) End(stream->index());
  }
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
  }
  for (const RequestRecord& r : result.records) {
    result.duration_s = std::max(result.duration_s, r.end_s);
  }
  Progress(Now());
  return result;
}

}  // namespace arbor::bench
