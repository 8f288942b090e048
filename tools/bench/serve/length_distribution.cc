#include "tools/bench/serve/length_distribution.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace arbor::bench {
namespace {

absl::Status Bad(const std::string& spec, const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat("length spec '", spec, "': ", why,
                   " (expected N, uniform:A,B, lognormal:MEDIAN,SIGMA[,MAX], sharegpt-prompt or "
                   "sharegpt-output)"));
}

}  // namespace

LengthDistribution LengthDistribution::Fixed(int32_t n) {
  LengthDistribution d;
  d.kind_ = Kind::kFixed;
  d.a_ = d.b_ = std::max<int32_t>(1, n);
  return d;
}

absl::StatusOr<LengthDistribution> LengthDistribution::Parse(const std::string& spec) {
  if (spec == "sharegpt-prompt") return Parse("lognormal:128,1.0,2048");
  if (spec == "sharegpt-output") return Parse("lognormal:160,0.9,1024");
  const size_t colon = spec.find(':');
  const std::string kind = colon == std::string::npos ? "" : spec.substr(0, colon);
  const std::vector<std::string> args =
      absl::StrSplit(colon == std::string::npos ? spec : spec.substr(colon + 1), ',');
  LengthDistribution d;
  if (kind.empty()) {
    int32_t n = 0;
    if (args.size() != 1 || !absl::SimpleAtoi(args[0], &n) || n < 1) {
      return Bad(spec, "a fixed length must be an integer >= 1");
    }
    return Fixed(n);
  }
  if (kind == "uniform") {
    if (args.size() != 2 || !absl::SimpleAtoi(args[0], &d.a_) ||
        !absl::SimpleAtoi(args[1], &d.b_) || d.a_ < 1 || d.b_ < d.a_) {
      return Bad(spec, "uniform needs integers 1 <= A <= B");
    }
    d.kind_ = Kind::kUniform;
    return d;
  }
  if (kind == "lognormal") {
    if (args.size() < 2 || args.size() > 3 || !absl::SimpleAtod(args[0], &d.median_) ||
        !absl::SimpleAtod(args[1], &d.sigma_) || !(d.median_ >= 1) || !(d.sigma_ >= 0)) {
      return Bad(spec, "lognormal needs MEDIAN >= 1 and SIGMA >= 0");
    }
    d.b_ = int32_t(std::min(8.0 * d.median_, 1e9));
    if (args.size() == 3 && (!absl::SimpleAtoi(args[2], &d.b_) || d.b_ < 1)) {
      return Bad(spec, "lognormal's MAX must be an integer >= 1");
    }
    d.kind_ = Kind::kLognormal;
    return d;
  }
  return Bad(spec, "unknown kind '" + kind + "'");
}

int32_t LengthDistribution::Sample(std::mt19937_64& rng) const {
  switch (kind_) {
    case Kind::kFixed:
      return a_;
    case Kind::kUniform:
      return std::uniform_int_distribution<int32_t>(a_, b_)(rng);
    case Kind::kLognormal: {
      const double x = std::lognormal_distribution<double>(std::log(median_), sigma_)(rng);
      return int32_t(std::clamp(std::round(x), 1.0, double(b_)));
    }
  }
  return a_;
}

double LengthDistribution::Mean() const {
  switch (kind_) {
    case Kind::kFixed:
      return a_;
    case Kind::kUniform:
      return 0.5 * (double(a_) + double(b_));
    case Kind::kLognormal:
      return median_ * std::exp(0.5 * sigma_ * sigma_);
  }
  return a_;
}

std::string LengthDistribution::ToString() const {
  switch (kind_) {
    case Kind::kFixed:
      return absl::StrCat(a_);
    case Kind::kUniform:
      return absl::StrCat("uniform:", a_, ",", b_);
    case Kind::kLognormal:
      return absl::StrCat("lognormal:", median_, ",", sigma_, ",", b_);
  }
  return "";
}

}  // namespace arbor::bench
