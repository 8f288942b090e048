#include "tools/bench/serve/point_report.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace arbor::bench {

using nlohmann::json;

PointReport MakePointReport(const LoadPoint& point, const PointResult& result, const Slo& slo) {
  PointReport r;
  r.label = point.Label();
  r.point = point;
  r.duration_s = result.duration_s;
  std::vector<double> ttft, tpot, itl, e2e;
  for (const RequestRecord& rec : result.records) {
    ++r.requests;
    if (!rec.ok()) {
      ++r.failed;
      const std::string kind = ErrorLabel(rec);
      ++r.errors[kind];
      if (r.first_error.empty()) r.first_error = kind + ": " + rec.error_detail;
      continue;
    }
    ++r.completed;
    ++r.completed_by_model[rec.model];
    r.output_tokens += rec.output_tokens;
    if (rec.prompt_tokens > 0) r.prompt_tokens += rec.prompt_tokens;
    e2e.push_back((rec.end_s - rec.sent_s) * 1e3);
    const double t = rec.Ttft();
    if (t >= 0) ttft.push_back(t * 1e3);
    const double p = rec.Tpot();
    if (p >= 0) tpot.push_back(p * 1e3);
    for (size_t i = 1; i < rec.token_s.size(); ++i) {
      itl.push_back((rec.token_s[i] - rec.token_s[i - 1]) * 1e3);
    }
    const bool ttft_ok = slo.ttft_ms <= 0 || (t >= 0 && t * 1e3 <= slo.ttft_ms);
    const bool tpot_ok = slo.tpot_ms <= 0 || p < 0 || p * 1e3 <= slo.tpot_ms;
    if (ttft_ok && tpot_ok) ++r.slo_met;
  }
  if (r.duration_s > 0) {
    r.request_throughput = double(r.completed) / r.duration_s;
    r.output_throughput = double(r.output_tokens) / r.duration_s;
    r.goodput = double(r.slo_met) / r.duration_s;
  }
  r.ttft_ms = Summarize(std::move(ttft));
  r.tpot_ms = Summarize(std::move(tpot));
  r.itl_ms = Summarize(std::move(itl));
  r.e2e_ms = Summarize(std::move(e2e));
  return r;
}

namespace {

json SummaryJson(const Summary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50},
          {"p90", s.p90},     {"p99", s.p99},   {"max", s.max}};
}

std::string ErrorsCell(const std::map<std::string, int64_t>& errors) {
  std::string out;
  for (const auto& [kind, count] : errors) {
    absl::StrAppend(&out, out.empty() ? "" : ";", kind, ":", count);
  }
  return out;
}

}  // namespace

json PointReportJson(const PointReport& r) {
  json j = {{"label", r.label},
            {"mode", r.point.closed_loop ? "closed" : "open"},
            {"requests", r.requests},
            {"completed", r.completed},
            {"failed", r.failed},
            {"prompt_tokens", r.prompt_tokens},
            {"output_tokens", r.output_tokens},
            {"duration_s", r.duration_s},
            {"request_throughput", r.request_throughput},
            {"output_throughput", r.output_throughput},
            {"goodput", r.goodput},
            {"slo_met", r.slo_met},
            {"ttft_ms", SummaryJson(r.ttft_ms)},
            {"tpot_ms", SummaryJson(r.tpot_ms)},
            {"itl_ms", SummaryJson(r.itl_ms)},
            {"e2e_ms", SummaryJson(r.e2e_ms)},
            {"errors", r.errors},
            {"completed_by_model", r.completed_by_model}};
  if (r.point.closed_loop) {
    j["concurrency"] = r.point.concurrency;
  } else {
    // JSON has no infinity: an all-at-once burst is written as null.
    j["rate"] = std::isinf(r.point.rate) ? json(nullptr) : json(r.point.rate);
    j["gamma_shape"] = r.point.gamma_shape;
  }
  if (!r.first_error.empty()) j["first_error"] = r.first_error;
  return j;
}

std::string CsvHeader() {
  std::string h =
      "label,mode,rate,gamma_shape,concurrency,requests,completed,failed,prompt_tokens,"
      "output_tokens,duration_s,request_throughput,output_throughput,goodput";
  for (const char* m : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
    for (const char* s : {"mean", "p50", "p90", "p99"}) absl::StrAppend(&h, ",", m, "_", s);
  }
  return h + ",errors\n";
}

std::string CsvRow(const PointReport& r) {
  const LoadPoint& p = r.point;
  std::string row = absl::StrFormat(
      "%s,%s,%s,%s,%s,%d,%d,%d,%d,%d,%.3f,%.3f,%.3f,%.3f", r.label,
      p.closed_loop ? "closed" : "open", p.closed_loop ? "" : absl::StrFormat("%g", p.rate),
      p.closed_loop ? "" : absl::StrFormat("%g", p.gamma_shape),
      p.closed_loop ? absl::StrCat(p.concurrency) : "", r.requests, r.completed, r.failed,
      r.prompt_tokens, r.output_tokens, r.duration_s, r.request_throughput, r.output_throughput,
      r.goodput);
  for (const Summary* s : {&r.ttft_ms, &r.tpot_ms, &r.itl_ms, &r.e2e_ms}) {
    absl::StrAppendFormat(&row, ",%.3f,%.3f,%.3f,%.3f", s->mean, s->p50, s->p90, s->p99);
  }
  return absl::StrCat(row, ",", ErrorsCell(r.errors), "\n");
}

std::string SummaryTable(const std::vector<PointReport>& reports) {
  std::string out =
      absl::StrFormat("%-18s %6s %6s %8s %9s %8s | %-23s | %-23s | %-23s | %s\n", "point", "ok",
                      "fail", "req/s", "out tok/s", "goodput", "TTFT ms p50/p90/p99",
                      "TPOT ms p50/p90/p99", "E2E ms p50/p90/p99", "errors");
  auto Triple = [](const Summary& s) {
    return absl::StrFormat("%7.1f/%7.1f/%7.1f", s.p50, s.p90, s.p99);
  };
  for (const PointReport& r : reports) {
    absl::StrAppendFormat(&out, "%-18s %6d %6d %8.2f %9.1f %8.2f | %s | %s | %s | %s\n", r.label,
                          r.completed, r.failed, r.request_throughput, r.output_throughput,
                          r.goodput, Triple(r.ttft_ms), Triple(r.tpot_ms), Triple(r.e2e_ms),
                          r.errors.empty() ? "-" : ErrorsCell(r.errors));
  }
  return out;
}

}  // namespace arbor::bench
