// The sweep's bench/results.json records: one per figure and point, naming the point, the
// model and the lengths, with the card that --card gave.
#include "tools/bench/serve/result_records.h"

#include <catch2/catch.hpp>

namespace arbor::bench {
namespace {

TEST_CASE("result records: figures per point, with the card and no baseline", "[bench]") {
  auto options = ParseBenchOptions({"--url", "http://127.0.0.1:1", "--model", "tiny",
                                    "--concurrency", "4", "--prompt-len", "32", "--output-len",
                                    "8", "--slo-ttft-ms", "200", "--results", "r.json", "--card",
                                    "NVIDIA H100 80GB HBM3"});
  REQUIRE(options.ok());
  CHECK(options->results_path == "r.json");
  PointReport r;
  r.label = "concurrency=4";
  r.output_throughput = 123.5;
  r.request_throughput = 15.25;
  r.goodput = 14.0;
  r.ttft_ms = Summary{10, 20.0, 18.0, 30.0, 41.0, 45.0};
  r.tpot_ms = Summary{10, 5.0, 4.5, 6.0, 7.5, 8.0};
  const nlohmann::json records = ResultRecords(*options, {r}, "arbor bench serve ...", "2026-12-07");
  REQUIRE(records.size() == 7);  // two throughputs, TTFT and TPOT p50 / p99, goodput
  std::map<std::string, double> value;
  for (const auto& rec : records) {
    const std::string name = rec["name"];
    CHECK(rec["card"] == "NVIDIA H100 80GB HBM3");
    CHECK(rec["baseline"].is_null());
    CHECK(rec["date"] == "2026-12-07");
    CHECK(name.find("(concurrency=4, tiny, prompt ") != std::string::npos);
    value[name.substr(0, name.find(' '))] = rec["value"];
  }
  CHECK(value["serve.bench.output_throughput"] == 123.5);
  CHECK(value["serve.bench.request_throughput"] == 15.25);
  CHECK(value["serve.bench.ttft_p50"] == 18.0);
  CHECK(value["serve.bench.ttft_p99"] == 41.0);
  CHECK(value["serve.bench.tpot_p50"] == 4.5);
  CHECK(value["serve.bench.tpot_p99"] == 7.5);
  CHECK(value["serve.bench.goodput"] == 14.0);
}

TEST_CASE("result records: failures are a figure, and no SLO means no goodput", "[bench]") {
  auto options = ParseBenchOptions({"--url", "http://127.0.0.1:1", "--model", "tiny"});
  REQUIRE(options.ok());
  CHECK(options->card == "unknown (no --card)");
  PointReport r;
  r.label = "rate=2";
  r.failed = 3;
  const nlohmann::json records = ResultRecords(*options, {r}, "c", "d");
  std::vector<std::string> names;
  for (const auto& rec : records) names.push_back(rec["name"].get<std::string>());
  REQUIRE(names.size() == 3);  // throughputs and failures; no latencies without requests
  CHECK(names[2].rfind("serve.bench.failed_requests (rate=2", 0) == 0);
  CHECK(records[2]["value"] == 3.0);
}

}  // namespace
}  // namespace arbor::bench
