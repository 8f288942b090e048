// CPU references for the per-token model ops: embedding lookup, bias add, RoPE.
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {

void CpuEmbedding(const EmbeddingArgs& a) {
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    float* out = a.out + t * a.hidden;
    const int64_t id = a.ids[t];
    if (id < 0 || id >= a.vocab) {
      std::memset(out, 0, size_t(a.hidden) * sizeof(float));
      continue;
    }
    std::memcpy(out, a.table + id * a.hidden, size_t(a.hidden) * sizeof(float));
  }
}

void CpuBiasAdd(const BiasAddArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    float* x = a.x + r * a.cols;
    for (int64_t c = 0; c < a.cols; ++c) x[c] += a.bias[c];
  }
}

namespace {

// One head vector [head_dim] rotated by angle position * inv_freq[i] on pairs (i, i + half).
void RotateHead(float* x, int64_t head_dim, const float* inv_freq, int32_t position) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    // fp32 angle as torch computes it (position * inv_freq in fp32), then cos/sin in fp32.
    const float angle = float(position) * inv_freq[i];
    const float c = std::cos(angle);
    const float s = std::sin(angle);
    const float x0 = x[i];
    const float x1 = x[i + half];
    x[i] = x0 * c - x1 * s;
    x[i + half] = x1 * c + x0 * s;
  }
}

}  // namespace

void CpuRope(const RopeArgs& a) {
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    for (int64_t h = 0; h < a.num_q_heads; ++h) {
      RotateHead(a.q + (t * a.num_q_heads + h) * a.head_dim, a.head_dim, a.inv_freq,
                 a.positions[t]);
    }
    for (int64_t h = 0; h < a.num_kv_heads; ++h) {
      RotateHead(a.k + (t * a.num_kv_heads + h) * a.head_dim, a.head_dim, a.inv_freq,
                 a.positions[t]);
    }
  }
}

}  // namespace arbor::kernels
