// LoRA on Mixtral's experts on CUDA: AdapterStore registers expert adapters on a CUDA backend (on
// any host, with a CPU that says it is CUDA); and, [gpu], the op on expert rows, the expert
// adapter on CUDA against the CPU backend (fp32, 1e-4 relative, same greedy tokens), and decode
// graphs with the experts' LoRA against the eager pass bit for bit.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/lora/adapter.h"
#include "engine/lora/adapter_store.h"
#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/lora.h"
#include "tests/faulty_backend.h"
#include "tests/model/moe_lora_fixture.h"

namespace arbor::engine {
namespace {

using namespace moe_lora;  // NOLINT: the fixture's names

// A CPU backend that says it is CUDA: what AdapterStore does with an expert adapter on a CUDA
// device.
class CudaKindCpu final : public testing::FaultyBackend {
 public:
  CudaKindCpu() : FaultyBackend(std::make_unique<kernels::CpuBackend>()) {}
  kernels::DeviceKind kind() const override { return kernels::DeviceKind::kCuda; }
};

TEST_CASE("AdapterStore registers expert adapters on a CUDA backend", "[lora][moe]") {
  CudaKindCpu cuda_kind;
  const absl::Status st = RegisterEdited({}, &cuda_kind);
  INFO(st.ToString());
  CHECK(st.ok());
}

// On a GPU: AdapterStore registers expert adapters, and the op takes expert rows (their values:
// tests/kernels/lora_op_test): rows whose tokens are all base-only keep y bit for bit.
TEST_CASE("on CUDA, AdapterStore registers expert adapters; the op takes expert rows",
          "[lora][moe][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  {
    const absl::Status st = RegisterEdited({}, &be);
    INFO(st.ToString());
    CHECK(st.ok());
  }
  std::vector<float> y_host(4 * kHidden);
  for (size_t i = 0; i < y_host.size(); ++i) y_host[i] = 0.25f * float(i) - 3.0f;
  // token_slot [4], row_token [4], expert_offsets [3]: expert 0 has row 0, expert 1 rows 1-3.
  const std::vector<int32_t> ints = {-1, -1, -1, -1, 3, 2, 1, 0, 0, 1, 4};
  auto x = be.Allocate(4 * kHidden * 4);
  auto y = be.Allocate(4 * kHidden * 4);
  auto dev_ints = be.Allocate(ints.size() * 4);
  auto shrink = be.Allocate(4096);
  REQUIRE((x.ok() && y.ok() && dev_ints.ok() && shrink.ok()));
  REQUIRE(be.Fill(x->data(), 0, 4 * kHidden * 4, be.default_stream()).ok());
  REQUIRE(be.CopyToDevice(y->data(), y_host.data(), y_host.size() * 4, be.default_stream()).ok());
  REQUIRE(
      be.CopyToDevice(dev_ints->data(), ints.data(), ints.size() * 4, be.default_stream()).ok());
  kernels::LoraArgs args;
  args.x = kernels::View(x->as<float>(), kernels::DType::kF32, 4, kHidden);
  args.y = kernels::View(y->as<float>(), kernels::DType::kF32, 4, kHidden);
  args.token_slot = dev_ints->as<int32_t>();
  args.row_token = args.token_slot + 4;
  args.expert_offsets = args.token_slot + 8;
  args.num_experts = 2;
  args.expert_matrix_stride = 3;
  args.num_targets = 1;
  args.targets[0] = {0, 0, kHidden};
  args.max_rank = 8;
  args.shrink = shrink->as<float>();
  const absl::Status op = be.Lora(args, be.default_stream());
  INFO(op.ToString());
  CHECK(op.ok());
  std::vector<float> after(y_host.size());
  REQUIRE(be.CopyToHost(after.data(), y->data(), after.size() * 4, be.default_stream()).ok());
  REQUIRE(be.default_stream().Synchronize().ok());
  CHECK(std::memcmp(after.data(), y_host.data(), after.size() * 4) == 0);
  REQUIRE(be.Health().ok());
}

// The expert adapter at root/`name`, registered (pinned) through `store` and resident.
std::shared_ptr<const LoraAdapter> PinnedAdapter(AdapterStore& store, const std::string& name) {
  const auto registered = store.Register(name, name, /*pin=*/true);
  INFO(registered.status().ToString());
  REQUIRE(registered.ok());
  auto adapter = store.Find(name);
  REQUIRE(adapter != nullptr);
  REQUIRE(store.FenceForUse(*adapter).ok());
  return adapter;
}

// The expert adapter on the Mixtral fixture (fp32) on CUDA against the CPU backend with the same
// adapter: logits within 1e-4 relative and the same 8 greedy tokens, for every prompt, in pages
// of 16 tokens and of 1 (which every matrix spans).
TEST_CASE("LoRA on Mixtral's experts on CUDA matches the CPU backend", "[lora][moe][gpu]") {
  const fs::path root = testing::FreshDir("moe_lora_cuda");
  WriteAdapter(root / "experts", ExpertAdapter());
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::CpuBackend cpu;
  for (int64_t page_tokens : {16, 1}) {
    INFO("pages of " << page_tokens << " tokens");
    Setup g(**cuda, root.string(), page_tokens);
    Setup c(cpu, root.string(), page_tokens);
    auto on_cpu = c.Ready("experts", "experts");
    auto on_gpu = g.Ready("experts", "experts");
    const double moved = CheckSameRuns(*g.model, on_gpu.get(), *c.model, on_cpu.get());
    INFO("base vs adapter " << moved);
    CHECK(moved > 1e-2);  // the experts' deltas really ran on CUDA
  }
  REQUIRE((*cuda)->Health().ok());
}

// A bf16 Mixtral on CUDA with its unified pool (KV and adapters), reserved for decode graphs
// of up to 8 sequences at rank 16, with the expert adapter and an attention-only one resident.
struct GraphSetup {
  std::unique_ptr<Model> model;
  std::unique_ptr<memory::UnifiedPool> pool;
  std::unique_ptr<AdapterStore> store;
  std::shared_ptr<const LoraAdapter> experts, attn;  // destroyed first: pages back to `pool`
  GraphSetup(kernels::Backend& be, const fs::path& root) {
    auto m = Model::Load(kMixtral, be, {kernels::DType::kBF16, kernels::DType::kBF16});
    REQUIRE(m.ok());
    model = std::move(*m);
    auto p = memory::UnifiedPool::Create(be, model->KvPageBytes(16), 96);
    REQUIRE(p.ok());
    pool = std::move(*p);
    REQUIRE(
        be.Fill(pool->base(), 0, pool->num_pages() * pool->page_bytes(), be.default_stream()).ok());
    AdapterStoreOptions options;
    options.root = root.string();
    options.max_rank = 16;
    options.dtype = kernels::DType::kBF16;
    store = std::make_unique<AdapterStore>(*pool, be, model->spec(), options);
    experts = PinnedAdapter(*store, "experts");
    attn = PinnedAdapter(*store, "attn");
    ForwardLimits limits;
    limits.max_tokens = 256;
    limits.max_seqs = 8;
    limits.max_blocks = 8;
    limits.max_logit_rows = 256;
    limits.max_lora_rank = 16;
    REQUIRE(model->Reserve(limits).ok());
  }
  LoraGraphPool graph_pool() const {
    return {pool->base(), int64_t(pool->page_bytes()), pool->num_pages()};
  }
};

// Decode graphs replay steps whose sequences use the expert adapter, mixed with base-only and
// attention-only sequences, and give the logits of a model without graphs (eager passes) bit
// for bit (deterministic mode; bf16 Mixtral).
TEST_CASE("decode graphs with expert adapters match the eager pass bit for bit",
          "[lora][moe][gpu]") {
  const fs::path root = testing::FreshDir("moe_lora_graphs");
  WriteAdapter(root / "experts", ExpertAdapter());
  WriteAdapter(root / "attn", AttentionAdapter());
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  be.SetDeterministic(true);
  GraphSetup graphed(be, root), eager(be, root);
  const KvCacheView kv_g{graphed.pool->base(), 16}, kv_e{eager.pool->base(), 16};
  auto graphs = graphed.model->CaptureDecodeGraphs(kv_g, 8, graphed.graph_pool());
  INFO(graphs.status().ToString());
  REQUIRE(graphs.ok());
  CHECK(*graphs == 8);  // batches 1, 2, 4, 8, without and with adapters
  const int64_t vocab = graphed.model->spec().vocab_size;
  std::mt19937 rng(77);
  std::uniform_int_distribution<int32_t> id(0, int32_t(vocab - 1));
  for (int seqs : {1, 3, 6}) {
    INFO(seqs << " sequences");
    // Sequence s: the expert adapter, base only, the attention adapter, in turn.
    std::vector<std::vector<int32_t>> tokens, tables_g, tables_e;
    std::vector<int64_t> cached(size_t(seqs), 0);
    for (int s = 0; s < seqs; ++s) {
      std::vector<int32_t> prompt(size_t(3 + 5 * s));
      for (int32_t& t : prompt) t = id(rng);
      tokens.push_back(prompt);
      auto pg = graphed.pool->Allocate(8, memory::PageKind::kKv);
      auto pe = eager.pool->Allocate(8, memory::PageKind::kKv);
      REQUIRE((pg.ok() && pe.ok()));
      tables_g.push_back(*pg);
      tables_e.push_back(*pe);
    }
    auto chunks = [&](const GraphSetup& setup, const std::vector<std::vector<int32_t>>& tables) {
      std::vector<SequenceChunk> out;
      for (int s = 0; s < seqs; ++s) {
        const LoraAdapter* adapters[] = {setup.experts.get(), nullptr, setup.attn.get()};
        out.push_back({absl::MakeConstSpan(tokens[size_t(s)]).subspan(size_t(cached[size_t(s)])),
                       cached[size_t(s)], tables[size_t(s)], SequenceChunk::Logits::kLast,
                       adapters[s % 3]});
      }
      return out;
    };
    auto pg = graphed.model->Forward(chunks(graphed, tables_g), kv_g);
    auto pe = eager.model->Forward(chunks(eager, tables_e), kv_e);
    REQUIRE((pg.ok() && pe.ok()));
    CHECK(*pg == *pe);
    std::vector<float> last = *pg;
    for (int s = 0; s < seqs; ++s) cached[size_t(s)] = int64_t(tokens[size_t(s)].size());
    const int64_t replayed = graphed.model->lora_graph_launches();
    for (int step = 0; step < 10; ++step) {
      for (int s = 0; s < seqs; ++s) {
        const float* row = last.data() + size_t(s) * size_t(vocab);
        tokens[size_t(s)].push_back(int32_t(std::max_element(row, row + vocab) - row));
      }
      auto g = graphed.model->Forward(chunks(graphed, tables_g), kv_g);
      auto e = eager.model->Forward(chunks(eager, tables_e), kv_e);
      INFO(g.status().ToString() << " / " << e.status().ToString());
      REQUIRE((g.ok() && e.ok()));
      for (float x : *g) REQUIRE(std::isfinite(x));
      REQUIRE(*g == *e);
      last = *g;
      for (int s = 0; s < seqs; ++s) cached[size_t(s)] += 1;
    }
    CHECK(graphed.model->lora_graph_launches() == replayed + 10);
    for (int s = 0; s < seqs; ++s) {
      REQUIRE(graphed.pool->Free(tables_g[size_t(s)]).ok());
      REQUIRE(eager.pool->Free(tables_e[size_t(s)]).ok());
    }
  }
  REQUIRE(be.Health().ok());
}

}  // namespace
}  // namespace arbor::engine
