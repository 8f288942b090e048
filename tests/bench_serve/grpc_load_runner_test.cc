// The gRPC runner against a scripted Generation service on loopback: an injected first-token
// delay shows in TTFT and token gaps in TPOT, every kind of failure is counted as its kind
// (grpc_<code> before a message, stream_error after, timeout, connect), and a hundred streams run
// at once from the runner's one thread.
#include "tools/bench/serve/grpc_load_runner.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "proto/arbor.grpc.pb.h"
#include "tools/bench/serve/grpc_stream.h"
#include "tools/bench/serve/grpc_target.h"
#include "tools/bench/serve/point_report.h"

namespace arbor::bench {
namespace {

// The request's model picks the script: "slow" (150 ms to the first token, 20 ms gaps), "missing"
// (NOT_FOUND), "busy" (RESOURCE_EXHAUSTED), "break" (two tokens, then INTERNAL), "hang" (nothing
// until the client gives up); anything else streams at once. Every success streams max_tokens
// one-token messages and a usage message.
class ScriptedGeneration final : public arbor::v1::Generation::Service {
 public:
  std::atomic<int> calls{0};
  std::atomic<int> prompt_ids{0};  // token ids received, over every call

  grpc::Status Complete(grpc::ServerContext* call, const arbor::v1::CompletionRequest* req,
                        grpc::ServerWriter<arbor::v1::CompletionChunk>* out) override {
    ++calls;
    prompt_ids += req->token_ids().ids_size();
    const std::string& model = req->model();
    if (model == "missing") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such model");
    if (model == "busy") return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "busy");
    if (model == "hang") {
      while (!call->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return grpc::Status::CANCELLED;
    }
    const bool slow = model == "slow";
    const int tokens = model == "break" ? 2 : req->sampling().max_tokens();
    for (int i = 0; i < tokens; ++i) {
      if (slow) std::this_thread::sleep_for(std::chrono::milliseconds(i == 0 ? 150 : 20));
      arbor::v1::CompletionChunk chunk;
      auto* c = chunk.add_choices();
      c->set_text("x");
      c->add_token_ids(7);
      if (!out->Write(chunk)) return grpc::Status::CANCELLED;
    }
    if (model == "break") return grpc::Status(grpc::StatusCode::INTERNAL, "device lost");
    arbor::v1::CompletionChunk last;
    last.mutable_usage()->set_prompt_tokens(req->token_ids().ids_size());
    last.mutable_usage()->set_completion_tokens(tokens);
    out->Write(last);
    return grpc::Status::OK;
  }
};

class FakeGrpcServer {
 public:
  FakeGrpcServer() {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&service_);
    server_ = b.BuildAndStart();
    REQUIRE(server_ != nullptr);
  }
  ~FakeGrpcServer() { server_->Shutdown(std::chrono::system_clock::now()); }
  int port() const { return port_; }
  ScriptedGeneration& service() { return service_; }

 private:
  ScriptedGeneration service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

std::vector<PlannedRequest> Plan(int n, const std::string& model, int output_len = 4) {
  WorkloadOptions o;
  o.model = model;
  o.prompt_len = LengthDistribution::Fixed(3);
  o.output_len = LengthDistribution::Fixed(output_len);
  PromptSource prompts = PromptSource::Synthetic(100, 0);
  auto plan = PlanRequests(o, prompts, n);
  REQUIRE(plan.ok());
  return *plan;
}

std::shared_ptr<grpc::Channel> Connect(int port) {
  auto target = ParseGrpcTarget(absl::StrCat("grpc://127.0.0.1:", port));
  REQUIRE(target.ok());
  auto channel = ConnectGrpc(*target, 5);
  REQUIRE(channel.ok());
  return *channel;
}

PointReport Run(std::shared_ptr<grpc::Channel> channel, LoadPoint point,
                const std::vector<PlannedRequest>& plan, double timeout_s = 30) {
  GrpcRunOptions options;
  options.channel = std::move(channel);
  options.timeout_s = timeout_s;
  auto result = RunGrpcPoint(options, point, plan);
  REQUIRE(result.ok());
  return MakePointReport(point, *result, Slo{});
}

TEST_CASE("grpc: an injected slow first token shows in TTFT; token gaps in TPOT", "[bench]") {
  FakeGrpcServer server;
  const PointReport r = Run(Connect(server.port()), LoadPoint::ClosedLoop(4), Plan(8, "slow", 5));
  INFO(r.first_error);
  CHECK(r.completed == 8);
  CHECK(r.failed == 0);
  CHECK(r.output_tokens == 40);  // from the usage message
  CHECK(r.prompt_tokens == 24);
  CHECK(r.ttft_ms.count == 8);
  CHECK(r.ttft_ms.p50 >= 150);
  CHECK(r.ttft_ms.p50 < 150 + 500);
  CHECK(r.tpot_ms.p50 >= 20);
  CHECK(r.itl_ms.p50 >= 15);
  CHECK(r.e2e_ms.p50 >= 150 + 4 * 20);
  CHECK(server.service().calls == 8);
  CHECK(server.service().prompt_ids == 24);  // token-id prompts arrive as token ids
}

TEST_CASE("grpc: open loop sends every request; a hundred streams run at once", "[bench]") {
  FakeGrpcServer server;
  auto channel = Connect(server.port());
  LoadPoint open;
  open.rate = 200;
  PointReport r = Run(channel, open, Plan(40, "fast"));
  CHECK(r.completed == 40);
  CHECK(r.duration_s > 0.05);  // 40 arrivals at 200/s span about 0.2 s
  CHECK(r.duration_s < 2.0);
  LoadPoint burst;
  burst.rate = std::numeric_limits<double>::infinity();
  CHECK(Run(channel, burst, Plan(30, "fast")).completed == 30);
  // 100 slow streams in flight together: one at a time would take 100 x 0.21 s.
  r = Run(channel, LoadPoint::ClosedLoop(100), Plan(100, "slow", 2));
  CHECK(r.completed == 100);
  CHECK(r.duration_s < 5.0);
}

TEST_CASE("grpc: failures are counted by kind", "[bench]") {
  FakeGrpcServer server;
  auto channel = Connect(server.port());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"missing", "grpc_not_found"},
      {"busy", "grpc_resource_exhausted"},
      {"break", "stream_error"},
  };
  for (const auto& [model, kind] : cases) {
    const PointReport r = Run(channel, LoadPoint::ClosedLoop(2), Plan(3, model));
    INFO(kind << ": " << r.first_error);
    CHECK(r.failed == 3);
    CHECK(r.errors.size() == 1);
    CHECK(r.errors.count(kind) == 1);
  }
  const PointReport late =
      Run(channel, LoadPoint::ClosedLoop(2), Plan(2, "hang"), /*timeout_s=*/0.3);
  CHECK(late.errors.at("timeout") == 2);
  CHECK(late.e2e_ms.count == 0);

  // The server went away after the channel was made: every call fails, counted as connect.
  int port = 0;
  {
    FakeGrpcServer gone;
    port = gone.port();
  }
  auto dead =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  const PointReport refused = Run(dead, LoadPoint::ClosedLoop(1), Plan(2, "fast"));
  INFO(refused.first_error);
  CHECK(refused.errors.at("connect") == 2);
}

TEST_CASE("grpc: status codes map to the error kinds", "[bench]") {
  using grpc::StatusCode;
  CHECK(ErrorKindForGrpc(StatusCode::OK, true) == ErrorKind::kNone);
  CHECK(ErrorKindForGrpc(StatusCode::DEADLINE_EXCEEDED, false) == ErrorKind::kTimeout);
  CHECK(ErrorKindForGrpc(StatusCode::DEADLINE_EXCEEDED, true) == ErrorKind::kTimeout);
  CHECK(ErrorKindForGrpc(StatusCode::UNAVAILABLE, false) == ErrorKind::kConnect);
  CHECK(ErrorKindForGrpc(StatusCode::UNAVAILABLE, true) == ErrorKind::kStreamError);
  CHECK(ErrorKindForGrpc(StatusCode::INVALID_ARGUMENT, false) == ErrorKind::kGrpcStatus);
  CHECK(ErrorKindForGrpc(StatusCode::ABORTED, true) == ErrorKind::kStreamError);
  RequestRecord r;
  r.error = ErrorKind::kGrpcStatus;
  r.grpc_code = int(StatusCode::UNAUTHENTICATED);
  CHECK(ErrorLabel(r) == "grpc_unauthenticated");
}

TEST_CASE("grpc target: bad URLs and unreachable servers name --url", "[bench]") {
  CHECK(IsGrpcUrl("grpc://127.0.0.1:50051"));
  CHECK(!IsGrpcUrl("http://127.0.0.1:8000"));
  auto ok = ParseGrpcTarget("grpc://[::1]:50051/");
  REQUIRE(ok.ok());
  CHECK(ok->host == "::1");
  CHECK(ok->Text() == "[::1]:50051");
  for (const char* bad :
       {"grpc://127.0.0.1", "grpc://:50051", "grpc://127.0.0.1:0", "grpc://127.0.0.1:50051/v1",
        "grpc://[::1:50051", "grpcs://x:1", "grpc://no.such.host.invalid:50051"}) {
    auto t = ParseGrpcTarget(bad);
    INFO(bad);
    REQUIRE(!t.ok());
    CHECK(t.status().message().find("--url") != absl::string_view::npos);
  }
  int port = 0;
  {
    FakeGrpcServer gone;
    port = gone.port();
  }
  auto t = ParseGrpcTarget(absl::StrCat("grpc://127.0.0.1:", port));
  REQUIRE(t.ok());
  auto channel = ConnectGrpc(*t, 0.5);
  REQUIRE(!channel.ok());
  CHECK(channel.status().code() == absl::StatusCode::kUnavailable);
  CHECK(channel.status().message().find("--url grpc://127.0.0.1:") != absl::string_view::npos);
}

}  // namespace
}  // namespace arbor::bench
