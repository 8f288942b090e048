// Iteration-level scheduling (continuous batching) over the block manager's pages.
//
// Each Schedule() call plans one forward pass: running sequences first (decodes and the next
// chunk of unfinished prefills, oldest first), then waiting sequences by priority and arrival,
// admitted while their whole prompt gets pages, max_num_seqs allows, and the token budget
// (max_num_batched_tokens) lasts; long prompts are split into chunks across iterations. When a
// running sequence cannot get a page, the most recently admitted sequences are preempted by
// recompute: their pages are freed and they go back to the front of the waiting queue, to be
// prefilled again (prompt + what they generated) when pages return.
//
// LoRA adapters share the pool with KV blocks (engine/lora/adapter_store.h). A sequence whose
// request names an adapter is admitted only when the adapter is resident or its pages can be
// had together with the prompt's KV pages, counted against the one pool; it then holds the
// adapter (resident, not evictable) until it finishes or is preempted. Idle adapters (resident,
// held by no sequence) give their pages back, least recently used first, whenever KV blocks or
// another adapter need pages and the pool has none free. After admission, the adapters of the
// sequences still waiting are prefetched into free pages (keeping one page per running sequence
// free for decode growth).
//
// Sequences that score their prompt (prompt log-probs) want the logits of every position of a
// chunk: they are admitted without reading the prefix cache, and their chunks share a budget of
// max_scored_rows logits rows per iteration, so a long scored prompt is split further than the
// token budget alone would split it.
#ifndef ARBOR_ENGINE_SCHEDULER_H_
#define ARBOR_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <vector>

#include "absl/status/status.h"
#include "engine/lora/adapter_store.h"
#include "engine/sequence.h"
#include "memory/block_manager.h"

namespace arbor::engine {

struct SchedulerConfig {
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 2048;
  // Blocks out of every live window are freed: the model's largest layer window, 0 when a layer
  // attends fully (engine/model/hf_config.h KvFreeWindow says why).
  int64_t sliding_window = 0;
  int64_t total_pages = 0;  // the pool's: a prompt needing more can never run
  // Logits rows ([vocab] each) that scoring chunks may ask for in one iteration, >= 1.
  int64_t max_scored_rows = 1 << 16;
};

// One planned chunk: tokens [start, start + count) of `seq`.
struct ScheduledChunk {
  Sequence* seq;
  int64_t start;
  int64_t count;
  bool sample;  // the chunk ends at the sequence's last token: sample from its logits
  bool score;   // the sequence scores its prompt: logits of every position of the chunk
};

// A copy-on-write page copy the next chunk of `seq` needs before the forward.
struct ScheduledCopy {
  memory::CopyOp op;
  Sequence* seq;
};

struct ScheduleDecision {
  std::vector<ScheduledChunk> run;
  std::vector<ScheduledCopy> copies;  // copy-on-write page copies to do before the forward
  std::vector<Sequence*> preempted;   // freed this iteration, back in the waiting queue
  std::vector<Sequence*> rejected;    // can never fit the pool: finish them with an error
  // Cannot run, for the reason given: an adapter that with the prompt exceeds the pool, or that
  // could not be read back from disk. Finish them with the error.
  std::vector<std::pair<Sequence*, absl::Status>> failed;
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, memory::BlockManager& blocks);

  // The adapter store whose adapters requests name (null: none; adapters then need no paging).
  void set_adapters(AdapterStore* adapters) { adapters_ = adapters; }
  AdapterStore* adapters() const { return adapters_; }

  void AddWaiting(Sequence* seq);  // a new request's first sequence
  void AddRunning(Sequence* seq);  // a forked sequence that already holds pages
  // Drops `seq` from the queues and frees its pages (finish, abort).
  void Remove(Sequence* seq);
  [[nodiscard]] ScheduleDecision Schedule();
  // After the forward pass: `count` more tokens of `seq` are computed.
  void Computed(Sequence* seq, int64_t count);

  int64_t num_waiting() const { return int64_t(waiting_.size()); }
  // Waiting sequences that were preempted (counted on demand: the queue is short next to a
  // forward pass).
  int64_t num_preempted_waiting() const;
  int64_t num_running() const { return int64_t(running_.size()); }
  int64_t num_preempted_total() const { return preemptions_; }
  bool idle() const { return waiting_.empty() && running_.empty(); }

 private:
  void Preempt(Sequence* seq, ScheduleDecision& d);
  void InsertWaiting(Sequence* seq);
  // Admission of the waiting queue's front: true when it was admitted or dropped (go on with
  // the next), false when it must wait.
  bool Admit(Sequence* seq, bool score, ScheduleDecision& d);
  // Blocks for `seq` (BlockManager::Append / AllocatePrompt), evicting idle adapters while the
  // pool is short.
  absl::Status Grow(Sequence* seq, int64_t tokens, std::vector<memory::CopyOp>* copies);
  absl::StatusOr<int64_t> AllocatePrompt(Sequence* seq, bool score);
  // The prefix cache's evictable blocks, offered to an adapter being paged in.
  KvReclaim Reclaim();
  void Prefetch();

  SchedulerConfig config_;
  memory::BlockManager& blocks_;
  AdapterStore* adapters_ = nullptr;
  std::deque<Sequence*> waiting_;   // priority desc, then arrival (preempted keep their place)
  std::vector<Sequence*> running_;  // admission order
  int64_t preemptions_ = 0;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_SCHEDULER_H_
