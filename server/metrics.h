// Prometheus metrics (prometheus-cpp), exposed as text at GET /metrics. Names follow vLLM's
// vllm:* metrics where one exists, as arbor:*. Gauges are read from the engine at scrape time;
// per-request histograms are observed when a request finishes. No label carries request text.
#ifndef ARBOR_SERVER_METRICS_H_
#define ARBOR_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <mutex>
#include <string>

#include "engine/engine.h"
#include "engine/lora/adapter_store.h"
#include "engine/request.h"

namespace arbor::server {

class Metrics {
 public:
  Metrics();

  // A generation or score request ended: its finish reason (of its last sequence) and
  // latencies (time to first token only when it generated one; the adapter wait only when it
  // ran under an adapter).
  void RequestFinished(engine::FinishReason reason, const engine::RequestMetrics& m);
  // A request refused before reaching the engine, by HTTP status (400, 401, 404, 429...).
  void RequestRejected(int http_status);
  // A client went away before the end (its request was cancelled).
  void ClientDisconnected();
  // A generation ran past server.request_timeout_s and was cancelled.
  void RequestTimedOut();
  // Prometheus text exposition; gauges are refreshed from `engine` and `adapters` (either may
  // be null: not loaded yet).
  std::string Scrape(const engine::Engine* engine, const engine::AdapterStore* adapters);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& success_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Counter& disconnects_;
  prometheus::Counter& timeouts_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generation_tokens_;
  prometheus::Counter& preemptions_;
  prometheus::Histogram& ttft_;
  prometheus::Histogram& tpot_;
  prometheus::Histogram& e2e_;
  prometheus::Histogram& queue_;
  prometheus::Gauge& running_;
  prometheus::Gauge& waiting_;
  prometheus::Gauge& preempted_;
  prometheus::Family<prometheus::Gauge>& pages_;
  prometheus::Gauge& prefix_hit_rate_;
  prometheus::Gauge& adapters_loaded_;
  prometheus::Gauge& adapters_resident_;
  prometheus::Gauge& adapters_host_resident_;
  prometheus::Gauge& adapter_host_bytes_;
  prometheus::Counter& adapter_disk_loads_;
  prometheus::Counter& adapter_copies_;
  prometheus::Counter& adapter_copy_bytes_;
  prometheus::Family<prometheus::Counter>& adapter_evictions_;
  prometheus::Counter& adapter_prefetch_hits_;
  prometheus::Counter& adapter_prefetch_misses_;
  prometheus::Histogram& adapter_wait_;
  std::mutex mu_;  // serializes scrapes (counters are advanced by deltas of engine totals)
  engine::EngineStats last_;
  engine::AdapterStoreStats last_adapters_;
};

}  // namespace arbor::server

#endif  // ARBOR_SERVER_METRICS_H_
