// The runner against scripted fake servers: an injected first-token delay shows in TTFT, token
// gaps in TPOT and ITL, each kind of failure is counted as its kind, and hundreds of streams run
// at once from one thread.
#include "tools/bench/serve/load_runner.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "tests/bench_serve/fake_sse_server.h"
#include "tools/bench/serve/point_report.h"

namespace arbor::bench {
namespace {

using testing::FakeScript;
using testing::FakeSseServer;

std::vector<PlannedRequest> Plan(int n) {
  WorkloadOptions o;
  o.model = "fake";
  o.prompt_len = LengthDistribution::Fixed(3);
  o.output_len = LengthDistribution::Fixed(4);
  PromptSource prompts = PromptSource::Synthetic(100, 0);
  auto plan = PlanRequests(o, prompts, n);
  REQUIRE(plan.ok());
  return *plan;
}

PointReport Run(const FakeSseServer& server, LoadPoint point, int n, double timeout_s = 30) {
  RunOptions options;
  auto target = ResolveTarget(absl::StrCat("http://127.0.0.1:", server.port()));
  REQUIRE(target.ok());
  options.target = *target;
  options.timeout_s = timeout_s;
  auto result = RunPoint(options, point, Plan(n));
  REQUIRE(result.ok());
  return MakePointReport(point, *result, Slo{});
}

TEST_CASE("an injected slow first token shows in TTFT; token gaps in TPOT and ITL", "[bench]") {
  FakeScript script;
  script.first_token_delay_ms = 150;
  script.gap_ms = 20;
  script.tokens = 5;
  FakeSseServer server(script);
  const PointReport r = Run(server, LoadPoint::ClosedLoop(4), 8);
  CHECK(r.completed == 8);
  CHECK(r.failed == 0);
  CHECK(r.output_tokens == 40);  // from the usage chunk
  CHECK(r.prompt_tokens == 24);
  CHECK(r.ttft_ms.p50 >= 150);
  CHECK(r.ttft_ms.p50 < 150 + 500);
  CHECK(r.tpot_ms.p50 >= 20);
  CHECK(r.itl_ms.p50 >= 15);  // the timer's slack: a gap is measured between two reads
  CHECK(r.e2e_ms.p50 >= 150 + 4 * 20);
  CHECK(server.requests() == 8);
}

TEST_CASE("open loop: a rate sweep point sends every request, Poisson-spaced", "[bench]") {
  FakeSseServer server(FakeScript{});
  LoadPoint open;
  open.rate = 200;
  const PointReport r = Run(server, open, 40);
  CHECK(r.completed == 40);
  // 40 arrivals at 200/s span about 0.2 s.
  CHECK(r.duration_s > 0.05);
  CHECK(r.duration_s < 2.0);
  LoadPoint burst;
  burst.rate = std::numeric_limits<double>::infinity();
  CHECK(Run(server, burst, 30).completed == 30);
}

TEST_CASE("hundreds of concurrent streams from one thread", "[bench]") {
  FakeScript script;
  script.first_token_delay_ms = 300;  // all 300 must be open at once to finish in time
  FakeSseServer server(script);
  const PointReport r = Run(server, LoadPoint::ClosedLoop(300), 300);
  CHECK(r.completed == 300);
  CHECK(r.duration_s < 4.0);  // one at a time would take 90 s
}

TEST_CASE("failures are counted by kind", "[bench]") {
  using Mode = FakeScript::Mode;
  const std::vector<std::pair<Mode, std::string>> cases = {
      {Mode::kStatus500, "http_500"},
      {Mode::kGarbage, "malformed_stream"},
      {Mode::kCutShort, "malformed_stream"},
      {Mode::kInStreamError, "stream_error"},
  };
  for (const auto& [mode, kind] : cases) {
    FakeScript script;
    script.mode = mode;
    FakeSseServer server(script);
    const PointReport r = Run(server, LoadPoint::ClosedLoop(2), 3);
    INFO(kind << ": " << r.first_error);
    CHECK(r.failed == 3);
    CHECK(r.errors.size() == 1);
    CHECK(r.errors.count(kind) == 1);
  }
  FakeScript hang;
  hang.mode = Mode::kHang;
  FakeSseServer hung(hang);
  const PointReport late = Run(hung, LoadPoint::ClosedLoop(2), 2, /*timeout_s=*/0.3);
  CHECK(late.errors.at("timeout") == 2);
  CHECK(late.e2e_ms.count == 0);

  // Nobody listening: the port of a server that has stopped.
  int port = 0;
  { port = FakeSseServer(FakeScript{}).port(); }
  RunOptions options;
  auto target = ResolveTarget(absl::StrCat("http://127.0.0.1:", port));
  REQUIRE(target.ok());
  options.target = *target;
  auto result = RunPoint(options, LoadPoint::ClosedLoop(1), Plan(2));
  REQUIRE(result.ok());
  const PointReport refused = MakePointReport(LoadPoint::ClosedLoop(1), *result, Slo{});
  CHECK(refused.errors.at("connect") == 2);
}

}  // namespace
}  // namespace arbor::bench
