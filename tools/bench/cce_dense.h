// The dense baseline of tools/bench_cce: log-softmax of materialised fp32 logits and the
// target's log-prob, one pass over each row (what Arbor did before the fused kernel, and what
// cuBLAS logits + a log-softmax kernel cost).
#ifndef ARBOR_TOOLS_BENCH_CCE_DENSE_H_
#define ARBOR_TOOLS_BENCH_CCE_DENSE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace arbor::bench {

// logits [rows, vocab] fp32 (vocab % 4 == 0 and 16-byte aligned rows: float4 loads);
// targets [rows]; lse[i] = log sum exp(logits[i]); logprobs[i] = logits[i, targets[i]] - lse[i].
cudaError_t LaunchDenseLogSoftmaxGather(const float* logits, int64_t rows, int64_t vocab,
                                        const int32_t* targets, float* logprobs, float* lse,
                                        cudaStream_t stream);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_CCE_DENSE_H_
