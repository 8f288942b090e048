// Both decode attention kernels of the CUDA backend (kernels/cuda/launch.h DecodeKernel: the
// per-token kernel and the tensor-core kernel at each of its pipeline depths), forced one at a
// time, unsplit and split-KV, against the CPU reference (kernels/cpu/attention.cc): fresh random
// inputs, bf16 and f16, the tensor-core kernel's head dims 64, 80, 96, 128 and 256 (80 and 96
// with padded shared rows, 256 with two warps a CTA) and the per-token kernel's other ones (16
// and 24 of the tiny fixtures, 40 and 72; a tensor-core kernel forced there is refused), GQA
// groups 1, 3, 4, 8 and 12 (two CTAs per KV head), ragged batches of 1 to 64 sequences with 1
// to 5 rows each, contexts of 1 to 32k keys (most not a multiple of the 16-key tile), pages of
// 16 and 32 tokens shuffled through the pool, sliding windows and dilation, a padding row.
// Outputs and the split workspace are NaN-poisoned first (an element never written fails), the
// pool's unused slots are NaN, and every table entry wholly before a sequence's windows points
// at a page of NaN, so a kernel that reads a key a row does not see fails too. A row's bits
// must not depend on its batch: the last row run alone gives the bits it got in the batch.
#include <catch2/catch.hpp>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
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

using kernels::DecodeKernel;
using kernels::DType;
using kernels::PagedAttentionArgs;

template <typename T>
T Must(absl::StatusOr<T> v) {
  INFO(v.status().ToString());
  REQUIRE(v.ok());
  return std::move(*v);
}

struct DecodeCase {
  DType dtype;
  int64_t head_dim, kv_heads, group;
  int64_t seqs, min_len, max_len;  // sequence lengths drawn from [min_len, max_len]
  int64_t block_size;
  int64_t window = 0, dilation = 1;
  int64_t max_new = 1;       // rows per sequence: its last 1 to max_new positions
  bool padding_row = false;  // one more row at position -1 (a CUDA-graph batch's padding)
};

std::string Describe(const DecodeCase& c) {
  return std::string(kernels::DTypeName(c.dtype)) + " head_dim " + std::to_string(c.head_dim) +
         ", " + std::to_string(c.kv_heads) + " kv heads x group " + std::to_string(c.group) +
         ", " + std::to_string(c.seqs) + " seqs of " + std::to_string(c.min_len) + "-" +
         std::to_string(c.max_len) + ", pages of " + std::to_string(c.block_size) +
         ", window " + std::to_string(c.window) + ", dilation " + std::to_string(c.dilation) +
         ", up to " + std::to_string(c.max_new) + " rows a sequence" +
         (c.padding_row ? ", a padding row" : "");
}

// A batch on the host: pool bytes, block tables, rows and queries.
struct Batch {
  DecodeCase c;
  int64_t hq = 0, kv_dim = 0, max_blocks = 0, num_pages = 0;
  std::vector<uint8_t> pool;  // [num_pages][2][block_size][kv_dim] of c.dtype (one layer)
  std::vector<int32_t> tables, token_seq, q_pos;
  HostTensor q;
  int64_t rows() const { return int64_t(token_seq.size()); }
};

Batch MakeBatch(const DecodeCase& c, std::mt19937_64& rng) {
  Batch b;
  b.c = c;
  b.hq = c.kv_heads * c.group;
  b.kv_dim = c.kv_heads * c.head_dim;
  std::uniform_int_distribution<int64_t> len(c.min_len, c.max_len), fresh(1, c.max_new);
  std::vector<int64_t> lengths;
  int64_t total_blocks = 0;
  for (int64_t s = 0; s < c.seqs; ++s) {
    lengths.push_back(len(rng));
    const int64_t blocks = (lengths.back() + c.block_size - 1) / c.block_size;
    b.max_blocks = std::max(b.max_blocks, blocks);
    total_blocks += blocks;
  }
  // Pages for every block, plus page `nan_page` (all NaN) for blocks no row's window reaches.
  b.num_pages = total_blocks + 3;
  const int64_t nan_page = b.num_pages - 1;
  std::vector<int32_t> ids(size_t(b.num_pages - 1));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const int64_t page_elems = 2 * c.block_size * b.kv_dim;
  b.pool.assign(size_t(b.num_pages * page_elems) * kernels::DTypeSize(c.dtype), 0xFF);
  b.tables.assign(size_t(c.seqs * b.max_blocks), -1);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  size_t next = 0;
  for (int64_t s = 0; s < c.seqs; ++s) {
    const int64_t l = lengths[size_t(s)];
    const int64_t news = std::min(l, fresh(rng));
    int64_t first_seen = l;  // the lowest position any of the sequence's rows sees
    for (int64_t p = l - news; p < l; ++p) {
      b.token_seq.push_back(int32_t(s));
      b.q_pos.push_back(int32_t(p));
      first_seen = std::min(first_seen, kernels::AttentionKeys(p, c.window, c.dilation).first);
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
  if (c.padding_row) {
    b.token_seq.push_back(0);
    b.q_pos.push_back(-1);
  }
  b.q = RandomTensor(rng, c.dtype, b.rows(), b.hq * c.head_dim);
  return b;
}

// The batch's buffers on one backend.
struct Placed {
  DeviceTensor q;
  kernels::DeviceBuffer pool, tables, token_seq, q_pos;
};

Placed Place(kernels::Backend& be, const Batch& b) {
  Placed p;
  // q as a column slice of a fused qkv row (strided).
  p.q = Must(Upload(be, b.q, 2 * b.kv_dim));
  p.pool = Must(UploadBytes(be, b.pool.data(), b.pool.size()));
  p.tables = Must(UploadInts(be, b.tables));
  p.token_seq = Must(UploadInts(be, b.token_seq));
  p.q_pos = Must(UploadInts(be, b.q_pos));
  return p;
}

PagedAttentionArgs Args(const Batch& b, const Placed& p, const kernels::Tensor& out,
                        int64_t rows) {
  PagedAttentionArgs a;
  a.q = kernels::Rows(p.q.view, 0, rows);
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

// The CPU reference's output, as the values to compare against.
std::vector<double> Reference(const Batch& b) {
  kernels::CpuBackend cpu;
  const Placed p = Place(cpu, b);
  DeviceTensor out = Must(Poisoned(cpu, b.c.dtype, b.rows(), b.hq * b.c.head_dim));
  REQUIRE(cpu.PagedAttention(Args(b, p, out.view, b.rows()), cpu.default_stream()).ok());
  const HostTensor got = Must(Download(cpu, out.view));
  return std::vector<double>(got.v.begin(), got.v.end());
}

// `rows` rows from `first` (the pointers offset) through `kernel` on the CUDA backend, split in
// runs of split_keys (0: unsplit) over a NaN-poisoned workspace; the output, downloaded.
HostTensor RunCuda(kernels::Backend& be, const Batch& b, const Placed& p, DecodeKernel kernel,
                   int64_t split_keys, int64_t first, int64_t rows) {
  DeviceTensor out = Must(Poisoned(be, b.c.dtype, rows, b.hq * b.c.head_dim, 3));
  PagedAttentionArgs a = Args(b, p, out.view, b.rows());
  a.q = kernels::Rows(p.q.view, first, rows);
  a.token_seq += first;
  a.q_positions += first;
  kernels::DeviceBuffer workspace;
  if (split_keys > 0) {
    a.split_keys = split_keys;
    const int64_t splits = (a.max_context + split_keys - 1) / split_keys;
    a.split_workspace_floats = rows * b.hq * splits * (b.c.head_dim + 2);
    workspace = Must(UploadFloats(be, std::vector<float>(size_t(a.split_workspace_floats), NAN)));
    a.split_workspace = workspace.as<float>();
  }
  REQUIRE(be.default_stream().Synchronize().ok());
  const auto stream = static_cast<cudaStream_t>(be.default_stream().native());
  REQUIRE(kernels::LaunchPagedAttention(a, stream, kernel) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  return Must(Download(be, out.view));
}

std::vector<DecodeCase> Cases() {
  constexpr DType kBF16 = DType::kBF16, kF16 = DType::kF16;
  return {
      // dtype, head_dim, kv heads, group, seqs, lengths, page size, window, dilation, rows/seq
      {kBF16, 128, 2, 4, 7, 1, 300, 16, 0, 1, 3},
      {kF16, 64, 1, 8, 1, 100, 130, 32},
      {kBF16, 64, 4, 1, 64, 1, 200, 16, 7, 2, 1, true},
      {kBF16, 128, 1, 8, 33, 1, 40, 32, 0, 1, 2},
      {kF16, 128, 1, 4, 3, 16384, 32768, 16},
      {kBF16, 128, 2, 4, 2, 16384, 32768, 32, 4096, 1},
      {kBF16, 64, 2, 4, 5, 1000, 2000, 16, 256, 4},
      {kF16, 64, 1, 12, 4, 1, 500, 16, 0, 3, 4},
      {kBF16, 128, 3, 3, 9, 1, 100, 32, 1, 1, 2, true},
      {kF16, 128, 8, 4, 32, 3000, 4096, 16},
      {kBF16, 64, 2, 8, 17, 1, 1000, 32, 100, 1, 5},
      {kBF16, 128, 2, 1, 5, 200, 700, 16, 0, 4},
      {kF16, 64, 2, 4, 1, 1, 1, 16},
      // The other tensor-core head dims.
      {kBF16, 80, 2, 4, 9, 1, 333, 16, 0, 1, 3},
      {kF16, 80, 1, 8, 5, 17, 1500, 32, 100, 3, 2, true},
      {kBF16, 80, 1, 12, 3, 1, 400, 16, 0, 1, 2},
      {kF16, 80, 4, 1, 2, 5000, 9000, 16},
      {kBF16, 96, 4, 1, 12, 1, 250, 32, 0, 1, 2},
      {kF16, 96, 2, 8, 3, 2000, 5000, 16, 513, 2, 1},
      {kBF16, 96, 1, 4, 7, 1, 700, 16, 1, 1, 3, true},
      {kF16, 96, 2, 3, 2, 16384, 20000, 32},
      {kBF16, 256, 1, 4, 6, 1, 900, 16, 0, 1, 4, true},
      {kF16, 256, 2, 1, 4, 3000, 9000, 32},
      {kBF16, 256, 1, 8, 3, 100, 700, 32, 7, 4, 2},
      {kF16, 256, 1, 8, 2, 17, 47, 16, 0, 1, 5},
      {kBF16, 256, 2, 4, 2, 16384, 20000, 16, 4096, 1},
      // Head dims only the per-token kernel takes: the tiny fixtures' and two odd multiples of 8.
      {kBF16, 40, 2, 4, 5, 1, 300, 16, 0, 2, 2},
      {kF16, 72, 1, 8, 4, 1, 500, 32, 50, 1, 3, true},
      {kBF16, 16, 2, 2, 6, 1, 200, 16, 0, 1, 2},
      {kF16, 24, 1, 4, 3, 1, 300, 32, 9, 2, 1},
  };
}

TEST_CASE("every decode kernel matches the CPU reference, unsplit and split", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  std::mt19937_64 rng(Catch::rngSeed() + 23);
  for (const DecodeCase& c : Cases()) {
    const Batch b = MakeBatch(c, rng);
    const std::vector<double> want = Reference(b);
    const Placed p = Place(be, b);
    const int64_t n = b.rows();
    // The tensor-core kernel takes exactly its compiled head dims (a Fits that said no to one of
    // them would leave only the per-token kernel checked).
    DeviceTensor probe = Must(Poisoned(be, c.dtype, n, b.hq * c.head_dim, 3));
    const bool tensor_core = kernels::DecodeAttentionFits(Args(b, p, probe.view, n));
    CHECK(tensor_core == (c.head_dim == 64 || c.head_dim == 80 || c.head_dim == 96 ||
                          c.head_dim == 128 || c.head_dim == 256));
    // Unsplit, the smallest split and the model's split for this many decode rows.
    const int64_t max_context = b.max_blocks * c.block_size;
    for (const int64_t split_keys :
         {int64_t(0), int64_t(128), kernels::AttentionSplitKeys(max_context, n)}) {
      for (const DecodeKernel kernel : kernels::kDecodeKernels) {
        INFO(Describe(c) << "; " << kernels::DecodeKernelName(kernel) << " kernel, split keys "
                         << split_keys << ", " << n << " rows");
        if (kernel != DecodeKernel::kPerToken && !tensor_core) {
          // A head dim the tensor-core kernel does not compile: forcing it is refused.
          CHECK(kernels::LaunchPagedAttention(Args(b, p, probe.view, n), nullptr, kernel) ==
                cudaErrorNotSupported);
          continue;
        }
        const HostTensor got = RunCuda(be, b, p, kernel, split_keys, 0, n);
        // Both round once to the 16-bit type: a sum that lands near a rounding boundary may
        // round the other way (one unit; two allowed for ex2.approx and fp32 sums over 32k
        // keys), else the fp32 arithmetic's error. A wrong key or head is off by far more.
        CHECK(Compare(got.v, want, c.dtype, 2, 4e-6) == "");
        // The last row alone gives the bits it got in the batch.
        const int64_t last = c.padding_row ? n - 2 : n - 1;
        const HostTensor alone = RunCuda(be, b, p, kernel, split_keys, last, 1);
        const int64_t width = b.hq * c.head_dim;
        int differ = 0;
        for (int64_t e = 0; e < width; ++e) {
          const float x = alone.v[size_t(e)], y = got.v[size_t(last * width + e)];
          differ += std::memcmp(&x, &y, sizeof(float)) != 0;
        }
        CHECK(differ == 0);
      }
    }
  }
  REQUIRE(be.Health().ok());
}

TEST_CASE("the tensor-core decode kernel takes 16-bit head dims 64, 80, 96, 128 and 256 only",
          "[kernels]") {
  alignas(16) static uint16_t page[64];
  PagedAttentionArgs a;
  a.q.dtype = a.out.dtype = DType::kBF16;
  a.q.rows = 4;
  a.kv = {page, DType::kBF16, 16, 1, 8 * 128, 0};
  a.num_q_heads = 32;
  a.num_kv_heads = 8;
  a.head_dim = 128;
  CHECK(kernels::DecodeAttentionFits(a));
  a.head_dim = 64;
  a.kv.kv_dim = 8 * 64;
  CHECK(kernels::DecodeAttentionFits(a));
  a.num_q_heads = 8 * 12;  // groups above 8 take several CTAs per KV head
  CHECK(kernels::DecodeAttentionFits(a));
  a.q.dtype = a.out.dtype = a.kv.dtype = DType::kF16;
  CHECK(kernels::DecodeAttentionFits(a));
  PagedAttentionArgs other = a;
  for (const int64_t hd : {80, 96, 256}) {
    other.head_dim = hd;
    other.kv.kv_dim = 8 * hd;
    CHECK(kernels::DecodeAttentionFits(other));
  }
  // Every other head dim up to 256 runs per token (the tiny fixtures' 16 and 24 among them).
  for (const int64_t hd : {8, 16, 24, 32, 40, 48, 72, 112, 120, 160, 192, 200, 248, 255, 264}) {
    INFO("head_dim " << hd);
    other.head_dim = hd;
    other.kv.kv_dim = 8 * hd;
    CHECK_FALSE(kernels::DecodeAttentionFits(other));
  }
  other = a;
  other.q.dtype = other.out.dtype = DType::kF32;  // f32 queries over a 16-bit cache
  CHECK_FALSE(kernels::DecodeAttentionFits(other));
  other = a;
  other.kv.dtype = DType::kBF16;  // f16 queries, bf16 cache
  CHECK_FALSE(kernels::DecodeAttentionFits(other));
  other = a;
  other.kv.pages = reinterpret_cast<uint8_t*>(page) + 2;  // rows not 16-byte aligned
  CHECK_FALSE(kernels::DecodeAttentionFits(other));
  CHECK(std::string(kernels::DecodeKernelName(DecodeKernel::kTensorCore)) == "tensor-core");
  CHECK(std::string(kernels::DecodeKernelName(DecodeKernel::kPerToken)) == "per-token");
}

}  // namespace
}  // namespace arbor::testing
