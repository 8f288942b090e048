// Runs one op on a backend from host data: allocates device buffers, copies inputs in, poisons
// the output with 0xFF bytes (NaN as fp32) so an unwritten element fails the comparison, runs,
// and copies the output back. Shared by the CPU tests and the CUDA parity tests.
#ifndef ARBOR_TESTS_KERNELS_OP_RUNNER_H_
#define ARBOR_TESTS_KERNELS_OP_RUNNER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace arbor::testing {

absl::StatusOr<std::vector<float>> RunRmsNorm(kernels::Backend& be, const std::vector<float>& x,
                                              const std::vector<float>& w, int64_t rows,
                                              int64_t cols, float eps);
absl::StatusOr<std::vector<float>> RunSiluMul(kernels::Backend& be, const std::vector<float>& gate,
                                              const std::vector<float>& up);
absl::StatusOr<std::vector<float>> RunAxpy(kernels::Backend& be, const std::vector<float>& x,
                                           const std::vector<float>& y, float alpha);
absl::StatusOr<std::vector<float>> RunGemm(kernels::Backend& be, const std::vector<float>& a,
                                           const std::vector<float>& b, int64_t m, int64_t n,
                                           int64_t k);

// Double-precision references.
std::vector<double> RefRmsNorm(const std::vector<float>& x, const std::vector<float>& w,
                               int64_t rows, int64_t cols, float eps);
std::vector<double> RefSiluMul(const std::vector<float>& gate, const std::vector<float>& up);
std::vector<double> RefAxpy(const std::vector<float>& x, const std::vector<float>& y, float alpha);
std::vector<double> RefGemm(const std::vector<float>& a, const std::vector<float>& b, int64_t m,
                            int64_t n, int64_t k);

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_KERNELS_OP_RUNNER_H_
