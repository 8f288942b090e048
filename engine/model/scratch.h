// A device buffer reused across forward passes. It grows (to 1.5x the last size, at least what
// is asked) and never shrinks, so steady-state decoding allocates nothing: on CUDA a
// cudaMalloc/cudaFree pair per forward costs more than a small model's whole decode step, and
// cudaFree synchronizes the device. Work that reads the old contents is ordered before any
// reuse because every pass runs on the backend's default stream.
#ifndef ARBOR_ENGINE_MODEL_SCRATCH_H_
#define ARBOR_ENGINE_MODEL_SCRATCH_H_

#include <algorithm>
#include <cstddef>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"

namespace arbor::engine {

class Scratch {
 public:
  // At least `bytes` of device memory (valid until the next Get); `bytes` 0 gives a valid
  // pointer too.
  absl::StatusOr<void*> Get(kernels::Backend& backend, size_t bytes) {
    bytes = std::max<size_t>(bytes, 1);
    if (bytes > buffer_.bytes() && frozen_) {
      return absl::FailedPreconditionError(
          absl::StrCat("a forward pass needs ", bytes, " bytes of a workspace reserved at ",
                       buffer_.bytes(), " (captured graphs hold its address)"));
    }
    if (bytes > buffer_.bytes()) {
      const size_t grown = std::max(bytes, buffer_.bytes() + buffer_.bytes() / 2);
      buffer_ = kernels::DeviceBuffer();  // free first: never hold the old and the new at once
      auto fresh = backend.Allocate(grown);
      if (!fresh.ok()) return fresh.status();
      buffer_ = std::move(*fresh);
    }
    return buffer_.data();
  }
  size_t bytes() const { return buffer_.bytes(); }
  // From now on Get never reallocates: a larger request is FailedPrecondition.
  void Freeze() { frozen_ = true; }
  void Thaw() { frozen_ = false; }

 private:
  kernels::DeviceBuffer buffer_;
  bool frozen_ = false;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_SCRATCH_H_
