// MoE on CUDA: routing (one thread per token computes the softmax over its experts and picks
// the top k, ties to the lower expert id, as the CPU reference; expert counts are small, <= 256),
// the grouping of (token, expert) pairs by expert (one block: a counting sort in shared memory,
// stable in pair order), and the un-permute that sums each token's weighted expert outputs in
// ascending expert order. The grouped expert GEMM is kernels/cuda/grouped_linear.cu.
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

__global__ void TopKSoftmaxKernel(TopKSoftmaxArgs a) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= a.logits.rows) return;
  const int64_t experts = a.logits.cols;
  float max_logit = -INFINITY;
  for (int64_t e = 0; e < experts; ++e) max_logit = fmaxf(max_logit, a.logits.Load(t, e));
  float sum = 0.0f;
  for (int64_t e = 0; e < experts; ++e) sum += expf(a.logits.Load(t, e) - max_logit);
  float kept = 0.0f;
  for (int64_t i = 0; i < a.k; ++i) {
    // The i-th largest: the best logit not already taken (taken = among the first i outputs).
    int64_t best = -1;
    float best_logit = -INFINITY;
    for (int64_t e = 0; e < experts; ++e) {
      bool taken = false;
      for (int64_t p = 0; p < i; ++p) taken |= a.experts[t * a.k + p] == e;
      const float l = a.logits.Load(t, e);
      if (!taken && (best < 0 || l > best_logit)) {
        best = e;
        best_logit = l;
      }
    }
    const float w = expf(best_logit - max_logit) / sum;
    a.experts[t * a.k + i] = int32_t(best);
    a.weights[t * a.k + i] = w;
    kept += w;
  }
  if (a.renormalize) {
    for (int64_t i = 0; i < a.k; ++i) a.weights[t * a.k + i] /= kept;
  }
}

// One block groups every pair: a batch has at most max_num_batched_tokens * k pairs, a few
// thousand to a few tens of thousands, which one block sorts in a few microseconds, and a single
// block needs no grid-wide synchronisation. The block walks the pairs in chunks of blockDim.x:
// a pair's row is its expert's running offset, plus the pairs of that expert in earlier warps
// of the chunk (per-warp counts in shared memory), plus those in earlier lanes of its own warp
// (__match_any_sync). Every count is a sum, so the result does not depend on thread timing.
constexpr int kPermuteMaxWarps = 32;

__global__ void __launch_bounds__(kPermuteMaxWarps * 32) MoePermuteKernel(MoePermuteArgs a) {
  __shared__ int32_t next[kMaxExperts];  // each expert's next free row
  __shared__ int32_t warp_count[kPermuteMaxWarps][kMaxExperts];
  const int experts = int(a.num_experts), k = int(a.k);
  const int pairs = int(a.num_tokens) * k;
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int threads = int(blockDim.x), warps = threads >> 5;
  auto valid = [&](int e) { return e >= 0 && e < experts; };

  // Pairs per expert, then their exclusive prefix sum (warp 0, 32 experts at a time).
  for (int e = tid; e < experts; e += threads) next[e] = 0;
  __syncthreads();
  for (int p = tid; p < pairs; p += threads) {
    const int e = a.experts[p];
    if (valid(e)) atomicAdd(&next[e], 1);
  }
  __syncthreads();
  if (warp == 0) {
    int carry = 0;
    for (int base = 0; base < experts; base += 32) {
      const int e = base + lane;
      const int count = e < experts ? next[e] : 0;
      int inclusive = count;
      for (int d = 1; d < 32; d <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, inclusive, d);
        if (lane >= d) inclusive += v;
      }
      if (e < experts) {
        next[e] = carry + inclusive - count;
        a.expert_offsets[e] = carry + inclusive - count;
      }
      carry += __shfl_sync(0xffffffffu, inclusive, 31);
    }
    if (lane == 0) a.expert_offsets[experts] = carry;
  }
  __syncthreads();

  // Each pair's row; combine_rows holds it by pair until the last step orders each token's.
  for (int base = 0; base < pairs; base += threads) {
    for (int i = tid; i < warps * experts; i += threads) warp_count[i / experts][i % experts] = 0;
    __syncthreads();
    const int p = base + tid;
    const int e = p < pairs ? a.experts[p] : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    if (valid(e) && rank == 0) warp_count[warp][e] = __popc(peers);
    __syncthreads();
    if (p < pairs) {
      int row = -1;
      if (valid(e)) {
        row = next[e] + rank;
        for (int w = 0; w < warp; ++w) row += warp_count[w][e];
        a.permuted_tokens[row] = p / k;
      }
      a.combine_rows[p] = row;
    }
    __syncthreads();
    for (int x = tid; x < experts; x += threads) {
      int chunk = 0;
      for (int w = 0; w < warps; ++w) chunk += warp_count[w][x];
      next[x] += chunk;
    }
    __syncthreads();
  }

  // Token t's pairs in ascending expert order (a stable insertion sort of k <= kMaxTopK).
  for (int t = tid; t < int(a.num_tokens); t += threads) {
    int32_t ex[kMaxTopK], rows[kMaxTopK];
    float w[kMaxTopK];
    for (int j = 0; j < k; ++j) {
      ex[j] = a.experts[t * k + j];
      rows[j] = a.combine_rows[t * k + j];
      w[j] = a.weights[t * k + j];
    }
    for (int j = 1; j < k; ++j) {
      const int32_t e = ex[j], r = rows[j];
      const float v = w[j];
      int i = j - 1;
      for (; i >= 0 && ex[i] > e; --i) {
        ex[i + 1] = ex[i];
        rows[i + 1] = rows[i];
        w[i + 1] = w[i];
      }
      ex[i + 1] = e;
      rows[i + 1] = r;
      w[i + 1] = v;
    }
    for (int j = 0; j < k; ++j) {
      a.combine_rows[t * k + j] = rows[j];
      a.combine_weights[t * k + j] = w[j];
    }
  }
}

template <DType D>
__global__ void MoeCombineKernel(MoeCombineArgs a) {
  ARBOR_GRID_STRIDE(i, a.out.rows * a.out.cols) {
    const int64_t t = i / a.out.cols, c = i % a.out.cols;
    float acc = 0.0f;
    for (int64_t j = 0; j < a.k; ++j) {
      const float w = RoundTo(D, a.weights[t * a.k + j]);
      const float y = LoadAsFloat(a.expert_out.data, D, a.expert_out.At(a.rows[t * a.k + j], c));
      // __fmul_rn: the product is rounded before the add, as torch's two ops (and the CPU
      // backend) do; in f32 RoundTo is no rounding and nvcc would contract w * y + acc to
      // one FMA, a unit of the last place away.
      acc = RoundTo(D, acc + RoundTo(D, __fmul_rn(w, y)));
    }
    StoreFromFloat(a.out.data, D, a.out.At(t, c), acc);
  }
}

}  // namespace

cudaError_t LaunchTopKSoftmax(const TopKSoftmaxArgs& a, cudaStream_t s) {
  constexpr int kThreads = 128;
  TopKSoftmaxKernel<<<unsigned((a.logits.rows + kThreads - 1) / kThreads), kThreads, 0, s>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchMoePermute(const MoePermuteArgs& a, cudaStream_t s) {
  // One block, as many warps as the pairs fill (at most 32): a decode step's few pairs do not
  // pay for clearing 32 warps' counts. Depends on num_tokens only, never on the routing.
  const int64_t pairs = a.num_tokens * a.k;
  const int warps = int(std::min<int64_t>(kPermuteMaxWarps, (pairs + 31) / 32));
  MoePermuteKernel<<<1, unsigned(warps * 32), 0, s>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchMoeCombine(const MoeCombineArgs& a, cudaStream_t s) {
  constexpr int kThreads = 256;
  return WithFloatType(a.out.dtype, [&](auto tag) {
    MoeCombineKernel<decltype(tag)::value>
        <<<GridFor(a.out.rows * a.out.cols, kThreads), kThreads, 0, s>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace arbor::kernels
