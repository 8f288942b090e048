// What the CCE kernels of kernels/cuda/cce.cu (passes 0-2, the mma.sync tile kernel) and
// kernels/cuda/cce_sm90.cu (the Hopper pass 1) share: the workspace's parts and the partial
// merge. Private to those two files.
#ifndef ARBOR_KERNELS_CUDA_CCE_INTERNAL_CUH_
#define ARBOR_KERNELS_CUDA_CCE_INTERNAL_CUH_

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cce.h"

namespace arbor::kernels {

// Pass 1 of either kernel writes, per (row, split) of kCceSplitVocab ids, partial and above;
// pass 2 reads nothing else of it (with top_k, also top_z / top_id: mma.sync kernel only).
struct CceParams {
  TargetLogprobsArgs a;
  int64_t splits = 0;
  int64_t row_blocks = 0;     // ceil(rows / 128): both tile kernels take 128 rows a CTA
  float2* partial = nullptr;  // [rows, splits]: (max, sum of exp(z - max))
  float* target_z = nullptr;  // [rows]: the indexed dot's logit (pass 0)
  int32_t* above = nullptr;   // [rows, splits]: ids other than the target with a larger logit
  float* top_z = nullptr;     // [rows, splits, k]
  int32_t* top_id = nullptr;  // [rows, splits, k]
};

// Rows of a CTA in both tile kernels, and row blocks a CTA group shares (x's blocks stay in L2
// while the splits' weights stream past them: CTA b -> group b / (16 * splits), row block
// fastest within a group).
constexpr int kCceTileRows = 128;
constexpr int kCceGroupRows = 16;

// (m, s) <- (m, s) merged with (om, os): the log-sum-exp of two partial sums.
__device__ __forceinline__ void MergeLse(float& m, float& s, float om, float os) {
  const float nm = fmaxf(m, om);
  if (nm == -INFINITY) return;  // both empty
  s = s * expf(m - nm) + os * expf(om - nm);
  m = nm;
}

// The Hopper pass 1 (kernels/cuda/cce_sm90.cu). Takes: bf16/f16 x and w that TargetLogprobsFits
// (so TMA's 16-byte rules hold), top_k == 0. Fits: Takes, the device is a Hopper, and the
// driver gives cuTensorMapEncodeTiled. Launch: cudaErrorNotSupported where it does not fit.
bool CceSm90Takes(const TargetLogprobsArgs& a);
bool CceSm90Fits(const TargetLogprobsArgs& a);
cudaError_t LaunchCceTilesSm90(const CceParams& p, cudaStream_t stream);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CUDA_CCE_INTERNAL_CUH_
