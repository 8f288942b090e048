#include "engine/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace arbor::engine {

Scheduler::Scheduler(SchedulerConfig config, memory::BlockManager& blocks)
    : config_(config), blocks_(blocks) {}

namespace {

// Waiting order: higher priority first, then earlier arrival, then request id and index.
bool RunsBefore(const Sequence* a, const Sequence* b) {
  const RequestState* ra = a->request;
  const RequestState* rb = b->request;
  if (ra->request.priority != rb->request.priority) {
    return ra->request.priority > rb->request.priority;
  }
  if (ra->arrival != rb->arrival) return ra->arrival < rb->arrival;
  if (ra->id != rb->id) return ra->id < rb->id;
  return a->index < b->index;
}

// Tokens [start, start + take) of `seq`; a score-only request never samples.
ScheduledChunk Plan(Sequence* seq, int64_t take, bool score) {
  const int64_t start = seq->num_computed;
  const bool at_end = start + take == int64_t(seq->tokens.size());
  return {seq, start, take, at_end && !seq->request->request.score_only, score};
}

}  // namespace

void Scheduler::InsertWaiting(Sequence* seq) {
  auto it = std::upper_bound(waiting_.begin(), waiting_.end(), seq,
                             [](const Sequence* a, const Sequence* b) { return RunsBefore(a, b); });
  waiting_.insert(it, seq);
}

int64_t Scheduler::num_preempted_waiting() const {
  return std::count_if(waiting_.begin(), waiting_.end(),
                       [](const Sequence* s) { return s->preempted; });
}

void Scheduler::AddWaiting(Sequence* seq) { InsertWaiting(seq); }

void Scheduler::AddRunning(Sequence* seq) {
  seq->running = true;
  running_.push_back(seq);
}

void Scheduler::Remove(Sequence* seq) {
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  if (seq->running) blocks_.Free(seq->id);
  seq->running = false;
  seq->adapter_hold.Reset();
}

void Scheduler::Preempt(Sequence* seq, ScheduleDecision& d) {
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  blocks_.Free(seq->id);
  seq->running = false;
  // Its adapter stays resident but idle: a preempted sequence holds no pages while it waits.
  seq->adapter_hold.Reset();
  seq->num_computed = 0;
  seq->preempted = true;
  ++preemptions_;
  ++seq->request->metrics.preemptions;
  InsertWaiting(seq);
  d.preempted.push_back(seq);
}

ScheduleDecision Scheduler::Schedule() {
  ScheduleDecision d;
  int64_t budget = config_.max_num_batched_tokens;
  int64_t scored_rows = config_.max_scored_rows;
  // How many of `seq`'s uncomputed tokens fit this iteration's token and scored-row budgets.
  auto Take = [&](const Sequence* seq, bool score) {
    const int64_t need = int64_t(seq->tokens.size()) - seq->num_computed;
    return std::min({need, budget, score ? scored_rows : need});
  };
  auto Run = [&](Sequence* seq, int64_t take, bool score) {
    d.run.push_back(Plan(seq, take, score));
    budget -= take;
    if (score) scored_rows -= take;
  };

  // Running sequences, oldest first. A sequence that cannot get pages preempts the newest
  // running ones (never an older one), itself last. A scoring sequence with no logits rows
  // left this iteration waits for the next one, holding its pages.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i];
    const bool score = seq->scores_prompt();
    if (score && scored_rows == 0) {
      ++i;
      continue;
    }
    const int64_t take = Take(seq, score);
    std::vector<memory::CopyOp> copies;
    absl::Status s = Grow(seq, seq->num_computed + take, &copies);
    while (!s.ok() && running_.back() != seq) {
      Preempt(running_.back(), d);
      s = Grow(seq, seq->num_computed + take, &copies);
    }
    if (!s.ok()) {
      Preempt(seq, d);  // the newest of all that remain: recompute it later
      continue;         // running_[i] is now the next sequence (or the end)
    }
    for (const memory::CopyOp& c : copies) d.copies.push_back({c, seq});
    Run(seq, take, score);
    ++i;
  }

  // Admission, in waiting order; head-of-line blocking keeps FCFS within a priority.
  while (!waiting_.empty() && budget > 0) {
    Sequence* seq = waiting_.front();
    const int64_t n_slots = seq->request->forked ? 1 : seq->request->request.params.n;
    if (int64_t(running_.size()) + n_slots > config_.max_num_seqs) break;
    const bool score = seq->scores_prompt();
    if (score && scored_rows == 0) break;
    if (!Admit(seq, score, d)) break;
    if (seq->running) Run(seq, Take(seq, score), score);
  }
  Prefetch();
  return d;
}

bool Scheduler::Admit(Sequence* seq, bool score, ScheduleDecision& d) {
  const int64_t len = int64_t(seq->tokens.size());
  const int64_t kv_pages = blocks_.BlocksFor(len);
  if (kv_pages > config_.total_pages) {
    waiting_.pop_front();
    d.rejected.push_back(seq);
    return true;
  }
  const LoraAdapter* adapter = seq->request->request.adapter.get();
  if (adapter != nullptr && adapters_ != nullptr && !seq->adapter_hold.held()) {
    const int64_t adapter_pages = adapters_->PagesOf(*adapter);
    const int64_t pinned = adapters_->PinnedPagesExcept(*adapter);
    if (kv_pages + adapter_pages + pinned > config_.total_pages) {
      waiting_.pop_front();
      d.failed.push_back(
          {seq, absl::ResourceExhaustedError(absl::StrCat(
                    "the sequence's ", kv_pages, " KV pages and adapter `", adapter->name, "` (",
                    adapter_pages, " pages) do not fit the pool (", config_.total_pages, " pages, ",
                    pinned, " of them held by pinned adapters)"))});
      return true;
    }
    const absl::Time start = absl::Now();
    if (!adapters_->Resident(*adapter)) {
      // One budget: paging the adapter in is worth it only if its pages and the prompt's KV
      // pages can both be had now (free pages, cached KV blocks and idle adapters).
      const int64_t cached =
          score ? 0
                : blocks_.CachedPrefixTokens(seq->tokens, seq->request->request.cache_salt) /
                      blocks_.block_size();
      if (blocks_.AvailablePages() + adapters_->IdlePages() < adapter_pages + kv_pages - cached) {
        if (!seq->adapter_wait_since) seq->adapter_wait_since = start;
        return false;
      }
    }
    auto hold = adapters_->Acquire(*adapter, Reclaim());
    if (!hold.ok()) {
      if (absl::IsResourceExhausted(hold.status())) {
        if (!seq->adapter_wait_since) seq->adapter_wait_since = start;
        return false;
      }
      waiting_.pop_front();  // its adapter cannot be read back: fail it, not the queue
      d.failed.push_back({seq, hold.status()});
      return true;
    }
    seq->adapter_hold = std::move(*hold);
    const absl::Time waited_from = seq->adapter_wait_since.value_or(start);
    seq->request->metrics.adapter_wait += absl::Now() - waited_from;
    seq->adapter_wait_since.reset();
  }
  auto cached = AllocatePrompt(seq, score);
  if (!cached.ok()) {
    seq->adapter_hold.Reset();  // out of pages: wait for running sequences to free some
    return false;
  }
  waiting_.pop_front();
  seq->num_computed = *cached;
  if (seq->num_generated() == 0) seq->request->metrics.cached_prompt_tokens += *cached;
  seq->running = true;
  seq->preempted = false;
  running_.push_back(seq);
  return true;
}

absl::Status Scheduler::Grow(Sequence* seq, int64_t tokens, std::vector<memory::CopyOp>* copies) {
  absl::Status s = blocks_.Append(seq->id, tokens, copies);
  while (!s.ok() && adapters_ != nullptr && adapters_->EvictOneIdle()) {
    s = blocks_.Append(seq->id, tokens, copies);
  }
  return s;
}

absl::StatusOr<int64_t> Scheduler::AllocatePrompt(Sequence* seq, bool score) {
  // A cached block carries KV but no logits: a scoring prompt is computed from token 0.
  auto alloc = [&] {
    return blocks_.AllocatePrompt(seq->id, seq->tokens, seq->request->request.cache_salt,
                                  /*read_cache=*/!score);
  };
  absl::StatusOr<int64_t> cached = alloc();
  while (!cached.ok() && adapters_ != nullptr && adapters_->EvictOneIdle()) cached = alloc();
  return cached;
}

KvReclaim Scheduler::Reclaim() {
  return {blocks_.stats().cached_evictable_pages,
          [this](int64_t n) { return blocks_.EvictCached(n); }};
}

void Scheduler::Prefetch() {
  if (adapters_ == nullptr) return;
  // The next batch's candidates: as many waiting sequences as could run at once.
  int64_t looked = 0;
  for (Sequence* seq : waiting_) {
    if (looked++ >= config_.max_num_seqs) break;
    const LoraAdapter* adapter = seq->request->request.adapter.get();
    if (adapter == nullptr || seq->adapter_hold.held()) continue;
    adapters_->Prefetch(*adapter, int64_t(running_.size()));
  }
}

void Scheduler::Computed(Sequence* seq, int64_t count) {
  seq->num_computed += count;
  blocks_.MarkComputed(seq->id, seq->tokens, seq->num_computed);
  // A page holds every layer's K/V of its positions: the window here is the model's largest
  // layer window, and none when a layer attends fully (KvFreeWindow).
  if (config_.sliding_window > 0) {
    blocks_.FreeOutOfWindow(seq->id, seq->num_computed, config_.sliding_window);
  }
}

}  // namespace arbor::engine
