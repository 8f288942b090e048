// Synthetic prompt and output lengths, in tokens.
//
// Spec strings (the --prompt-len / --output-len flags):
//   "N"                      fixed: every request N tokens
//   "uniform:A,B"            uniform over the integers [A, B]
//   "lognormal:MEDIAN,SIGMA[,MAX]"
//                            exp(N(ln MEDIAN, SIGMA^2)) rounded, clipped to [1, MAX]
//                            (MAX defaults to 8 * MEDIAN): a heavy right tail like chat traffic
//   "sharegpt-prompt"        = lognormal:128,1.0,2048  (mean ~211 tokens)
//   "sharegpt-output"        = lognormal:160,0.9,1024  (mean ~240 tokens)
// The two presets give ShareGPT's shape (most conversations short, a long tail of long ones) at
// roughly the scale its published summaries describe; they are not fitted to the data set, which
// is not shipped here. Use a JSONL file of real prompts where the exact mix matters.
#ifndef ARBOR_TOOLS_BENCH_SERVE_LENGTH_DISTRIBUTION_H_
#define ARBOR_TOOLS_BENCH_SERVE_LENGTH_DISTRIBUTION_H_

#include <cstdint>
#include <random>
#include <string>

#include "absl/status/statusor.h"

namespace arbor::bench {

class LengthDistribution {
 public:
  enum class Kind { kFixed, kUniform, kLognormal };

  // Parses a spec string (above); InvalidArgument names what is wrong.
  static absl::StatusOr<LengthDistribution> Parse(const std::string& spec);
  static LengthDistribution Fixed(int32_t n);

  // One length, >= 1.
  int32_t Sample(std::mt19937_64& rng) const;
  // The distribution's mean (of the clipped lognormal, estimated by the unclipped formula).
  double Mean() const;
  // The spec in canonical form, for reports.
  std::string ToString() const;

 private:
  Kind kind_ = Kind::kFixed;
  int32_t a_ = 1, b_ = 1;  // fixed: a_; uniform: [a_, b_]; lognormal: max = b_
  double median_ = 1, sigma_ = 0;
};

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_LENGTH_DISTRIBUTION_H_
