#include "kernels/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace arbor::kernels {

absl::StatusOr<DevicePreference> ParseDevicePreference(const std::string& text,
                                                       const std::string& field) {
  if (text == "auto") return DevicePreference::kAuto;
  if (text == "cpu") return DevicePreference::kCpu;
  if (text == "cuda") return DevicePreference::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": expected one of auto, cpu, cuda; got \"", text, "\""));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(DevicePreference pref) {
  switch (pref) {
    case DevicePreference::kCpu:
      return std::unique_ptr<Backend>(std::make_unique<CpuBackend>());
    case DevicePreference::kCuda:
      return CreateCudaBackend(0);
    case DevicePreference::kAuto:
      if (CudaDeviceVisible()) return CreateCudaBackend(0);
      return std::unique_ptr<Backend>(std::make_unique<CpuBackend>());
  }
  return absl::InternalError("unknown device preference");
}

}  // namespace arbor::kernels
