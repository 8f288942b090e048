// Helpers for op tests: seeded random data, poison checks and element-wise comparison.
#ifndef ARBOR_TESTS_TEST_UTIL_H_
#define ARBOR_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace arbor::testing {

// Uniform values in [lo, hi) from a generator seeded per test case (Catch's --rng-seed
// changes every value; the default seed is fixed, so failures reproduce).
std::vector<float> RandomFloats(std::mt19937_64& rng, size_t n, float lo = -1.0f, float hi = 1.0f);

// Compares every element: |got - want| <= atol + rtol * |want|, and no NaN in `got` (a NaN
// means an element was never written over the poison, or the math blew up). Returns "" when all
// pass, otherwise a description of the first mismatches.
std::string CompareAll(const std::vector<float>& got, const std::vector<double>& want, double atol,
                       double rtol);
std::string CompareAll(const std::vector<float>& got, const std::vector<float>& want, double atol,
                       double rtol);

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_TEST_UTIL_H_
