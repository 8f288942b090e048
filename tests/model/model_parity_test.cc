// The forward pass against Hugging Face transformers on the same weights: for every fixture
// model (tests/data/models, one per architecture and option), fp32 logits at every prompt
// position within 1e-4 relative of transformers', and identical greedy continuations decoded
// one token at a time through the KV cache. [gpu] repeats it on the CUDA backend.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/faulty_backend.h"

namespace arbor::engine {
namespace {

const char* kModels[] = {
    "llama", "llama-tied-llama3rope", "llama-linear-mqa-hd24", "mistral-swa", "qwen2", "mixtral"};

nlohmann::json Reference(const std::string& dir) {
  std::ifstream in(dir + "/reference.json");
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

int32_t Argmax(const float* row, int64_t n) {
  return int32_t(std::max_element(row, row + n) - row);
}

void CheckModel(kernels::Backend& be, const std::string& name) {
  const std::string dir = "tests/data/models/" + name;
  INFO("model " << name);
  auto model = Model::Load(dir, be);
  REQUIRE(model.ok());
  const int64_t vocab = (*model)->spec().vocab_size;
  const auto ref = Reference(dir);
  for (const auto& prompt : ref["prompts"]) {
    const std::vector<int32_t> ids = prompt["ids"].get<std::vector<int32_t>>();
    INFO("prompt of " << ids.size() << " tokens");
    auto kv = (*model)->NewSequence(64);
    REQUIRE(kv.ok());
    auto logits = (*model)->Forward(ids, *kv, /*all_positions=*/true);
    REQUIRE(logits.ok());
    REQUIRE(logits->size() == ids.size() * size_t(vocab));
    double worst = 0;
    size_t bad = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      const std::vector<double> want_row = prompt["logits"][t].get<std::vector<double>>();
      // Relative to the element, or for logits near zero to the row's RMS: an fp32 sum of
      // terms of that scale cannot land closer to zero than its rounding.
      double sum_sq = 0;
      for (double w : want_row) sum_sq += w * w;
      const double row_rms = std::sqrt(sum_sq / double(vocab));
      for (int64_t c = 0; c < vocab; ++c) {
        const double want = want_row[size_t(c)];
        const double got = (*logits)[t * size_t(vocab) + size_t(c)];
        const double err = std::fabs(got - want) / std::max(std::fabs(want), row_rms);
        if (!(err <= 1e-4)) ++bad;  // NaN counts as bad
        worst = std::max(worst, err);
      }
    }
    INFO("worst relative error " << worst);
    CHECK(bad == 0);

    // Greedy decoding through the cache, one token at a time.
    std::vector<int32_t> greedy;
    int32_t next = Argmax(logits->data() + (ids.size() - 1) * size_t(vocab), vocab);
    const auto want_greedy = prompt["greedy"].get<std::vector<int32_t>>();
    for (size_t i = 0; i < want_greedy.size(); ++i) {
      greedy.push_back(next);
      if (i + 1 == want_greedy.size()) break;
      auto step = (*model)->Forward({&next, 1}, *kv, /*all_positions=*/false);
      REQUIRE(step.ok());
      next = Argmax(step->data(), vocab);
    }
    CHECK(greedy == want_greedy);
  }
}

TEST_CASE("CPU forward matches transformers for every architecture", "[model]") {
  kernels::CpuBackend cpu;
  for (const char* name : kModels) CheckModel(cpu, name);
}

TEST_CASE("CUDA forward matches transformers for every architecture", "[model][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  for (const char* name : kModels) CheckModel(**cuda, name);
}

TEST_CASE("chunked prefill gives the logits of a single prefill", "[model]") {
  kernels::CpuBackend cpu;
  auto model = Model::Load("tests/data/models/mistral-swa", cpu);
  REQUIRE(model.ok());
  const std::vector<int32_t> ids = {5, 17, 200, 3, 99, 42, 7, 7, 130, 64, 11};
  auto one = (*model)->NewSequence(32);
  auto two = (*model)->NewSequence(32);
  REQUIRE(one.ok());
  REQUIRE(two.ok());
  auto whole = (*model)->Forward(ids, *one, false);
  REQUIRE(whole.ok());
  REQUIRE((*model)->Forward(absl::MakeConstSpan(ids).subspan(0, 4), *two, false).ok());
  auto rest = (*model)->Forward(absl::MakeConstSpan(ids).subspan(4), *two, false);
  REQUIRE(rest.ok());
  REQUIRE(whole->size() == rest->size());
  for (size_t i = 0; i < whole->size(); ++i) {
    CHECK(std::fabs((*whole)[i] - (*rest)[i]) <= 1e-5 + 1e-5 * std::fabs((*whole)[i]));
  }
}

TEST_CASE("a mixed batch gives each sequence the logits it gets alone", "[model]") {
  kernels::CpuBackend cpu;
  for (const char* name : {"mistral-swa", "mixtral", "qwen2"}) {
    INFO(name);
    auto model = Model::Load(std::string("tests/data/models/") + name, cpu);
    REQUIRE(model.ok());
    const int64_t vocab = (*model)->spec().vocab_size;
    // Three sequences sharing one pool of pages, in shuffled page order: a prefill, a chunk
    // after a cached prefix, and a decode.
    const int64_t bs = 4;
    auto pool = cpu.Allocate(12 * (*model)->KvPageBytes(bs));
    REQUIRE(pool.ok());
    const std::vector<std::vector<int32_t>> prompts = {
        {5, 9, 13, 17, 21, 25, 29}, {3, 1, 4, 1, 5, 9, 2, 6, 5, 3}, {7, 7, 7, 8, 8}};
    const std::vector<std::vector<int32_t>> tables = {{7, 2}, {0, 11, 5}, {9, 4}};
    // First pass: every prompt but its last token, each alone.
    for (size_t i = 0; i < prompts.size(); ++i) {
      SequenceChunk c{absl::MakeConstSpan(prompts[i]).first(prompts[i].size() - 1), 0, tables[i],
                      SequenceChunk::Logits::kNone};
      REQUIRE((*model)->Forward({&c, 1}, KvCacheView{pool->as<float>(), bs}).ok());
    }
    // Alone: the last token of each prompt.
    std::vector<std::vector<float>> alone;
    for (size_t i = 0; i < prompts.size(); ++i) {
      SequenceChunk c{absl::MakeConstSpan(prompts[i]).last(1), int64_t(prompts[i].size() - 1),
                      tables[i], SequenceChunk::Logits::kLast};
      auto l = (*model)->Forward({&c, 1}, KvCacheView{pool->as<float>(), bs});
      REQUIRE(l.ok());
      alone.push_back(*l);
    }
    // Together (rewriting the same positions with the same values).
    std::vector<SequenceChunk> batch;
    for (size_t i = 0; i < prompts.size(); ++i) {
      batch.push_back({absl::MakeConstSpan(prompts[i]).last(1), int64_t(prompts[i].size() - 1),
                       tables[i], SequenceChunk::Logits::kLast});
    }
    auto together = (*model)->Forward(batch, KvCacheView{pool->as<float>(), bs});
    REQUIRE(together.ok());
    REQUIRE(together->size() == 3 * size_t(vocab));
    for (size_t i = 0; i < prompts.size(); ++i) {
      for (int64_t c = 0; c < vocab; ++c) {
        const float want = alone[i][size_t(c)];
        const float got = (*together)[i * size_t(vocab) + size_t(c)];
        REQUIRE(std::fabs(got - want) <= 1e-5f * std::max(1.0f, std::fabs(want)));
      }
    }
  }
}

TEST_CASE("forward rejects bad ids and cache overflow", "[model]") {
  kernels::CpuBackend cpu;
  auto model = Model::Load("tests/data/models/llama", cpu);
  REQUIRE(model.ok());
  auto kv = (*model)->NewSequence(4);
  REQUIRE(kv.ok());
  const std::vector<int32_t> bad = {1, 256};
  auto r = (*model)->Forward(bad, *kv, false);
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(r.status().message()).find("256") != std::string::npos);
  const std::vector<int32_t> neg = {-1};
  CHECK((*model)->Forward(neg, *kv, false).status().code() == absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> five = {1, 2, 3, 4, 5};
  CHECK((*model)->Forward(five, *kv, false).status().code() == absl::StatusCode::kOutOfRange);
  CHECK(kv->length == 0);
  CHECK((*model)->NewSequence(100000).status().code() == absl::StatusCode::kInvalidArgument);
  // A block table too short for the chunk, and a freed (-1) block, are refused by name.
  const std::vector<int32_t> ids = {1, 2, 3};
  const std::vector<int32_t> short_table = {0};
  SequenceChunk chunk{ids, 15, short_table, SequenceChunk::Logits::kLast};
  auto r2 = (*model)->Forward({&chunk, 1}, KvCacheView{kv->pages.as<float>(), 16});
  CHECK_THAT(std::string(r2.status().message()), Catch::Contains("block table"));
  const std::vector<int32_t> freed = {-1};
  SequenceChunk chunk2{ids, 0, freed, SequenceChunk::Logits::kLast};
  auto r3 = (*model)->Forward({&chunk2, 1}, KvCacheView{kv->pages.as<float>(), 16});
  CHECK_THAT(std::string(r3.status().message()), Catch::Contains("freed block"));
}

TEST_CASE("dummy weights: real shapes, finite logits, deterministic by seed", "[model]") {
  kernels::CpuBackend cpu;
  auto spec = LoadHfConfig("tests/data/models/mixtral");
  REQUIRE(spec.ok());
  auto a = Model::Dummy(*spec, 7, cpu);
  auto b = Model::Dummy(*spec, 7, cpu);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  auto ka = (*a)->NewSequence(8);
  auto kb = (*b)->NewSequence(8);
  const std::vector<int32_t> ids = {1, 2, 3};
  auto la = (*a)->Forward(ids, *ka, true);
  auto lb = (*b)->Forward(ids, *kb, true);
  REQUIRE(la.ok());
  REQUIRE(lb.ok());
  CHECK(*la == *lb);
  CHECK(std::all_of(la->begin(), la->end(), [](float f) { return std::isfinite(f); }));
}

TEST_CASE("MoE layers run without a host round trip or an allocation after Reserve", "[model]") {
  testing::FaultyBackend device(std::make_unique<kernels::CpuBackend>());
  auto model = Model::Load("tests/data/models/mixtral", device);
  REQUIRE(model.ok());
  ForwardLimits limits;
  limits.max_tokens = 40;
  limits.max_seqs = 2;
  limits.max_blocks = 4;
  limits.max_logit_rows = 40;
  REQUIRE((*model)->Reserve(limits).ok());
  auto pages = device.Allocate(8 * (*model)->KvPageBytes(16));
  REQUIRE(pages.ok());
  const std::vector<int32_t> table_a = {0, 1, 2}, table_b = {4, 5, 6};
  std::vector<int32_t> prompt_a(30), prompt_b(10);
  for (size_t i = 0; i < prompt_a.size(); ++i) prompt_a[i] = int32_t(i * 7 % 256);
  for (size_t i = 0; i < prompt_b.size(); ++i) prompt_b[i] = int32_t(i * 11 % 256);
  const int64_t allocations = device.allocations(), copies = device.host_copies();
  // The largest pass the limits allow (two prompts, 40 tokens, logits at 31 positions), then
  // decode steps of both sequences.
  const SequenceChunk prefill[] = {{prompt_a, 0, table_a, SequenceChunk::Logits::kAll, nullptr},
                                   {prompt_b, 0, table_b, SequenceChunk::Logits::kLast, nullptr}};
  REQUIRE((*model)->ForwardOnDevice(prefill, KvCacheView{pages->data(), 16}).ok());
  for (int step = 0; step < 3; ++step) {
    const std::vector<int32_t> next = {int32_t(step + 1)};
    const SequenceChunk decode[] = {
        {next, 30 + step, table_a, SequenceChunk::Logits::kLast, nullptr},
        {next, 10 + step, table_b, SequenceChunk::Logits::kLast, nullptr}};
    REQUIRE((*model)->ForwardOnDevice(decode, KvCacheView{pages->data(), 16}).ok());
  }
  CHECK(device.allocations() == allocations);
  CHECK(device.host_copies() == copies);
}

}  // namespace
}  // namespace arbor::engine
