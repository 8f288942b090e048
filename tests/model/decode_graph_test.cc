// Decode CUDA graphs (Model::CaptureDecodeGraphs): a replayed graph, padded to its bucket, gives
// the same logits and writes the same KV as the eager pass of the same batch, bit for bit in
// deterministic mode, for a dense model and a mixture of experts, and with LoRA adapters mixed
// with base-only sequences (the graphs that apply adapters); on the CPU capture is refused and
// passes stay eager.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/lora/adapter_store.h"
#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "memory/unified_pool.h"

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

// One model with its unified pool (adapters and KV) and its adapter store, for the LoRA graphs.
struct LoraSetup {
  std::unique_ptr<Model> model;
  std::unique_ptr<memory::UnifiedPool> pool;
  std::unique_ptr<AdapterStore> store;
  std::vector<AdapterHold> holds;
  explicit LoraSetup(kernels::Backend& be) {
    auto m = Model::Load("tests/data/models/llama", be, kBf16);
    REQUIRE(m.ok());
    model = std::move(*m);
    auto p = memory::UnifiedPool::Create(be, model->KvPageBytes(kBlock), 96);
    REQUIRE(p.ok());
    pool = std::move(*p);
    REQUIRE(be.Fill(pool->base(), 0, pool->num_pages() * pool->page_bytes(), be.default_stream())
                .ok());
    AdapterStoreOptions options;
    options.root = "tests/data/adapters";
    options.max_rank = 16;
    options.dtype = kernels::DType::kBF16;
    store = std::make_unique<AdapterStore>(*pool, be, model->spec(), options);
    for (const char* name : {"llama-lora-all", "llama-lora-qv"}) {
      REQUIRE(store->Register(name, name).ok());
      auto hold = store->Acquire(*store->Find(name));
      REQUIRE(hold.ok());
      holds.push_back(std::move(*hold));
      REQUIRE(store->FenceForUse(*store->Find(name)).ok());
    }
    ForwardLimits limits = Limits();
    limits.max_lora_rank = 16;
    REQUIRE(model->Reserve(limits).ok());
  }
  LoraGraphPool graph_pool() const {
    return {pool->base(), int64_t(pool->page_bytes()), pool->num_pages()};
  }
};

TEST_CASE("decode graphs with adapters match the eager pass bit for bit (deterministic mode)",
          "[model][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  be.SetDeterministic(true);
  LoraSetup graphed(be), eager(be);
  const KvCacheView kv_g{graphed.pool->base(), kBlock}, kv_e{eager.pool->base(), kBlock};
  auto graphs = graphed.model->CaptureDecodeGraphs(kv_g, 8, graphed.graph_pool());
  INFO(graphs.status().ToString());
  REQUIRE(graphs.ok());
  CHECK(*graphs == 8);  // batches 1, 2, 4, 8, without and with adapters
  CHECK(graphed.model->lora_graphs());

  const int64_t vocab = graphed.model->spec().vocab_size;
  // Sequence s uses adapter kinds[s % 4]: all, base only, qv, all.
  const std::vector<const char*> kinds = {"llama-lora-all", nullptr, "llama-lora-qv",
                                          "llama-lora-all"};
  for (int seqs : {1, 2, 3, 7}) {
    INFO(seqs << " sequences");
    Batch b = NewBatch(seqs, 300 + uint64_t(seqs), vocab);
    // KV pages from each pool (the adapters hold some of its pages).
    Batch be_batch = b;
    for (int s = 0; s < seqs; ++s) {
      auto pg = graphed.pool->Allocate(8, memory::PageKind::kKv);
      auto pe = eager.pool->Allocate(8, memory::PageKind::kKv);
      REQUIRE(pg.ok());
      REQUIRE(pe.ok());
      b.tables[size_t(s)] = *pg;
      be_batch.tables[size_t(s)] = *pe;
    }
    auto with_adapters = [&](std::vector<SequenceChunk> chunks, const LoraSetup& setup) {
      for (size_t s = 0; s < chunks.size(); ++s) {
        const char* kind = kinds[s % kinds.size()];
        chunks[s].adapter = kind == nullptr ? nullptr : setup.store->Find(kind).get();
      }
      return chunks;
    };
    auto pg = graphed.model->Forward(with_adapters(Chunks(b), graphed), kv_g);
    auto pe = eager.model->Forward(with_adapters(Chunks(be_batch), eager), kv_e);
    REQUIRE(pg.ok());
    REQUIRE(pe.ok());
    CHECK(*pg == *pe);
    std::vector<float> last = *pg;
    for (size_t s = 0; s < b.tokens.size(); ++s) {
      b.cached[s] = be_batch.cached[s] = int64_t(b.tokens[s].size());
    }
    const int64_t before = graphed.model->lora_graph_launches();
    for (int step = 0; step < 12; ++step) {
      for (size_t s = 0; s < b.tokens.size(); ++s) {
        const float* row = last.data() + s * size_t(vocab);
        const int32_t next = int32_t(std::max_element(row, row + vocab) - row);
        b.tokens[s].push_back(next);
        be_batch.tokens[s].push_back(next);
      }
      auto g = graphed.model->Forward(with_adapters(Chunks(b), graphed), kv_g);
      auto e = eager.model->Forward(with_adapters(Chunks(be_batch), eager), kv_e);
      REQUIRE(g.ok());
      REQUIRE(e.ok());
      for (float x : *g) REQUIRE(std::isfinite(x));
      REQUIRE(*g == *e);
      last = *g;
      for (size_t s = 0; s < b.tokens.size(); ++s) b.cached[s] = be_batch.cached[s] += 1;
    }
    // Sequence 0 has an adapter: every step replayed a graph that applies adapters.
    CHECK(graphed.model->lora_graph_launches() == before + 12);
    for (int s = 0; s < seqs; ++s) {
      REQUIRE(graphed.pool->Free(b.tables[size_t(s)]).ok());
      REQUIRE(eager.pool->Free(be_batch.tables[size_t(s)]).ok());
    }
  }
  // A decode step with no adapter replays a graph without them.
  {
    Batch b = NewBatch(1, 9, vocab);
    auto pages = graphed.pool->Allocate(8, memory::PageKind::kKv);
    REQUIRE(pages.ok());
    b.tables[0] = *pages;
    REQUIRE(graphed.model->Forward(Chunks(b), kv_g).ok());
    b.cached[0] = int64_t(b.tokens[0].size()) - 1;
    const int64_t launches = graphed.model->graph_launches();
    const int64_t lora_launches = graphed.model->lora_graph_launches();
    REQUIRE(graphed.model->Forward(Chunks(b), kv_g).ok());
    CHECK(graphed.model->graph_launches() == launches + 1);
    CHECK(graphed.model->lora_graph_launches() == lora_launches);
    REQUIRE(graphed.pool->Free(*pages).ok());
  }
  REQUIRE(be.Health().ok());
}

}  // namespace
}  // namespace arbor::engine
