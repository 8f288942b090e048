// The figures of one sweep point, computed from its request records, and their JSON, CSV and
// table forms.
//
// Latencies are in milliseconds, over successful requests:
//   TTFT  send -> first chunk with output
//   TPOT  (e2e - TTFT) / (output tokens - 1), per request (requests with >= 2 tokens)
//   ITL   gaps between consecutive output chunks, pooled over requests (a chunk may hold
//         several tokens, so ITL >= TPOT when the server batches its writes)
//   E2E   send -> `[DONE]`
// Throughput divides by the point's duration (first send to last end). Goodput counts the
// requests per second that met every SLO given (TTFT <= --slo-ttft-ms, TPOT <= --slo-tpot-ms).
#ifndef ARBOR_TOOLS_BENCH_SERVE_POINT_REPORT_H_
#define ARBOR_TOOLS_BENCH_SERVE_POINT_REPORT_H_

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tools/bench/serve/load_runner.h"
#include "tools/bench/serve/percentiles.h"

namespace arbor::bench {

struct Slo {
  double ttft_ms = 0;  // 0: no bound
  double tpot_ms = 0;
};

struct PointReport {
  std::string label;
  LoadPoint point;
  int64_t requests = 0, completed = 0, failed = 0;
  int64_t prompt_tokens = 0;  // of completed requests, from usage (0 when not reported)
  int64_t output_tokens = 0;  // of completed requests
  double duration_s = 0;
  double request_throughput = 0;  // completed requests / s
  double output_throughput = 0;   // output tokens / s
  double goodput = 0;             // completed requests within the SLO / s
  int64_t slo_met = 0;
  Summary ttft_ms, tpot_ms, itl_ms, e2e_ms;
  std::map<std::string, int64_t> errors;              // by ErrorLabel: "timeout", "http_429", ...
  std::map<std::string, int64_t> completed_by_model;  // the base model's or each adapter's
  std::string first_error;  // the first failure's detail, to say what went wrong
};

PointReport MakePointReport(const LoadPoint& point, const PointResult& result, const Slo& slo);

nlohmann::json PointReportJson(const PointReport& r);
// One CSV header and one row per point; the columns are fixed so files from runs with different
// errors still line up (errors go in one "kind:count;..." column).
std::string CsvHeader();
std::string CsvRow(const PointReport& r);
// The summary table printed at the end: one line per point.
std::string SummaryTable(const std::vector<PointReport>& reports);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_POINT_REPORT_H_
