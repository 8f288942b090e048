#include "server/metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace arbor::server {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

const Histogram::BucketBoundaries kLatencyBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08,
                                                     0.1,   0.25,  0.5,  0.75, 1.0,  2.5,  5.0,
                                                     7.5,   10.0,  20.0, 40.0, 80.0};

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      success_(BuildCounter()
                   .Name("arbor:request_success_total")
                   .Help("Finished requests by finish reason.")
                   .Register(*registry_)),
      rejected_(BuildCounter()
                    .Name("arbor:request_rejected_total")
                    .Help("Requests refused before reaching the engine, by HTTP status.")
                    .Register(*registry_)),
      disconnects_(BuildCounter()
                       .Name("arbor:client_disconnects_total")
                       .Help("Clients that went away before the end (their requests aborted).")
                       .Register(*registry_)
                       .Add({})),
      timeouts_(BuildCounter()
                    .Name("arbor:request_timeouts_total")
                    .Help("Generations cancelled at server.request_timeout_s.")
                    .Register(*registry_)
                    .Add({})),
      prompt_tokens_(BuildCounter()
                         .Name("arbor:prompt_tokens_total")
                         .Help("Prompt tokens of finished and aborted requests.")
                         .Register(*registry_)
                         .Add({})),
      generation_tokens_(BuildCounter()
                             .Name("arbor:generation_tokens_total")
                             .Help("Generated tokens.")
                             .Register(*registry_)
                             .Add({})),
      preemptions_(BuildCounter()
                       .Name("arbor:num_preemptions_total")
                       .Help("Sequences preempted (recomputed later) for lack of KV pages.")
                       .Register(*registry_)
                       .Add({})),
      ttft_(BuildHistogram()
                .Name("arbor:time_to_first_token_seconds")
                .Help("Arrival to first generated token.")
                .Register(*registry_)
                .Add({}, kLatencyBuckets)),
      tpot_(BuildHistogram()
                .Name("arbor:time_per_output_token_seconds")
                .Help("Mean time per generated token after the first, per request.")
                .Register(*registry_)
                .Add({}, kLatencyBuckets)),
      e2e_(BuildHistogram()
               .Name("arbor:e2e_request_latency_seconds")
               .Help("Arrival to finish.")
               .Register(*registry_)
               .Add({}, kLatencyBuckets)),
      queue_(BuildHistogram()
                 .Name("arbor:request_queue_time_seconds")
                 .Help("Arrival to first scheduled.")
                 .Register(*registry_)
                 .Add({}, kLatencyBuckets)),
      running_(BuildGauge()
                   .Name("arbor:num_requests_running")
                   .Help("Sequences holding KV pages and being generated.")
                   .Register(*registry_)
                   .Add({})),
      waiting_(BuildGauge()
                   .Name("arbor:num_requests_waiting")
                   .Help("Sequences waiting for admission (new or preempted).")
                   .Register(*registry_)
                   .Add({})),
      preempted_(BuildGauge()
                     .Name("arbor:num_requests_preempted")
                     .Help("Sequences preempted (pages freed) and waiting to be recomputed.")
                     .Register(*registry_)
                     .Add({})),
      pages_(BuildGauge()
                 .Name("arbor:pool_pages")
                 .Help("Unified pool pages by owner: kv, kv_cached (prefix cache, evictable), "
                       "adapter, free.")
                 .Register(*registry_)),
      prefix_hit_rate_(BuildGauge()
                           .Name("arbor:prefix_cache_hit_rate")
                           .Help("Prompt tokens served from the prefix cache / tokens looked up.")
                           .Register(*registry_)
                           .Add({})),
      adapters_loaded_(BuildGauge()
                           .Name("arbor:lora_adapters_loaded")
                           .Help("LoRA adapters registered (servable by name).")
                           .Register(*registry_)
                           .Add({})),
      adapters_resident_(BuildGauge()
                             .Name("arbor:lora_adapters_resident")
                             .Help("LoRA adapters whose weights hold pages of the unified pool.")
                             .Register(*registry_)
                             .Add({})),
      adapters_host_resident_(BuildGauge()
                                  .Name("arbor:lora_adapters_host_resident")
                                  .Help("LoRA adapters whose packed copy is in host memory "
                                        "(the others are reread from disk when needed).")
                                  .Register(*registry_)
                                  .Add({})),
      adapter_host_bytes_(BuildGauge()
                              .Name("arbor:lora_host_bytes")
                              .Help("Host memory held by adapter copies (lora.host_bytes caps it).")
                              .Register(*registry_)
                              .Add({})),
      adapter_disk_loads_(BuildCounter()
                              .Name("arbor:lora_adapter_disk_loads_total")
                              .Help("Adapter host copies reread from disk after an eviction.")
                              .Register(*registry_)
                              .Add({})),
      adapter_copies_(BuildCounter()
                          .Name("arbor:lora_adapter_copies_total")
                          .Help("Adapters paged into the pool (host to device copies).")
                          .Register(*registry_)
                          .Add({})),
      adapter_copy_bytes_(BuildCounter()
                              .Name("arbor:lora_adapter_copy_bytes_total")
                              .Help("Bytes of adapter host to device copies.")
                              .Register(*registry_)
                              .Add({})),
      adapter_evictions_(BuildCounter()
                             .Name("arbor:lora_adapter_evictions_total")
                             .Help("Adapter evictions by tier: host (copy dropped for "
                                   "lora.host_bytes), gpu (pages given back to the pool).")
                             .Register(*registry_)),
      adapter_prefetch_hits_(BuildCounter()
                                 .Name("arbor:lora_prefetch_hits_total")
                                 .Help("Admissions whose adapter a prefetch had paged in.")
                                 .Register(*registry_)
                                 .Add({})),
      adapter_prefetch_misses_(BuildCounter()
                                   .Name("arbor:lora_prefetch_misses_total")
                                   .Help("Admissions that had to page their adapter in.")
                                   .Register(*registry_)
                                   .Add({})),
      adapter_wait_(BuildHistogram()
                        .Name("arbor:lora_adapter_wait_seconds")
                        .Help("Per request under an adapter: time waiting for the adapter's "
                              "pages, and paging it in at admission.")
                        .Register(*registry_)
                        .Add({}, kLatencyBuckets)) {}

void Metrics::RequestFinished(engine::FinishReason reason, const engine::RequestMetrics& m) {
  success_.Add({{"finished_reason", engine::FinishReasonName(reason)}}).Increment();
  // A request that generated nothing (a Score, or one aborted first) has no first token.
  if (m.generated_tokens > 0) ttft_.Observe(absl::ToDoubleSeconds(m.time_to_first_token));
  e2e_.Observe(absl::ToDoubleSeconds(m.e2e));
  queue_.Observe(absl::ToDoubleSeconds(m.queue_time));
  if (m.adapter) adapter_wait_.Observe(absl::ToDoubleSeconds(m.adapter_wait));
  if (m.generated_tokens > 1) {
    tpot_.Observe(absl::ToDoubleSeconds(m.e2e - m.time_to_first_token) /
                  double(m.generated_tokens - 1));
  }
}

void Metrics::RequestRejected(int http_status) {
  rejected_.Add({{"code", absl::StrCat(http_status)}}).Increment();
}

void Metrics::ClientDisconnected() { disconnects_.Increment(); }

void Metrics::RequestTimedOut() { timeouts_.Increment(); }

std::string Metrics::Scrape(const engine::Engine* engine, const engine::AdapterStore* adapters) {
  std::lock_guard<std::mutex> lock(mu_);
  if (adapters != nullptr) {
    const std::vector<engine::AdapterInfo> list = adapters->List();
    adapters_loaded_.Set(double(list.size()));
    // Resident: registered adapters whose weights are in pool pages now.
    adapters_resident_.Set(double(
        std::count_if(list.begin(), list.end(), [](const auto& a) { return a.gpu_resident; })));
    adapters_host_resident_.Set(double(
        std::count_if(list.begin(), list.end(), [](const auto& a) { return a.host_resident; })));
    const engine::AdapterStoreStats s = adapters->stats();
    const engine::AdapterStoreStats& l = last_adapters_;
    auto add = [](prometheus::Counter& c, int64_t now, int64_t last) {
      c.Increment(double(std::max<int64_t>(0, now - last)));
    };
    adapter_host_bytes_.Set(double(s.host_bytes_used));
    add(adapter_disk_loads_, s.disk_loads, l.disk_loads);
    add(adapter_copies_, s.copies, l.copies);
    add(adapter_copy_bytes_, s.copy_bytes, l.copy_bytes);
    add(adapter_evictions_.Add({{"tier", "host"}}), s.host_evictions, l.host_evictions);
    add(adapter_evictions_.Add({{"tier", "gpu"}}), s.gpu_evictions, l.gpu_evictions);
    add(adapter_prefetch_hits_, s.prefetch_hits, l.prefetch_hits);
    add(adapter_prefetch_misses_, s.prefetch_misses, l.prefetch_misses);
    last_adapters_ = s;
  }
  if (engine != nullptr) {
    const engine::EngineStats s = engine->stats();
    prompt_tokens_.Increment(
        double(std::max<int64_t>(0, s.prompt_tokens_total - last_.prompt_tokens_total)));
    generation_tokens_.Increment(
        double(std::max<int64_t>(0, s.generation_tokens_total - last_.generation_tokens_total)));
    preemptions_.Increment(
        double(std::max<int64_t>(0, s.preemptions_total - last_.preemptions_total)));
    running_.Set(double(s.running));
    waiting_.Set(double(s.waiting));
    preempted_.Set(double(s.preempted_waiting));
    pages_.Add({{"kind", "kv"}}).Set(double(s.pages_kv - s.pages_cached_evictable));
    pages_.Add({{"kind", "kv_cached"}}).Set(double(s.pages_cached_evictable));
    pages_.Add({{"kind", "adapter"}}).Set(double(s.pages_adapter));
    pages_.Add({{"kind", "free"}}).Set(double(s.pages_free));
    prefix_hit_rate_.Set(s.prefix_query_tokens > 0
                             ? double(s.prefix_hit_tokens) / double(s.prefix_query_tokens)
                             : 0.0);
    last_ = s;
  }
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace arbor::server
