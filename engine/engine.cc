#include "engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_params.h"

namespace arbor::engine {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
  }
  return "?";
}

namespace {

double SecondsSince(absl::Time t) { return absl::ToDoubleSeconds(absl::Now() - t); }

// The compute stream waits for the host->device copies of the adapters `run` uses; each must be
// held resident by its sequence (the scheduler's promise).
absl::Status FenceAdapters(AdapterStore* adapters, const std::vector<ScheduledChunk>& run) {
  if (adapters == nullptr) return absl::OkStatus();
  for (const ScheduledChunk& c : run) {
    const LoraAdapter* adapter = c.seq->request->request.adapter.get();
    if (adapter == nullptr) continue;
    if (!c.seq->adapter_hold.held()) {
      return absl::InternalError(
          absl::StrCat("adapter `", adapter->name, "` scheduled without being held resident"));
    }
    RETURN_IF_ERROR(adapters->FenceForUse(*adapter));
  }
  return absl::OkStatus();
}

}  // namespace

Engine::Engine(Model& model, kernels::Backend& backend, const TextStreamFactory* text,
               const EngineConfig& config)
    : model_(model), backend_(backend), text_(text), config_(config) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(Model& model, kernels::Backend& backend,
                                                       const TextStreamFactory* text,
                                                       const EngineConfig& config) {
  const ModelSpec& spec = model.spec();
  if (config.block_size <= 0 || config.block_size > 1024) {
    return absl::InvalidArgumentError("engine.block_size must be in [1, 1024]");
  }
  if (config.max_num_seqs <= 0)
    return absl::InvalidArgumentError("engine.max_num_seqs must be > 0");
  if (config.max_num_batched_tokens <= 0) {
    return absl::InvalidArgumentError("engine.max_num_batched_tokens must be > 0");
  }
  std::unique_ptr<Engine> e(new Engine(model, backend, text, config));
  e->max_model_len_ =
      config.max_model_len > 0 ? config.max_model_len : spec.max_position_embeddings;
  if (e->max_model_len_ > spec.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("max_model_len ", e->max_model_len_,
                                                   " exceeds max_position_embeddings ",
                                                   spec.max_position_embeddings));
  }
  for (int64_t id : spec.eos_token_ids) e->eos_ids_.push_back(int32_t(id));
  // Every buffer of the serving loop is allocated now, for the largest step the limits allow,
  // and before the pool takes its share of what memory is left: serving allocates nothing.
  ForwardLimits limits;
  limits.max_tokens = config.max_num_batched_tokens;
  limits.max_seqs = config.max_num_seqs;
  limits.max_blocks = (e->max_model_len_ + config.block_size - 1) / config.block_size;
  limits.max_logit_rows = config.max_num_seqs;  // sampled rows; scored rows need no logits
  limits.max_scored_rows = config.max_num_batched_tokens;
  limits.max_lora_rank = config.max_lora_rank;
  backend.SetDeterministic(config.deterministic);
  RETURN_IF_ERROR(model.Reserve(limits));
  // One sampled row per running sequence at most.
  for (auto* event : {&e->forward_start_, &e->forward_end_, &e->sample_start_, &e->sample_end_}) {
    ASSIGN_OR_RETURN(*event, backend.CreateEvent());
  }
  ASSIGN_OR_RETURN(e->sampler_, DeviceSampler::Create(backend, spec.vocab_size, config.max_num_seqs,
                                                      e->max_model_len_, e->eos_ids_));
  const size_t page_bytes = model.KvPageBytes(config.block_size);
  int64_t pages = config.num_pages;
  if (pages <= 0) {
    ASSIGN_OR_RETURN(pages, memory::UnifiedPool::PagesFor(backend, page_bytes, config.pool_bytes,
                                                          config.pool_fraction));
  }
  const int64_t needed = (e->max_model_len_ + config.block_size - 1) / config.block_size;
  if (pages < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("the KV pool (", pages, " pages of ", config.block_size,
                     " tokens) cannot hold one sequence of max_model_len ", e->max_model_len_,
                     " tokens (", needed,
                     " pages): give the pool more memory or lower "
                     "max_model_len"));
  }
  ASSIGN_OR_RETURN(e->pool_, memory::UnifiedPool::Create(backend, page_bytes, pages));
  if (config.cuda_graphs && backend.kind() == kernels::DeviceKind::kCuda) {
    // Decode steps replay graphs captured over this pool. If capture fails the
    // engine runs every step eagerly, which is correct, only slower.
    const absl::Time start = absl::Now();
    // With adapters enabled, decode steps that use them replay graphs too (their pages are in
    // this pool).
    LoraGraphPool lora_pool;
    if (config.max_lora_rank > 0) {
      lora_pool = {e->pool_->base(), int64_t(e->pool_->page_bytes()), e->pool_->num_pages()};
    }
    auto graphs = model.CaptureDecodeGraphs(KvCacheView{e->pool_->base(), config.block_size},
                                            config.max_num_seqs, lora_pool);
    if (graphs.ok()) {
      spdlog::info("engine: {} decode CUDA graphs captured (batch 1 to {}{}) in {:.0f} ms",
                   *graphs, model.max_graph_batch(),
                   model.lora_graphs() ? ", with and without adapters" : "",
                   absl::ToDoubleMilliseconds(absl::Now() - start));
    } else {
      spdlog::warn("engine: decode steps run without CUDA graphs: {}",
                   std::string(graphs.status().message()));
    }
  }
  e->blocks_ = std::make_unique<memory::BlockManager>(*e->pool_, config.block_size,
                                                      config.enable_prefix_caching);
  SchedulerConfig sc;
  sc.max_num_seqs = config.max_num_seqs;
  sc.max_num_batched_tokens = config.max_num_batched_tokens;
  sc.sliding_window = KvFreeWindow(spec);  // every layer's window has left a freed page
  sc.total_pages = pages;
  sc.max_scored_rows = config.max_num_batched_tokens;
  e->scheduler_ = std::make_unique<Scheduler>(sc, *e->blocks_);
  // As vLLM reports it: how many sequences of max_model_len tokens the pool holds at once.
  const int64_t pages_per_seq = (e->max_model_len_ + config.block_size - 1) / config.block_size;
  spdlog::info(
      "engine: pool of {} pages x {} tokens ({:.1f} MiB; {} sequences of max_model_len {} at "
      "once), max_num_seqs {}, max_num_batched_tokens {}, prefix caching {}, workspace {:.1f} MiB",
      pages, config.block_size, double(pages) * double(page_bytes) / (1 << 20),
      pages / std::max<int64_t>(pages_per_seq, 1), e->max_model_len_, config.max_num_seqs,
      config.max_num_batched_tokens, config.enable_prefix_caching ? "on" : "off",
      double(model.workspace_bytes()) / (1 << 20));
  e->RefreshStats(0, 0, 0);
  e->thread_ = std::thread([ptr = e.get()] { ptr->Loop(); });
  return e;
}

Engine::~Engine() { Shutdown(); }

absl::Status Engine::Validate(const Request& request) const {
  const ModelSpec& spec = model_.spec();
  if (request.prompt.empty()) return absl::InvalidArgumentError("prompt: must not be empty");
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= spec.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt: token id ", id, " outside the vocabulary [0, ", spec.vocab_size, ")"));
    }
  }
  RETURN_IF_ERROR(ValidateSamplingParams(request.params, spec.vocab_size));
  // The n sequences of a request are admitted together: more than max_num_seqs could never
  // run, and first-come-first-served would leave every later request waiting behind it.
  if (request.params.n > config_.max_num_seqs) {
    return absl::InvalidArgumentError(absl::StrCat("n: ", request.params.n,
                                                   " sequences exceed engine.max_num_seqs (",
                                                   config_.max_num_seqs, ")"));
  }
  if (request.prompt_logprobs < -1 || request.prompt_logprobs > kMaxLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_logprobs must be in [-1, ", kMaxLogprobs,
                                                   "], got ", request.prompt_logprobs));
  }
  if (request.prompt_logprobs > spec.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_logprobs ", request.prompt_logprobs,
                                                   " exceeds the vocabulary size ",
                                                   spec.vocab_size));
  }
  if (request.score_only && request.params.n != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("n must be 1 for a score-only request, got ", request.params.n));
  }
  const int64_t prompt_len = int64_t(request.prompt.size());
  const int64_t max_tokens = request.score_only ? 0 : request.params.max_tokens;
  if (prompt_len + max_tokens > max_model_len_) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", prompt_len, " tokens) + max_tokens (", max_tokens,
                     ") exceeds the context length ", max_model_len_));
  }
  if (!request.params.stop.empty() && text_ == nullptr) {
    return absl::InvalidArgumentError("stop: stop strings need a tokenizer, and none is loaded");
  }
  return absl::OkStatus();
}

absl::StatusOr<Engine::Handle> Engine::Submit(Request request) {
  std::vector<Request> one;
  one.push_back(std::move(request));
  ASSIGN_OR_RETURN(std::vector<Handle> handles, SubmitAll(std::move(one)));
  return handles[0];
}

absl::StatusOr<std::vector<Engine::Handle>> Engine::SubmitAll(std::vector<Request> requests) {
  for (size_t i = 0; i < requests.size(); ++i) {
    absl::Status s = !requests[i].callback ? absl::InvalidArgumentError("request has no callback")
                                           : Validate(requests[i]);
    if (s.ok()) continue;
    // A single request's error reads as it always did.
    if (requests.size() == 1) return s;
    return absl::Status(s.code(), absl::StrCat("requests[", i, "]: ", s.message()));
  }
  std::vector<std::unique_ptr<RequestState>> states;
  states.reserve(requests.size());
  const absl::Time now = absl::Now();
  for (Request& request : requests) {
    // The adapter's id salts the prefix cache: prompts under different adapters never share KV.
    if (request.adapter != nullptr) request.cache_salt = request.adapter->id;
    auto state = std::make_unique<RequestState>();
    state->arrival = now;
    state->metrics.prompt_tokens = int64_t(request.prompt.size());
    state->metrics.adapter = request.adapter != nullptr;
    state->request = std::move(request);
    states.push_back(std::move(state));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return absl::UnavailableError("the engine is shutting down");
  if (!failure_.ok()) return absl::UnavailableError(failure_.message());
  std::vector<Handle> handles;
  handles.reserve(states.size());
  for (auto& state : states) {
    state->id = next_handle_++;
    handles.push_back(state->id);
    incoming_.push_back(std::move(state));
  }
  cv_.notify_one();
  return handles;
}

void Engine::Cancel(Handle handle) {
  std::lock_guard<std::mutex> lock(mu_);
  cancels_.push_back(handle);
  cv_.notify_one();
}

absl::Status Engine::Health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

EngineStats Engine::stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = stats_;
  }
  if (pool_ != nullptr) {
    // Adapters take and return pool pages outside the engine thread (registration): read the
    // pool now rather than as of the last iteration, which may be long ago on an idle server.
    s.pages_total = pool_->num_pages();
    s.pages_free = pool_->free_pages();
    s.pages_kv = pool_->pages_of(memory::PageKind::kKv);
    s.pages_adapter = pool_->pages_of(memory::PageKind::kAdapter);
    s.pages_cached_evictable = std::min(s.pages_cached_evictable, s.pages_kv);
  }
  return s;
}

void Engine::ClearPrefixCache() {
  std::promise<void> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    commands_.push_back([this, &done] {
      blocks_->EvictAllCached();
      RefreshStats(0, 0, 0);
      done.set_value();
    });
    cv_.notify_one();
  }
  done.get_future().wait();
}

void Engine::SetAdapterStore(AdapterStore* adapters) {
  std::promise<void> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      scheduler_->set_adapters(adapters);
      return;
    }
    commands_.push_back([this, adapters, &done] {
      scheduler_->set_adapters(adapters);
      done.set_value();
    });
    cv_.notify_one();
  }
  done.get_future().wait();
}

void Engine::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
  if (scheduler_ == nullptr) return;  // Create() failed: nothing was ever queued
  // The engine thread is gone: finish what is left from this thread.
  TakeIncoming();
  AbortAll("server shutting down");
  requests_.clear();
  RefreshStats(0, 0, 0);
}

void Engine::AbortAll(const std::string& detail) {
  for (auto& [id, req] : requests_) {
    for (auto& seq : req->seqs) {
      if (!seq->finished) Finish(seq.get(), FinishReason::kAbort, detail);
    }
  }
}

void Engine::TakeIncoming() {
  std::deque<std::unique_ptr<RequestState>> incoming;
  std::vector<Handle> cancels;
  std::vector<std::function<void()>> commands;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(incoming_);
    cancels.swap(cancels_);
    commands.swap(commands_);
  }
  for (auto& c : commands) c();
  for (auto& state : incoming) {
    RequestState* req = state.get();
    const SamplingParams& p = req->request.params;
    auto seq = std::make_unique<Sequence>(next_seq_id_++, req, 0, SequenceRng(p.seed, 0));
    seq->tokens = req->request.prompt;
    seq->prompt_len = int64_t(seq->tokens.size());
    if (text_ != nullptr) seq->text = text_->NewStream(p.skip_special_tokens);
    if (!p.stop.empty()) seq->stops = std::make_unique<StopStringMatcher>(p.stop);
    req->live = 1;
    scheduler_->AddWaiting(seq.get());
    req->seqs.push_back(std::move(seq));
    requests_[req->id] = std::move(state);
  }
  for (Handle h : cancels) {
    auto it = requests_.find(h);
    if (it == requests_.end()) continue;
    it->second->cancelled = true;
    for (auto& seq : it->second->seqs) {
      if (!seq->finished) Finish(seq.get(), FinishReason::kAbort, "cancelled");
    }
  }
}

void Engine::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] {
        return stop_ || !incoming_.empty() || !cancels_.empty() || !commands_.empty() ||
               !scheduler_->idle();
      });
      if (stop_) return;
    }
    TakeIncoming();
    if (absl::Status failed = Health(); !failed.ok()) {
      // Requests that were queued as the failure happened.
      AbortAll(std::string(failed.message()));
      requests_.clear();
      continue;
    }
    // Requests whose deadline passed before they were ever scheduled are aborted (S-LoRA's
    // early abort): running them would only produce an answer nobody waits for.
    const absl::Time now = absl::Now();
    for (auto& [id, req] : requests_) {
      if (!req->first_scheduled && req->request.deadline && now > *req->request.deadline) {
        for (auto& seq : req->seqs) {
          if (!seq->finished) Finish(seq.get(), FinishReason::kAbort, "deadline exceeded");
        }
      }
    }
    Step();
    for (auto it = requests_.begin(); it != requests_.end();) {
      it = it->second->live == 0 ? requests_.erase(it) : std::next(it);
    }
  }
}

void Engine::Step() {
  const absl::Time t0 = absl::Now();
  ScheduleDecision d = scheduler_->Schedule();
  const double schedule_s = SecondsSince(t0);
  for (const auto& [seq, why] : d.failed) {
    spdlog::warn("request {} sequence {}: aborted: {}", seq->request->id, seq->index,
                 why.ToString());
    Finish(seq, FinishReason::kAbort, std::string(why.message()));
  }
  for (Sequence* seq : d.rejected) {
    spdlog::warn(
        "request {} sequence {}: aborted, it needs more KV pages than the whole pool holds",
        seq->request->id, seq->index);
    Finish(seq, FinishReason::kAbort, "the sequence needs more KV pages than the whole pool holds");
  }
  if (d.run.empty()) {
    RefreshStats(schedule_s, 0, 0);
    return;
  }
  // Adapters paged in on the copy stream: the forward pass waits for their copies. A failure
  // here is the device's, as a failed forward pass is.
  if (absl::Status fenced = FenceAdapters(scheduler_->adapters(), d.run); !fenced.ok()) {
    spdlog::critical("adapter copies failed; the engine stops serving: {}", fenced.ToString());
    const std::string why = absl::StrCat("engine failure: ", fenced.message());
    {
      std::lock_guard<std::mutex> lock(mu_);
      failure_ = absl::InternalError(why);
    }
    AbortAll(why);
    RefreshStats(schedule_s, 0, 0);
    return;
  }
  // Copy-on-write of shared last blocks. A sequence whose copy fails would compute over a page
  // that never received its prefix: its request is aborted and its chunks dropped.
  for (const ScheduledCopy& c : d.copies) {
    if (c.seq->finished) continue;
    absl::Status s =
        backend_.CopyOnDevice(pool_->page_ptr(c.op.dst_page), pool_->page_ptr(c.op.src_page),
                              pool_->page_bytes(), backend_.default_stream());
    if (s.ok()) continue;
    RequestState* req = c.seq->request;
    spdlog::error("request {}: copy-on-write of page {} failed, aborting the request: {}", req->id,
                  c.op.src_page, s.ToString());
    const std::string why = absl::StrCat("copy-on-write failed: ", s.message());
    for (auto& seq : req->seqs) {
      if (!seq->finished) Finish(seq.get(), FinishReason::kAbort, why);
    }
  }
  d.run.erase(std::remove_if(d.run.begin(), d.run.end(),
                             [](const ScheduledChunk& c) { return c.seq->finished; }),
              d.run.end());
  if (d.run.empty()) {
    RefreshStats(schedule_s, 0, 0);
    return;
  }
  std::vector<SequenceChunk> chunks;
  chunks.reserve(d.run.size());
  // A scored chunk's targets: row j (position start + j) scores prompt token start + j + 1,
  // the next chunk's first token included; the last prompt position scores nothing (-1). Its
  // rows go through the fused LM head (no logits); only a sampled chunk's last row has logits.
  std::vector<std::vector<int32_t>> targets(d.run.size());
  std::vector<ChunkScore> chunk_scores(d.run.size());
  for (size_t i = 0; i < d.run.size(); ++i) {
    const ScheduledChunk& c = d.run[i];
    RequestState* req = c.seq->request;
    if (!req->first_scheduled) {
      req->first_scheduled = t0;
      req->metrics.queue_time = t0 - req->arrival;
    }
    const SequenceChunk::Logits rows =
        c.sample ? SequenceChunk::Logits::kLast : SequenceChunk::Logits::kNone;
    chunks.push_back({absl::MakeConstSpan(c.seq->tokens).subspan(size_t(c.start), size_t(c.count)),
                      c.start, blocks_->BlockTable(c.seq->id), rows, req->request.adapter.get()});
    if (c.score) {
      for (int64_t pos = c.start; pos < c.start + c.count; ++pos) {
        targets[i].push_back(pos + 1 < c.seq->prompt_len ? c.seq->tokens[size_t(pos + 1)] : -1);
      }
      chunk_scores[i] = {targets[i], req->request.prompt_logprobs};
    }
  }
  const absl::Time t1 = absl::Now();
  kernels::Stream& stream = backend_.default_stream();
  absl::Status timing = forward_start_->Record(stream);
  auto logits =
      model_.ForwardOnDevice(chunks, KvCacheView{pool_->base(), config_.block_size}, chunk_scores);
  // Every chunk's tokens are computed now (forks below copy that count).
  int64_t prefill = 0;
  for (const ScheduledChunk& c : d.run) {
    prefill += std::max<int64_t>(0, std::min(c.start + c.count, c.seq->prompt_len) - c.start);
    scheduler_->Computed(c.seq, c.count);
  }
  // The logits rows: one per sampled chunk, in chunk order, sampled on the device; only their
  // tokens (and the log-probs asked for) come back. Scored chunks' rows came out of the fused
  // LM head (Model::scored(), chunk order): their log-probs and top-k come to the host.
  std::vector<int64_t> first_scored(d.run.size(), 0);
  HostScores host_scores;
  std::vector<SampleInput> inputs;
  std::vector<int32_t> input_rows;
  std::vector<std::vector<Sequence*>> sampled(d.run.size());  // siblings first, then the chunk's
  absl::Status status = logits.status();
  const ScoredRows& scores = model_.scored();
  if (status.ok() && scores.rows > 0) {
    HostScores& h = host_scores;
    h.top_k = scores.top_k;
    h.logprobs.resize(size_t(scores.rows));
    h.ranks.resize(size_t(scores.rows));
    h.top_ids.resize(size_t(scores.rows * scores.top_k));
    h.top_logprobs.resize(h.top_ids.size());
    status = backend_.CopyToHost(h.logprobs.data(), scores.logprobs,
                                 h.logprobs.size() * sizeof(float), stream);
    if (status.ok()) {
      status = backend_.CopyToHost(h.ranks.data(), scores.ranks, h.ranks.size() * sizeof(int32_t),
                                   stream);
    }
    if (status.ok() && scores.top_k > 0) {
      status = backend_.CopyToHost(h.top_ids.data(), scores.top_ids,
                                   h.top_ids.size() * sizeof(int32_t), stream);
    }
    if (status.ok() && scores.top_k > 0) {
      status = backend_.CopyToHost(h.top_logprobs.data(), scores.top_logprobs,
                                   h.top_logprobs.size() * sizeof(float), stream);
    }
  }
  int64_t row = 0, scored_row = 0;
  for (size_t i = 0; i < d.run.size() && status.ok(); ++i) {
    const ScheduledChunk& c = d.run[i];
    first_scored[i] = scored_row;
    if (c.score) scored_row += c.count;
    const int64_t num_rows = c.sample ? 1 : 0;
    if (c.sample) {
      RequestState* req = c.seq->request;
      // n > 1: the siblings share the prompt's pages and sample their first token from the
      // same logits row, each with its own random stream.
      if (c.seq->index == 0 && !req->forked) {
        if (req->request.params.n > 1) Fork(c.seq);
        req->forked = true;
        for (size_t j = 1; j < req->seqs.size(); ++j) sampled[i].push_back(req->seqs[j].get());
      }
      sampled[i].push_back(c.seq);
      for (Sequence* seq : sampled[i]) {
        inputs.push_back(
            {uint64_t(seq->id), &req->request.params, seq->prompt(), seq->output(), &seq->rng});
        input_rows.push_back(int32_t(row + num_rows - 1));
      }
    }
    row += num_rows;
  }
  if (timing.ok()) timing = forward_end_->Record(stream);
  absl::StatusOr<std::vector<SampleResult>> results = std::vector<SampleResult>();
  if (timing.ok()) timing = sample_start_->Record(stream);
  if (status.ok() && !inputs.empty()) {
    results = sampler_->Sample(*logits, input_rows, inputs, stream);
    status = results.status();
  }
  if (timing.ok()) timing = sample_end_->Record(stream);
  double device_s = 0;
  // Only where the sampler's token copy already synchronised the stream: a step that samples
  // nothing (chunks of prefills only) is not made to wait for the device just to be timed.
  // Such a step's device time then counts as host time (EngineStats::device_seconds_total).
  if (status.ok() && timing.ok() && !inputs.empty() &&
      (timing = sample_end_->Synchronize()).ok()) {
    auto forward_ms = forward_end_->ElapsedMsSince(*forward_start_);
    auto sample_ms = sample_end_->ElapsedMsSince(*sample_start_);
    if (forward_ms.ok() && sample_ms.ok()) device_s = (*forward_ms + *sample_ms) / 1e3;
  }
  const absl::Time t2 = absl::Now();
  if (!status.ok()) {
    spdlog::critical("forward pass failed; the engine stops serving: {}", status.ToString());
    const std::string why = absl::StrCat("engine failure: ", status.message());
    {
      std::lock_guard<std::mutex> lock(mu_);
      failure_ = absl::InternalError(why);
    }
    AbortAll(why);
    RefreshStats(schedule_s, absl::ToDoubleSeconds(t2 - t1), 0);
    return;
  }
  size_t next_result = 0;
  for (size_t i = 0; i < d.run.size(); ++i) {
    const ScheduledChunk& c = d.run[i];
    if (c.score) StreamPromptLogprobs(c.seq, c.start, c.count, host_scores, first_scored[i]);
    if (c.sample) {
      for (Sequence* seq : sampled[i]) ProcessSample(seq, (*results)[next_result++]);
    } else if (c.seq->request->request.score_only &&
               c.start + c.count == int64_t(c.seq->tokens.size())) {
      Finish(c.seq, FinishReason::kLength, "");
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.prefill_tokens_computed_total += prefill;
  }
  RefreshStats(schedule_s, absl::ToDoubleSeconds(t2 - t1),
               absl::ToDoubleSeconds((t1 - t0) + (absl::Now() - t2)) - schedule_s, device_s);
}

void Engine::Fork(Sequence* parent) {
  RequestState* req = parent->request;
  req->forked = true;
  const SamplingParams& p = req->request.params;
  for (int32_t i = 1; i < p.n; ++i) {
    auto child = std::make_unique<Sequence>(next_seq_id_++, req, i, SequenceRng(p.seed, i));
    child->tokens = parent->tokens;
    child->prompt_len = parent->prompt_len;
    child->num_computed = parent->num_computed;
    child->next_prompt_logprob = parent->prompt_len;  // the prompt's came with index 0's events
    if (text_ != nullptr) child->text = text_->NewStream(p.skip_special_tokens);
    if (!p.stop.empty()) child->stops = std::make_unique<StopStringMatcher>(p.stop);
    // The siblings hold the adapter too: it stays resident while any of them runs.
    if (const LoraAdapter* adapter = req->request.adapter.get();
        adapter != nullptr && scheduler_->adapters() != nullptr) {
      auto hold = scheduler_->adapters()->Acquire(*adapter);
      if (!hold.ok()) {
        spdlog::error("fork of sequence {}: {}", parent->id, hold.status().ToString());
        continue;
      }
      child->adapter_hold = std::move(*hold);
    }
    if (absl::Status s = blocks_->Fork(parent->id, child->id); !s.ok()) {
      spdlog::error("fork of sequence {}: {}", parent->id, s.ToString());
      continue;
    }
    scheduler_->AddRunning(child.get());
    ++req->live;
    req->seqs.push_back(std::move(child));
  }
}

void Engine::StreamPromptLogprobs(Sequence* seq, int64_t start, int64_t count,
                                  const HostScores& scores, int64_t first_row) {
  // Row j (position start + j) scores prompt token start + j + 1; the last prompt position
  // predicts past the prompt and scores nothing. Positions streamed before a preemption are
  // not sent again when the prompt is recomputed.
  const int64_t first = std::max(seq->next_prompt_logprob, start + 1);
  const int64_t last = std::min(start + count, seq->prompt_len - 1);
  if (first > last) return;
  RequestState* req = seq->request;
  StreamEvent ev;
  ev.index = seq->index;
  ev.prompt_logprobs.reserve(size_t(last - first + 1));
  const int64_t k = req->request.prompt_logprobs;  // <= scores.top_k: the pass's largest
  const int64_t stride = scores.top_k;
  for (int64_t pos = first; pos <= last; ++pos) {
    const size_t j = size_t(first_row + pos - 1 - start);
    PromptLogprob e{pos, seq->tokens[size_t(pos)], scores.logprobs[j], scores.ranks[j], {}};
    e.top.reserve(size_t(k));
    for (int64_t t = 0; t < k; ++t) {
      const size_t at = j * size_t(stride) + size_t(t);
      e.top.push_back({scores.top_ids[at], scores.top_logprobs[at]});
    }
    ev.prompt_logprobs.push_back(std::move(e));
  }
  seq->next_prompt_logprob = last + 1;
  req->request.callback(ev);
}

void Engine::ProcessSample(Sequence* seq, const SampleResult& r) {
  RequestState* req = seq->request;
  const SamplingParams& p = req->request.params;
  if (!req->first_token) {
    req->first_token = absl::Now();
    req->metrics.time_to_first_token = *req->first_token - req->arrival;
  }
  seq->tokens.push_back(r.token);
  ++req->metrics.generated_tokens;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.generation_tokens_total;
  }

  StreamEvent ev;
  ev.index = seq->index;
  ev.token_ids.push_back(r.token);
  if (p.logprobs >= 0) ev.logprobs.push_back(r);
  const bool min_reached = seq->num_generated() >= p.min_tokens;
  const bool is_stop_token = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), r.token) !=
                             p.stop_token_ids.end();
  const bool is_eos =
      !p.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), r.token) != eos_ids_.end();
  std::optional<FinishReason> finish;
  std::string detail;
  if (min_reached && (is_stop_token || is_eos)) {
    finish = FinishReason::kStop;
    detail = absl::StrCat("token ", r.token);
  } else {
    if (seq->text != nullptr) {
      auto delta = seq->text->Append(r.token);
      if (!delta.ok()) {
        // Never end a sequence without saying why in the log.
        spdlog::error("request {} sequence {}: detokenizing token {} failed, aborting it: {}",
                      req->id, seq->index, r.token, delta.status().ToString());
        Finish(seq, FinishReason::kAbort, std::string(delta.status().message()));
        return;
      }
      if (seq->stops != nullptr) {
        StopStringMatcher::Result m = seq->stops->Feed(*delta);
        ev.text = std::move(m.emit);
        if (m.stopped) {
          finish = FinishReason::kStop;
          detail = m.matched;
        }
      } else {
        ev.text = std::move(*delta);
      }
    }
    if (!finish &&
        (seq->num_generated() >= p.max_tokens || int64_t(seq->tokens.size()) >= max_model_len_)) {
      finish = FinishReason::kLength;
    }
  }
  req->request.callback(ev);
  if (finish) Finish(seq, *finish, detail);
}

void Engine::Finish(Sequence* seq, FinishReason reason, const std::string& detail) {
  if (seq->finished) return;
  seq->finished = true;
  scheduler_->Remove(seq);
  if (sampler_ != nullptr) sampler_->Release(uint64_t(seq->id));
  RequestState* req = seq->request;
  StreamEvent ev;
  ev.index = seq->index;
  ev.finish = reason;
  ev.finish_detail = detail;
  // Text held back for a possible stop string or an unfinished character is released at a
  // normal end; after a stop string or an abort it is dropped.
  const bool stopped_on_string = seq->stops != nullptr && seq->stops->stopped();
  if (reason != FinishReason::kAbort && !stopped_on_string && seq->text != nullptr) {
    auto rest = seq->text->Flush();
    if (rest.ok()) {
      if (seq->stops != nullptr) {
        StopStringMatcher::Result m = seq->stops->Feed(*rest);
        ev.text = m.emit + (m.stopped ? std::string() : seq->stops->Flush());
        if (m.stopped) {
          // The text the decoder held back (an unfinished character) completed a stop string.
          ev.finish = FinishReason::kStop;
          ev.finish_detail = m.matched;
        }
      } else {
        ev.text = *rest;
      }
    }
  }
  --req->live;
  if (!req->forked && req->request.params.n > 1) {
    // Ended before its prefill did (abort, deadline): the n - 1 siblings were never forked, but
    // the client still expects every index to finish.
    req->forked = true;
    for (int32_t i = 1; i < req->request.params.n; ++i) {
      StreamEvent sibling;
      sibling.index = i;
      sibling.finish = reason;
      sibling.finish_detail = detail;
      if (req->request.callback) req->request.callback(sibling);
    }
  }
  if (req->live == 0) {
    // A request whose siblings were never forked (aborted before its prefill ended) is done.
    req->metrics.e2e = absl::Now() - req->arrival;
    ev.metrics = req->metrics;
    std::lock_guard<std::mutex> lock(mu_);
    ++(reason == FinishReason::kAbort ? stats_.requests_aborted : stats_.requests_finished);
    stats_.prompt_tokens_total += req->metrics.prompt_tokens;
  }
  if (req->request.callback) req->request.callback(ev);
}

void Engine::RefreshStats(double scheduler_s, double forward_s, double other_s, double device_s) {
  if (blocks_ == nullptr) return;  // Create() failed before the pool existed
  const memory::BlockManager::Stats b = blocks_->stats();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.waiting = scheduler_->num_waiting();
  stats_.preempted_waiting = scheduler_->num_preempted_waiting();
  stats_.running = scheduler_->num_running();
  stats_.preemptions_total = scheduler_->num_preempted_total();
  stats_.pages_total = pool_->num_pages();
  stats_.pages_free = pool_->free_pages();
  stats_.pages_kv = pool_->pages_of(memory::PageKind::kKv);
  stats_.pages_adapter = pool_->pages_of(memory::PageKind::kAdapter);
  stats_.pages_cached_evictable = b.cached_evictable_pages;
  stats_.prefix_query_tokens = b.prefix_queries_tokens;
  stats_.prefix_hit_tokens = b.prefix_hit_tokens;
  stats_.scheduler_seconds_total += scheduler_s;
  stats_.forward_seconds_total += forward_s;
  stats_.other_seconds_total += other_s;
  stats_.device_seconds_total += device_s;
  if (forward_s > 0) ++stats_.iterations;
}

}  // namespace arbor::engine
