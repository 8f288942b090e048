// The sampling op (kernels/sampling.h) on every backend present: the CPU reference always, the
// CUDA kernel where a GPU is visible ([gpu] cases). Each case draws fresh random rows of an odd
// vocabulary size with random knobs (greedy, temperature, top-k with ties, top-p, min-p,
// penalties over random histories, logit_bias, min_tokens, hand-made allowed masks, NaN and
// -inf logits, everything-masked rows), poisons the outputs, and checks:
//   - the CPU reference equals the engine's host Sample() on the same inputs, row by row (token,
//     top ids and log-probs exactly): the op and the engine agree;
//   - the CUDA kernel equals the CPU reference: token ids and top ids exactly, log-probs within
//     1e-5, and the penalty-state ops (reset, update) exactly.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_params.h"
#include "engine/sampling/sequence_rng.h"
#include "kernels/cpu/sampling.h"
#include "kernels/cuda/sampling.h"
#include "kernels/sampling.h"

namespace arbor::testing {
namespace {

using kernels::kMaxTopLogprobs;
using kernels::SampleRow;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// One batch of rows on the host, in the op's layout. Row r's penalty history lives in slot r.
struct Batch {
  int64_t rows = 0, vocab = 0, stride = 0;
  std::vector<float> logits;  // [rows, stride]
  std::vector<SampleRow> params;
  std::vector<int32_t> bias_offsets{0}, bias_ids;
  std::vector<float> bias_values;
  std::vector<int32_t> eos;
  std::vector<int32_t> stop_offsets{0}, stop_ids;
  std::vector<std::vector<int32_t>> prompts, outputs;  // per row
  std::vector<int32_t> min_tokens;                     // per row (engine side)
  std::vector<uint32_t> allowed;                       // [rows, words] or empty
};

struct Outputs {
  std::vector<int32_t> tokens;
  std::vector<float> logprob;
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
};

int64_t Words(int64_t vocab) { return kernels::SampleMaskWords(vocab); }

template <typename T>
T Pick(std::mt19937_64& rng, std::initializer_list<T> options) {
  std::uniform_int_distribution<size_t> d(0, options.size() - 1);
  return *(options.begin() + d(rng));
}

// Fresh random rows: logits N(0, sigma) (sometimes on a coarse grid, so many exact ties), a few
// NaN / -inf / +inf, random knobs and histories. `kind` 0 mixes everything; the special rows
// (every token masked, all NaN) appear in every case.
Batch RandomBatch(std::mt19937_64& rng, int64_t rows, int64_t vocab, int64_t pad) {
  Batch b;
  b.rows = rows;
  b.vocab = vocab;
  b.stride = vocab + pad;
  b.logits.assign(size_t(rows * b.stride), 7.0f);  // padding must never be read as a logit
  std::uniform_int_distribution<int32_t> any_id(0, int32_t(vocab - 1));
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  b.eos = {any_id(rng), any_id(rng)};
  const int64_t words = Words(vocab);
  const bool with_mask = unit(rng) < 0.7f;
  if (with_mask) b.allowed.assign(size_t(rows * words), 0xffffffffu);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = b.logits.data() + r * b.stride;
    const float sigma = Pick(rng, {1.0f, 2.5f, 5.0f});
    std::normal_distribution<float> normal(0.0f, sigma);
    const bool grid = unit(rng) < 0.3f;
    for (int64_t i = 0; i < vocab; ++i) {
      const float x = normal(rng);
      row[i] = grid ? std::round(x * 2.0f) / 2.0f : x;
    }
    const int specials = int(unit(rng) * 4.0f);
    for (int s = 0; s < specials; ++s) row[any_id(rng)] = Pick(rng, {kNaN, -kInf, -kInf, kNaN});
    if (unit(rng) < 0.03f) row[any_id(rng)] = kInf;
    if (r == 1 % rows && unit(rng) < 0.5f) std::fill(row, row + vocab, kNaN);

    SampleRow p;
    p.temperature = Pick(rng, {0.0f, 0.3f, 0.7f, 1.0f, 1.0f, 1.5f});
    p.top_k = Pick<int32_t>(rng, {-1, -1, 0, 1, 2, 5, 50, int32_t(vocab - 1), int32_t(vocab + 3)});
    p.top_p = Pick(rng, {1.0f, 1.0f, 0.95f, 0.9f, 0.5f, 0.1f});
    p.min_p = Pick(rng, {0.0f, 0.0f, 0.05f, 0.3f});
    if (unit(rng) < 0.5f) {
      p.repetition_penalty = Pick(rng, {1.0f, 1.1f, 0.8f, 2.0f});
      p.frequency_penalty = Pick(rng, {0.0f, 0.3f, -0.5f, 2.0f});
      p.presence_penalty = Pick(rng, {0.0f, 0.2f, -1.0f});
    }
    p.logprobs = Pick<int32_t>(rng, {-1, -1, 0, 1, 5, 20});
    p.penalty_slot = int32_t(r);
    p.rng_key = rng();
    p.rng_stream = rng() % 8;
    p.rng_counter = rng() % 1000;

    // History: a prompt and an output of random length (ids with repeats).
    std::vector<int32_t> prompt(size_t(unit(rng) * 60.0f)), output(size_t(unit(rng) * 30.0f));
    for (auto& t : prompt) t = any_id(rng);
    for (auto& t : output) t = unit(rng) < 0.3f && !prompt.empty() ? prompt[0] : any_id(rng);
    b.prompts.push_back(prompt);
    b.outputs.push_back(output);

    // min_tokens: masked while not reached.
    const bool masking = unit(rng) < 0.3f;
    p.mask_eos_and_stop = masking ? 1 : 0;
    b.min_tokens.push_back(masking ? int32_t(output.size()) + 1 : 0);
    const int stops = int(unit(rng) * 3.0f);
    for (int s = 0; s < stops; ++s) b.stop_ids.push_back(any_id(rng));
    b.stop_offsets.push_back(int32_t(b.stop_ids.size()));

    // logit_bias: distinct ids, some large enough to win.
    const int biases = unit(rng) < 0.4f ? 1 + int(unit(rng) * 8.0f) : 0;
    std::vector<int32_t> ids;
    for (int e = 0; e < biases; ++e) {
      const int32_t id = any_id(rng);
      if (std::find(ids.begin(), ids.end(), id) != ids.end()) continue;
      ids.push_back(id);
      b.bias_ids.push_back(id);
      b.bias_values.push_back(Pick(rng, {-100.0f, -3.5f, 0.25f, 4.0f, 100.0f}));
    }
    b.bias_offsets.push_back(int32_t(b.bias_ids.size()));

    // Hand-made masks: half the tokens, a few tokens, or none at all.
    if (with_mask) {
      uint32_t* m = b.allowed.data() + r * words;
      const int shape = int(unit(rng) * 4.0f);
      if (shape == 1) {
        for (int64_t w = 0; w < words; ++w) m[w] = uint32_t(rng());
      } else if (shape == 2) {
        std::fill(m, m + words, 0u);
        for (int e = 0; e < 3; ++e) {
          const int32_t t = any_id(rng);
          m[t >> 5] |= 1u << (t & 31);
        }
      } else if (shape == 3 && r == 0) {
        std::fill(m, m + words, 0u);  // everything masked
      }
    }
    b.params.push_back(p);
  }
  return b;
}

void PoisonOutputs(Outputs& o, int64_t rows) {
  o.tokens.assign(size_t(rows), 0x7f7f7f7f);
  o.logprob.assign(size_t(rows), kNaN);
  o.top_ids.assign(size_t(rows * kMaxTopLogprobs), 0x7f7f7f7f);
  o.top_logprobs.assign(size_t(rows * kMaxTopLogprobs), kNaN);
}

// The penalty state of the batch, built by the op (ResetPenaltySlotsCpu) from the histories.
void PenaltyState(const Batch& b, std::vector<uint32_t>* seen, std::vector<int32_t>* counts) {
  seen->assign(size_t(b.rows * Words(b.vocab)), 0xdeadbeefu);
  counts->assign(size_t(b.rows * b.vocab), -5);
  std::vector<int32_t> slots(size_t(b.rows)), p_off{0}, p_ids, o_off{0}, o_ids;
  std::iota(slots.begin(), slots.end(), 0);
  for (int64_t r = 0; r < b.rows; ++r) {
    p_ids.insert(p_ids.end(), b.prompts[r].begin(), b.prompts[r].end());
    o_ids.insert(o_ids.end(), b.outputs[r].begin(), b.outputs[r].end());
    p_off.push_back(int32_t(p_ids.size()));
    o_off.push_back(int32_t(o_ids.size()));
  }
  kernels::PenaltyResetArgs a;
  a.prompt_seen = seen->data();
  a.output_counts = counts->data();
  a.num_slots = b.rows;
  a.vocab = b.vocab;
  a.slots = slots.data();
  a.num_resets = b.rows;
  a.prompt_offsets = p_off.data();
  a.prompt_ids = p_ids.data();
  a.output_offsets = o_off.data();
  a.output_ids = o_ids.data();
  REQUIRE(kernels::ResetPenaltySlotsCpu(a).ok());
}

Outputs RunCpu(const Batch& b) {
  std::vector<uint32_t> seen;
  std::vector<int32_t> counts;
  PenaltyState(b, &seen, &counts);
  Outputs o;
  PoisonOutputs(o, b.rows);
  kernels::SampleArgs a;
  a.logits = b.logits.data();
  a.logits_stride = b.stride;
  a.rows = b.params.data();
  a.num_rows = b.rows;
  a.vocab = b.vocab;
  a.bias_offsets = b.bias_offsets.data();
  a.bias_ids = b.bias_ids.data();
  a.bias_values = b.bias_values.data();
  a.eos_ids = b.eos.data();
  a.num_eos = int64_t(b.eos.size());
  a.stop_offsets = b.stop_offsets.data();
  a.stop_ids = b.stop_ids.data();
  a.prompt_seen = seen.data();
  a.output_counts = counts.data();
  a.num_slots = b.rows;
  a.allowed = b.allowed.empty() ? nullptr : b.allowed.data();
  a.tokens_out = o.tokens.data();
  a.logprob_out = o.logprob.data();
  a.top_ids_out = o.top_ids.data();
  a.top_logprobs_out = o.top_logprobs.data();
  const absl::Status s = kernels::SampleCpu(a);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return o;
}

// The same rows through the engine's host sampler: SamplingParams and token lists instead of
// the op's device layout.
void CheckEngineAgrees(const Batch& b, const Outputs& cpu) {
  const int64_t words = Words(b.vocab);
  for (int64_t r = 0; r < b.rows; ++r) {
    INFO("row " << r);
    const SampleRow& row = b.params[r];
    engine::SamplingParams p;
    p.temperature = row.temperature;
    p.top_k = row.top_k;
    p.top_p = row.top_p;
    p.min_p = row.min_p;
    p.repetition_penalty = row.repetition_penalty;
    p.frequency_penalty = row.frequency_penalty;
    p.presence_penalty = row.presence_penalty;
    p.logprobs = row.logprobs;
    p.min_tokens = b.min_tokens[r];
    for (int32_t e = b.bias_offsets[r]; e < b.bias_offsets[r + 1]; ++e) {
      p.logit_bias.emplace_back(b.bias_ids[e], b.bias_values[e]);
    }
    p.stop_token_ids.assign(b.stop_ids.begin() + b.stop_offsets[r],
                            b.stop_ids.begin() + b.stop_offsets[r + 1]);
    engine::SequenceRng rng(row.rng_key, row.rng_stream);
    rng.Advance(row.rng_counter);
    absl::Span<const uint32_t> allowed;
    if (!b.allowed.empty()) allowed = {b.allowed.data() + r * words, size_t(words)};
    const engine::SampleResult got =
        engine::Sample({b.logits.data() + r * b.stride, size_t(b.vocab)}, p, b.prompts[r],
                       b.outputs[r], b.eos, rng, allowed);
    CHECK(got.token == cpu.tokens[r]);
    CHECK(rng.draws() == row.rng_counter + (row.temperature > 0.0f ? 1 : 0));
    if (row.logprobs >= 0) {
      CHECK(got.logprob == cpu.logprob[r]);
      REQUIRE(got.top.size() == size_t(std::min<int64_t>(row.logprobs, b.vocab)));
      for (size_t j = 0; j < got.top.size(); ++j) {
        CHECK(got.top[j].token == cpu.top_ids[r * kMaxTopLogprobs + j]);
        CHECK(got.top[j].logprob == cpu.top_logprobs[r * kMaxTopLogprobs + j]);
      }
    }
  }
}

// Every output written (no poison left): tokens in range, top ids in range or -1 past the count.
void CheckWritten(const Batch& b, const Outputs& o) {
  for (int64_t r = 0; r < b.rows; ++r) {
    INFO("row " << r);
    CHECK(o.tokens[r] >= 0);
    CHECK(o.tokens[r] < b.vocab);
    CHECK(!std::isnan(o.logprob[r]));
    const int64_t n = std::min<int64_t>(std::max(b.params[r].logprobs, 0), b.vocab);
    for (int64_t j = 0; j < kMaxTopLogprobs; ++j) {
      const int32_t id = o.top_ids[r * kMaxTopLogprobs + j];
      CHECK(!std::isnan(o.top_logprobs[r * kMaxTopLogprobs + j]));
      if (j < n) {
        CHECK(id >= 0);
        CHECK(id < b.vocab);
      } else {
        CHECK(id == -1);
      }
    }
  }
}

struct SizeCase {
  int64_t rows, vocab, pad;
};

const std::vector<SizeCase>& Sizes() {
  static const std::vector<SizeCase> sizes = {
      {40, 7, 0}, {40, 1001, 3}, {12, 32000, 0}, {6, 128256, 0}, {6, 151936, 5},
  };
  return sizes;
}

TEST_CASE("the CPU sampling op equals the engine's host sampler", "[kernels][sampling]") {
  std::mt19937_64 rng(Catch::rngSeed());
  for (const SizeCase& c : Sizes()) {
    INFO("rows " << c.rows << " vocab " << c.vocab);
    const Batch b = RandomBatch(rng, c.rows, c.vocab, c.pad);
    const Outputs cpu = RunCpu(b);
    CheckWritten(b, cpu);
    CheckEngineAgrees(b, cpu);
  }
}

TEST_CASE("the CPU sampling op rejects bad arguments", "[kernels][sampling]") {
  Batch b;
  std::mt19937_64 rng(3);
  b = RandomBatch(rng, 2, 7, 0);
  std::vector<int32_t> tokens(2);
  std::vector<float> logprob(2);
  std::vector<int32_t> top_ids(2 * kMaxTopLogprobs);
  std::vector<float> top_lp(2 * kMaxTopLogprobs);
  kernels::SampleArgs a;
  a.logits = b.logits.data();
  a.logits_stride = 7;
  a.rows = b.params.data();
  a.num_rows = 2;
  a.vocab = 7;
  a.tokens_out = tokens.data();
  a.logprob_out = logprob.data();
  a.top_ids_out = top_ids.data();
  a.top_logprobs_out = top_lp.data();
  for (auto& p : b.params) p.penalty_slot = -1;
  REQUIRE(kernels::SampleCpu(a).ok());
  auto with = [&](auto change) {
    kernels::SampleArgs bad = a;
    std::vector<SampleRow> rows = b.params;
    bad.rows = rows.data();
    change(bad, rows[1]);
    return kernels::SampleCpu(bad).code();
  };
  using Row = SampleRow;
  using Args = kernels::SampleArgs;
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  CHECK(with([](Args& x, Row&) { x.vocab = 0; }) == kInvalid);
  CHECK(with([](Args& x, Row&) { x.logits_stride = 6; }) == kInvalid);
  CHECK(with([](Args&, Row& r) { r.temperature = -1.0f; }) == kInvalid);
  CHECK(with([](Args&, Row& r) { r.temperature = kNaN; }) == kInvalid);
  CHECK(with([](Args&, Row& r) { r.top_p = 0.0f; }) == kInvalid);
  CHECK(with([](Args&, Row& r) { r.min_p = 1.5f; }) == kInvalid);
  CHECK(with([](Args&, Row& r) { r.repetition_penalty = 0.0f; }) == kInvalid);
  CHECK(with([](Args&, Row& r) { r.logprobs = 21; }) == kInvalid);
  CHECK(with([](Args&, Row& r) { r.penalty_slot = 0; }) == kInvalid);  // no slots
  std::vector<int32_t> off = {0, 0, 2}, ids = {3, 3};
  std::vector<float> vals = {1.0f, 2.0f};
  CHECK(with([&](Args& x, Row&) {
          x.bias_offsets = off.data();
          x.bias_ids = ids.data();
          x.bias_values = vals.data();
        }) == kInvalid);  // a repeated bias id
}

// ---- CUDA ----------------------------------------------------------------------------------------

// A device array that frees itself; REQUIREs every CUDA call.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : n_(std::max<size_t>(host.size(), 1)) {
    REQUIRE(cudaMalloc(&ptr_, n_ * sizeof(T)) == cudaSuccess);
    if (!host.empty()) {
      REQUIRE(cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice) ==
              cudaSuccess);
    }
  }
  DeviceArray(size_t n, int poison_byte) : n_(std::max<size_t>(n, 1)) {
    REQUIRE(cudaMalloc(&ptr_, n_ * sizeof(T)) == cudaSuccess);
    REQUIRE(cudaMemset(ptr_, poison_byte, n_ * sizeof(T)) == cudaSuccess);
  }
  ~DeviceArray() { cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() { return static_cast<T*>(ptr_); }
  std::vector<T> ToHost(size_t n) const {
    std::vector<T> out(n);
    REQUIRE(cudaMemcpy(out.data(), ptr_, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return out;
  }

 private:
  void* ptr_ = nullptr;
  size_t n_;
};

struct CudaRun {
  Outputs out;
  std::vector<uint32_t> seen;
  std::vector<int32_t> counts;  // after the penalty update with the sampled tokens
};

CudaRun RunCuda(const Batch& b) {
  const int64_t words = Words(b.vocab);
  // Penalty state through the device ops, from poisoned memory.
  DeviceArray<uint32_t> seen(size_t(b.rows * words), 0xab);
  DeviceArray<int32_t> counts(size_t(b.rows * b.vocab), 0xab);
  std::vector<int32_t> slots(size_t(b.rows)), p_off{0}, p_ids, o_off{0}, o_ids;
  std::iota(slots.begin(), slots.end(), 0);
  for (int64_t r = 0; r < b.rows; ++r) {
    p_ids.insert(p_ids.end(), b.prompts[r].begin(), b.prompts[r].end());
    o_ids.insert(o_ids.end(), b.outputs[r].begin(), b.outputs[r].end());
    p_off.push_back(int32_t(p_ids.size()));
    o_off.push_back(int32_t(o_ids.size()));
  }
  DeviceArray<int32_t> d_slots(slots), d_p_off(p_off), d_p_ids(p_ids), d_o_off(o_off),
      d_o_ids(o_ids);
  kernels::PenaltyResetArgs reset;
  reset.prompt_seen = seen.get();
  reset.output_counts = counts.get();
  reset.num_slots = b.rows;
  reset.vocab = b.vocab;
  reset.slots = d_slots.get();
  reset.num_resets = b.rows;
  reset.prompt_offsets = d_p_off.get();
  reset.prompt_ids = d_p_ids.get();
  reset.output_offsets = d_o_off.get();
  reset.output_ids = d_o_ids.get();
  REQUIRE(kernels::LaunchResetPenaltySlots(reset, nullptr) == cudaSuccess);

  DeviceArray<float> logits(b.logits);
  DeviceArray<SampleRow> params(b.params);
  DeviceArray<int32_t> bias_off(b.bias_offsets), bias_ids(b.bias_ids), eos(b.eos),
      stop_off(b.stop_offsets), stop_ids(b.stop_ids);
  DeviceArray<float> bias_vals(b.bias_values);
  DeviceArray<uint32_t> allowed(b.allowed);
  const size_t ws_bytes = kernels::SampleWorkspaceBytes(b.rows, b.vocab);
  DeviceArray<uint8_t> workspace(ws_bytes, 0xff);  // NaN-filled scratch
  DeviceArray<int32_t> tokens(size_t(b.rows), 0x7f);
  DeviceArray<float> logprob(size_t(b.rows), 0xff);  // NaN
  DeviceArray<int32_t> top_ids(size_t(b.rows * kMaxTopLogprobs), 0x7f);
  DeviceArray<float> top_lp(size_t(b.rows * kMaxTopLogprobs), 0xff);

  kernels::SampleArgs a;
  a.logits = logits.get();
  a.logits_stride = b.stride;
  a.rows = params.get();
  a.num_rows = b.rows;
  a.vocab = b.vocab;
  a.bias_offsets = bias_off.get();
  a.bias_ids = bias_ids.get();
  a.bias_values = bias_vals.get();
  a.eos_ids = eos.get();
  a.num_eos = int64_t(b.eos.size());
  a.stop_offsets = stop_off.get();
  a.stop_ids = stop_ids.get();
  a.prompt_seen = seen.get();
  a.output_counts = counts.get();
  a.num_slots = b.rows;
  a.allowed = b.allowed.empty() ? nullptr : allowed.get();
  a.workspace = workspace.get();
  a.workspace_bytes = ws_bytes;
  a.tokens_out = tokens.get();
  a.logprob_out = logprob.get();
  a.top_ids_out = top_ids.get();
  a.top_logprobs_out = top_lp.get();
  REQUIRE(kernels::LaunchSample(a, nullptr) == cudaSuccess);

  // The step's tokens go into the counts.
  kernels::PenaltyUpdateArgs update;
  update.output_counts = counts.get();
  update.num_slots = b.rows;
  update.vocab = b.vocab;
  update.slots = d_slots.get();
  update.tokens = tokens.get();
  update.num_rows = b.rows;
  REQUIRE(kernels::LaunchUpdatePenaltyState(update, nullptr) == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);

  CudaRun run;
  run.out.tokens = tokens.ToHost(size_t(b.rows));
  run.out.logprob = logprob.ToHost(size_t(b.rows));
  run.out.top_ids = top_ids.ToHost(size_t(b.rows * kMaxTopLogprobs));
  run.out.top_logprobs = top_lp.ToHost(size_t(b.rows * kMaxTopLogprobs));
  run.seen = seen.ToHost(size_t(b.rows * words));
  run.counts = counts.ToHost(size_t(b.rows * b.vocab));
  return run;
}

// Within 1e-5 (relative beyond 1); -inf only where the reference has -inf; never NaN.
bool LogprobsAgree(float got, float want) {
  if (std::isnan(got)) return false;
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= 1e-5f * std::max(1.0f, std::fabs(want));
}

void CheckCudaAgrees(const Batch& b, const Outputs& cpu, const CudaRun& gpu) {
  CheckWritten(b, gpu.out);
  for (int64_t r = 0; r < b.rows; ++r) {
    const SampleRow& p = b.params[r];
    INFO("row " << r << " T " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p
                << " min_p " << p.min_p << " logprobs " << p.logprobs);
    CHECK(gpu.out.tokens[r] == cpu.tokens[r]);
    CHECK(LogprobsAgree(gpu.out.logprob[r], cpu.logprob[r]));
    for (int64_t j = 0; j < kMaxTopLogprobs; ++j) {
      const size_t k = size_t(r * kMaxTopLogprobs + j);
      CHECK(gpu.out.top_ids[k] == cpu.top_ids[k]);
      CHECK(LogprobsAgree(gpu.out.top_logprobs[k], cpu.top_logprobs[k]));
    }
  }
  // Penalty state: the device reset from poison, then counted this step's tokens.
  std::vector<uint32_t> seen;
  std::vector<int32_t> counts;
  PenaltyState(b, &seen, &counts);
  std::vector<int32_t> slots(size_t(b.rows));
  std::iota(slots.begin(), slots.end(), 0);
  kernels::PenaltyUpdateArgs update;
  update.output_counts = counts.data();
  update.num_slots = b.rows;
  update.vocab = b.vocab;
  update.slots = slots.data();
  update.tokens = cpu.tokens.data();
  update.num_rows = b.rows;
  REQUIRE(kernels::UpdatePenaltyStateCpu(update).ok());
  CHECK(gpu.seen == seen);
  CHECK(gpu.counts == counts);
}

TEST_CASE("the CUDA sampling op equals the CPU reference", "[kernels][sampling][gpu]") {
  std::mt19937_64 rng(Catch::rngSeed() + 1);
  for (int round = 0; round < 3; ++round) {
    for (const SizeCase& c : Sizes()) {
      INFO("round " << round << " rows " << c.rows << " vocab " << c.vocab);
      const Batch b = RandomBatch(rng, c.rows, c.vocab, c.pad);
      const Outputs cpu = RunCpu(b);
      const CudaRun gpu = RunCuda(b);
      CheckCudaAgrees(b, cpu, gpu);
    }
  }
}

// Small enough for compute-sanitizer (memcheck, racecheck, synccheck) to finish quickly.
TEST_CASE("the CUDA sampling op on small vocabularies", "[kernels][sampling][gpu][small]") {
  std::mt19937_64 rng(Catch::rngSeed() + 3);
  for (const SizeCase& c : std::vector<SizeCase>{{9, 7, 0}, {5, 1001, 3}, {2, 5000, 0}}) {
    INFO("rows " << c.rows << " vocab " << c.vocab);
    const Batch b = RandomBatch(rng, c.rows, c.vocab, c.pad);
    CheckCudaAgrees(b, RunCpu(b), RunCuda(b));
  }
}

TEST_CASE("the CUDA sampling op on 1024 rows and many seeds of one row", "[kernels][sampling][gpu]") {
  std::mt19937_64 rng(Catch::rngSeed() + 2);
  Batch b = RandomBatch(rng, 1024, 1001, 0);
  // Rows 512.. repeat row 2's logits and knobs (sampled, with top-p) under fresh counters: the
  // draws land all over its distribution, boundaries included.
  for (int64_t r = 512; r < 1024; ++r) {
    std::copy(b.logits.begin() + 2 * b.stride, b.logits.begin() + 3 * b.stride,
              b.logits.begin() + r * b.stride);
    SampleRow p = b.params[2];
    p.temperature = 1.0f;
    p.top_p = 0.9f;
    p.penalty_slot = int32_t(r);
    p.rng_counter = uint64_t(r);
    b.params[r] = p;
    b.prompts[r] = b.prompts[2];
    b.outputs[r] = b.outputs[2];
    b.min_tokens[r] = b.min_tokens[2];
  }
  const Outputs cpu = RunCpu(b);
  const CudaRun gpu = RunCuda(b);
  CheckCudaAgrees(b, cpu, gpu);
}

TEST_CASE("LaunchSample rejects what it cannot run", "[kernels][sampling][gpu]") {
  kernels::SampleArgs a;
  CHECK(kernels::LaunchSample(a, nullptr) == cudaSuccess);  // no rows: nothing to do
  a.num_rows = 1;
  a.vocab = 7;
  CHECK(kernels::LaunchSample(a, nullptr) == cudaErrorInvalidValue);  // null pointers
}

}  // namespace
}  // namespace arbor::testing
