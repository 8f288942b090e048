#include "kernels/backend.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace arbor::kernels {

const char* DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kCpu:
      return "cpu";
    case DeviceKind::kCuda:
      return "cuda";
  }
  return "?";
}

DeviceBuffer::~DeviceBuffer() { Release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = std::exchange(other.owner_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::Release() {
  if (owner_ != nullptr && data_ != nullptr) owner_->Free(data_);
  owner_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

namespace {

absl::Status RequirePositive(const char* op, const char* field, int64_t v) {
  if (v <= 0)
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", field, " must be > 0, got ", v));
  return absl::OkStatus();
}

absl::Status RequirePointer(const char* op, const char* field, const void* p) {
  if (p == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": ", field, " is null"));
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRmsNorm(const RmsNormArgs& a) {
  for (auto [f, p] :
       {std::pair<const char*, const void*>{"x", a.x}, {"weight", a.weight}, {"y", a.y}}) {
    if (auto s = RequirePointer("RmsNorm", f, p); !s.ok()) return s;
  }
  if (auto s = RequirePositive("RmsNorm", "rows", a.rows); !s.ok()) return s;
  if (auto s = RequirePositive("RmsNorm", "cols", a.cols); !s.ok()) return s;
  if (!(a.eps > 0.0f)) return absl::InvalidArgumentError("RmsNorm: eps must be > 0");
  return absl::OkStatus();
}

absl::Status ValidateSiluMul(const SiluMulArgs& a) {
  for (auto [f, p] :
       {std::pair<const char*, const void*>{"gate", a.gate}, {"up", a.up}, {"out", a.out}}) {
    if (auto s = RequirePointer("SiluMul", f, p); !s.ok()) return s;
  }
  return RequirePositive("SiluMul", "n", a.n);
}

absl::Status ValidateAxpy(const AxpyArgs& a) {
  for (auto [f, p] : {std::pair<const char*, const void*>{"x", a.x}, {"y", a.y}}) {
    if (auto s = RequirePointer("Axpy", f, p); !s.ok()) return s;
  }
  return RequirePositive("Axpy", "n", a.n);
}

absl::Status ValidateGemm(const GemmArgs& a) {
  for (auto [f, p] : {std::pair<const char*, const void*>{"a", a.a}, {"b", a.b}, {"c", a.c}}) {
    if (auto s = RequirePointer("Gemm", f, p); !s.ok()) return s;
  }
  if (auto s = RequirePositive("Gemm", "m", a.m); !s.ok()) return s;
  if (auto s = RequirePositive("Gemm", "n", a.n); !s.ok()) return s;
  if (auto s = RequirePositive("Gemm", "k", a.k); !s.ok()) return s;
  // cuBLAS takes int dimensions; refuse what would wrap rather than compute garbage.
  constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;
  if (a.m > kMaxDim || a.n > kMaxDim || a.k > kMaxDim) {
    return absl::InvalidArgumentError("Gemm: a dimension exceeds 2^31-1");
  }
  return absl::OkStatus();
}

}  // namespace arbor::kernels
