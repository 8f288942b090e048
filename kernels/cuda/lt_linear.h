// Linear (kernels/ops.h) on cuBLASLt: bf16/f16 (or f32) operands with fp32 accumulation, the
// bias as an epilogue, accumulation into y through beta = 1, a workspace allocated once, and
// the algorithm chosen by cuBLASLt's heuristic once per shape and cached (decode steps repeat the
// same few shapes every step, so the heuristic's host cost is paid once per shape).
#ifndef ARBOR_KERNELS_CUDA_LT_LINEAR_H_
#define ARBOR_KERNELS_CUDA_LT_LINEAR_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace arbor::kernels {

class LtLinear {
 public:
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;

  // Creates the cuBLASLt handle and the workspace on the current device.
  static absl::StatusOr<std::unique_ptr<LtLinear>> Create();
  ~LtLinear();
  LtLinear(const LtLinear&) = delete;
  LtLinear& operator=(const LtLinear&) = delete;

  // Runs one validated Linear on `stream`; Unimplemented for a shape cuBLASLt has no algorithm
  // for (the caller runs another kernel).
  absl::Status Run(const LinearArgs& args, cudaStream_t stream);

  size_t cached_algorithms() const;

  // Deterministic mode (Backend::SetDeterministic): each (n, k, dtypes, layout) gets one
  // algorithm, chosen for kDeterministicRows rows with split-K ruled out, and runs it for every
  // m. A kernel without split-K computes each output row by the same sequence of tensor-core
  // steps whatever the other rows, so a row's result does not depend on its batch.
  static constexpr int64_t kDeterministicRows = 128;
  void set_deterministic(bool on) { deterministic_ = on; }

 private:
  LtLinear(cublasLtHandle_t handle, void* workspace) : handle_(handle), workspace_(workspace) {}

  // Everything an algorithm choice depends on (m is 0 in deterministic mode): the shape, the leading dimensions, the dtypes,
  // the epilogue, beta, and each pointer's alignment (a column slice of a fused output may be
  // only 2-byte aligned; the heuristic must know).
  struct Key {
    int64_t m, n, k;
    int64_t ld_w, ld_x, ld_y;
    int in_type, out_type;
    bool bias, accumulate;
    int align_w, align_x, align_y, align_bias;
    auto Tie() const {
      return std::tie(m, n, k, ld_w, ld_x, ld_y, in_type, out_type, bias, accumulate, align_w,
                      align_x, align_y, align_bias);
    }
    bool operator<(const Key& o) const { return Tie() < o.Tie(); }
  };

  cublasLtHandle_t handle_;
  void* workspace_;
  mutable std::mutex mu_;
  std::map<Key, cublasLtMatmulAlgo_t> algorithms_;
  std::set<Key> unsupported_;  // shapes cuBLASLt has no algorithm for (Run: Unimplemented)
  std::set<Key> checked_;  // deterministic mode: (key with m) the shared algorithm was checked for
  std::atomic<bool> deterministic_{false};
};

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CUDA_LT_LINEAR_H_
