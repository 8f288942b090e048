// Samples a step's rows on the backend (kernels/sampling.h): the logits never leave the device;
// only the token ids, and the log-probs a row asked for, come back. Part of the model runner
// (engine/runner/): it owns the sampling side of the per-step device state, all of it allocated
// once at start-up and sized by the engine's limits:
//   - pinned host mirrors of the step's SampleRows, logit_bias and stop-token arrays, and the
//     outputs they come back into, and their device copies;
//   - the kernel's workspace;
//   - the penalty state: for each sequence that uses repetition, frequency or presence
//     penalties, a slot holding its prompt as a bitset and its output token counts, built once
//     when the sequence first samples (from its prompt and output, so a fork or a recomputed
//     sequence rebuilds its own) and kept up to date on the device after every step. Slots are
//     reused least recently used first; a sequence whose slot went comes back to a rebuilt one.
// Given the same logits, a row's token is the one the host sampler (engine/sampling/sampler.h)
// would draw: the op and the host share one algorithm (kernels/sampling_math.h).
#ifndef ARBOR_ENGINE_RUNNER_DEVICE_SAMPLER_H_
#define ARBOR_ENGINE_RUNNER_DEVICE_SAMPLER_H_

#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_params.h"
#include "engine/sampling/sequence_rng.h"
#include "kernels/backend.h"

namespace arbor::engine {

// One row to sample: the sequence and what it has seen.
struct SampleInput {
  uint64_t seq_id = 0;  // names its penalty slot
  const SamplingParams* params = nullptr;
  absl::Span<const int32_t> prompt;
  absl::Span<const int32_t> output;  // generated so far
  SequenceRng* rng = nullptr;        // advanced past the draw a sampled row makes
};

class DeviceSampler {
 public:
  // `max_rows`: rows one step may sample (the engine's max_num_seqs); `max_len`: tokens of the
  // longest sequence (the penalty slots are built from up to max_rows of them in one step);
  // `eos_ids`: the model's, masked with stop_token_ids while a row is under its min_tokens.
  static absl::StatusOr<std::unique_ptr<DeviceSampler>> Create(kernels::Backend& backend,
                                                               int64_t vocab, int64_t max_rows,
                                                               int64_t max_len,
                                                               std::vector<int32_t> eos_ids);

  // Samples row rows[i] of `logits` (device fp32 [*, vocab]) for inputs[i], on `stream`, and
  // waits for the tokens: the step's one synchronising copy. Rows may repeat (the n samples of
  // one request draw their first token from one row): rows other than 0, 1, 2, ... are
  // gathered first. Returns one SampleResult per input (log-probs filled when asked).
  absl::StatusOr<std::vector<SampleResult>> Sample(const kernels::Tensor& logits,
                                                   absl::Span<const int32_t> rows,
                                                   absl::Span<const SampleInput> inputs,
                                                   kernels::Stream& stream);

  // The sequence ended: its penalty slot is free.
  void Release(uint64_t seq_id);

  int64_t slots_in_use() const { return int64_t(slot_of_.size()); }

 private:
  DeviceSampler(kernels::Backend& backend, int64_t vocab, int64_t max_rows, int64_t max_len,
                std::vector<int32_t> eos_ids)
      : be_(backend),
        vocab_(vocab),
        max_rows_(max_rows),
        max_len_(max_len),
        eos_ids_(std::move(eos_ids)) {}
  absl::Status Allocate();
  // The slot of `seq_id`, taken (least recently used first) when it has none; `fresh` tells
  // whether it must be built. Never takes a slot in use by `busy`.
  int32_t SlotFor(uint64_t seq_id, const std::vector<uint64_t>& busy, bool* fresh);
  // Builds fresh slots from their sequences' prompt and output ids.
  absl::Status ResetSlots(const std::vector<int32_t>& slots,
                          const std::vector<const SampleInput*>& inputs, kernels::Stream& stream);

  kernels::Backend& be_;
  const int64_t vocab_;
  const int64_t max_rows_;
  const int64_t max_len_;
  const std::vector<int32_t> eos_ids_;

  // Host mirrors (pinned) and their device copies: rows, bias and stop arrays; outputs.
  kernels::HostBuffer host_in_, host_out_;
  kernels::DeviceBuffer dev_in_, dev_out_, workspace_, eos_;
  kernels::DeviceBuffer gathered_;  // [max_rows, vocab] fp32: rows gathered for the kernel
  // The penalty state: [max_rows, words] bitsets and [max_rows, vocab] counts.
  kernels::DeviceBuffer prompt_seen_, output_counts_;
  // Slot bookkeeping: which sequence holds each slot, least recently used first.
  std::unordered_map<uint64_t, int32_t> slot_of_;
  std::list<uint64_t> lru_;  // sequence ids holding slots, oldest use first
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> lru_at_;
  std::vector<int32_t> free_slots_;
  // The ids a step's slot rebuilds read: max_rows sequences of up to max_len tokens.
  kernels::DeviceBuffer reset_ids_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_RUNNER_DEVICE_SAMPLER_H_
