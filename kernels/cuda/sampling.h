// Host launchers of the sampling kernels (kernels/sampling.h). Raw pointers and plain structs
// only: each returns the cudaError_t of its launch (cudaErrorInvalidValue for shapes or pointers
// the kernel cannot take); kernels/cuda_status.h turns that into absl::Status. Nothing is
// allocated and nothing synchronises: the calls can be captured in a CUDA graph.
#ifndef ARBOR_KERNELS_CUDA_SAMPLING_H_
#define ARBOR_KERNELS_CUDA_SAMPLING_H_

#include <cuda_runtime_api.h>

#include "kernels/sampling.h"

namespace arbor::kernels {

// One CTA of 512 threads per row; scratch in args.workspace (SampleWorkspaceBytes).
cudaError_t LaunchSample(const SampleArgs& args, cudaStream_t stream);

// output_counts[slot][token] += 1 for each row (PenaltyUpdateArgs).
cudaError_t LaunchUpdatePenaltyState(const PenaltyUpdateArgs& args, cudaStream_t stream);

// Rebuilds slots from prompt (and output) ids (PenaltyResetArgs); one CTA per slot.
cudaError_t LaunchResetPenaltySlots(const PenaltyResetArgs& args, cudaStream_t stream);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CUDA_SAMPLING_H_
