// The prefill kernels of the CUDA backend (kernels/cuda/launch.h PrefillKernel: the mma.sync
// kernel and the Hopper wgmma kernel), each forced, and the auto pick, against the CPU reference
// (kernels/cpu/attention.cc) on the prefill tiles of kernels/attention_plan.h: fresh random
// inputs, bf16 and f16, head dims 64, 80, 96, 128 and 256 (the wgmma kernel takes 64 and 128 and
// is refused elsewhere), GQA groups 1, 3, 4 and 8, ragged batches of 1 to 24 sequences mixing
// whole prompts with chunked-prefill continuations over cached pages, contexts up to 5k keys,
// pages of 16 and 32 tokens shuffled through the pool, causal with and without a sliding window,
// with and without dilation. Outputs are NaN-poisoned first: a tile row never written fails, and
// a row outside the tiles must stay NaN (the kernel writes nothing else). The pool's unused
// slots are NaN and every table entry wholly before a sequence's windows points at a page of
// NaN (or, in some cases, is -1: a freed page), so a kernel that lets a key no row sees into
// P V fails too. The wgmma kernel's ring runs through 1, kStages, kStages + 1 and more blocks,
// and tiles too short for its second consumer warpgroup. The CPU reference runs on every host
// core. Head dims no tensor-core
// kernel takes (16 and 24 of the tiny fixtures, 40, 72) get no tiles: the whole pass runs per
// token, checked too.
#include <catch2/catch.hpp>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <thread>
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
  int64_t dilation = 1;
  // Table entries wholly before every window of a sequence: -1 (pages the engine freed) rather
  // than a page of NaN.
  bool freed_before_window = false;
};

std::string Describe(const PrefillCase& c) {
  return std::string(kernels::DTypeName(c.dtype)) + " head_dim " + std::to_string(c.head_dim) +
         ", " + std::to_string(c.kv_heads) + " kv heads x group " + std::to_string(c.group) +
         ", " + std::to_string(c.seqs) + " seqs of " + std::to_string(c.min_len) + "-" +
         std::to_string(c.max_len) + ", pages of " + std::to_string(c.block_size) +
         ", window " + std::to_string(c.window) + ", dilation " + std::to_string(c.dilation) +
         ", chunks up to " + std::to_string(c.max_chunk) +
         (c.freed_before_window ? ", -1 pages before the windows" : "");
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
      first_seen = std::min(first_seen, kernels::AttentionKeys(p, c.window, c.dilation).first);
    }
    for (int64_t blk = 0; blk * c.block_size < l; ++blk) {
      const bool seen = (blk + 1) * c.block_size > first_seen;
      const int32_t page =
          seen ? ids[next++] : (c.freed_before_window ? int32_t(-1) : int32_t(nan_page));
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
  a.dilation = b.c.dilation;
  a.scale = float(1.0 / std::sqrt(double(b.c.head_dim)));
  a.max_context = b.max_blocks * b.c.block_size;
  return a;
}

// The CPU reference (kernels::CpuPagedAttention, the CPU backend's kernel) of every row, run on
// all host cores over slices of 16 rows: a row's output depends on its own q row, position and
// sequence only, so a slice is the same op on fewer rows. (One thread took most of a minute on
// the cases here; the 4k prompt alone is 8.6 G multiply-adds in doubles.)
std::vector<double> Reference(const Batch& b) {
  kernels::CpuBackend cpu;
  const Placed p = Place(cpu, b);
  DeviceTensor out = Must(Poisoned(cpu, b.c.dtype, b.rows(), b.hq * b.c.head_dim));
  const PagedAttentionArgs all = Args(b, p, out.view);
  const int64_t elem = kernels::DTypeSize(b.c.dtype);
  constexpr int64_t kSlice = 16;
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t r0 = next.fetch_add(kSlice); r0 < b.rows(); r0 = next.fetch_add(kSlice)) {
      PagedAttentionArgs a = all;
      a.q.data = static_cast<uint8_t*>(all.q.data) + r0 * all.q.stride * elem;
      a.out.data = static_cast<uint8_t*>(all.out.data) + r0 * all.out.stride * elem;
      a.q.rows = a.out.rows = std::min(kSlice, b.rows() - r0);
      a.token_seq = all.token_seq + r0;
      a.q_positions = all.q_positions + r0;
      kernels::CpuPagedAttention(a);
    }
  };
  const int64_t threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 64);
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
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
      {kBF16, 64, 2, 4, 4, 100, 900, 16, 0, 120, 2},   // dilation 2
      {kF16, 128, 1, 8, 3, 1, 700, 32, 50, 0, 4},      // a window of 50 keys of dilation 4
      // The other head dims of the mma.sync kernel: 80 and 96 (Q in registers, 11 and 13
      // chunks a shared row), 256 (Q's fragments in shared memory).
      {kBF16, 80, 2, 4, 5, 1, 777, 16, 0, 150},
      {kF16, 80, 1, 8, 3, 300, 1900, 32, 333, 0},
      {kBF16, 80, 3, 1, 4, 1, 300, 16, 7, 0, 2},
      {kF16, 96, 2, 1, 3, 1, 1000, 32, 0, 200},
      {kBF16, 96, 1, 4, 6, 1, 95, 16, 0, 0},
      {kBF16, 96, 2, 3, 2, 500, 2500, 16, 256, 100, 3},
      {kBF16, 256, 2, 4, 3, 1, 1100, 16, 0, 300},
      {kF16, 256, 1, 8, 2, 700, 2100, 32, 129, 0},
      {kBF16, 256, 1, 1, 3, 1, 400, 32, 0, 0, 2},
      {kF16, 256, 2, 3, 4, 1, 33, 16},  // prompts shorter than a key block
      // The wgmma kernel's ring (128-key blocks; 3 stages at head_dim 128, 4 at 64) through 1,
      // kStages, kStages + 1 and more blocks, and tiles whose second consumer warpgroup has no
      // token (at most 64 / group tokens).
      {kBF16, 128, 1, 4, 4, 1, 16, 16},              // one block; warpgroup 1 idle
      {kF16, 128, 2, 1, 3, 1, 64, 32, 0, 0},         // group 1, one warpgroup's worth or less
      {kF16, 64, 2, 8, 5, 1, 9, 32},                 // group 8: 1 to 9 tokens
      {kBF16, 128, 2, 1, 2, 257, 384, 32},           // 3 blocks (kStages at 128)
      {kF16, 128, 1, 8, 3, 385, 512, 16, 0, 100},    // 4 blocks (kStages + 1), chunks
      {kBF16, 64, 2, 4, 2, 385, 640, 32, 0, 200},    // 4-5 blocks (kStages, + 1 at 64)
      {kBF16, 128, 2, 4, 2, 1500, 2600, 16, 300, 200, 1, true},  // freed pages (-1) before
      {kF16, 64, 1, 8, 2, 1500, 2600, 32, 777, 0, 1, true},      // the windows
      {kBF16, 128, 1, 4, 2, 900, 1300, 32, 128, 64, 2, true},    // and with dilation
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
    // Every case's shapes are the tensor-core kernel's: a plan without tiles would check nothing.
    CHECK(kernels::PrefillTileTokens(c.dtype, c.dtype, c.head_dim, c.group) > 0);
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
    // The wgmma kernel's shapes: head_dim 64 or 128, dilation 1.
    const bool wgmma_takes = (c.head_dim == 64 || c.head_dim == 128) && c.dilation == 1;
    for (const PrefillKernel kernel :
         {PrefillKernel::kAuto, PrefillKernel::kMmaSync, PrefillKernel::kWgmma}) {
      INFO(Describe(c) << "; " << kernels::PrefillKernelName(kernel) << " kernel, " << b.rows()
                       << " rows, " << b.plan.num_tiles() << " tiles");
      if (kernel == PrefillKernel::kWgmma && !(hopper && wgmma_takes)) {
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

// A whole pass through the launcher (kernels/cuda/launch.h LaunchPagedAttention, the backend's
// pick): tiles to the prefill kernel, the plan's other rows to the decode kernels. At head dims
// no tensor-core kernel takes, PrefillTileTokens gives no tiles and every row runs on the
// per-token kernel (any head dim up to 256).
TEST_CASE("whole prefill passes match the CPU reference at every head dim", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  constexpr DType kBF16 = DType::kBF16, kF16 = DType::kF16;
  const std::vector<PrefillCase> cases = {
      // dtype, head_dim, kv heads, group, seqs, lengths, page size, window, chunk, dilation
      {kBF16, 16, 2, 2, 3, 1, 200, 16, 0, 50},
      {kF16, 24, 1, 4, 4, 1, 300, 32, 7, 0, 2},
      {kBF16, 40, 2, 4, 3, 1, 500, 16, 0, 100},
      {kF16, 72, 1, 8, 2, 100, 900, 32, 100, 0},
      {kBF16, 80, 2, 4, 4, 1, 600, 16, 0, 100},
      {kF16, 96, 1, 8, 3, 1, 400, 32, 33, 60, 2},
      {kBF16, 256, 1, 4, 3, 1, 500, 16, 0, 100},
  };
  std::mt19937_64 rng(Catch::rngSeed() + 31);
  for (const PrefillCase& c : cases) {
    INFO(Describe(c));
    const bool tensor_core = c.head_dim == 64 || c.head_dim == 80 || c.head_dim == 96 ||
                             c.head_dim == 128 || c.head_dim == 256;
    CHECK((kernels::PrefillTileTokens(c.dtype, c.dtype, c.head_dim, c.group) > 0) == tensor_core);
    const Batch b = MakeBatch(c, rng);
    const std::vector<double> want = Reference(b);
    const Placed p = Place(be, b);
    const kernels::DeviceBuffer decode_rows = Must(UploadInts(
        be, b.plan.decode_rows.empty() ? std::vector<int32_t>{0} : b.plan.decode_rows));
    // Two padding columns: an even row stride, as PrefillAttentionFits needs.
    DeviceTensor out = Must(Poisoned(be, c.dtype, b.rows(), b.hq * c.head_dim, 2));
    PagedAttentionArgs a = Args(b, p, out.view);
    a.prefill_tiles = p.tiles.as<int32_t>();
    a.num_prefill_tiles = b.plan.num_tiles();
    a.decode_rows = decode_rows.as<int32_t>();
    a.num_decode_rows = int64_t(b.plan.decode_rows.size());
    CHECK(kernels::PrefillAttentionFits(a) == (tensor_core && b.plan.num_tiles() > 0));
    REQUIRE(be.default_stream().Synchronize().ok());
    const auto stream = static_cast<cudaStream_t>(be.default_stream().native());
    REQUIRE(kernels::LaunchPagedAttention(a, stream) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    const HostTensor got = Must(Download(be, out.view));
    // The tiles' tolerance (P rounded to the 16-bit type) covers the per-token rows too.
    CHECK(Compare(got.v, want, c.dtype, 2, c.dtype == DType::kBF16 ? 0x1p-8 : 0x1p-11) == "");
  }
  REQUIRE(be.Health().ok());
}

TEST_CASE("the mma.sync prefill kernel takes head dims 64, 80, 96, 128 and 256", "[kernels]") {
  alignas(16) static uint16_t page[64];
  static const int32_t tiles[2] = {0, 1};
  PagedAttentionArgs a;
  a.q.data = a.out.data = page;
  a.q.dtype = a.out.dtype = DType::kBF16;
  a.q.rows = a.out.rows = 1;
  a.kv = {page, DType::kBF16, 16, 1, 0, 0};
  a.num_q_heads = 32;
  a.num_kv_heads = 8;
  a.prefill_tiles = tiles;
  a.num_prefill_tiles = 1;
  for (int64_t hd = 1; hd <= 264; ++hd) {
    INFO("head_dim " << hd);
    a.head_dim = hd;
    a.kv.kv_dim = 8 * hd;
    a.q.stride = 48 * hd;
    a.out.stride = 32 * hd;
    const bool compiled = hd == 64 || hd == 80 || hd == 96 || hd == 128 || hd == 256;
    // The plan cuts tiles exactly where the kernel takes them, and the wgmma kernel only 64/128.
    CHECK(kernels::PrefillAttentionFits(a) == compiled);
    CHECK((kernels::PrefillTileTokens(DType::kBF16, DType::kBF16, hd, 4) > 0) == compiled);
    CHECK(kernels::PrefillAttentionSm90Takes(a) == (hd == 64 || hd == 128));
  }
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
