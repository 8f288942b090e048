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

absl::StatusOr<std::vector<float>> RunEmbedding(kernels::Backend& be,
                                                const std::vector<int32_t>& ids,
                                                const std::vector<float>& table, int64_t hidden);
absl::StatusOr<std::vector<float>> RunBiasAdd(kernels::Backend& be, const std::vector<float>& x,
                                              const std::vector<float>& bias);
// Returns q then k, concatenated.
absl::StatusOr<std::vector<float>> RunRope(kernels::Backend& be, const std::vector<float>& q,
                                           const std::vector<float>& k,
                                           const std::vector<int32_t>& positions,
                                           const std::vector<float>& inv_freq, int64_t hq,
                                           int64_t hkv, int64_t d);
// A batch of sequences, each with a full K/V history ([len, hkv * d] per sequence) and new
// tokens = its last `new_tokens[s]` positions (queries q_per_seq[s]: [new, hq * d]). Writes every
// history row into shuffled pages with KvWrite, then runs PagedAttention for the new tokens.
struct PagedCase {
  std::vector<std::vector<float>> k, v, q;
  std::vector<int64_t> lengths, new_tokens;
  int64_t hq, hkv, d, block_size, num_layers, layer, window;
  uint64_t page_seed;
};
absl::StatusOr<std::vector<float>> RunPagedAttention(kernels::Backend& be, const PagedCase& c);
// Returns weights then expert ids (as floats), concatenated.
absl::StatusOr<std::vector<float>> RunTopKSoftmax(kernels::Backend& be,
                                                  const std::vector<float>& logits, int64_t experts,
                                                  int64_t k);
absl::StatusOr<std::vector<float>> RunGatherScatter(kernels::Backend& be,
                                                    const std::vector<float>& src,
                                                    const std::vector<int32_t>& index,
                                                    const std::vector<float>& scale, int64_t cols);

// Double-precision references.
std::vector<double> RefRmsNorm(const std::vector<float>& x, const std::vector<float>& w,
                               int64_t rows, int64_t cols, float eps);
std::vector<double> RefSiluMul(const std::vector<float>& gate, const std::vector<float>& up);
std::vector<double> RefAxpy(const std::vector<float>& x, const std::vector<float>& y, float alpha);
std::vector<double> RefGemm(const std::vector<float>& a, const std::vector<float>& b, int64_t m,
                            int64_t n, int64_t k);

std::vector<double> RefEmbedding(const std::vector<int32_t>& ids, const std::vector<float>& table,
                                 int64_t hidden);
std::vector<double> RefBiasAdd(const std::vector<float>& x, const std::vector<float>& bias);
std::vector<double> RefRope(const std::vector<float>& q, const std::vector<float>& k,
                            const std::vector<int32_t>& positions,
                            const std::vector<float>& inv_freq, int64_t d);
std::vector<double> RefPagedAttention(const PagedCase& c);
std::vector<double> RefTopKSoftmax(const std::vector<float>& logits, int64_t experts, int64_t k);
// Gathers rows `index` of src, scales them, scatters them back added onto a copy of src.
std::vector<double> RefGatherScatter(const std::vector<float>& src,
                                     const std::vector<int32_t>& index,
                                     const std::vector<float>& scale, int64_t cols);

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_KERNELS_OP_RUNNER_H_
