// `arbor bench serve` flags: sweeps, arrivals, lengths, and refusals that name the flag.
#include "tools/bench/serve/bench_options.h"

#include <catch2/catch.hpp>
#include <cmath>

namespace arbor::bench {
namespace {

absl::StatusOr<BenchOptions> Parse(std::vector<std::string> args) {
  return ParseBenchOptions(args);
}

TEST_CASE("bench options: a sweep of rates then concurrencies", "[bench]") {
  auto o = Parse({"--model",         "tiny",
                  "--rate",          "1,2.5,inf",
                  "--arrival",       "gamma",
                  "--gamma-shape",   "0.5",
                  "--concurrency",   "4,16",
                  "--api",           "chat",
                  "--adapters",      "a,b",
                  "--adapter-alpha", "1.2",
                  "--prompt-len",    "sharegpt-prompt",
                  "--output-len",    "uniform:8,32",
                  "--num-requests",  "50",
                  "--slo-ttft-ms",   "200",
                  "--seed",          "9"});
  INFO(o.status().ToString());
  REQUIRE(o.ok());
  REQUIRE(o->points.size() == 5);
  CHECK(o->points[1].rate == 2.5);
  CHECK(std::isinf(o->points[2].rate));
  CHECK(o->points[0].gamma_shape == 0.5);
  CHECK(o->points[3].closed_loop);
  CHECK(o->points[4].concurrency == 16);
  CHECK(o->path == "/v1/chat/completions");
  CHECK(o->workload.adapters == std::vector<std::string>{"a", "b"});
  CHECK(o->workload.adapter_alpha == 1.2);
  CHECK(o->workload.output_len.ToString() == "uniform:8,32");
  CHECK(o->num_requests == 50);
  CHECK(o->slo.ttft_ms == 200);
  CHECK(o->workload.seed == 9);
}

TEST_CASE("bench options: defaults are one closed-loop stream on completions", "[bench]") {
  auto o = Parse({"--model", "m"});
  REQUIRE(o.ok());
  REQUIRE(o->points.size() == 1);
  CHECK(o->points[0].closed_loop);
  CHECK(o->points[0].concurrency == 1);
  CHECK(o->path == "/v1/completions");
  CHECK(o->workload.ignore_eos);
  CHECK(Parse({"--help"})->help);
}

TEST_CASE("bench options: a grpc:// URL calls Generation.Complete or ChatComplete", "[bench]") {
  auto o = Parse({"--model", "m", "--url", "grpc://127.0.0.1:50051"});
  REQUIRE(o.ok());
  CHECK(o->path == "/arbor.v1.Generation/Complete");
  o = Parse({"--model", "m", "--url", "grpc://127.0.0.1:50051", "--api", "chat"});
  REQUIRE(o.ok());
  CHECK(o->path == "/arbor.v1.Generation/ChatComplete");
}

TEST_CASE("bench options: bad flags are refused by name", "[bench]") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "--model"},
      {{"--model", "m", "--rate", "0"}, "--rate"},
      {{"--model", "m", "--rate", "1,x"}, "--rate"},
      {{"--model", "m", "--concurrency", "inf"}, "--concurrency"},
      {{"--model", "m", "--concurrency", "2.5"}, "--concurrency"},
      {{"--model", "m", "--api", "embeddings"}, "--api"},
      {{"--model", "m", "--gamma-shape", "2"}, "--gamma-shape"},
      {{"--model", "m", "--arrival", "uniform"}, "--arrival"},
      {{"--model", "m", "--prompt-len", "uniform:5"}, "--prompt-len"},
      {{"--model", "m", "--vocab-size", "10", "--vocab-offset", "10"}, "--vocab-offset"},
      {{"--model", "m", "--num-requests"}, "--num-requests"},
      {{"--model", "m", "--endpoint", "v1/x"}, "--endpoint"},
      {{"--model", "m", "--url", "grpc://h:1", "--endpoint", "/v1/x"}, "--endpoint"},
      {{"--model", "m", "--frob"}, "--frob"},
  };
  for (const auto& [args, flag] : cases) {
    auto o = Parse(args);
    INFO(flag);
    REQUIRE_FALSE(o.ok());
    CHECK(std::string(o.status().message()).find(flag) != std::string::npos);
  }
}

}  // namespace
}  // namespace arbor::bench
