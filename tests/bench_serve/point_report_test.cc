// A sweep point's figures from hand-made request records: throughput, TTFT / TPOT / ITL / E2E,
// goodput under an SLO, errors by kind, and the CSV row's shape.
#include "tools/bench/serve/point_report.h"

#include <catch2/catch.hpp>
#include <string>

#include "absl/strings/str_split.h"

namespace arbor::bench {
namespace {

RequestRecord Ok(double sent, std::vector<double> tokens, double end, int64_t out) {
  RequestRecord r;
  r.sent_s = sent;
  r.token_s = std::move(tokens);
  r.end_s = end;
  r.output_tokens = out;
  r.prompt_tokens = 10;
  r.http_status = 200;
  return r;
}

TEST_CASE("point report: latencies, throughput, goodput and errors", "[bench]") {
  PointResult result;
  // TTFT 100 ms, 4 tokens over 0.3 s after it: TPOT 100 ms.
  result.records.push_back(Ok(0.0, {0.1, 0.2, 0.3, 0.4}, 0.4, 4));
  // TTFT 500 ms, TPOT 50 ms.
  result.records.push_back(Ok(0.5, {1.0, 1.05, 1.1}, 1.1, 3));
  // One token: no TPOT.
  result.records.push_back(Ok(1.0, {1.2}, 1.2, 1));
  RequestRecord refused;
  refused.error = ErrorKind::kHttpStatus;
  refused.http_status = 429;
  refused.error_detail = "HTTP 429: busy";
  result.records.push_back(refused);
  RequestRecord late;
  late.error = ErrorKind::kTimeout;
  result.records.push_back(late);
  result.duration_s = 2.0;

  const LoadPoint closed = LoadPoint::ClosedLoop(1);
  const PointReport r = MakePointReport(closed, result, Slo{200, 120});
  CHECK(r.requests == 5);
  CHECK(r.completed == 3);
  CHECK(r.failed == 2);
  CHECK(r.output_tokens == 8);
  CHECK(r.prompt_tokens == 30);
  CHECK(r.request_throughput == Approx(1.5));
  CHECK(r.output_throughput == Approx(4.0));
  CHECK(r.ttft_ms.count == 3);
  CHECK(r.ttft_ms.p50 == Approx(200));  // 100, 200, 500
  CHECK(r.ttft_ms.max == Approx(500));
  CHECK(r.tpot_ms.count == 2);
  CHECK(r.tpot_ms.mean == Approx(75));
  CHECK(r.itl_ms.count == 5);  // 3 gaps of 100 ms, 2 of 50 ms
  CHECK(r.itl_ms.p50 == Approx(100));
  CHECK(r.e2e_ms.p50 == Approx(400));  // 400, 600, 200
  // Within TTFT <= 200 ms and TPOT <= 120 ms: the first and the third.
  CHECK(r.slo_met == 2);
  CHECK(r.goodput == Approx(1.0));
  CHECK(r.errors.at("http_429") == 1);
  CHECK(r.errors.at("timeout") == 1);
  CHECK(r.first_error == "http_429: HTTP 429: busy");

  const nlohmann::json j = PointReportJson(r);
  CHECK(j["errors"]["timeout"] == 1);
  CHECK(j["ttft_ms"]["p99"].get<double>() == Approx(494));
  CHECK(j["concurrency"] == 1);

  // Every CSV row has the header's columns.
  const std::vector<std::string> header = absl::StrSplit(CsvHeader(), ',');
  const std::vector<std::string> row = absl::StrSplit(CsvRow(r), ',');
  CHECK(row.size() == header.size());
  CHECK(row.back() == "http_429:1;timeout:1\n");
  const std::string table = SummaryTable({r});
  CHECK(table.find("concurrency=1") != std::string::npos);
  CHECK(table.find("http_429:1;timeout:1") != std::string::npos);
}

TEST_CASE("point report: no SLO means every completed request counts", "[bench]") {
  PointResult result;
  result.records.push_back(Ok(0, {5.0}, 9.0, 1));
  result.duration_s = 9.0;
  LoadPoint open;
  open.rate = 2;
  open.gamma_shape = 0.5;
  const PointReport r = MakePointReport(open, result, Slo{});
  CHECK(r.slo_met == 1);
  CHECK(r.label == "rate=2 gamma=0.5");
  const nlohmann::json j = PointReportJson(r);
  CHECK(j["rate"] == 2.0);
  CHECK(j["mode"] == "open");
  CHECK_FALSE(j.contains("concurrency"));
}

}  // namespace
}  // namespace arbor::bench
