// The prefill kernels of the CUDA backend (kernels/cuda/launch.h PrefillKernel: the mma.sync
// kernel and the Hopper wgmma kernel), each forced, and the auto pick, against the CPU reference
// (kernels/cpu/attention.cc) on the prefill tiles of kernels/attention_plan.h: fresh random
// inputs, bf16 and f16, head dims 64 and 128, GQA groups 1, 3, 4 and 8, ragged batches of 1 to
// 24 sequences mixing whole prompts with chunked-prefill continuations over cached pages,
// contexts up to 5k keys, pages of 16 and 32 tokens shuffled through the pool, causal with and
// without a sliding window. Outputs are NaN-poisoned first: a tile row never written fails, and
// a row outside the tiles must stay NaN (the kernel writes nothing else). The pool's unused
// slots are NaN and every table entry wholly before a sequence's windows points at a page of
// NaN, so a kernel that lets a key no row sees into P V fails too.
#include <catch2/catch.hpp>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention_plan.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/launch.h"
#include "tests/kernels/op_cases.h"
#include "tests/kernels/typed_tensors.h"

namespace arbor::testing {
namespace {

using kernels::DType;
using kernels::PagedAttentionArgs;
using kernels::PrefillKernel;

template <typename T>
T Must(absl::StatusOr<T> v) {
  INFO(v.status().ToString());
  REQUIRE(v.ok());
  return std::move(*v);
}

struct PrefillCase {
  DType dtype;
  int64_t head_dim, kv_heads, group;
  int64_t seqs, min_len, max_len;  // sequence lengths drawn from [min_len, max_len]
  int64_t block_size;
  int64_t window = 0;
  // New tokens of a continuation (the rest of the sequence cached): 1 to max_chunk. Half the
  // sequences (a coin) are whole prompts instead.
  int64_t max_chunk = 0;
};

std::string Describe(const PrefillCase& c) {
  return std::string(kernels::DTypeName(c.dtype)) + " head_dim " + std::to_string(c.head_dim) +
         ", " + std::to_string(c.kv_heads) + " kv heads x group " + std::to_string(c.group) +
         ", " + std::to_string(c.seqs) + " seqs of " + std::to_string(c.min_len) + "-" +
         std::to_string(c.max_len) + ", pages of " + std::to_string(c.block_size) +
         ", window " + std::to_string(c.window) + ", chunks up to " +
         std::to_string(c.max_chunk);
}

struct Batch {
  PrefillCase c;
  int64_t hq = 0, kv_dim = 0, max_blocks = 0, num_pages = 0;
  std::vector<uint8_t> pool;  // [num_pages][2][block_size][kv_dim] of c.dtype (one layer)
  std::vector<int32_t> tables, token_seq, q_pos;
  std::vector<kernels::RowRun> runs;
  kernels::AttentionPlan plan;
  HostTensor q;
  int64_t rows() const { return int64_t(token_seq.size()); }
};

Batch MakeBatch(const PrefillCase& c, std::mt19937_64& rng) {
  Batch b;
  b.c = c;
  b.hq = c.kv_heads * c.group;
  b.kv_dim = c.kv_heads * c.head_dim;
  std::uniform_int_distribution<int64_t> len(c.min_len, c.max_len), coin(0, 1);
  std::vector<int64_t> lengths, news;
  int64_t total_blocks = 0;
  for (int64_t s = 0; s < c.seqs; ++s) {
    lengths.push_back(len(rng));
    const int64_t l = lengths.back();
    const bool whole = c.max_chunk == 0 || coin(rng) == 0;
    news.push_back(whole ? l
                         : std::uniform_int_distribution<int64_t>(1, std::min(l, c.max_chunk))(rng));
    const int64_t blocks = (l + c.block_size - 1) / c.block_size;
    b.max_blocks = std::max(b.max_blocks, blocks);
    total_blocks += blocks;
  }
  b.num_pages = total_blocks + 3;
  const int64_t nan_page = b.num_pages - 1;
  std::vector<int32_t> ids(size_t(b.num_pages - 1));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const int64_t page_elems = 2 * c.block_size * b.kv_dim;
  b.pool.assign(size_t(b.num_pages * page_elems) * kernels::DTypeSize(c.dtype), 0xFF);  // NaN
  b.tables.assign(size_t(c.seqs * b.max_blocks), -1);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  size_t next = 0;
  for (int64_t s = 0; s < c.seqs; ++s) {
    const int64_t l = lengths[size_t(s)], fresh = news[size_t(s)];
    b.runs.push_back({int32_t(b.token_seq.size()), int32_t(fresh)});
    int64_t first_seen = l;
    for (int64_t p = l - fresh; p < l; ++p) {
      b.token_seq.push_back(int32_t(s));
      b.q_pos.push_back(int32_t(p));
      first_seen = std::min(first_seen, kernels::AttentionKeys(p, c.window, 1).first);
    }
    for (int64_t blk = 0; blk * c.block_size < l; ++blk) {
      const bool seen = (blk + 1) * c.block_size > first_seen;
      const int32_t page = seen ? ids[next++] : int32_t(nan_page);
      b.tables[size_t(s * b.max_blocks + blk)] = page;
      if (!seen) continue;
      for (int64_t j = blk * c.block_size; j < std::min(l, (blk + 1) * c.block_size); ++j) {
        for (int kv = 0; kv < 2; ++kv) {
          const int64_t at = page * page_elems + (kv * c.block_size + j % c.block_size) * b.kv_dim;
          for (int64_t e = 0; e < b.kv_dim; ++e) {
            kernels::StoreFromFloat(b.pool.data(), c.dtype, at + e,
                                    kernels::RoundTo(c.dtype, unit(rng)));
          }
        }
      }
    }
  }
  b.plan = kernels::PlanAttention(
      b.runs, kernels::PrefillTileTokens(c.dtype, c.dtype, c.head_dim, c.group));
  b.q = RandomTensor(rng, c.dtype, b.rows(), b.hq * c.head_dim);
  return b;
}

struct Placed {
  DeviceTensor q;
  kernels::DeviceBuffer pool, tables, token_seq, q_pos, tiles;
};

Placed Place(kernels::Backend& be, const Batch& b) {
  Placed p;
  p.q = Must(Upload(be, b.q, 2 * b.kv_dim));  // a column slice of a fused qkv row (strided)
  p.pool = Must(UploadBytes(be, b.pool.data(), b.pool.size()));
  p.tables = Must(UploadInts(be, b.tables));
  p.token_seq = Must(UploadInts(be, b.token_seq));
  p.q_pos = Must(UploadInts(be, b.q_pos));
  p.tiles = Must(UploadInts(be, b.plan.prefill_tiles.empty() ? std::vector<int32_t>{0}
                                                               : b.plan.prefill_tiles));
  return p;
}

PagedAttentionArgs Args(const Batch& b, const Placed& p, const kernels::Tensor& out) {
  PagedAttentionArgs a;
  a.q = p.q.view;
  a.out = out;
  a.kv = {p.pool.data(), b.c.dtype, b.c.block_size, 1, b.kv_dim, 0};
  a.block_tables = p.tables.as<int32_t>();
  a.token_seq = p.token_seq.as<int32_t>();
  a.q_positions = p.q_pos.as<int32_t>();
  a.num_seqs = b.c.seqs;
  a.max_blocks = b.max_blocks;
  a.num_q_heads = b.hq;
  a.num_kv_heads = b.c.kv_heads;
  a.head_dim = b.c.head_dim;
  a.sliding_window = b.c.window;
  a.scale = float(1.0 / std::sqrt(double(b.c.head_dim)));
  a.max_context = b.max_blocks * b.c.block_size;
  return a;
}

std::vector<double> Reference(const Batch& b) {
  kernels::CpuBackend cpu;
  const Placed p = Place(cpu, b);
  DeviceTensor out = Must(Poisoned(cpu, b.c.dtype, b.rows(), b.hq * b.c.head_dim));
  REQUIRE(cpu.PagedAttention(Args(b, p, out.view), cpu.default_stream()).ok());
  const HostTensor got = Must(Download(cpu, out.view));
  return std::vector<double>(got.v.begin(), got.v.end());
}

// The tiles of the batch through `kernel` (LaunchPrefillAttention: tiles only) into a
// NaN-poisoned output, downloaded.
HostTensor RunTiles(kernels::Backend& be, const Batch& b, const Placed& p, PrefillKernel kernel) {
  DeviceTensor out = Must(Poisoned(be, b.c.dtype, b.rows(), b.hq * b.c.head_dim, 2));
  PagedAttentionArgs a = Args(b, p, out.view);
  a.prefill_tiles = p.tiles.as<int32_t>();
  a.num_prefill_tiles = b.plan.num_tiles();
  REQUIRE(be.default_stream().Synchronize().ok());
  const auto stream = static_cast<cudaStream_t>(be.default_stream().native());
  REQUIRE(kernels::LaunchPrefillAttention(a, stream, kernel) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  return Must(Download(be, out.view));
}

bool OnHopper() {
  int device = 0, major = 0;
  return cudaGetDevice(&device) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) ==
             cudaSuccess &&
         major == 9;
}

std::vector<PrefillCase> Cases() {
  constexpr DType kBF16 = DType::kBF16, kF16 = DType::kF16;
  return {
      // dtype, head_dim, kv heads, group, seqs, lengths, page size, window, chunk
      {kBF16, 128, 2, 4, 3, 1, 700, 16},             // whole prompts, Llama-3's group
      {kBF16, 128, 1, 4, 1, 4096, 4096, 32},         // one 4k prompt (bench_attention's shape)
      {kF16, 128, 2, 4, 6, 300, 2000, 16, 0, 200},   // continuations over cached pages
      {kBF16, 128, 2, 1, 4, 1, 500, 32, 0, 150},     // group 1: 128 tokens a tile
      {kF16, 128, 1, 8, 5, 100, 900, 16},            // group 8: 16 tokens a tile
      {kBF16, 128, 3, 3, 4, 1, 400, 32, 0, 64},      // group 3: 96 of 128 rows live
      {kBF16, 128, 2, 4, 3, 1000, 5000, 16, 700, 300},  // a sliding window, chunks past it
      {kF16, 128, 2, 8, 2, 2000, 3000, 32, 129, 0},  // a window of 129 (one key past a block)
      {kBF16, 64, 2, 4, 5, 1, 1200, 16, 0, 100},
      {kF16, 64, 2, 1, 3, 500, 1500, 32, 256, 0},
      {kBF16, 64, 1, 8, 24, 1, 200, 16, 0, 40},      // many short ragged sequences
      {kF16, 64, 4, 4, 2, 1, 3, 16},                 // prompts of 1 to 3 tokens
      {kBF16, 128, 1, 4, 1, 130, 130, 16, 1, 0},     // window 1: a token sees itself
  };
}

TEST_CASE("the prefill kernels match the CPU reference on their tiles", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  const bool hopper = OnHopper();
  if (!hopper) WARN("not a Hopper GPU: the wgmma kernel is refused, the others are checked");
  std::mt19937_64 rng(Catch::rngSeed() + 29);
  for (const PrefillCase& c : Cases()) {
    const Batch b = MakeBatch(c, rng);
    if (b.plan.num_tiles() == 0) continue;
    const std::vector<double> want_all = Reference(b);
    const Placed p = Place(be, b);
    const int64_t width = b.hq * c.head_dim;
    std::vector<bool> in_tile(size_t(b.rows()), false);
    for (int64_t t = 0; t < b.plan.num_tiles(); ++t) {
      const int32_t first = b.plan.prefill_tiles[size_t(2 * t)];
      const int32_t count = b.plan.prefill_tiles[size_t(2 * t + 1)];
      for (int32_t r = first; r < first + count; ++r) in_tile[size_t(r)] = true;
    }
    for (const PrefillKernel kernel :
         {PrefillKernel::kAuto, PrefillKernel::kMmaSync, PrefillKernel::kWgmma}) {
      INFO(Describe(c) << "; " << kernels::PrefillKernelName(kernel) << " kernel, " << b.rows()
                       << " rows, " << b.plan.num_tiles() << " tiles");
      if (kernel == PrefillKernel::kWgmma && !hopper) {
        DeviceTensor out = Must(Poisoned(be, c.dtype, b.rows(), width, 2));
        PagedAttentionArgs a = Args(b, p, out.view);
        a.prefill_tiles = p.tiles.as<int32_t>();
        a.num_prefill_tiles = b.plan.num_tiles();
        CHECK(kernels::LaunchPrefillAttention(a, nullptr, kernel) == cudaErrorNotSupported);
        continue;
      }
      const HostTensor got = RunTiles(be, b, p, kernel);
      std::vector<float> tile_got;
      std::vector<double> tile_want;
      int64_t written_outside = 0;
      for (int64_t r = 0; r < b.rows(); ++r) {
        for (int64_t e = 0; e < width; ++e) {
          const float v = got.v[size_t(r * width + e)];
          if (in_tile[size_t(r)]) {
            tile_got.push_back(v);
            tile_want.push_back(want_all[size_t(r * width + e)]);
          } else {
            written_outside += !std::isnan(v);
          }
        }
      }
      // P is rounded to the 16-bit type before P V: an output, a weighted mean of values in
      // [-1, 1], moves by at most the type's unit roundoff (ops_parity's tolerance).
      CHECK(Compare(tile_got, tile_want, c.dtype, 1, c.dtype == DType::kBF16 ? 0x1p-8 : 0x1p-11) ==
            "");
      CHECK(written_outside == 0);
    }
  }
  REQUIRE(be.Health().ok());
}

TEST_CASE("the wgmma prefill kernel takes dilation 1 and 16-byte aligned q rows only",
          "[kernels]") {
  alignas(16) static uint16_t page[64];
  alignas(16) static uint16_t q[64];
  static const int32_t tiles[2] = {0, 1};
  PagedAttentionArgs a;
  a.q.data = q;
  a.q.dtype = a.out.dtype = DType::kBF16;
  a.q.rows = a.out.rows = 1;
  a.q.stride = 48 * 128;  // a column slice of qkv
  a.out.data = q;
  a.out.stride = 32 * 128;
  a.kv = {page, DType::kBF16, 16, 1, 8 * 128, 0};
  a.num_q_heads = 32;
  a.num_kv_heads = 8;
  a.head_dim = 128;
  a.prefill_tiles = tiles;
  a.num_prefill_tiles = 1;
  CHECK(kernels::PrefillAttentionSm90Takes(a));
  PagedAttentionArgs other = a;
  other.head_dim = 64;
  other.kv.kv_dim = 8 * 64;
  CHECK(kernels::PrefillAttentionSm90Takes(other));
  other.q.dtype = other.out.dtype = other.kv.dtype = DType::kF16;
  CHECK(kernels::PrefillAttentionSm90Takes(other));
  other = a;
  other.sliding_window = 4096;
  CHECK(kernels::PrefillAttentionSm90Takes(other));
  other = a;
  other.dilation = 2;  // stays on the mma.sync kernel
  CHECK_FALSE(kernels::PrefillAttentionSm90Takes(other));
  other = a;
  other.q.data = q + 4;  // 8-byte aligned rows
  CHECK_FALSE(kernels::PrefillAttentionSm90Takes(other));
  other = a;
  other.q.stride = 48 * 128 + 4;
  CHECK_FALSE(kernels::PrefillAttentionSm90Takes(other));
  other = a;
  other.head_dim = 96;
  other.kv.kv_dim = 8 * 96;
  CHECK_FALSE(kernels::PrefillAttentionSm90Takes(other));
  other = a;
  other.num_q_heads = 8 * 12;  // groups above 8
  CHECK_FALSE(kernels::PrefillAttentionSm90Takes(other));
  other = a;
  other.kv.dtype = DType::kF16;  // bf16 queries over an f16 cache
  CHECK_FALSE(kernels::PrefillAttentionSm90Takes(other));
  other = a;
  other.num_prefill_tiles = 0;
  CHECK_FALSE(kernels::PrefillAttentionSm90Takes(other));
  CHECK(std::string(kernels::PrefillKernelName(PrefillKernel::kWgmma)) == "wgmma");
  CHECK(std::string(kernels::PrefillKernelName(PrefillKernel::kMmaSync)) == "mma-sync");
  CHECK(std::string(kernels::PrefillKernelName(PrefillKernel::kAuto)) == "auto");
}

}  // namespace
}  // namespace arbor::testing
