// The parity table of op cases (llama.cpp's test-backend-ops, here): every op of the Backend
// interface at odd sizes and in each dtype it supports, each case drawing fresh random inputs,
// poisoning its outputs, and producing the op's output next to a double-precision reference
// that rounds where kernels/ops.h says the op rounds.
#ifndef ARBOR_TESTS_KERNELS_OP_CASES_H_
#define ARBOR_TESTS_KERNELS_OP_CASES_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace arbor::testing {

struct OpCase {
  std::string op;
  kernels::DType dtype;
  int64_t d0, d1, d2;  // sizes; what they mean depends on the op (op_cases.cc)
  // Attention only: a sliding window (-1: the op's default for its sizes) and a dilation.
  int64_t window = -1;
  int64_t dilation = 1;
  // Attention only: when > 0, every sequence's length is drawn from [context / 2, context] (a
  // long context: split-KV over many runs), and prefill sequences take at most 16 new tokens
  // (the references are quadratic in doubles).
  int64_t context = 0;
};

// The table. A new op means new rows here and a branch in RunCase.
const std::vector<OpCase>& OpCases();

// One case's output, flattened, and its reference. An element passes when
// |got - want| <= atol + ulps * Ulp(dtype, want), and is not NaN.
struct CaseResult {
  std::vector<float> got;
  std::vector<double> want;
  kernels::DType dtype = kernels::DType::kF32;  // the dtype the output was rounded to
  double ulps = 0;
  double atol = 0;
};

// Runs `c` on `be` with inputs drawn from `rng` (same rng state, same inputs).
CaseResult RunCase(kernels::Backend& be, const OpCase& c, std::mt19937_64& rng);

// "" when every element passes; else the first few mismatches.
std::string Compare(const std::vector<float>& got, const std::vector<double>& want,
                    kernels::DType dtype, double ulps, double atol);

std::string Describe(const OpCase& c);

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_KERNELS_OP_CASES_H_
