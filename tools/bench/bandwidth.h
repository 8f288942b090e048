// The memory-bandwidth floor of a GPU, measured two ways over buffers far larger than L2: a copy
// kernel (bytes read + written per second) and a read-only streaming kernel (bytes read per
// second). Memory-bound figures divide by the better of the two (../shared/GPU.md).
#ifndef ARBOR_TOOLS_BENCH_BANDWIDTH_H_
#define ARBOR_TOOLS_BENCH_BANDWIDTH_H_

#include <cstddef>

namespace arbor::bench {

struct Bandwidth {
  double copy_bytes_per_s = 0;    // read + written
  double stream_bytes_per_s = 0;  // read only
  double best() const {
    return copy_bytes_per_s > stream_bytes_per_s ? copy_bytes_per_s : stream_bytes_per_s;
  }
};

// Median of `iterations` timed runs (CUDA events, after a warm-up) over two buffers of `bytes`
// each. Returns false (and fills `error`) on a CUDA error.
bool MeasureBandwidth(size_t bytes, int iterations, Bandwidth* out, const char** error);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_BANDWIDTH_H_
