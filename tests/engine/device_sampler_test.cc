// DeviceSampler (engine/runner/device_sampler.h) against the host sampler (engine/sampling/
// sampler.h), step after step: the same tokens and log-probs for sequences with every knob
// (penalties kept on the device, logit_bias, min_tokens masking, top-k/p, min-p, seeds), rows
// shared by forks, more sequences over time than penalty slots, and the Philox streams left
// where the host sampler leaves them. On the CPU backend always, on CUDA where a GPU is ([gpu]).
#include "engine/runner/device_sampler.h"

#include <catch2/catch.hpp>
#include <random>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace arbor::engine {
namespace {

struct Seq {
  uint64_t id;
  SamplingParams params;
  std::vector<int32_t> prompt, output;
  SequenceRng device_rng, host_rng;
};

SamplingParams RandomParams(std::mt19937_64& rng, int64_t vocab) {
  SamplingParams p;
  std::uniform_int_distribution<int> pick(0, 9);
  p.temperature = pick(rng) < 2 ? 0.0f : 0.5f + 0.1f * float(pick(rng));
  if (pick(rng) < 4) p.top_k = 1 + pick(rng) * 7;
  if (pick(rng) < 4) p.top_p = 0.5f + 0.05f * float(pick(rng));
  if (pick(rng) < 3) p.min_p = 0.01f * float(pick(rng));
  if (pick(rng) < 4) p.repetition_penalty = 1.3f;
  if (pick(rng) < 4) p.frequency_penalty = 0.5f;
  if (pick(rng) < 4) p.presence_penalty = -0.7f;
  if (pick(rng) < 3) p.min_tokens = 3;
  if (pick(rng) < 3) p.stop_token_ids = {int32_t(vocab - 1), 5};
  if (pick(rng) < 3) p.logit_bias = {{7, 3.0f}, {int32_t(vocab / 2), -5.0f}};
  if (pick(rng) < 5) p.logprobs = pick(rng);
  if (pick(rng) < 5) p.seed = rng();
  return p;
}

// Runs `steps` steps of `seqs` sequences, `live` at a time, each step's logits drawn fresh,
// and checks every token against the host sampler.
void Check(kernels::Backend& be, int64_t vocab, int64_t max_rows, int steps, int total) {
  std::mt19937_64 rng(Catch::rngSeed() + uint64_t(vocab));
  const std::vector<int32_t> eos = {2};
  auto sampler = DeviceSampler::Create(be, vocab, max_rows, 512, eos);
  REQUIRE(sampler.ok());
  std::uniform_real_distribution<float> logit(-6.0f, 6.0f);
  std::uniform_int_distribution<int32_t> id(0, int32_t(vocab - 1));
  std::vector<std::unique_ptr<Seq>> seqs;
  uint64_t next_id = 1;
  int started = 0;
  auto add = [&] {
    const uint64_t stream = rng() % 4;
    auto s = std::make_unique<Seq>(Seq{next_id++,
                                       RandomParams(rng, vocab),
                                       {},
                                       {},
                                       SequenceRng(std::nullopt, stream),
                                       SequenceRng(std::nullopt, stream)});
    // Unseeded streams: one key for both copies.
    s->host_rng = s->device_rng;
    if (s->params.seed) {
      s->device_rng = SequenceRng(s->params.seed, stream);
      s->host_rng = SequenceRng(s->params.seed, stream);
    }
    for (int i = 0; i < 5 + int(rng() % 20); ++i) s->prompt.push_back(id(rng));
    seqs.push_back(std::move(s));
    ++started;
  };
  for (int step = 0; step < steps; ++step) {
    // Keep up to max_rows live; retire one now and then (its slot frees or ages out).
    while (int64_t(seqs.size()) < max_rows && started < total) add();
    if (seqs.empty()) break;
    if (step % 3 == 2 && seqs.size() > 1) {
      if (rng() % 2 == 0) (*sampler)->Release(seqs.front()->id);
      seqs.erase(seqs.begin());
    }
    // Logits rows: one per sequence, but the first two sequences share a row now and then (a
    // fork's first token).
    const int64_t n = int64_t(seqs.size());
    const bool share = n >= 2 && step % 4 == 1;
    const int64_t num_rows = share ? n - 1 : n;
    std::vector<float> host_logits(size_t(num_rows * vocab));
    for (float& x : host_logits) x = logit(rng);
    std::vector<int32_t> rows(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      rows[size_t(i)] = int32_t(share ? std::max<int64_t>(0, i - 1) : i);
    auto dev = be.Allocate(host_logits.size() * sizeof(float));
    REQUIRE(dev.ok());
    REQUIRE(be.CopyToDevice(dev->data(), host_logits.data(), host_logits.size() * sizeof(float),
                            be.default_stream())
                .ok());
    std::vector<SampleInput> inputs;
    for (auto& s : seqs)
      inputs.push_back({s->id, &s->params, s->prompt, s->output, &s->device_rng});
    auto got = (*sampler)->Sample(kernels::View(dev->data(), kernels::DType::kF32, num_rows, vocab),
                                  rows, inputs, be.default_stream());
    INFO(got.status().ToString());
    REQUIRE(got.ok());
    REQUIRE(got->size() == size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      Seq& s = *seqs[size_t(i)];
      INFO("step " << step << ", sequence " << s.id);
      const float* row = host_logits.data() + size_t(rows[size_t(i)]) * size_t(vocab);
      const SampleResult want =
          engine::Sample({row, size_t(vocab)}, s.params, s.prompt, s.output, eos, s.host_rng);
      const SampleResult& r = (*got)[size_t(i)];
      REQUIRE(r.token == want.token);
      CHECK(s.device_rng.draws() == s.host_rng.draws());
      if (s.params.logprobs >= 0) {
        CHECK(r.logprob == Approx(want.logprob).margin(1e-5));
        REQUIRE(r.top.size() == want.top.size());
        for (size_t j = 0; j < r.top.size(); ++j) {
          CHECK(r.top[j].token == want.top[j].token);
          CHECK(r.top[j].logprob == Approx(want.top[j].logprob).margin(1e-5));
        }
      } else {
        CHECK(r.top.empty());
      }
      s.output.push_back(r.token);
    }
  }
  CHECK((*sampler)->slots_in_use() <= max_rows);
}

TEST_CASE("the device sampler draws what the host sampler draws, step after step", "[engine]") {
  kernels::CpuBackend cpu;
  Check(cpu, 97, 8, 40, 30);
  Check(cpu, 1206, 4, 30, 20);
  Check(cpu, 32003, 16, 6, 20);
}

TEST_CASE("the device sampler refuses what it cannot take", "[engine]") {
  kernels::CpuBackend cpu;
  CHECK_FALSE(DeviceSampler::Create(cpu, 0, 4, 8, {}).ok());
  CHECK_FALSE(DeviceSampler::Create(cpu, 10, 0, 8, {}).ok());
  CHECK_FALSE(DeviceSampler::Create(cpu, 10, 2, 0, {}).ok());
  auto s = DeviceSampler::Create(cpu, 10, 2, 8, {});
  REQUIRE(s.ok());
  auto buf = cpu.Allocate(3 * 10 * sizeof(float));
  REQUIRE(buf.ok());
  SamplingParams p;
  SequenceRng rng(std::nullopt);
  std::vector<SampleInput> three(3, SampleInput{1, &p, {}, {}, &rng});
  const auto logits = kernels::View(buf->data(), kernels::DType::kF32, 3, 10);
  CHECK((*s)->Sample(logits, {0, 1, 2}, three, cpu.default_stream()).status().code() ==
        absl::StatusCode::kInvalidArgument);  // more rows than max_rows
  std::vector<SampleInput> one(1, SampleInput{1, &p, {}, {}, &rng});
  CHECK((*s)->Sample(logits, {3}, one, cpu.default_stream()).status().code() ==
        absl::StatusCode::kInvalidArgument);  // a row past the logits
  CHECK((*s)->Sample(kernels::View(buf->data(), kernels::DType::kF32, 3, 9), {0}, one,
                     cpu.default_stream())
            .status()
            .code() == absl::StatusCode::kInvalidArgument);  // the wrong vocabulary
  auto none = (*s)->Sample(logits, {}, {}, cpu.default_stream());
  REQUIRE(none.ok());
  CHECK(none->empty());
}

TEST_CASE("the device sampler on CUDA draws what the host sampler draws", "[engine][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  Check(**cuda, 97, 8, 40, 30);
  Check(**cuda, 128256, 16, 8, 24);
  REQUIRE((*cuda)->Health().ok());
}

}  // namespace
}  // namespace arbor::engine
