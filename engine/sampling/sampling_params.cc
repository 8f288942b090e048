#include "engine/sampling/sampling_params.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace arbor::engine {
namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates (U+D800..U+DFFF), nothing above
// U+10FFFF.
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      if (b0 == 0xE0) lo = 0xA0;  // overlong
      if (b0 == 0xED) hi = 0x9F;  // surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      if (b0 == 0xF0) lo = 0x90;  // overlong
      if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return false;
    }
    if (s.size() - i < len) return false;
    const auto b1 = static_cast<unsigned char>(s[i + 1]);
    if (b1 < lo || b1 > hi) return false;
    for (size_t k = 2; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (b < 0x80 || b > 0xBF) return false;
    }
    i += len;
  }
  return true;
}

// `name` must be finite and in [lo, hi]; `range` is how the message spells the interval.
absl::Status CheckClosed(const char* name, float v, float lo, float hi, const char* range) {
  if (!std::isfinite(v) || v < lo || v > hi) {
    return Invalid(absl::StrCat(name, " must be in ", range, ", got ", v));
  }
  return absl::OkStatus();
}

absl::Status CheckTokenId(const std::string& name, int32_t id, int64_t vocab_size) {
  if (id < 0 || id >= vocab_size) {
    return Invalid(absl::StrCat(name, " must be a token id in [0, ", vocab_size, "), got ", id));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size > std::numeric_limits<int32_t>::max()) {
    return Invalid(absl::StrCat("vocab_size must be in [1, 2147483647], got ", vocab_size));
  }

  if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
    return Invalid(absl::StrCat("temperature must be a finite number >= 0, got ", p.temperature));
  }
  if (p.top_k < -1) {
    return Invalid(absl::StrCat("top_k must be -1 or 0 (off) or at least 1, got ", p.top_k));
  }
  if (!std::isfinite(p.top_p) || p.top_p <= 0.0f || p.top_p > 1.0f) {
    return Invalid(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  if (auto s = CheckClosed("min_p", p.min_p, 0.0f, 1.0f, "[0, 1]"); !s.ok()) return s;
  // A multiplier with 1 neutral; like the additive penalties it is bounded by 2 (the range the
  // robustness spec gives every penalty), which also keeps logits from being scaled wildly.
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0.0f ||
      p.repetition_penalty > 2.0f) {
    return Invalid(
        absl::StrCat("repetition_penalty must be in (0, 2], got ", p.repetition_penalty));
  }
  if (auto s = CheckClosed("presence_penalty", p.presence_penalty, -kMaxAbsPresenceOrFrequency,
                           kMaxAbsPresenceOrFrequency, "[-2, 2]");
      !s.ok()) {
    return s;
  }
  if (auto s = CheckClosed("frequency_penalty", p.frequency_penalty, -kMaxAbsPresenceOrFrequency,
                           kMaxAbsPresenceOrFrequency, "[-2, 2]");
      !s.ok()) {
    return s;
  }

  if (p.logit_bias.size() > kMaxLogitBiasEntries) {
    return Invalid(absl::StrCat("logit_bias may have at most ", kMaxLogitBiasEntries,
                                " entries, got ", p.logit_bias.size()));
  }
  std::vector<int32_t> bias_ids;
  bias_ids.reserve(p.logit_bias.size());
  for (size_t i = 0; i < p.logit_bias.size(); ++i) {
    const auto& [id, bias] = p.logit_bias[i];
    const std::string name = absl::StrCat("logit_bias[", i, "]");
    if (auto s = CheckTokenId(name, id, vocab_size); !s.ok()) return s;
    if (!std::isfinite(bias) || bias < -kMaxAbsLogitBias || bias > kMaxAbsLogitBias) {
      return Invalid(
          absl::StrCat(name, " (token ", id, "): bias must be in [-100, 100], got ", bias));
    }
    bias_ids.push_back(id);
  }
  std::sort(bias_ids.begin(), bias_ids.end());
  if (auto dup = std::adjacent_find(bias_ids.begin(), bias_ids.end()); dup != bias_ids.end()) {
    return Invalid(absl::StrCat("logit_bias has token id ", *dup, " more than once"));
  }

  if (p.n < 1 || p.n > kMaxSamplingN) {
    return Invalid(absl::StrCat("n must be in [1, ", kMaxSamplingN, "], got ", p.n));
  }
  if (p.logprobs < -1 || p.logprobs > kMaxLogprobs) {
    return Invalid(
        absl::StrCat("logprobs must be -1 (none) or in [0, ", kMaxLogprobs, "], got ", p.logprobs));
  }
  if (p.logprobs > vocab_size) {
    return Invalid(absl::StrCat("logprobs must not exceed the vocabulary size ", vocab_size,
                                ", got ", p.logprobs));
  }
  if (p.max_tokens < 1) {
    return Invalid(absl::StrCat("max_tokens must be at least 1, got ", p.max_tokens));
  }
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) {
    return Invalid(absl::StrCat("min_tokens must be in [0, max_tokens=", p.max_tokens, "], got ",
                                p.min_tokens));
  }

  if (p.stop.size() > kMaxStopStrings) {
    return Invalid(
        absl::StrCat("stop may have at most ", kMaxStopStrings, " strings, got ", p.stop.size()));
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    const std::string& s = p.stop[i];
    if (s.empty()) return Invalid(absl::StrCat("stop[", i, "] must not be empty"));
    if (s.size() > kMaxStopStringBytes) {
      return Invalid(absl::StrCat("stop[", i, "] may be at most ", kMaxStopStringBytes,
                                  " bytes, got ", s.size()));
    }
    if (!IsValidUtf8(s)) return Invalid(absl::StrCat("stop[", i, "] is not valid UTF-8"));
  }
  if (p.stop_token_ids.size() > kMaxStopTokenIds) {
    return Invalid(absl::StrCat("stop_token_ids may have at most ", kMaxStopTokenIds,
                                " entries, got ", p.stop_token_ids.size()));
  }
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i) {
    if (auto s =
            CheckTokenId(absl::StrCat("stop_token_ids[", i, "]"), p.stop_token_ids[i], vocab_size);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace arbor::engine
