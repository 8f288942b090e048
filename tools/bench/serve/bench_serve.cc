#include "tools/bench/serve/bench_serve.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tools/bench/results.h"
#include "tools/bench/serve/grpc_load_runner.h"
#include "tools/bench/serve/grpc_target.h"
#include "tools/bench/serve/http_target.h"
#include "tools/bench/serve/prompt_source.h"
#include "tools/bench/serve/result_records.h"

namespace arbor::bench {

using nlohmann::json;

namespace {

// How long the gRPC target may take to connect before the run (a server still loading its model
// may not listen yet).
constexpr double kGrpcConnectWait_s = 10;

}  // namespace

absl::StatusOr<std::vector<PointReport>> RunBench(const BenchOptions& options) {
  std::function<void(const std::string&)> progress;
  if (options.progress) {
    // On a terminal the line rewrites itself; in a log, one line a second.
    const bool tty = isatty(STDERR_FILENO) != 0;
    progress = [tty](const std::string& line) {
      std::fprintf(stderr, tty ? "\r\033[K%s" : "%s\n", line.c_str());
      std::fflush(stderr);
    };
  }
  // The transport, set up once for every point: a connection per request over HTTP/1.1, or one
  // gRPC channel connected before the first point.
  std::function<absl::StatusOr<PointResult>(const LoadPoint&, const std::vector<PlannedRequest>&)>
      run_point;
  if (IsGrpcUrl(options.url)) {
    auto target = ParseGrpcTarget(options.url);
    if (!target.ok()) return target.status();
    auto channel = ConnectGrpc(*target, std::min(options.timeout_s, kGrpcConnectWait_s));
    if (!channel.ok()) return channel.status();
    GrpcRunOptions run;
    run.channel = *channel;
    run.api_key = options.api_key;
    run.timeout_s = options.timeout_s;
    run.seed = options.workload.seed;
    run.progress = progress;
    run_point = [run](const LoadPoint& point, const std::vector<PlannedRequest>& requests) {
      return RunGrpcPoint(run, point, requests);
    };
  } else {
    auto target = ResolveTarget(options.url);
    if (!target.ok()) return target.status();
    RunOptions run;
    run.target = *target;
    run.path = options.path;
    run.api_key = options.api_key;
    run.timeout_s = options.timeout_s;
    run.seed = options.workload.seed;
    run.progress = progress;
    run_point = [run](const LoadPoint& point, const std::vector<PlannedRequest>& requests) {
      return RunPoint(run, point, requests);
    };
  }
  std::vector<PointReport> reports;
  for (const LoadPoint& point : options.points) {
    // Every point gets the same requests (same seed), so points differ only in load.
    PromptSource prompts = PromptSource::Synthetic(options.vocab_size, options.vocab_offset);
    if (!options.prompts_file.empty()) {
      auto from_file = PromptSource::FromJsonl(options.prompts_file);
      if (!from_file.ok()) return from_file.status();
      prompts = std::move(*from_file);
    }
    auto requests = PlanRequests(options.workload, prompts, options.num_requests);
    if (!requests.ok()) return requests.status();
    auto result = run_point(point, *requests);
    if (!result.ok()) return result.status();
    if (options.progress && isatty(STDERR_FILENO)) std::fputs("\n", stderr);
    reports.push_back(MakePointReport(point, *result, options.slo));
  }
  return reports;
}

json RunJson(const BenchOptions& o, const std::vector<PointReport>& reports) {
  const WorkloadOptions& w = o.workload;
  json config = {{"url", o.url},
                 {"path", o.path},
                 {"model", w.model},
                 {"adapters", w.adapters},
                 {"adapter_alpha", w.adapter_alpha},
                 {"prompt_len", w.prompt_len.ToString()},
                 {"output_len", w.output_len.ToString()},
                 {"prompts_file", o.prompts_file},
                 {"vocab_size", o.vocab_size},
                 {"vocab_offset", o.vocab_offset},
                 {"ignore_eos", w.ignore_eos},
                 {"include_usage", w.include_usage},
                 {"temperature", w.temperature},
                 {"num_requests", o.num_requests},
                 {"seed", w.seed},
                 {"timeout_s", o.timeout_s},
                 {"slo_ttft_ms", o.slo.ttft_ms},
                 {"slo_tpot_ms", o.slo.tpot_ms}};
  json points = json::array();
  for (const PointReport& r : reports) points.push_back(PointReportJson(r));
  return {{"tool", "arbor bench serve"}, {"config", config}, {"points", points}};
}

namespace {

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::UnavailableError("cannot write " + path);
  return absl::OkStatus();
}

}  // namespace

int BenchServeMain(const std::vector<std::string>& args) {
  auto options = ParseBenchOptions(args);
  if (!options.ok()) {
    std::fprintf(stderr, "arbor bench serve: %s\n",
                 std::string(options.status().message()).c_str());
    return 2;
  }
  if (options->help) {
    std::fputs(kBenchServeUsage, stdout);
    return 0;
  }
  auto reports = RunBench(*options);
  if (!reports.ok()) {
    std::fprintf(stderr, "arbor bench serve: %s\n", reports.status().ToString().c_str());
    return 1;
  }
  std::fputs(SummaryTable(*reports).c_str(), stdout);
  for (const PointReport& r : *reports) {
    if (!r.first_error.empty()) {
      std::fprintf(stderr, "[%s] first error: %s\n", r.label.c_str(), r.first_error.c_str());
    }
  }
  if (!options->json_path.empty()) {
    if (absl::Status s = WriteFile(options->json_path, RunJson(*options, *reports).dump(2) + "\n");
        !s.ok()) {
      std::fprintf(stderr, "arbor bench serve: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  if (!options->results_path.empty()) {
    std::string command = "arbor bench serve";
    for (const std::string& a : args) command += " " + a;
    const std::string date = absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone());
    AppendResults(options->results_path, ResultRecords(*options, *reports, command, date));
  }
  if (!options->csv_path.empty()) {
    std::string csv = CsvHeader();
    for (const PointReport& r : *reports) csv += CsvRow(r);
    if (absl::Status s = WriteFile(options->csv_path, csv); !s.ok()) {
      std::fprintf(stderr, "arbor bench serve: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace arbor::bench
