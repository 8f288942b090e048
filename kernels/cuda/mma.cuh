// Warp-level tensor-core and async-copy helpers (sm_80+ PTX; Hopper runs them too): mma.sync
// m16n8k16 with fp32 accumulation, ldmatrix, cp.async, used by the prefill attention, decode
// attention and CCE kernels. Fragment layouts are PTX's ("Matrix Fragments for mma.m16n8k16").
#ifndef ARBOR_KERNELS_CUDA_MMA_CUH_
#define ARBOR_KERNELS_CUDA_MMA_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace arbor::kernels::mma {

// c[16x8] += a[16x16] b[16x8] on 16-bit inputs of type T (bf16 or f16), fp32 accumulators.
// a: rows g and g + 8 (g = lane / 4), k pairs (lane % 4) * 2 and + 8; b: k pairs x column g;
// c: {row g, cols 2 (lane % 4) + 0/1}, then row g + 8.
template <DType T>
__device__ __forceinline__ void Mma(float* c, const uint32_t* a, const uint32_t* b) {
  if constexpr (T == DType::kBF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void LoadMatrices(uint32_t* r, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(row)));
}

// The same four matrices transposed on the way (ldmatrix .trans): the B operand of a product
// whose matrix is stored [k][n] in shared memory.
__device__ __forceinline__ void LoadMatricesTransposed(uint32_t* r, const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(row)));
}

// 16 bytes global -> shared, asynchronously, bypassing L1; zeros when !valid (src is then not
// read, but must still be a global address).
__device__ __forceinline__ void CopyAsync16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(SharedAddress(dst)),
               "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CopyAsyncCommit() { asm volatile("cp.async.commit_group;"); }
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void CopyAsyncWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

}  // namespace arbor::kernels::mma

#endif  // ARBOR_KERNELS_CUDA_MMA_CUH_
