#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>

namespace arbor::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// top-p selection (ApplyTopP): buckets of weight (covering [0, 1]), and the size below which
// the crossing bucket is simply sorted.
constexpr size_t kTopPBuckets = 2048;
constexpr size_t kTopPSortBelow = 1024;

bool InVocab(int32_t id, size_t vocab) { return id >= 0 && static_cast<size_t>(id) < vocab; }

// The largest value, NaN ignored; -inf when there is none. Eight running maxima keep the loop
// from waiting on one compare chain (GCC does not vectorise it at -O2).
float MaxIgnoringNaN(absl::Span<const float> v) {
  constexpr size_t kLanes = 8;
  float lanes[kLanes];
  std::fill(lanes, lanes + kLanes, kNegInf);
  size_t i = 0;
  for (; i + kLanes <= v.size(); i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) lanes[j] = v[i + j] > lanes[j] ? v[i + j] : lanes[j];
  }
  float max = kNegInf;
  for (; i < v.size(); ++i) max = v[i] > max ? v[i] : max;
  for (float l : lanes) max = l > max ? l : max;
  return max;
}

// Index of the largest value (NaN ignored), ties to the lowest index; -1 when every value is
// -inf or NaN.
int32_t ArgMax(absl::Span<const float> v) {
  const float max = MaxIgnoringNaN(v);
  if (max == kNegInf) return -1;
  return static_cast<int32_t>(std::find(v.begin(), v.end(), max) - v.begin());
}

// Sum in double of floats, with four running sums for the same reason.
template <typename Range, typename Get>
double SumOf(const Range& r, Get get) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  const size_t n = r.size();
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (size_t j = 0; j < 4; ++j) s[j] += get(r[i + j]);
  }
  for (; i < n; ++i) s[0] += get(r[i]);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// The k-th largest value of `v` among those above -inf (NaN is never above), or -inf when
// fewer than k are. A min-heap of the k best for small k (one pass, O(V) comparisons),
// nth_element otherwise.
float KthLargest(const std::vector<float>& v, size_t k) {
  constexpr size_t kHeapLimit = 4096;
  std::vector<float> best;
  if (k <= kHeapLimit) {
    best.reserve(k);
    const auto cmp = std::greater<float>();  // front() is the smallest kept
    for (float x : v) {
      if (!(x > kNegInf)) continue;
      if (best.size() < k) {
        best.push_back(x);
        if (best.size() == k) std::make_heap(best.begin(), best.end(), cmp);
      } else if (x > best.front()) {
        std::pop_heap(best.begin(), best.end(), cmp);
        best.back() = x;
        std::push_heap(best.begin(), best.end(), cmp);
      }
    }
    return best.size() < k ? kNegInf : best.front();
  }
  for (float x : v) {
    if (x > kNegInf) best.push_back(x);
  }
  if (best.size() < k) return kNegInf;
  auto kth = best.begin() + static_cast<std::ptrdiff_t>(k - 1);
  std::nth_element(best.begin(), kth, best.end(), std::greater<float>());
  return *kth;
}

struct Weighted {
  float w;
  int32_t token;
};

// What step 6 draws from: `dense` holds a weight per token (0 = filtered out) when no filter
// needed a list; otherwise `sparse` lists the kept tokens.
struct Distribution {
  bool dense = false;
  std::vector<float> weights;    // [vocab] when dense
  std::vector<Weighted> sparse;  // kept tokens when !dense
};

// The top-p bucket of a weight w in [0, 1]: the top bits of its float (exponent and 4 mantissa
// bits), which order non-negative floats as their values do. Buckets are 1/16 octave wide.
size_t TopPBucket(float w) {
  uint32_t bits;
  std::memcpy(&bits, &w, sizeof bits);
  return std::min<size_t>(bits >> 19, kTopPBuckets - 1);
}

// Keeps, of c[lo, n) (each less likely than every token before lo, which weigh `before` in all),
// the most likely tokens while the mass before each is below `target`. Bisects with
// nth_element (O(n - lo)) and sorts only a last range of at most kTopPSortBelow tokens.
void KeepMostLikelyPrefix(std::vector<Weighted>& c, size_t lo, double before, double target) {
  auto more_likely = [](const Weighted& a, const Weighted& b) {
    return a.w > b.w || (a.w == b.w && a.token < b.token);
  };
  auto at = [&](size_t i) { return c.begin() + static_cast<std::ptrdiff_t>(i); };
  // Invariant: the kept count is in (lo, hi]; c[hi, n) are less likely than c[lo, hi).
  size_t hi = c.size();
  while (hi - lo > kTopPSortBelow) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(at(lo), at(mid), at(hi), more_likely);
    double mass = 0.0;
    for (size_t i = lo; i < mid; ++i) mass += c[i].w;
    if (before + mass >= target) {
      hi = mid;
    } else {
      before += mass;
      lo = mid;
    }
  }
  std::sort(at(lo), at(hi), more_likely);
  size_t keep = lo;
  while (keep < hi && before < target) before += c[keep++].w;
  c.resize(keep);
}

// top-p on a list of weights in [0, 1]: keeps the K most likely tokens, K the smallest count
// whose mass reaches top_p * total (at least one). That is vLLM's rule (drop the tokens whose
// ascending cumulative probability is <= 1 - top_p) seen from the other end; ties go to the
// lower id. One pass sums the mass per bucket of weight, which finds the bucket where the mass
// crosses top_p; tokens above it are kept and only that bucket is searched. No sort of the
// vocabulary; the kept tokens end up in no particular order.
void ApplyTopP(std::vector<Weighted>& c, float top_p) {
  if (c.size() <= 1) return;
  std::vector<double> mass(kTopPBuckets, 0.0);
  double total = 0.0;
  for (const auto& e : c) {
    mass[TopPBucket(e.w)] += e.w;
    total += e.w;
  }
  const double target = static_cast<double>(top_p) * total;
  double before = 0.0;
  size_t edge = kTopPBuckets;
  for (size_t b = kTopPBuckets; b-- > 0;) {
    if (before + mass[b] >= target) {
      edge = b;
      break;
    }
    before += mass[b];
  }
  if (edge == kTopPBuckets) return;  // rounding left the target just out of reach: keep all
  const auto above =
      std::partition(c.begin(), c.end(), [&](const Weighted& e) { return TopPBucket(e.w) > edge; });
  const auto in_edge =
      std::partition(above, c.end(), [&](const Weighted& e) { return TopPBucket(e.w) == edge; });
  c.erase(in_edge, c.end());
  KeepMostLikelyPrefix(c, static_cast<size_t>(above - c.begin()), before, target);
}

// Steps 4-5 on processed logits `z` ([vocab]; reused as the dense weight buffer).
Distribution Filter(std::vector<float> z, const SamplingParams& params) {
  Distribution d;
  for (float& x : z) {
    if (std::isnan(x)) x = kNegInf;
  }
  float z_max = MaxIgnoringNaN(z);
  if (z_max == kNegInf) return d;
  if (z_max == kPosInf) {  // the +inf logits share all the mass equally
    for (float& x : z) x = x == kPosInf ? 0.0f : kNegInf;
    z_max = 0.0f;
  }
  // Temperature: weights exp((z - z_max) / T) in [0, 1], exactly 1 for the most likely token;
  // 0 below e^-103 (float underflow), where vLLM's float32 softmax also gives 0.
  const float t = params.temperature;
  auto weight = [z_max, t](float x) { return std::exp((x - z_max) / t); };

  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < z.size()) {
    // top-k: keep logits >= the k-th largest (ties with it included). Temperature is
    // monotone, so selecting on the logits selects on the probabilities.
    const float threshold = KthLargest(z, static_cast<size_t>(params.top_k));
    for (size_t i = 0; i < z.size(); ++i) {
      if (z[i] > kNegInf && z[i] >= threshold) {
        const float w = weight(z[i]);
        if (w > 0.0f) d.sparse.push_back({w, static_cast<int32_t>(i)});
      }
    }
  } else {
    for (float& x : z) x = weight(x);
    if (params.top_p < 1.0f) {
      d.sparse.resize(z.size());
      size_t n = 0;
      for (size_t i = 0; i < z.size(); ++i) {
        if (z[i] > 0.0f) d.sparse[n++] = {z[i], static_cast<int32_t>(i)};
      }
      d.sparse.resize(n);
    } else {
      d.dense = true;
      d.weights = std::move(z);
    }
  }
  if (!d.dense && params.top_p < 1.0f) ApplyTopP(d.sparse, params.top_p);

  // min-p: p_i >= min_p * p_max, i.e. w_i >= min_p * w_max (normalisation cancels).
  if (params.min_p > 0.0f) {
    float w_max = 0.0f;
    if (d.dense) {
      w_max = MaxIgnoringNaN(d.weights);
      const float threshold = params.min_p * w_max;
      for (float& w : d.weights) {
        if (w < threshold) w = 0.0f;
      }
    } else {
      for (const auto& e : d.sparse) w_max = std::max(w_max, e.w);
      const float threshold = params.min_p * w_max;
      d.sparse.erase(std::remove_if(d.sparse.begin(), d.sparse.end(),
                                    [&](const Weighted& e) { return e.w < threshold; }),
                     d.sparse.end());
    }
  }
  return d;
}

// One draw with probability weight / sum(weights); u in [0, 1). -1 when nothing has weight.
int32_t Draw(const Distribution& d, double u) {
  const double total = d.dense ? SumOf(d.weights, [](float w) { return w; })
                               : SumOf(d.sparse, [](const Weighted& e) { return e.w; });
  const double target = u * total;
  double cum = 0.0;
  int32_t last = -1;  // the last token with weight: rounding may put target at the very end
  if (d.dense) {
    for (size_t i = 0; i < d.weights.size(); ++i) {
      if (d.weights[i] <= 0.0f) continue;
      cum += d.weights[i];
      last = static_cast<int32_t>(i);
      if (cum > target) break;
    }
  } else {
    for (const auto& e : d.sparse) {
      if (e.w <= 0.0f) continue;
      cum += e.w;
      last = e.token;
      if (cum > target) break;
    }
  }
  return last;
}

// Log-softmax of the raw logits (NaN read as -inf): exp in float, sums and logs in double.
class RawLogSoftmax {
 public:
  explicit RawLogSoftmax(absl::Span<const float> logits) : logits_(logits) {
    const float max = MaxIgnoringNaN(logits);
    max_ = max;
    if (max == kPosInf) {
      for (float x : logits) inf_count_ += (x == kPosInf);
    } else if (max > kNegInf) {
      const double sum =
          SumOf(logits, [max](float x) { return x > kNegInf ? std::exp(x - max) : 0.0f; });
      log_sum_exp_ = static_cast<double>(max) + std::log(sum);
    }
  }

  float operator()(int32_t token) const {
    const float x = logits_[token];
    if (inf_count_ > 0) {  // the +inf logits share all the mass
      return x == kPosInf ? static_cast<float>(-std::log(static_cast<double>(inf_count_)))
                          : kNegInf;
    }
    if (max_ == kNegInf) {  // every logit -inf or NaN: no information, uniform
      return static_cast<float>(-std::log(static_cast<double>(logits_.size())));
    }
    if (!(x > kNegInf)) return kNegInf;
    return static_cast<float>(static_cast<double>(x) - log_sum_exp_);
  }

 private:
  absl::Span<const float> logits_;
  float max_ = kNegInf;
  double log_sum_exp_ = 0.0;
  size_t inf_count_ = 0;
};

void FillLogprobs(absl::Span<const float> logits, int32_t k, SampleResult& result) {
  const RawLogSoftmax log_softmax(logits);
  result.logprob = log_softmax(result.token);
  const size_t top_n = std::min(static_cast<size_t>(std::max(k, 0)), logits.size());
  if (top_n == 0) return;
  // The top_n largest logits in one pass over a heap whose front is the least likely kept.
  // NaN ranks as -inf; ties go to the lower id.
  struct Entry {
    float key;
    int32_t token;
  };
  auto more_likely = [](const Entry& a, const Entry& b) {
    return a.key > b.key || (a.key == b.key && a.token < b.token);
  };
  std::vector<Entry> best;
  best.reserve(top_n);
  for (size_t i = 0; i < logits.size(); ++i) {
    const Entry e{logits[i] > kNegInf ? logits[i] : kNegInf, static_cast<int32_t>(i)};
    if (best.size() < top_n) {
      best.push_back(e);
      if (best.size() == top_n) std::make_heap(best.begin(), best.end(), more_likely);
    } else if (more_likely(e, best.front())) {
      std::pop_heap(best.begin(), best.end(), more_likely);
      best.back() = e;
      std::push_heap(best.begin(), best.end(), more_likely);
    }
  }
  std::sort(best.begin(), best.end(), more_likely);
  result.top.reserve(top_n);
  for (const Entry& e : best) result.top.push_back({e.token, log_softmax(e.token)});
}

}  // namespace

void ApplyLogitsProcessors(absl::Span<float> logits, const SamplingParams& params,
                           absl::Span<const int32_t> prompt_tokens,
                           absl::Span<const int32_t> output_tokens,
                           absl::Span<const int32_t> eos_token_ids) {
  const size_t vocab = logits.size();
  for (float& x : logits) {
    if (std::isnan(x)) x = kNegInf;
  }

  for (const auto& [id, bias] : params.logit_bias) {
    if (InVocab(id, vocab)) logits[id] += bias;
  }

  // Repetition penalty (HF/vLLM): once per distinct token of prompt + output.
  if (params.repetition_penalty != 1.0f) {
    const float penalty = params.repetition_penalty;
    std::vector<uint8_t> seen(vocab, 0);
    auto apply = [&](absl::Span<const int32_t> tokens) {
      for (int32_t t : tokens) {
        if (!InVocab(t, vocab) || seen[t]) continue;
        seen[t] = 1;
        logits[t] = logits[t] > 0.0f ? logits[t] / penalty : logits[t] * penalty;
      }
    };
    apply(prompt_tokens);
    apply(output_tokens);
  }

  // OpenAI frequency and presence penalties over the output: l -= f * count; l -= p * (count>0).
  if (params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f) {
    std::vector<int32_t> sorted;
    sorted.reserve(output_tokens.size());
    for (int32_t t : output_tokens) {
      if (InVocab(t, vocab)) sorted.push_back(t);
    }
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size();) {
      size_t j = i;
      while (j < sorted.size() && sorted[j] == sorted[i]) ++j;
      float& x = logits[sorted[i]];
      x -= params.frequency_penalty * static_cast<float>(j - i);
      x -= params.presence_penalty;
      i = j;
    }
  }

  if (output_tokens.size() < static_cast<size_t>(std::max(params.min_tokens, 0))) {
    for (int32_t t : eos_token_ids) {
      if (InVocab(t, vocab)) logits[t] = kNegInf;
    }
    for (int32_t t : params.stop_token_ids) {
      if (InVocab(t, vocab)) logits[t] = kNegInf;
    }
  }
}

SamplingCandidates FilterCandidates(absl::Span<const float> processed_logits,
                                    const SamplingParams& params) {
  const Distribution d =
      Filter(std::vector<float>(processed_logits.begin(), processed_logits.end()), params);
  SamplingCandidates out;
  if (d.dense) {
    for (size_t i = 0; i < d.weights.size(); ++i) {
      if (d.weights[i] > 0.0f) {
        out.tokens.push_back(static_cast<int32_t>(i));
        out.weights.push_back(d.weights[i]);
      }
    }
  } else {
    for (const auto& e : d.sparse) {
      out.tokens.push_back(e.token);
      out.weights.push_back(e.w);
    }
  }
  return out;
}

SampleResult Sample(absl::Span<const float> logits, const SamplingParams& params,
                    absl::Span<const int32_t> prompt_tokens,
                    absl::Span<const int32_t> output_tokens,
                    absl::Span<const int32_t> eos_token_ids, SequenceRng& rng) {
  SampleResult result;
  if (logits.empty()) return result;

  std::vector<float> z(logits.begin(), logits.end());
  ApplyLogitsProcessors(absl::MakeSpan(z), params, prompt_tokens, output_tokens, eos_token_ids);

  if (params.temperature == 0.0f) {
    result.token = ArgMax(z);
  } else {
    const Distribution d = Filter(std::move(z), params);
    result.token = Draw(d, rng.Uniform());
  }
  if (result.token < 0) result.token = std::max(ArgMax(logits), 0);  // everything masked

  if (params.logprobs >= 0) FillLogprobs(logits, params.logprobs, result);
  return result;
}

SampleResult TokenLogprobs(absl::Span<const float> logits, int32_t token, int32_t top_k) {
  SampleResult result;
  result.token = token;
  FillLogprobs(logits, top_k, result);
  return result;
}

}  // namespace arbor::engine
