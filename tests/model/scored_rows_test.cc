// Scored rows (Model::ForwardOnDevice with ChunkScore, engine/model/lm_head_scorer.h): the fused
// LM head's log-probs and top-k equal the log-softmax of the materialised logits of the same
// pass, on fixture models with untied and tied embeddings, for several chunks in one pass and
// for a prompt split over two passes; bad scores are refused naming the field; on a GPU the same
// in bf16 against the CUDA logits.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace arbor::engine {
namespace {

constexpr int32_t kTopK = 7;

struct Scored {
  std::vector<float> logprobs, top_logprobs;
  std::vector<int32_t> top_ids, ranks;
};

Scored Download(kernels::Backend& be, const ScoredRows& s) {
  Scored out;
  out.logprobs.resize(size_t(s.rows));
  out.top_ids.resize(size_t(s.rows * s.top_k));
  out.top_logprobs.resize(out.top_ids.size());
  kernels::Stream& st = be.default_stream();
  REQUIRE(be.CopyToHost(out.logprobs.data(), s.logprobs, out.logprobs.size() * 4, st).ok());
  out.ranks.resize(size_t(s.rows));
  REQUIRE(be.CopyToHost(out.ranks.data(), s.ranks, out.ranks.size() * 4, st).ok());
  if (s.top_k > 0) {
    REQUIRE(be.CopyToHost(out.top_ids.data(), s.top_ids, out.top_ids.size() * 4, st).ok());
    REQUIRE(be.CopyToHost(out.top_logprobs.data(), s.top_logprobs, out.top_ids.size() * 4, st)
                .ok());
  }
  return out;
}

// Prompts of a few lengths over the vocabulary; targets: the next token, -1 at the end.
std::vector<std::vector<int32_t>> Prompts(int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, int32_t(vocab - 1));
  std::vector<std::vector<int32_t>> out;
  for (int len : {1, 5, 23}) {
    std::vector<int32_t> p(static_cast<size_t>(len));
    for (auto& t : p) t = id(rng);
    out.push_back(p);
  }
  return out;
}

std::vector<int32_t> Targets(const std::vector<int32_t>& p, size_t from, size_t count) {
  std::vector<int32_t> t;
  for (size_t j = from; j < from + count; ++j) t.push_back(j + 1 < p.size() ? p[j + 1] : -1);
  return t;
}

// Row `row` of the scored outputs against log-softmax of `logits` ([vocab], same pass).
void CheckRow(const Scored& s, int64_t row, int64_t k, const float* logits, int64_t vocab,
              int32_t target, double tol) {
  double m = -INFINITY;
  for (int64_t v = 0; v < vocab; ++v) m = std::max(m, double(logits[v]));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(logits[v]) - m);
  const double lse = m + std::log(sum);
  const double want = target < 0 ? 0.0 : double(logits[target]) - lse;
  INFO("row " << row << ", target " << target);
  CHECK(std::fabs(s.logprobs[size_t(row)] - want) <= tol);  // NaN fails
  // The target's rank: 1 + the ids above it, give or take those within tol of it.
  int64_t above = 0, near = 0;
  for (int64_t v = 0; target >= 0 && v < vocab; ++v) {
    const double d = double(logits[v]) - double(logits[target]);
    if (v == target) continue;
    above += d > 0;
    near += d != 0 && std::fabs(d) <= tol;
  }
  const int64_t rank = s.ranks[size_t(row)];
  if (target < 0) {
    CHECK(rank == 0);
  } else {
    CHECK(std::llabs(rank - (1 + above)) <= near);
  }
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  for (int64_t v = 0; v < vocab; ++v) order[size_t(v)] = int32_t(v);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  for (int64_t j = 0; j < k; ++j) {
    const int32_t id = s.top_ids[size_t(row * k + j)];
    INFO("top " << j << ": id " << id << ", reference id " << order[size_t(j)]);
    REQUIRE(id >= 0);
    REQUIRE(id < vocab);
    CHECK(std::fabs(s.top_logprobs[size_t(row * k + j)] - (double(logits[id]) - lse)) <= tol);
    // The rank holds a token as likely as the reference's at that rank (near-ties may swap).
    CHECK(double(logits[order[size_t(j)]]) - double(logits[id]) <= tol);
  }
}

// Every prompt as one chunk of one pass, all scored, each with the logits of every row too
// (kAll, the materialised path) for the reference.
void CheckOnePass(Model& model, kernels::Backend& be, double tol) {
  const int64_t vocab = model.spec().vocab_size;
  const auto prompts = Prompts(vocab, 15);
  auto pages = be.Allocate(size_t(64) * model.KvPageBytes(16));
  REQUIRE(pages.ok());
  std::vector<std::vector<int32_t>> tables, targets;
  std::vector<SequenceChunk> chunks;
  std::vector<ChunkScore> scores;
  for (size_t i = 0; i < prompts.size(); ++i) {
    tables.push_back({int32_t(2 * i), int32_t(2 * i + 1)});
    targets.push_back(Targets(prompts[i], 0, prompts[i].size()));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    SequenceChunk c;
    c.tokens = prompts[i];
    c.block_table = tables[i];
    c.logits = SequenceChunk::Logits::kAll;
    chunks.push_back(c);
    scores.push_back({targets[i], i == 1 ? 0 : kTopK});  // the pass takes the largest k
  }
  const KvCacheView kv{pages->data(), 16};
  auto logits_dev = model.ForwardOnDevice(chunks, kv, scores);
  INFO(logits_dev.status().ToString());
  REQUIRE(logits_dev.ok());
  std::vector<float> logits(size_t(logits_dev->rows * vocab));
  REQUIRE(be.CopyToHost(logits.data(), logits_dev->data, logits.size() * 4, be.default_stream())
              .ok());
  const ScoredRows& rows = model.scored();
  REQUIRE(rows.rows == logits_dev->rows);
  REQUIRE(rows.top_k == kTopK);
  const Scored s = Download(be, rows);
  int64_t r = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (size_t j = 0; j < prompts[i].size(); ++j, ++r) {
      CheckRow(s, r, kTopK, logits.data() + r * vocab, vocab, targets[i][j], tol);
    }
  }
}

// One prompt over two passes (chunked prefill): the first chunk's last row scores the second
// chunk's first token; the same log-probs as one pass.
void CheckTwoPasses(Model& model, kernels::Backend& be, double tol) {
  const int64_t vocab = model.spec().vocab_size;
  const std::vector<int32_t> p = Prompts(vocab, 16)[2];
  auto pages = be.Allocate(size_t(4) * model.KvPageBytes(16));
  REQUIRE(pages.ok());
  const std::vector<int32_t> table = {0, 1};
  const KvCacheView kv{pages->data(), 16};
  std::vector<float> whole;
  {
    const std::vector<int32_t> t = Targets(p, 0, p.size());
    SequenceChunk c;
    c.tokens = p;
    c.block_table = table;
    c.logits = SequenceChunk::Logits::kNone;
    const ChunkScore sc{t, 0};
    REQUIRE(model.ForwardOnDevice({&c, 1}, kv, {&sc, 1}).ok());
    whole = Download(be, model.scored()).logprobs;
  }
  std::vector<float> split;
  for (const auto& [from, count] : {std::pair<size_t, size_t>{0, 9}, {9, p.size() - 9}}) {
    const std::vector<int32_t> t = Targets(p, from, count);
    SequenceChunk c;
    c.tokens = absl::MakeConstSpan(p).subspan(from, count);
    c.start = int64_t(from);
    c.block_table = table;
    c.logits = SequenceChunk::Logits::kNone;
    const ChunkScore sc{t, 0};
    REQUIRE(model.ForwardOnDevice({&c, 1}, kv, {&sc, 1}).ok());
    const std::vector<float> part = Download(be, model.scored()).logprobs;
    split.insert(split.end(), part.begin(), part.end());
  }
  REQUIRE(split.size() == whole.size());
  for (size_t j = 0; j < whole.size(); ++j) {
    INFO("row " << j);
    CHECK(std::fabs(split[j] - whole[j]) <= tol);
  }
  CHECK(whole.back() == 0.0f);  // the last position scores nothing
}

TEST_CASE("scored rows equal log_softmax of the same pass's logits (CPU)", "[model][cce]") {
  kernels::CpuBackend cpu;
  for (const char* name : {"llama", "llama-tied-llama3rope", "qwen2", "mixtral"}) {
    INFO("model " << name);
    auto model = Model::Load(std::string("tests/data/models/") + name, cpu);
    REQUIRE(model.ok());
    CheckOnePass(**model, cpu, 1e-4);
    CheckTwoPasses(**model, cpu, 1e-4);
  }
}

TEST_CASE("bad chunk scores are refused, naming the field", "[model][cce]") {
  kernels::CpuBackend cpu;
  auto model = Model::Load("tests/data/models/llama", cpu);
  REQUIRE(model.ok());
  const int64_t vocab = (*model)->spec().vocab_size;
  auto pages = cpu.Allocate(size_t(2) * (*model)->KvPageBytes(16));
  REQUIRE(pages.ok());
  const std::vector<int32_t> tokens = {1, 2, 3}, table = {0};
  SequenceChunk c;
  c.tokens = tokens;
  c.block_table = table;
  c.logits = SequenceChunk::Logits::kNone;
  const KvCacheView kv{pages->data(), 16};
  auto refused = [&](std::vector<int32_t> targets, int32_t k, const std::string& what) {
    const ChunkScore sc{targets, k};
    const auto r = (*model)->ForwardOnDevice({&c, 1}, kv, {&sc, 1});
    INFO(r.status().ToString());
    CHECK(absl::IsInvalidArgument(r.status()));
    CHECK(std::string(r.status().message()).find(what) != std::string::npos);
  };
  refused({2, 3}, 0, "2 score targets for 3 tokens");
  refused({2, 3, int32_t(vocab)}, 0, "score target");
  refused({2, -2, 1}, 0, "score target -2");
  refused({2, 3, -1}, 21, "score top_k 21");
  const std::vector<ChunkScore> two(2);
  CHECK(absl::IsInvalidArgument((*model)->ForwardOnDevice({&c, 1}, kv, two).status()));
}

TEST_CASE("scored rows on CUDA in bf16 equal log_softmax of the CUDA logits",
          "[model][cce][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  const ModelOptions bf16{kernels::DType::kBF16, kernels::DType::kBF16};
  for (const char* name : {"llama", "llama-tied-llama3rope", "qwen2"}) {
    INFO("model " << name);
    auto model = Model::Load(std::string("tests/data/models/") + name, **cuda, bf16);
    REQUIRE(model.ok());
    // The fused head and cuBLASLt both accumulate the same bf16 products in fp32, in other
    // orders: noise of fp32 sums, not of bf16 rounding.
    CheckOnePass(**model, **cuda, 2e-3);
    CheckTwoPasses(**model, **cuda, 2e-3);
  }
  REQUIRE((*cuda)->Health().ok());
}

}  // namespace
}  // namespace arbor::engine
