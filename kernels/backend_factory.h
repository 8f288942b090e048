// Picks the backend at start-up: CUDA when a GPU is visible, the CPU otherwise, unless the
// config forces one.
#ifndef ARBOR_KERNELS_BACKEND_FACTORY_H_
#define ARBOR_KERNELS_BACKEND_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace arbor::kernels {

enum class DevicePreference { kAuto, kCpu, kCuda };

// Parses "auto", "cpu" or "cuda"; InvalidArgument naming `field` otherwise.
absl::StatusOr<DevicePreference> ParseDevicePreference(const std::string& text,
                                                       const std::string& field);

// kAuto: CUDA device 0 if one is visible, else the CPU. kCuda without a GPU is an error.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(DevicePreference pref);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_BACKEND_FACTORY_H_
