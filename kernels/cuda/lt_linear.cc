#include "kernels/cuda/lt_linear.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_status.h"

namespace arbor::kernels {
namespace {

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

// The largest power of two up to 256 that divides the address (cuBLASLt's alignment classes).
int Alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && a % uintptr_t(align) != 0) align /= 2;
  return align;
}

// Owners of the cuBLASLt descriptors a call creates (host-side objects, cheap to make).
struct OpDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~OpDesc() {
    if (d != nullptr) cublasLtMatmulDescDestroy(d);
  }
};
struct Layout {
  cublasLtMatrixLayout_t d = nullptr;
  ~Layout() {
    if (d != nullptr) cublasLtMatrixLayoutDestroy(d);
  }
};
struct Preference {
  cublasLtMatmulPreference_t d = nullptr;
  ~Preference() {
    if (d != nullptr) cublasLtMatmulPreferenceDestroy(d);
  }
};

#define ARBOR_LT(call)                                              \
  do {                                                              \
    if (auto s_ = CublasStatus((call), #call); !s_.ok()) return s_; \
  } while (0)

absl::Status Unsupported(int64_t m, int64_t n, int64_t k, const LinearArgs& a) {
  return absl::UnimplementedError(absl::StrCat("cuBLASLt has no algorithm for Linear m=", m,
                                               " n=", n, " k=", k, " (", DTypeName(a.x.dtype),
                                               " -> ", DTypeName(a.y.dtype), ")"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LtLinear>> LtLinear::Create() {
  cublasLtHandle_t handle = nullptr;
  ARBOR_LT(cublasLtCreate(&handle));
  void* workspace = nullptr;
  if (auto s =
          CudaStatus(cudaMalloc(&workspace, kWorkspaceBytes), "cudaMalloc(cuBLASLt workspace)");
      !s.ok()) {
    cublasLtDestroy(handle);
    return s;
  }
  return std::unique_ptr<LtLinear>(new LtLinear(handle, workspace));
}

LtLinear::~LtLinear() {
  cublasLtDestroy(handle_);
  cudaFree(workspace_);
}

size_t LtLinear::cached_algorithms() const {
  std::lock_guard<std::mutex> lock(mu_);
  return algorithms_.size();
}

absl::Status LtLinear::Run(const LinearArgs& a, cudaStream_t stream) {
  // Row-major y[m, n] = x[m, k] w[n, k]^T is column-major y^T[n, m] = op_T(w) x^T, where w is a
  // column-major [k, n] matrix with leading dimension w.stride and x a [k, m] one.
  const int64_t m = a.x.rows, n = a.w.rows, k = a.x.cols;
  const cudaDataType_t in_type = CudaType(a.x.dtype), out_type = CudaType(a.y.dtype);
  OpDesc op;
  ARBOR_LT(cublasLtMatmulDescCreate(&op.d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  ARBOR_LT(
      cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  ARBOR_LT(
      cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  if (a.bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    ARBOR_LT(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                            sizeof(epilogue)));
    ARBOR_LT(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &a.bias,
                                            sizeof(a.bias)));
    ARBOR_LT(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &in_type,
                                            sizeof(in_type)));
  }
  Layout la, lb, lc;
  ARBOR_LT(cublasLtMatrixLayoutCreate(&la.d, in_type, uint64_t(k), uint64_t(n), a.w.stride));
  ARBOR_LT(cublasLtMatrixLayoutCreate(&lb.d, in_type, uint64_t(k), uint64_t(m), a.x.stride));
  ARBOR_LT(cublasLtMatrixLayoutCreate(&lc.d, out_type, uint64_t(n), uint64_t(m), a.y.stride));

  const bool deterministic = deterministic_;
  Key key{m,
                n,
                k,
                a.w.stride,
                a.x.stride,
                a.y.stride,
                int(a.x.dtype),
                int(a.y.dtype),
                a.bias != nullptr,
                a.accumulate,
                Alignment(a.w.data),
                Alignment(a.x.data),
                Alignment(a.y.data),
                a.bias != nullptr ? Alignment(a.bias) : 256};
  const Key exact = key;
  if (deterministic) key.m = 0;
  cublasLtMatmulAlgo_t algo;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (unsupported_.count(key) > 0) return Unsupported(m, n, k, a);
    auto it = algorithms_.find(key);
    if (it != algorithms_.end()) {
      algo = it->second;
      cached = true;
    }
  }
  if (!cached) {
    Preference pref;
    ARBOR_LT(cublasLtMatmulPreferenceCreate(&pref.d));
    const uint64_t ws = kWorkspaceBytes;
    ARBOR_LT(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof(ws)));
    const uint32_t align_a = uint32_t(key.align_w), align_b = uint32_t(key.align_x),
                   align_c = uint32_t(key.align_y);
    ARBOR_LT(cublasLtMatmulPreferenceSetAttribute(
        pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
    ARBOR_LT(cublasLtMatmulPreferenceSetAttribute(
        pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
    ARBOR_LT(cublasLtMatmulPreferenceSetAttribute(
        pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
    ARBOR_LT(cublasLtMatmulPreferenceSetAttribute(
        pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t heuristic;
    if (deterministic) {
      const uint32_t no_split_k = CUBLASLT_REDUCTION_SCHEME_NONE;
      ARBOR_LT(cublasLtMatmulPreferenceSetAttribute(
          pref.d, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &no_split_k, sizeof(no_split_k)));
      // The algorithm is chosen for a fixed row count, so that it is the same whatever m the
      // first call of this shape has.
      Layout lb_fixed, lc_fixed;
      ARBOR_LT(cublasLtMatrixLayoutCreate(&lb_fixed.d, in_type, uint64_t(k),
                                          uint64_t(kDeterministicRows), a.x.stride));
      ARBOR_LT(cublasLtMatrixLayoutCreate(&lc_fixed.d, out_type, uint64_t(n),
                                          uint64_t(kDeterministicRows), a.y.stride));
      heuristic = cublasLtMatmulAlgoGetHeuristic(handle_, op.d, la.d, lb_fixed.d, lc_fixed.d,
                                                 lc_fixed.d, pref.d, 1, &result, &found);
    } else {
      heuristic = cublasLtMatmulAlgoGetHeuristic(handle_, op.d, la.d, lb.d, lc.d, lc.d, pref.d, 1,
                                                 &result, &found);
    }
    // cuBLASLt refuses some shapes outright (INVALID_VALUE for 16-bit operands with odd leading
    // dimensions) or finds nothing: Unimplemented, and the backend runs its fallback kernel.
    // Remembered, so the question is asked once per shape.
    if (heuristic == CUBLAS_STATUS_INVALID_VALUE || heuristic == CUBLAS_STATUS_NOT_SUPPORTED ||
        (heuristic == CUBLAS_STATUS_SUCCESS && found == 0)) {
      std::lock_guard<std::mutex> lock(mu_);
      unsupported_.insert(key);
      return Unsupported(m, n, k, a);
    }
    ARBOR_LT(heuristic);
    algo = result.algo;
    std::lock_guard<std::mutex> lock(mu_);
    algorithms_.emplace(key, algo);
  }
  if (deterministic) {
    bool checked;
    {
      std::lock_guard<std::mutex> lock(mu_);
      checked = checked_.count(exact) > 0;
    }
    if (!checked) {
      // The shared algorithm was chosen for another m: make sure it runs this one.
      cublasLtMatmulHeuristicResult_t check{};
      if (cublasLtMatmulAlgoCheck(handle_, op.d, la.d, lb.d, lc.d, lc.d, &algo, &check) !=
          CUBLAS_STATUS_SUCCESS) {
        return absl::InternalError(absl::StrCat(
            "deterministic mode: the cuBLASLt algorithm chosen for Linear n=", n, " k=", k,
            " does not run m=", m));
      }
      std::lock_guard<std::mutex> lock(mu_);
      checked_.insert(exact);
    }
  }
  const float alpha = 1.0f, beta = a.accumulate ? 1.0f : 0.0f;
  ARBOR_LT(cublasLtMatmul(handle_, op.d, &alpha, a.w.data, la.d, a.x.data, lb.d, &beta, a.y.data,
                          lc.d, a.y.data, lc.d, &algo, workspace_, kWorkspaceBytes, stream));
  return absl::OkStatus();
}

#undef ARBOR_LT

}  // namespace arbor::kernels
