#include "tools/bench/serve/result_records.h"

namespace arbor::bench {

nlohmann::json ResultRecords(const BenchOptions& options, const std::vector<PointReport>& reports,
                             const std::string& command, const std::string& date) {
  nlohmann::json records = nlohmann::json::array();
  for (const PointReport& r : reports) {
    const std::string shape = " (" + r.label + ", " + options.workload.model + ", prompt " +
                              options.workload.prompt_len.ToString() + ", output " +
                              options.workload.output_len.ToString() + ")";
    auto add = [&](const std::string& figure, double value, const std::string& unit) {
      records.push_back({{"name", "serve.bench." + figure + shape},
                         {"value", value},
                         {"unit", unit},
                         {"baseline", nullptr},
                         {"ratio", nullptr},
                         {"target", nullptr},
                         {"card", options.card},
                         {"date", date},
                         {"command", command}});
    };
    add("output_throughput", r.output_throughput, "tokens/s");
    add("request_throughput", r.request_throughput, "requests/s");
    if (r.ttft_ms.count > 0) {
      add("ttft_p50", r.ttft_ms.p50, "ms");
      add("ttft_p99", r.ttft_ms.p99, "ms");
    }
    if (r.tpot_ms.count > 0) {
      add("tpot_p50", r.tpot_ms.p50, "ms");
      add("tpot_p99", r.tpot_ms.p99, "ms");
    }
    if (options.slo.ttft_ms > 0 || options.slo.tpot_ms > 0) {
      add("goodput", r.goodput, "requests/s");
    }
    if (r.failed > 0) add("failed_requests", double(r.failed), "requests");
  }
  return records;
}

}  // namespace arbor::bench
