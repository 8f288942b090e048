// CPU references for the per-token model ops: embedding lookup, RoPE with the KV write, and the
// seeded fill of dummy weights.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/philox.h"

namespace arbor::kernels {

void CpuEmbedding(const EmbeddingArgs& a) {
  const size_t row_bytes = size_t(a.out.cols) * DTypeSize(a.out.dtype);
  for (int64_t t = 0; t < a.out.rows; ++t) {
    char* out = static_cast<char*>(a.out.data) + a.out.At(t, 0) * DTypeSize(a.out.dtype);
    const int64_t id = a.ids[t];
    if (id < 0 || id >= a.table.rows) {
      std::memset(out, 0, row_bytes);
      continue;
    }
    std::memcpy(
        out, static_cast<const char*>(a.table.data) + a.table.At(id, 0) * DTypeSize(a.table.dtype),
        row_bytes);
  }
}

namespace {

// Element offset of (token slot, K or V) in the pages for the view's layer.
int64_t KvOffset(const PagedKv& kv, int64_t slot, int kv_index) {
  const int64_t page = slot / kv.block_size, off = slot % kv.block_size;
  const int64_t page_elems = kv.num_layers * 2 * kv.block_size * kv.kv_dim;
  return page * page_elems + ((kv.layer * 2 + kv_index) * kv.block_size + off) * kv.kv_dim;
}

}  // namespace

void CpuRopeKvWrite(const RopeKvWriteArgs& a) {
  const DType t = a.qkv.dtype;
  const int64_t d = a.head_dim, half = d / 2, q_dim = a.num_q_heads * d;
  const int64_t kv_dim = a.num_kv_heads * d;
  for (int64_t tok = 0; tok < a.qkv.rows; ++tok) {
    const int32_t pos = a.positions[tok];
    for (int64_t i = 0; i < half; ++i) {
      // fp32 angle as torch computes it (position * inv_freq in fp32), then cos/sin in fp32,
      // scaled and rounded to the activations' dtype.
      const float angle = float(pos) * a.inv_freq[i];
      const float c = RoundTo(t, std::cos(angle) * a.attention_factor);
      const float s = RoundTo(t, std::sin(angle) * a.attention_factor);
      // q heads, then k heads: they sit side by side at the front of the row.
      for (int64_t h = 0; h < a.num_q_heads + a.num_kv_heads; ++h) {
        const int64_t col = h * d + i;
        const float x0 = a.qkv.Load(tok, col);
        const float x1 = a.qkv.Load(tok, col + half);
        a.qkv.Store(tok, col, RoundTo(t, RoundTo(t, x0 * c) - RoundTo(t, x1 * s)));
        a.qkv.Store(tok, col + half, RoundTo(t, RoundTo(t, x1 * c) + RoundTo(t, x0 * s)));
      }
    }
    const int64_t slot = a.slots[tok];
    if (slot < 0) continue;  // a padding row: rotated, not cached
    const int64_t k_at = KvOffset(a.kv, slot, 0), v_at = KvOffset(a.kv, slot, 1);
    for (int64_t c = 0; c < kv_dim; ++c) {
      StoreFromFloat(a.kv.pages, a.kv.dtype, k_at + c, a.qkv.Load(tok, q_dim + c));
      StoreFromFloat(a.kv.pages, a.kv.dtype, v_at + c, a.qkv.Load(tok, q_dim + kv_dim + c));
    }
  }
}

void CpuRandomFill(const RandomFillArgs& a) {
  // Rows split over the machine's threads: a 1B-parameter dummy model is a billion draws.
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>(std::thread::hardware_concurrency(), a.out.rows * a.out.cols / 65536));
  const int64_t per = (a.out.rows + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t) {
    pool.emplace_back([&a, first = t * per, last = std::min(a.out.rows, (t + 1) * per)] {
      for (int64_t r = first; r < last; ++r) {
        for (int64_t c = 0; c < a.out.cols; ++c) {
          a.out.Store(r, c,
                      PhiloxUniform(a.seed, a.stream, uint64_t(r * a.out.cols + c), a.lo, a.hi));
        }
      }
    });
  }
  for (auto& th : pool) th.join();
}

}  // namespace arbor::kernels
