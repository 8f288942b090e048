// `arbor bench serve` against the real server on the CPU: what the generator counts from outside
// (requests, prompt and output tokens, TTFT / TPOT observations) equals what the server's
// Prometheus /metrics counts from inside, over HTTP and over the gRPC Generation service; adapters
// are addressed by name with the requested popularity; failures are counted by kind.
#include <httplib.h>

#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/server/start_app.h"
#include "tools/bench/serve/bench_serve.h"

namespace arbor::bench {
namespace {

// A Prometheus text exposition's samples: "name{labels}" -> value. Counters with labels are
// also summed under their bare name.
std::map<std::string, double> Scrape(int port) {
  httplib::Client http("127.0.0.1", port);
  auto res = http.Get("/metrics");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(res->body, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    double value = 0;
    if (space == absl::string_view::npos || !absl::SimpleAtod(line.substr(space + 1), &value)) {
      continue;
    }
    const std::string key(line.substr(0, space));
    out[key] = value;
    if (const size_t brace = key.find('{'); brace != std::string::npos) {
      out[key.substr(0, brace)] += value;
    }
  }
  return out;
}

// The totals of a run's points equal the server's /metrics: requests (all finished by length:
// ignore_eos), prompt and output tokens, TTFT and TPOT observations. The server's TTFT starts at
// arrival, after the client's send: its mean is not larger than the client's.
void CheckCountsEqualMetrics(const std::vector<PointReport>& reports, int http_port) {
  int64_t requests = 0, prompt_tokens = 0, output_tokens = 0, with_tpot = 0;
  double client_ttft_mean_ms = 0;
  for (const PointReport& r : reports) {
    requests += r.completed;
    prompt_tokens += r.prompt_tokens;
    output_tokens += r.output_tokens;
    with_tpot += r.tpot_ms.count;
    client_ttft_mean_ms += r.ttft_ms.mean / double(reports.size());
  }
  const std::map<std::string, double> m = Scrape(http_port);
  CHECK(m.at("arbor:request_success_total") == requests);
  CHECK(m.at("arbor:request_success_total{finished_reason=\"length\"}") == requests);
  CHECK(m.at("arbor:generation_tokens_total") == output_tokens);
  CHECK(m.at("arbor:prompt_tokens_total") == prompt_tokens);
  CHECK(m.at("arbor:time_to_first_token_seconds_count") == requests);
  CHECK(m.at("arbor:time_per_output_token_seconds_count") == with_tpot);
  const double server_ttft_mean_ms = 1e3 * m.at("arbor:time_to_first_token_seconds_sum") /
                                     m.at("arbor:time_to_first_token_seconds_count");
  CHECK(server_ttft_mean_ms <= client_ttft_mean_ms);
}

TEST_CASE("bench serve closed loop on the tiny model: its counts equal /metrics", "[bench]") {
  auto app = server::testing::StartTinyApp();
  BenchOptions o = *ParseBenchOptions({"--url", absl::StrCat("http://127.0.0.1:", app->http_port()),
                                       "--model", "tiny", "--concurrency", "1,4", "--num-requests",
                                       "12", "--prompt-len", "uniform:4,24", "--output-len",
                                       "uniform:2,12", "--vocab-size", "1206", "--quiet"});
  auto reports = RunBench(o);
  REQUIRE(reports.ok());
  REQUIRE(reports->size() == 2);
  int64_t output_tokens = 0;
  for (const PointReport& r : *reports) {
    INFO(r.label << ": " << r.first_error);
    CHECK(r.failed == 0);
    CHECK(r.completed == 12);
    CHECK(r.ttft_ms.count == 12);
    CHECK(r.ttft_ms.p50 > 0);
    CHECK(r.tpot_ms.p99 >= r.tpot_ms.p50);
    output_tokens += r.output_tokens;
  }
  // ignore_eos: every request generates exactly its max_tokens, 2..12 of them, the same plan
  // at both points.
  CHECK(output_tokens == 2 * (*reports)[0].output_tokens);
  CHECK(output_tokens >= 2 * 12 * 2);

  CheckCountsEqualMetrics(*reports, app->http_port());

  // The run's JSON holds both points.
  const nlohmann::json j = RunJson(o, *reports);
  CHECK(j["points"].size() == 2);
  CHECK(j["points"][1]["concurrency"] == 4);
  CHECK(j["config"]["vocab_size"] == 1206);
}

TEST_CASE("bench serve chat and open loop on the tiny model", "[bench]") {
  auto app = server::testing::StartTinyApp();
  BenchOptions o =
      *ParseBenchOptions({"--url", absl::StrCat("http://127.0.0.1:", app->http_port()), "--model",
                          "tiny", "--api", "chat", "--rate", "50", "--num-requests", "10",
                          "--prompt-len", "8", "--output-len", "6", "--quiet"});
  auto reports = RunBench(o);
  REQUIRE(reports.ok());
  const PointReport& r = (*reports)[0];
  INFO(r.first_error);
  CHECK(r.completed == 10);
  CHECK(r.output_tokens == 60);
  const std::map<std::string, double> m = Scrape(app->http_port());
  CHECK(m.at("arbor:generation_tokens_total") == 60);
  CHECK(m.at("arbor:prompt_tokens_total") == r.prompt_tokens);
}

TEST_CASE("bench serve over LoRA adapters: each request names an adapter, power-law popular",
          "[bench]") {
  auto app = server::testing::StartApp(
      "", {"model.path=tests/data/models/llama", "engine.pool_bytes=8388608",
           "server.admin_key=root", "server.adapter_root=tests/data/adapters"});
  httplib::Client http("127.0.0.1", app->http_port());
  const httplib::Headers admin = {{"Authorization", "Bearer root"}};
  for (const char* body : {R"({"name": "all", "path": "llama-lora-all"})",
                           R"({"name": "qv", "path": "llama-lora-qv"})"}) {
    auto res = http.Post("/v1/adapters", admin, body, "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 200);
  }
  BenchOptions o = *ParseBenchOptions({"--url", absl::StrCat("http://127.0.0.1:", app->http_port()),
                                       "--adapters", "all,qv", "--adapter-alpha", "2",
                                       "--concurrency", "4", "--num-requests", "40", "--prompt-len",
                                       "6", "--output-len", "3", "--vocab-size", "256", "--quiet"});
  auto reports = RunBench(o);
  REQUIRE(reports.ok());
  const PointReport& r = (*reports)[0];
  INFO(r.first_error);
  CHECK(r.completed == 40);
  // alpha 2 over two adapters: P(all) = 1 / (1 + 1/4) = 0.8.
  CHECK(r.completed_by_model.at("all") > r.completed_by_model.at("qv"));
  CHECK(r.completed_by_model.at("all") + r.completed_by_model.at("qv") == 40);
  const std::map<std::string, double> m = Scrape(app->http_port());
  CHECK(m.at("arbor:request_success_total") == 40);
  CHECK(m.at("arbor:generation_tokens_total") == 120);
}

TEST_CASE("bench serve over gRPC on the tiny model: its counts equal /metrics", "[bench]") {
  auto app = server::testing::StartTinyApp();
  const std::string url = absl::StrCat("grpc://127.0.0.1:", app->grpc_port());
  BenchOptions o =
      *ParseBenchOptions({"--url", url, "--model", "tiny", "--rate", "40", "--concurrency", "1,4",
                          "--num-requests", "12", "--prompt-len", "uniform:4,24", "--output-len",
                          "uniform:2,12", "--vocab-size", "1206", "--quiet"});
  auto reports = RunBench(o);
  INFO(reports.status().ToString());
  REQUIRE(reports.ok());
  REQUIRE(reports->size() == 3);
  int64_t prompt_tokens = 0, output_tokens = 0;
  for (const PointReport& r : *reports) {
    INFO(r.label << ": " << r.first_error);
    CHECK(r.failed == 0);
    CHECK(r.completed == 12);
    CHECK(r.ttft_ms.count == 12);
    CHECK(r.ttft_ms.p50 > 0);
    CHECK(r.e2e_ms.p50 >= r.ttft_ms.p50);
    CHECK(r.tpot_ms.p99 >= r.tpot_ms.p50);
    // Token-id prompts arrive as token ids: exactly 4..24 tokens each.
    CHECK(r.prompt_tokens >= 12 * 4);
    CHECK(r.prompt_tokens <= 12 * 24);
    prompt_tokens += r.prompt_tokens;
    output_tokens += r.output_tokens;
  }
  // The same plan at every point; ignore_eos makes each request generate its max_tokens.
  CHECK(output_tokens == 3 * (*reports)[0].output_tokens);
  CHECK(prompt_tokens == 3 * (*reports)[0].prompt_tokens);

  CheckCountsEqualMetrics(*reports, app->http_port());

  // The run's JSON names the RPC; its points have the HTTP run's fields.
  const nlohmann::json j = RunJson(o, *reports);
  CHECK(j["config"]["url"] == url);
  CHECK(j["config"]["path"] == "/arbor.v1.Generation/Complete");
  CHECK(j["points"].size() == 3);
  CHECK(j["points"][2]["concurrency"] == 4);

  // Chat over ChatComplete: text prompts through the chat template.
  BenchOptions chat = *ParseBenchOptions({"--url", url, "--model", "tiny", "--api", "chat",
                                          "--concurrency", "3", "--num-requests", "6",
                                          "--prompt-len", "8", "--output-len", "5", "--quiet"});
  auto chat_reports = RunBench(chat);
  REQUIRE(chat_reports.ok());
  INFO((*chat_reports)[0].first_error);
  CHECK((*chat_reports)[0].completed == 6);
  CHECK((*chat_reports)[0].output_tokens == 30);
  CHECK(Scrape(app->http_port()).at("arbor:generation_tokens_total") == output_tokens + 30);
}

TEST_CASE("bench serve over gRPC: failures are counted by kind, bad targets name --url",
          "[bench]") {
  auto app = server::testing::StartTinyApp();
  const std::string url = absl::StrCat("grpc://127.0.0.1:", app->grpc_port());
  // An adapter the server does not have: every call is refused with NOT_FOUND before a message.
  BenchOptions o = *ParseBenchOptions({"--url", url, "--adapters", "nope", "--concurrency", "2",
                                       "--num-requests", "5", "--prompt-len", "4", "--output-len",
                                       "3", "--vocab-size", "1206", "--quiet"});
  auto reports = RunBench(o);
  REQUIRE(reports.ok());
  const PointReport& r = (*reports)[0];
  CHECK(r.completed == 0);
  CHECK(r.failed == 5);
  CHECK(r.errors.size() == 1);
  CHECK(r.errors.at("grpc_not_found") == 5);
  CHECK(r.first_error.find("nope") != std::string::npos);
  CHECK(CsvRow(r).find("grpc_not_found:5") != std::string::npos);
  const std::map<std::string, double> m = Scrape(app->http_port());
  CHECK(m.at("arbor:request_rejected_total{code=\"404\"}") == 5);
  CHECK(m.count("arbor:request_success_total") == 0);

  // Nobody listening there, or no port: refused before the run, naming the flag.
  int port = 0;
  {
    auto gone = server::testing::StartTinyApp();
    port = gone->grpc_port();
  }
  for (const std::string& bad :
       {absl::StrCat("grpc://127.0.0.1:", port), std::string("grpc://127.0.0.1")}) {
    BenchOptions b = *ParseBenchOptions(
        {"--url", bad, "--model", "tiny", "--num-requests", "1", "--timeout-s", "1", "--quiet"});
    auto failed = RunBench(b);
    INFO(bad);
    REQUIRE(!failed.ok());
    CHECK(failed.status().message().find("--url") != absl::string_view::npos);
  }
}

}  // namespace
}  // namespace arbor::bench
