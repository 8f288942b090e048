// engine::Engine: owns the model, the unified page pool, the block manager and the scheduler,
// and drives them from one thread. Clients (the server's threads) submit requests and get a
// handle; events stream back through the request's callback; Cancel() frees a request's pages
// at the next iteration. Nothing here blocks on a client.
#ifndef ARBOR_ENGINE_ENGINE_H_
#define ARBOR_ENGINE_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/lora/adapter_store.h"
#include "engine/model/model.h"
#include "engine/request.h"
#include "engine/runner/device_sampler.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "engine/text_stream.h"
#include "memory/block_manager.h"
#include "memory/unified_pool.h"

namespace arbor::engine {

struct EngineConfig {
  int64_t block_size = 16;
  int64_t num_pages = 0;  // pool pages; 0: derive from pool_bytes
  size_t pool_bytes = 0;  // 0 with num_pages 0: pool_fraction of free device memory
  double pool_fraction = 0.5;
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 2048;
  int64_t max_model_len = 0;  // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  // Chunks that score their prompt (prompt_logprobs) need no [rows, vocab] logits: their rows go
  // through the fused LM head and log-sum-exp (Cut Cross-Entropy, kernels/cce.h), O(rows)
  // memory, so they are bounded by max_num_batched_tokens alone.
  // The largest LoRA rank adapters may have (engine.max_lora_rank): the forward pass reserves
  // its LoRA buffers for it at start-up. 0: none reserved (allocated on first use).
  int64_t max_lora_rank = 0;
  // CUDA graphs for decode steps (Model::CaptureDecodeGraphs), captured at start-up for batch
  // sizes 1, 2, 4, ..., max_num_seqs. Ignored on the CPU.
  bool cuda_graphs = true;
  // A sequence's tokens do not depend on what else is in its batch
  // (Backend::SetDeterministic): fixed GEMM algorithms without split-K.
  bool deterministic = false;
};

struct EngineStats {
  int64_t waiting = 0, running = 0, preemptions_total = 0;
  int64_t preempted_waiting = 0;  // of `waiting`: preempted, to be resumed by recompute
  int64_t requests_finished = 0, requests_aborted = 0;
  int64_t prompt_tokens_total = 0, generation_tokens_total = 0;
  int64_t prefill_tokens_computed_total = 0;  // prompt tokens run through the model
  int64_t iterations = 0;
  int64_t pages_total = 0, pages_free = 0, pages_kv = 0, pages_adapter = 0;
  int64_t pages_cached_evictable = 0;  // KV blocks kept only for the prefix cache
  int64_t prefix_query_tokens = 0, prefix_hit_tokens = 0;
  double scheduler_seconds_total = 0;  // Scheduler::Schedule: queues, pages, preemption
  double forward_seconds_total = 0;    // Model::Forward
  double other_seconds_total = 0;      // batch assembly, sampling, detokenization, callbacks
  // Device time of the steps: the forward pass's span and the sampler's, between events on the
  // compute stream. The steps' wall time (the three totals above) minus this is host time the
  // device did not hide: scheduling, plan building and launches while the device waited. Steps
  // that sample nothing are not timed (their device time is not waited for), so with chunked
  // prefills the difference overstates the host's share.
  double device_seconds_total = 0;
};

class Engine {
 public:
  using Handle = uint64_t;

  // `model` and `text` (may be null: no text, and stop strings are refused) must outlive the
  // engine. Allocates the pool and starts the engine thread.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(Model& model, kernels::Backend& backend,
                                                        const TextStreamFactory* text,
                                                        const EngineConfig& config);
  ~Engine();  // aborts what is left and joins the thread

  // Checks a request as Submit does (prompt ids, lengths against max_model_len, sampling
  // parameters, prompt_logprobs, score_only: InvalidArgument naming the field), without
  // queueing it: a front end that submits several requests for one client call checks them
  // all first. Thread-safe.
  [[nodiscard]] absl::Status Validate(const Request& request) const;
  // Validates the request and queues it. Thread-safe.
  [[nodiscard]] absl::StatusOr<Handle> Submit(Request request);
  // Validates every request, then queues all of them at once (none if one is refused: the error
  // of the first bad one, its message led by "requests[i]: "), so that the engine thread takes
  // them together and they share its forward passes as the token budget allows. Thread-safe.
  [[nodiscard]] absl::StatusOr<std::vector<Handle>> SubmitAll(std::vector<Request> requests);
  // The request finishes with FinishReason::kAbort within one iteration. Thread-safe; unknown
  // or finished handles are ignored.
  void Cancel(Handle handle);
  EngineStats stats() const;
  // Ok until a forward pass fails. A failure is sticky (the device or the engine's state can no
  // longer be trusted): every request is aborted, Submit refuses new ones with Unavailable, and
  // the server's /health turns 503 so that the process gets restarted.
  absl::Status Health() const;
  int64_t max_model_len() const { return max_model_len_; }
  // The unified pool: LoRA adapters take their pages from it (engine/lora/adapter_store.h).
  memory::UnifiedPool& pool() { return *pool_; }
  // The store whose adapters requests name: the scheduler pages them in and out of the pool
  // (engine/scheduler.h). Set it before registering adapters; it must outlive the engine's
  // serving (Shutdown first). Runs on the engine thread between iterations.
  void SetAdapterStore(AdapterStore* adapters);
  // Runs on the engine thread between iterations: drops every prefix-cache block back to the
  // pool (tests use it to check that nothing leaked). Returns when done.
  void ClearPrefixCache();
  void Shutdown();

 private:
  Engine(Model& model, kernels::Backend& backend, const TextStreamFactory* text,
         const EngineConfig& config);
  void Loop();
  void Step();
  void TakeIncoming();
  void Finish(Sequence* seq, FinishReason reason, const std::string& detail);
  void AbortAll(const std::string& detail);  // every live sequence, on the engine thread
  // A sampled token (and its log-probs) for `seq`: stop checks, text, the event.
  void ProcessSample(Sequence* seq, const SampleResult& r);
  // The scored rows of one pass, on the host (ScoredRows' fields).
  struct HostScores {
    std::vector<float> logprobs, top_logprobs;
    std::vector<int32_t> ranks, top_ids;
    int64_t top_k = 0;
  };
  // A scored chunk's rows, from row `first` of `scores` (row j at position start + j, scored
  // against prompt token start + j + 1) to the prompt log-probs of positions start + 1 ..
  // start + count not streamed yet.
  void StreamPromptLogprobs(Sequence* seq, int64_t start, int64_t count, const HostScores& scores,
                            int64_t first);
  void Fork(Sequence* parent);
  void RefreshStats(double scheduler_s, double forward_s, double other_s, double device_s = 0);

  Model& model_;
  kernels::Backend& backend_;
  const TextStreamFactory* text_;
  EngineConfig config_;
  int64_t max_model_len_ = 0;
  std::vector<int32_t> eos_ids_;
  std::unique_ptr<memory::UnifiedPool> pool_;
  std::unique_ptr<memory::BlockManager> blocks_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<DeviceSampler> sampler_;
  // Around the forward pass and around sampling, on the compute stream (device_seconds_total).
  std::unique_ptr<kernels::Event> forward_start_, forward_end_, sample_start_, sample_end_;

  // Engine-thread state.
  std::map<uint64_t, std::unique_ptr<RequestState>> requests_;
  memory::SeqId next_seq_id_ = 1;

  // Shared with client threads.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<RequestState>> incoming_;
  std::vector<Handle> cancels_;
  std::vector<std::function<void()>> commands_;
  uint64_t next_handle_ = 1;
  bool stop_ = false;
  absl::Status failure_;  // the first failed forward pass (sticky)
  EngineStats stats_;
  std::thread thread_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_ENGINE_H_
