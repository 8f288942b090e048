// Decode CUDA graphs (Model::CaptureDecodeGraphs): a replayed graph, padded to its bucket, gives
// the same logits and writes the same KV as the eager pass of the same batch, bit for bit in
// deterministic mode, for a dense model and a mixture of experts; on the CPU capture is refused
// and passes stay eager.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace arbor::engine {
namespace {

constexpr ModelOptions kBf16{kernels::DType::kBF16, kernels::DType::kBF16};
constexpr int64_t kBlock = 16;

ForwardLimits Limits() {
  ForwardLimits l;
  l.max_tokens = 256;
  l.max_seqs = 8;
  l.max_blocks = 8;
  l.max_logit_rows = 256;
  return l;
}

// `seqs` sequences with disjoint block tables over one pool of pages.
struct Batch {
  std::vector<std::vector<int32_t>> tables;
  std::vector<std::vector<int32_t>> tokens;  // every token of each sequence so far
  std::vector<int64_t> cached;               // tokens of each already in the cache
};

Batch NewBatch(int seqs, uint64_t seed, int64_t vocab) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, int32_t(vocab - 1));
  std::uniform_int_distribution<int> len(1, 40);
  Batch b;
  for (int s = 0; s < seqs; ++s) {
    std::vector<int32_t> table;
    for (int i = 0; i < 8; ++i) table.push_back(s * 8 + i);
    b.tables.push_back(table);
    std::vector<int32_t> prompt(size_t(len(rng)));
    for (auto& t : prompt) t = id(rng);
    b.tokens.push_back(prompt);
    b.cached.push_back(0);
  }
  return b;
}

// One pass: every sequence's uncached tokens (its prompt, or the one token of a decode step).
std::vector<SequenceChunk> Chunks(const Batch& b) {
  std::vector<SequenceChunk> chunks;
  for (size_t s = 0; s < b.tokens.size(); ++s) {
    SequenceChunk c;
    c.tokens = absl::MakeConstSpan(b.tokens[s]).subspan(size_t(b.cached[s]));
    c.start = b.cached[s];
    c.block_table = b.tables[s];
    chunks.push_back(c);
  }
  return chunks;
}

std::vector<uint8_t> Bytes(kernels::Backend& be, const void* p, size_t bytes) {
  std::vector<uint8_t> host(bytes);
  REQUIRE(be.CopyToHost(host.data(), p, bytes, be.default_stream()).ok());
  return host;
}

TEST_CASE("the CPU backend captures no decode graphs and passes stay eager", "[model]") {
  kernels::CpuBackend cpu;
  auto model = Model::Load("models/tiny", cpu);
  REQUIRE(model.ok());
  const size_t pool_bytes = 64 * (*model)->KvPageBytes(kBlock);
  auto pages = cpu.Allocate(pool_bytes);
  REQUIRE(pages.ok());
  std::memset(pages->data(), 0, pool_bytes);
  const KvCacheView kv{pages->data(), kBlock};
  // Before Reserve: refused for that reason first.
  CHECK((*model)->CaptureDecodeGraphs(kv, 8).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  REQUIRE((*model)->Reserve(Limits()).ok());
  auto graphs = (*model)->CaptureDecodeGraphs(kv, 8);
  CHECK(graphs.status().code() == absl::StatusCode::kUnimplemented);
  // The warm-up before the capture ran an all-padding pass: it wrote no page.
  const auto* bytes = static_cast<const uint8_t*>(pages->data());
  CHECK(std::all_of(bytes, bytes + pool_bytes, [](uint8_t x) { return x == 0; }));
  CHECK((*model)->max_graph_batch() == 0);
  Batch b = NewBatch(3, 5, (*model)->spec().vocab_size);
  auto logits = (*model)->Forward(Chunks(b), kv);
  REQUIRE(logits.ok());
  CHECK(logits->size() == size_t(3 * (*model)->spec().vocab_size));
  CHECK((*model)->graph_launches() == 0);
}

TEST_CASE("a replayed decode graph matches the eager pass bit for bit (deterministic mode)",
          "[model][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  be.SetDeterministic(true);
  // A dense model and a mixture of experts (whose routing runs on the device and is captured).
  const std::string dir =
      GENERATE(std::string("models/tiny"), std::string("tests/data/models/mixtral"));
  INFO(dir);
  // Two copies of one model: `graphed` replays graphs, `eager` never captures any.
  auto graphed = Model::Load(dir, be, kBf16);
  auto eager = Model::Load(dir, be, kBf16);
  REQUIRE(graphed.ok());
  REQUIRE(eager.ok());
  const size_t pool_bytes = 64 * (*graphed)->KvPageBytes(kBlock);
  auto pages_g = be.Allocate(pool_bytes);
  auto pages_e = be.Allocate(pool_bytes);
  REQUIRE(pages_g.ok());
  REQUIRE(pages_e.ok());
  REQUIRE(be.Fill(pages_g->data(), 0, pool_bytes, be.default_stream()).ok());
  REQUIRE(be.Fill(pages_e->data(), 0, pool_bytes, be.default_stream()).ok());
  const KvCacheView kv_g{pages_g->data(), kBlock}, kv_e{pages_e->data(), kBlock};
  REQUIRE((*graphed)->Reserve(Limits()).ok());
  REQUIRE((*eager)->Reserve(Limits()).ok());
  // Capturing runs padding passes only: the pool must still be all zeros afterwards.
  auto graphs = (*graphed)->CaptureDecodeGraphs(kv_g, 8);
  INFO(graphs.status().ToString());
  REQUIRE(graphs.ok());
  CHECK(*graphs == 4);  // batches 1, 2, 4, 8
  CHECK((*graphed)->max_graph_batch() == 8);
  CHECK(Bytes(be, pages_g->data(), pool_bytes) == std::vector<uint8_t>(pool_bytes, 0));
  // The graphs hold the workspaces: reserving as much again keeps them.
  CHECK((*graphed)->Reserve(Limits()).ok());
  CHECK((*graphed)->max_graph_batch() == 8);

  const int64_t vocab = (*graphed)->spec().vocab_size;
  for (int seqs : {1, 3, 5, 8}) {
    INFO(seqs << " sequences");
    Batch b = NewBatch(seqs, 100 + uint64_t(seqs), vocab);
    // The prefill: eager in both (chunks of several tokens are not graphed).
    const int64_t before = (*graphed)->graph_launches();
    auto pg = (*graphed)->Forward(Chunks(b), kv_g);
    auto pe = (*eager)->Forward(Chunks(b), kv_e);
    REQUIRE(pg.ok());
    REQUIRE(pe.ok());
    CHECK((*graphed)->graph_launches() == before);
    CHECK(*pg == *pe);
    std::vector<float> last = *pg;
    for (size_t s = 0; s < b.tokens.size(); ++s) b.cached[s] = int64_t(b.tokens[s].size());
    // Decode steps: replayed in `graphed`, eager in `eager`.
    for (int step = 0; step < 20; ++step) {
      for (size_t s = 0; s < b.tokens.size(); ++s) {
        const float* row = last.data() + s * size_t(vocab);
        b.tokens[s].push_back(int32_t(std::max_element(row, row + vocab) - row));
      }
      auto g = (*graphed)->Forward(Chunks(b), kv_g);
      auto e = (*eager)->Forward(Chunks(b), kv_e);
      REQUIRE(g.ok());
      REQUIRE(e.ok());
      for (float x : *g) REQUIRE(std::isfinite(x));
      REQUIRE(*g == *e);
      last = *g;
      for (size_t s = 0; s < b.tokens.size(); ++s) b.cached[s] += 1;
    }
    CHECK((*graphed)->graph_launches() == before + 20);
    // The KV the graphs wrote equals the eager pass's, and padding wrote nowhere.
    CHECK(Bytes(be, pages_g->data(), pool_bytes) == Bytes(be, pages_e->data(), pool_bytes));
  }
  // Reserving more (a new engine with larger limits) drops the graphs: passes run eagerly.
  ForwardLimits more = Limits();
  more.max_tokens *= 4;
  REQUIRE((*graphed)->Reserve(more).ok());
  CHECK((*graphed)->max_graph_batch() == 0);
  Batch b = NewBatch(2, 7, vocab);
  const int64_t launches = (*graphed)->graph_launches();
  REQUIRE((*graphed)->Forward(Chunks(b), kv_g).ok());
  b.cached = {int64_t(b.tokens[0].size()) - 1, int64_t(b.tokens[1].size()) - 1};
  REQUIRE((*graphed)->Forward(Chunks(b), kv_g).ok());  // one token each: a decode step, eager
  CHECK((*graphed)->graph_launches() == launches);
  REQUIRE(be.Health().ok());
}

}  // namespace
}  // namespace arbor::engine
