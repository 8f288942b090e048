#include "engine/runner/device_sampler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace arbor::engine {
namespace {

using kernels::SampleRow;

// Offsets of arrays laid out one after another, each 256-byte aligned.
class Bump {
 public:
  size_t Take(size_t bytes) {
    const size_t here = at_;
    at_ += (bytes + 255) / 256 * 256;
    return here;
  }
  size_t total() const { return at_; }

 private:
  size_t at_ = 0;
};

// Where each array sits in the input block (host mirror and device copy alike).
struct InLayout {
  size_t rows, bias_offsets, stop_offsets, bias_ids, bias_values, stop_ids, slots, gather, total;
  explicit InLayout(int64_t max_rows) {
    const size_t n = size_t(max_rows);
    Bump b;
    rows = b.Take(n * sizeof(SampleRow));
    bias_offsets = b.Take((n + 1) * sizeof(int32_t));
    stop_offsets = b.Take((n + 1) * sizeof(int32_t));
    bias_ids = b.Take(n * kMaxLogitBiasEntries * sizeof(int32_t));
    bias_values = b.Take(n * kMaxLogitBiasEntries * sizeof(float));
    stop_ids = b.Take(n * kMaxStopTokenIds * sizeof(int32_t));
    slots = b.Take(n * sizeof(int32_t));
    gather = b.Take(n * sizeof(int32_t));
    total = b.total();
  }
};

// Where each output sits in the output block.
struct OutLayout {
  size_t tokens, logprob, top_ids, top_logprobs, total;
  explicit OutLayout(int64_t max_rows) {
    const size_t n = size_t(max_rows);
    Bump b;
    tokens = b.Take(n * sizeof(int32_t));
    logprob = b.Take(n * sizeof(float));
    top_ids = b.Take(n * kernels::kMaxTopLogprobs * sizeof(int32_t));
    top_logprobs = b.Take(n * kernels::kMaxTopLogprobs * sizeof(float));
    total = b.total();
  }
};

template <typename T>
T* At(const void* base, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(const_cast<void*>(base)) + offset);
}

bool UsesPenalties(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceSampler>> DeviceSampler::Create(kernels::Backend& backend,
                                                                     int64_t vocab,
                                                                     int64_t max_rows,
                                                                     int64_t max_len,
                                                                     std::vector<int32_t> eos_ids) {
  if (vocab <= 0 || max_rows <= 0 || max_rows > 65535 || max_len <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("DeviceSampler: vocab ", vocab, " and max_rows ", max_rows, " out of range"));
  }
  std::unique_ptr<DeviceSampler> s(
      new DeviceSampler(backend, vocab, max_rows, max_len, std::move(eos_ids)));
  RETURN_IF_ERROR(s->Allocate());
  return s;
}

absl::Status DeviceSampler::Allocate() {
  const InLayout in(max_rows_);
  const OutLayout out(max_rows_);
  ASSIGN_OR_RETURN(host_in_, be_.AllocateHost(in.total));
  ASSIGN_OR_RETURN(host_out_, be_.AllocateHost(out.total));
  ASSIGN_OR_RETURN(dev_in_, be_.Allocate(in.total));
  ASSIGN_OR_RETURN(dev_out_, be_.Allocate(out.total));
  ASSIGN_OR_RETURN(workspace_, be_.Allocate(std::max<size_t>(
                                   1, kernels::SampleWorkspaceBytes(max_rows_, vocab_))));
  ASSIGN_OR_RETURN(eos_, be_.Allocate(std::max<size_t>(1, eos_ids_.size()) * sizeof(int32_t)));
  ASSIGN_OR_RETURN(gathered_, be_.Allocate(size_t(max_rows_ * vocab_) * sizeof(float)));
  kernels::Stream& st = be_.default_stream();
  if (!eos_ids_.empty()) {
    RETURN_IF_ERROR(
        be_.CopyToDevice(eos_.data(), eos_ids_.data(), eos_ids_.size() * sizeof(int32_t), st));
  }
  const size_t words = size_t(kernels::SampleMaskWords(vocab_));
  ASSIGN_OR_RETURN(prompt_seen_, be_.Allocate(size_t(max_rows_) * words * sizeof(uint32_t)));
  ASSIGN_OR_RETURN(output_counts_, be_.Allocate(size_t(max_rows_ * vocab_) * sizeof(int32_t)));
  // Slots, two offset arrays and the ids of a full step of rebuilds (ResetSlots' layout).
  ASSIGN_OR_RETURN(
      reset_ids_, be_.Allocate(size_t(3 * max_rows_ + 2 + max_rows_ * max_len_) * sizeof(int32_t)));
  for (int32_t slot = int32_t(max_rows_) - 1; slot >= 0; --slot) free_slots_.push_back(slot);
  return st.Synchronize();
}

int32_t DeviceSampler::SlotFor(uint64_t seq_id, const std::vector<uint64_t>& busy, bool* fresh) {
  if (auto it = slot_of_.find(seq_id); it != slot_of_.end()) {
    *fresh = false;
    lru_.splice(lru_.end(), lru_, lru_at_[seq_id]);  // most recently used now
    return it->second;
  }
  *fresh = true;
  int32_t slot = -1;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    // Every slot is held: take the least recently used one not in this step. There is one:
    // a step samples at most max_rows rows, and this sequence holds none.
    for (auto it = lru_.begin(); it != lru_.end(); ++it) {
      if (std::find(busy.begin(), busy.end(), *it) != busy.end()) continue;
      slot = slot_of_[*it];
      slot_of_.erase(*it);
      lru_at_.erase(*it);
      lru_.erase(it);
      break;
    }
  }
  slot_of_[seq_id] = slot;
  lru_at_[seq_id] = lru_.insert(lru_.end(), seq_id);
  return slot;
}

void DeviceSampler::Release(uint64_t seq_id) {
  auto it = slot_of_.find(seq_id);
  if (it == slot_of_.end()) return;
  free_slots_.push_back(it->second);
  lru_.erase(lru_at_[seq_id]);
  lru_at_.erase(seq_id);
  slot_of_.erase(it);
}

absl::Status DeviceSampler::ResetSlots(const std::vector<int32_t>& slots,
                                       const std::vector<const SampleInput*>& inputs,
                                       kernels::Stream& stream) {
  // One upload: slots | prompt offsets | output offsets | prompt ids | output ids.
  const size_t n = slots.size();
  std::vector<int32_t> host(slots.begin(), slots.end());
  const size_t prompt_offsets = host.size();
  host.push_back(0);
  for (const SampleInput* in : inputs) host.push_back(host.back() + int32_t(in->prompt.size()));
  const size_t output_offsets = host.size();
  host.push_back(0);
  for (const SampleInput* in : inputs) host.push_back(host.back() + int32_t(in->output.size()));
  const size_t prompt_ids = host.size();
  for (const SampleInput* in : inputs)
    host.insert(host.end(), in->prompt.begin(), in->prompt.end());
  const size_t output_ids = host.size();
  for (const SampleInput* in : inputs)
    host.insert(host.end(), in->output.begin(), in->output.end());
  const size_t bytes = host.size() * sizeof(int32_t);
  if (reset_ids_.bytes() < bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DeviceSampler: ", n, " slot rebuilds of ", host.size(), " ids exceed the reserved ",
        reset_ids_.bytes() / sizeof(int32_t), " (sequences longer than max_len?)"));
  }
  RETURN_IF_ERROR(be_.CopyToDevice(reset_ids_.data(), host.data(), bytes, stream));
  const int32_t* d = reset_ids_.as<int32_t>();
  kernels::PenaltyResetArgs a;
  a.prompt_seen = prompt_seen_.as<uint32_t>();
  a.output_counts = output_counts_.as<int32_t>();
  a.num_slots = max_rows_;
  a.vocab = vocab_;
  a.slots = d;
  a.num_resets = int64_t(n);
  a.prompt_offsets = d + prompt_offsets;
  a.prompt_ids = d + prompt_ids;
  a.output_offsets = d + output_offsets;
  a.output_ids = d + output_ids;
  return be_.ResetPenaltySlots(a, stream);
}

absl::StatusOr<std::vector<SampleResult>> DeviceSampler::Sample(
    const kernels::Tensor& logits, absl::Span<const int32_t> logit_rows,
    absl::Span<const SampleInput> inputs, kernels::Stream& stream) {
  const int64_t n = int64_t(inputs.size());
  std::vector<SampleResult> results(inputs.size());
  if (n == 0) return results;
  if (n > max_rows_) {
    return absl::InvalidArgumentError(
        absl::StrCat("DeviceSampler: ", n, " rows exceed max_rows ", max_rows_));
  }
  if (logit_rows.size() != inputs.size()) {
    return absl::InvalidArgumentError("DeviceSampler: one logits row per input");
  }
  if (logits.dtype != kernels::DType::kF32 || logits.cols != vocab_) {
    return absl::InvalidArgumentError("DeviceSampler: logits must be fp32 [rows, vocab]");
  }
  bool identity = true;
  for (int64_t i = 0; i < n; ++i) {
    if (logit_rows[size_t(i)] < 0 || logit_rows[size_t(i)] >= logits.rows) {
      return absl::InvalidArgumentError("DeviceSampler: a logits row is out of range");
    }
    identity &= logit_rows[size_t(i)] == i;
  }
  const InLayout in(max_rows_);
  const OutLayout out(max_rows_);
  void* h = host_in_.data();
  SampleRow* rows = At<SampleRow>(h, in.rows);
  int32_t* bias_offsets = At<int32_t>(h, in.bias_offsets);
  int32_t* stop_offsets = At<int32_t>(h, in.stop_offsets);
  int32_t* bias_ids = At<int32_t>(h, in.bias_ids);
  float* bias_values = At<float>(h, in.bias_values);
  int32_t* stop_ids = At<int32_t>(h, in.stop_ids);
  int32_t* slots = At<int32_t>(h, in.slots);

  std::vector<uint64_t> busy;
  busy.reserve(inputs.size());
  for (const SampleInput& x : inputs) busy.push_back(x.seq_id);
  std::vector<int32_t> fresh_slots;
  std::vector<const SampleInput*> fresh_inputs;
  bool any_slot = false, any_logprobs = false;
  int32_t num_bias = 0, num_stop = 0;
  bias_offsets[0] = stop_offsets[0] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const SampleInput& x = inputs[size_t(i)];
    const SamplingParams& p = *x.params;
    SampleRow& r = rows[i];
    r = SampleRow();
    r.temperature = p.temperature;
    r.top_k = p.top_k;
    r.top_p = p.top_p;
    r.min_p = p.min_p;
    r.repetition_penalty = p.repetition_penalty;
    r.frequency_penalty = p.frequency_penalty;
    r.presence_penalty = p.presence_penalty;
    r.logprobs = p.logprobs;
    r.mask_eos_and_stop = int64_t(x.output.size()) < int64_t(p.min_tokens) ? 1 : 0;
    r.rng_key = x.rng->key();
    r.rng_stream = x.rng->stream();
    r.rng_counter = x.rng->draws();
    if (UsesPenalties(p)) {
      bool fresh = false;
      r.penalty_slot = SlotFor(x.seq_id, busy, &fresh);
      if (fresh) {
        fresh_slots.push_back(r.penalty_slot);
        fresh_inputs.push_back(&x);
      }
      any_slot = true;
    }
    slots[i] = r.penalty_slot;
    any_logprobs |= p.logprobs >= 0;
    for (const auto& [id, bias] : p.logit_bias) {
      bias_ids[num_bias] = id;
      bias_values[num_bias] = bias;
      ++num_bias;
    }
    bias_offsets[i + 1] = num_bias;
    for (int32_t id : p.stop_token_ids) stop_ids[num_stop++] = id;
    stop_offsets[i + 1] = num_stop;
  }
  if (!fresh_slots.empty()) RETURN_IF_ERROR(ResetSlots(fresh_slots, fresh_inputs, stream));

  // Up: only what this step uses of each array.
  void* d = dev_in_.data();
  auto up = [&](size_t offset, size_t bytes) -> absl::Status {
    if (bytes == 0) return absl::OkStatus();
    return be_.CopyToDevice(At<char>(d, offset), At<char>(h, offset), bytes, stream);
  };
  RETURN_IF_ERROR(up(in.rows, size_t(n) * sizeof(SampleRow)));
  RETURN_IF_ERROR(up(in.bias_offsets, size_t(n + 1) * sizeof(int32_t)));
  RETURN_IF_ERROR(up(in.stop_offsets, size_t(n + 1) * sizeof(int32_t)));
  RETURN_IF_ERROR(up(in.bias_ids, size_t(num_bias) * sizeof(int32_t)));
  RETURN_IF_ERROR(up(in.bias_values, size_t(num_bias) * sizeof(float)));
  RETURN_IF_ERROR(up(in.stop_ids, size_t(num_stop) * sizeof(int32_t)));
  RETURN_IF_ERROR(up(in.slots, size_t(n) * sizeof(int32_t)));
  kernels::Tensor rows_view = logits;
  if (!identity) {
    // The kernel reads rows 0..n-1: gather the ones these inputs name.
    std::copy(logit_rows.begin(), logit_rows.end(), At<int32_t>(h, in.gather));
    RETURN_IF_ERROR(up(in.gather, size_t(n) * sizeof(int32_t)));
    rows_view = kernels::View(gathered_.data(), kernels::DType::kF32, n, vocab_);
    RETURN_IF_ERROR(be_.GatherRows({logits, At<int32_t>(d, in.gather), rows_view}, stream));
  }

  void* o = dev_out_.data();
  kernels::SampleArgs a;
  a.logits = static_cast<const float*>(rows_view.data);
  a.logits_stride = rows_view.stride;
  a.rows = At<SampleRow>(d, in.rows);
  a.num_rows = n;
  a.vocab = vocab_;
  a.bias_offsets = At<int32_t>(d, in.bias_offsets);
  a.bias_ids = At<int32_t>(d, in.bias_ids);
  a.bias_values = At<float>(d, in.bias_values);
  a.eos_ids = eos_.as<int32_t>();
  a.num_eos = int64_t(eos_ids_.size());
  a.stop_offsets = At<int32_t>(d, in.stop_offsets);
  a.stop_ids = At<int32_t>(d, in.stop_ids);
  a.prompt_seen = prompt_seen_.as<uint32_t>();
  a.output_counts = output_counts_.as<int32_t>();
  a.num_slots = max_rows_;
  a.workspace = workspace_.data();
  a.workspace_bytes = workspace_.bytes();
  a.tokens_out = At<int32_t>(o, out.tokens);
  a.logprob_out = At<float>(o, out.logprob);
  a.top_ids_out = At<int32_t>(o, out.top_ids);
  a.top_logprobs_out = At<float>(o, out.top_logprobs);
  RETURN_IF_ERROR(be_.Sample(a, stream));
  if (any_slot) {
    kernels::PenaltyUpdateArgs u;
    u.output_counts = output_counts_.as<int32_t>();
    u.num_slots = max_rows_;
    u.vocab = vocab_;
    u.slots = At<int32_t>(d, in.slots);
    u.tokens = a.tokens_out;
    u.num_rows = n;
    RETURN_IF_ERROR(be_.UpdatePenaltyState(u, stream));
  }

  // Down, in one copy (CopyToHost waits for it: the step's one synchronising copy): the tokens,
  // or the whole output block (a few KB) when a row asked for log-probs.
  void* ho = host_out_.data();
  const size_t down = any_logprobs ? out.total : size_t(n) * sizeof(int32_t);
  RETURN_IF_ERROR(be_.CopyToHost(At<char>(ho, out.tokens), At<char>(o, out.tokens), down, stream));

  const int32_t* tokens = At<int32_t>(ho, out.tokens);
  const float* logprob = At<float>(ho, out.logprob);
  const int32_t* top_ids = At<int32_t>(ho, out.top_ids);
  const float* top_lp = At<float>(ho, out.top_logprobs);
  for (int64_t i = 0; i < n; ++i) {
    const SampleInput& x = inputs[size_t(i)];
    SampleResult& r = results[size_t(i)];
    r.token = tokens[i];
    const int32_t k = x.params->logprobs;
    if (k >= 0) {
      r.logprob = logprob[i];
      for (int32_t j = 0; j < std::min(k, kernels::kMaxTopLogprobs); ++j) {
        const int32_t id = top_ids[i * kernels::kMaxTopLogprobs + j];
        if (id < 0) break;
        r.top.push_back({id, top_lp[i * kernels::kMaxTopLogprobs + j]});
      }
    }
    // A sampled row drew one Philox block; a greedy one none (kernels/sampling.h).
    if (x.params->temperature > 0.0f) x.rng->Advance(1);
  }
  return results;
}

}  // namespace arbor::engine
