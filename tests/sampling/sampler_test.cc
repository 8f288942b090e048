#include "engine/sampling/sampler.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "kernels/sampling_math.h"

namespace arbor::engine {
namespace {

using Tokens = std::vector<int32_t>;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

SampleResult SampleOnce(const std::vector<float>& logits, const SamplingParams& p, SequenceRng& rng,
                        const Tokens& prompt = {}, const Tokens& output = {},
                        const Tokens& eos = {}) {
  return Sample(logits, p, prompt, output, eos, rng);
}

// Counts of `draws` sampled tokens.
std::map<int32_t, int> Histogram(const std::vector<float>& logits, const SamplingParams& p,
                                 int draws, uint64_t seed, const Tokens& output = {},
                                 const Tokens& eos = {}) {
  SequenceRng rng(seed);
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[SampleOnce(logits, p, rng, {}, output, eos).token];
  return counts;
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p;
  double sum = 0.0;
  for (float l : logits) sum += std::exp((l - max) / temperature);
  for (float l : logits) p.push_back(std::exp((l - max) / temperature) / sum);
  return p;
}

// Pearson's chi-square statistic of observed counts against probabilities `p`.
double ChiSquare(const std::map<int32_t, int>& counts, const std::vector<double>& p, int n) {
  double stat = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    const auto it = counts.find(static_cast<int32_t>(i));
    const double observed = it == counts.end() ? 0.0 : it->second;
    const double expected = p[i] * n;
    stat += (observed - expected) * (observed - expected) / expected;
  }
  return stat;
}

// The value a chi-square variable with `df` (even) degrees of freedom exceeds with probability
// `alpha`: for even df the survival function is exp(-x/2) * sum_{k < df/2} (x/2)^k / k!, which is
// decreasing, so bisect it.
double ChiSquareCritical(int df, double alpha) {
  auto survival = [df](double x) {
    double term = 1.0, sum = 0.0;
    for (int k = 0; k < df / 2; ++k) {
      if (k > 0) term *= (x / 2) / k;
      sum += term;
    }
    return std::exp(-x / 2) * sum;
  };
  double lo = 0.0, hi = 1000.0;
  for (int i = 0; i < 200; ++i) {
    const double mid = (lo + hi) / 2;
    (survival(mid) > alpha ? lo : hi) = mid;
  }
  return hi;
}

TEST_CASE("the chi-square critical value matches the tables", "[sampling]") {
  CHECK(ChiSquareCritical(2, 0.05) == Approx(5.991).epsilon(1e-3));
  CHECK(ChiSquareCritical(4, 0.01) == Approx(13.277).epsilon(1e-3));
  CHECK(ChiSquareCritical(6, 0.001) == Approx(22.458).epsilon(1e-3));
}

TEST_CASE("greedy is the argmax, ties to the lowest id, and draws nothing", "[sampling]") {
  SamplingParams p;
  p.temperature = 0.0f;
  SequenceRng rng(1);
  CHECK(SampleOnce({1.0f, 3.0f, 3.0f, 2.0f}, p, rng).token == 1);
  CHECK(SampleOnce({-5.0f, -1.0f, -7.0f}, p, rng).token == 1);
  CHECK(SampleOnce({0.0f, 0.0f, 0.0f}, p, rng).token == 0);
  CHECK(SampleOnce({kNaN, 1.0f, kNaN, 1.0f}, p, rng).token == 1);
  // top-k/top-p/min-p do not move the argmax.
  p.top_k = 1;
  p.top_p = 0.1f;
  p.min_p = 0.9f;
  CHECK(SampleOnce({1.0f, 3.0f, 3.0f, 2.0f}, p, rng).token == 1);
  CHECK(rng.draws() == 0);
  // Sampling draws exactly one number per token.
  p = SamplingParams{};
  SampleOnce({1.0f, 2.0f}, p, rng);
  SampleOnce({1.0f, 2.0f}, p, rng);
  CHECK(rng.draws() == 2);
}

TEST_CASE("draws follow softmax(logits / T)", "[sampling][statistics]") {
  // Five tokens: df = 4. A correct sampler exceeds the critical value at alpha = 1e-6 once in a
  // million seeds; the seed is fixed, so the outcome is too. The same counts must be far from
  // the distribution of a 25% wrong temperature (its expected statistic here is ~900..4000).
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f};
  const double critical = ChiSquareCritical(4, 1e-6);
  constexpr int kDraws = 100000;
  for (float t : {0.5f, 1.0f, 2.0f}) {
    INFO("temperature " << t);
    SamplingParams p;
    p.temperature = t;
    const auto counts = Histogram(logits, p, kDraws, 1234);
    CHECK(ChiSquare(counts, Softmax(logits, t), kDraws) < critical);
    CHECK(ChiSquare(counts, Softmax(logits, t * 1.25), kDraws) > critical);
  }
}

// Vocabulary of 8 in which the token of rank r (0 = most likely) is kIds[r] with probability
// kProbs[r].
const std::vector<double> kProbs = {0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01};
const Tokens kIds = {5, 2, 7, 0, 3, 6, 1, 4};

std::vector<float> RankedLogits() {
  std::vector<float> logits(8);
  for (size_t r = 0; r < 8; ++r) logits[kIds[r]] = static_cast<float>(std::log(kProbs[r]));
  return logits;
}

std::set<int32_t> IdsOfRanks(std::initializer_list<int> ranks) {
  std::set<int32_t> out;
  for (int r : ranks) out.insert(kIds[r]);
  return out;
}

TEST_CASE("top-k, top-p and min-p keep exactly the right support", "[sampling][filter]") {
  struct Case {
    std::string what;
    float temperature, top_p, min_p;
    int32_t top_k;
    std::set<int32_t> support;
  };
  const std::vector<Case> cases = {
      {"no filter", 1.0f, 1.0f, 0.0f, -1, IdsOfRanks({0, 1, 2, 3, 4, 5, 6, 7})},
      {"top_k 3", 1.0f, 1.0f, 0.0f, 3, IdsOfRanks({0, 1, 2})},
      {"top_k 1", 1.0f, 1.0f, 0.0f, 1, IdsOfRanks({0})},
      {"top_k 0 is off", 1.0f, 1.0f, 0.0f, 0, IdsOfRanks({0, 1, 2, 3, 4, 5, 6, 7})},
      {"top_k above vocab", 1.0f, 1.0f, 0.0f, 1000, IdsOfRanks({0, 1, 2, 3, 4, 5, 6, 7})},
      // Mass before each rank: 0, .3, .55, .75, ...
      {"top_p 0.7", 1.0f, 0.7f, 0.0f, -1, IdsOfRanks({0, 1, 2})},
      {"top_p 0.5", 1.0f, 0.5f, 0.0f, -1, IdsOfRanks({0, 1})},
      {"top_p tiny keeps one", 1.0f, 1e-6f, 0.0f, -1, IdsOfRanks({0})},
      // p >= min_p * 0.3
      {"min_p 0.3", 1.0f, 1.0f, 0.3f, -1, IdsOfRanks({0, 1, 2, 3})},
      {"min_p 0.5", 1.0f, 1.0f, 0.5f, -1, IdsOfRanks({0, 1, 2})},
      {"min_p 1", 1.0f, 1.0f, 1.0f, -1, IdsOfRanks({0})},
      // top-k first, renormalised (.4, .33, .27), then top-p: {0, 1}. Top-p alone keeps 3.
      {"top_k 3 then top_p 0.6", 1.0f, 0.6f, 0.0f, 3, IdsOfRanks({0, 1})},
      {"top_p 0.6 alone", 1.0f, 0.6f, 0.0f, -1, IdsOfRanks({0, 1, 2})},
      // k 5 -> top-p .9 keeps ranks 0-3 (.35, .29, .24, .12) -> min-p .4 drops rank 3.
      {"top_k, top_p, min_p", 1.0f, 0.9f, 0.4f, 5, IdsOfRanks({0, 1, 2})},
      // Temperature comes first: at T = 2 the ranks have mass .216, .197, .176, ...
      {"T 2 then top_p 0.5", 2.0f, 0.5f, 0.0f, -1, IdsOfRanks({0, 1, 2})},
      // At T = 2, p / p_max = sqrt(p / 0.3): ranks 0-4 are >= 0.5.
      {"T 2 then min_p 0.5", 2.0f, 1.0f, 0.5f, -1, IdsOfRanks({0, 1, 2, 3, 4})},
  };
  const std::vector<float> logits = RankedLogits();
  for (const auto& c : cases) {
    INFO(c.what);
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    REQUIRE(ValidateSamplingParams(p, 8).ok());
    const SamplingCandidates candidates = FilterCandidates(logits, p);
    CHECK(std::set<int32_t>(candidates.tokens.begin(), candidates.tokens.end()) == c.support);
    // Drawing: nothing outside the support, everything inside it (the least likely kept token
    // has probability >= 0.01 here: missing it in 20000 draws has probability < 1e-87).
    std::set<int32_t> seen;
    for (const auto& [token, count] : Histogram(logits, p, 20000, 99)) seen.insert(token);
    CHECK(seen == c.support);
  }
}

TEST_CASE("after filtering, draws follow the renormalised distribution", "[sampling][filter]") {
  SamplingParams p;
  p.top_k = 3;
  const std::vector<float> logits = RankedLogits();
  constexpr int kDraws = 100000;
  const auto counts = Histogram(logits, p, kDraws, 5);
  std::vector<double> expected(8, 0.0);
  for (int r = 0; r < 3; ++r) expected[kIds[r]] = kProbs[r] / 0.75;
  // Only the 3 kept tokens (df = 2) enter the statistic; the others must never appear.
  std::map<int32_t, int> kept_counts;
  std::vector<double> kept_p;
  for (int r = 0; r < 3; ++r) {
    kept_counts[r] = counts.count(kIds[r]) ? counts.at(kIds[r]) : 0;
    kept_p.push_back(expected[kIds[r]]);
  }
  CHECK(counts.size() == 3);
  CHECK(ChiSquare(kept_counts, kept_p, kDraws) < ChiSquareCritical(2, 1e-6));
}

TEST_CASE("top_k keeps every token tied with the k-th (vLLM and HF)", "[sampling][filter]") {
  const std::vector<float> logits = {1.0f, 1.0f, 1.0f, 0.0f, 2.0f};
  SamplingParams p;
  p.top_k = 2;
  auto c = FilterCandidates(logits, p);
  CHECK(std::set<int32_t>(c.tokens.begin(), c.tokens.end()) == std::set<int32_t>{0, 1, 2, 4});
  p.top_k = 1;
  c = FilterCandidates(logits, p);
  CHECK(c.tokens == Tokens{4});
}

TEST_CASE("top_p at an exact mass boundary keeps the smallest set", "[sampling][filter]") {
  // Four equal tokens (mass 0.25 each, exact in binary). vLLM drops tokens whose ascending
  // cumulative mass is <= 1 - top_p: two for top_p 0.5, one for 0.75. Ties go to lower ids.
  const std::vector<float> logits = {0.0f, 0.0f, 0.0f, 0.0f};
  SamplingParams p;
  auto support = [&](float top_p) {
    p.top_p = top_p;
    const auto c = FilterCandidates(logits, p);
    return std::set<int32_t>(c.tokens.begin(), c.tokens.end());
  };
  CHECK(support(0.5f) == std::set<int32_t>{0, 1});
  CHECK(support(0.75f) == std::set<int32_t>{0, 1, 2});
  CHECK(support(0.76f) == std::set<int32_t>{0, 1, 2, 3});
}

TEST_CASE("candidate weights are proportional to softmax(logits / T)", "[sampling][filter]") {
  // Weights are integers in units of 2^-40 of the most likely token's (kernels/sampling_math.h)
  // from the float s = (z - z_max) * (1 / T): relative error ~|s| * 1.2e-7 (the float s, as in
  // vLLM's float32 softmax) plus at most one unit, 2^-40 of the most likely token's weight.
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(769);
  for (float& l : logits) l = normal(gen);
  SamplingParams p;
  p.temperature = 0.7f;
  const auto c = FilterCandidates(logits, p);
  REQUIRE(c.tokens.size() == logits.size());
  const auto expected = Softmax(logits, p.temperature);
  const double p_max = *std::max_element(expected.begin(), expected.end());
  const double total = std::accumulate(c.weights.begin(), c.weights.end(), 0.0);
  for (size_t i = 0; i < c.tokens.size(); ++i) {
    INFO("token " << c.tokens[i]);
    CHECK(c.tokens[i] == static_cast<int32_t>(i));  // id order
    const double want = expected[c.tokens[i]];
    CHECK(std::fabs(c.weights[i] / total - want) <= 1e-5 * want + 0x1p-40 * p_max);
  }
}

// The reference top-p: sort everything by probability, keep while the mass before is < p.
std::set<int32_t> ReferenceTopP(const std::vector<float>& logits, double top_p) {
  Tokens ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  const double max = logits[ids[0]];
  double total = 0.0;
  for (float l : logits) total += std::exp(l - max);
  std::set<int32_t> keep;
  double cum = 0.0;
  for (int32_t id : ids) {
    if (cum >= top_p * total) break;
    keep.insert(id);
    cum += std::exp(logits[id] - max);
  }
  return keep;
}

TEST_CASE("top_p matches a full sort", "[sampling][filter]") {
  // 3000 distinct logits -0.001 * rank in shuffled order: the weights span only 3 of 16 weight
  // buckets an octave, so each bucket holds hundreds of tokens and is searched by bisection.
  // top_p 0.5 keeps ~700 tokens, 0.75 ~1250, 0.999 nearly all.
  Tokens order(3000);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937 gen(3);
  std::shuffle(order.begin(), order.end(), gen);
  std::vector<float> logits(3000);
  for (size_t r = 0; r < order.size(); ++r) logits[order[r]] = -0.001f * static_cast<float>(r);
  for (float top_p : {0.5f, 0.75f, 0.999f}) {
    INFO("top_p " << top_p);
    SamplingParams p;
    p.top_p = top_p;
    const auto c = FilterCandidates(logits, p);
    const auto expected = ReferenceTopP(logits, top_p);
    CHECK(std::set<int32_t>(c.tokens.begin(), c.tokens.end()) == expected);
    CHECK(c.tokens.size() == expected.size());
  }
}

TEST_CASE("top_p with many tied logits matches a full sort", "[sampling][filter]") {
  // 20000 logits on a 0.1 grid: ties everywhere, broken by the lower id on both sides.
  std::mt19937 gen(4);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<float> logits(20000);
  for (float& l : logits) l = std::round(normal(gen) * 10.0f) / 10.0f;
  for (float top_p : {0.01f, 0.3f, 0.9f}) {
    INFO("top_p " << top_p);
    SamplingParams p;
    p.top_p = top_p;
    const auto c = FilterCandidates(logits, p);
    CHECK(std::set<int32_t>(c.tokens.begin(), c.tokens.end()) == ReferenceTopP(logits, top_p));
  }
}

TEST_CASE("top_p when the crossing weight bucket is large", "[sampling][filter]") {
  // Buckets are 1/16 octave (0.043 in logit) wide. 50000 logits 1e-6 apart (far enough for
  // distinct float weights) span two buckets of tens of thousands of tokens, which are searched
  // by bisection; so are 5000 equal logits (where the lower ids must win) next to two likelier
  // tokens (~38% of the mass each).
  Tokens order(50000);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937 gen(6);
  std::shuffle(order.begin(), order.end(), gen);
  std::vector<float> flat(50000);
  for (size_t r = 0; r < order.size(); ++r) flat[order[r]] = -1e-6f * static_cast<float>(r);
  std::vector<float> ties(5000, 0.0f);
  ties[4999] = ties[17] = 9.0f;
  for (const auto* logits : {&flat, &ties}) {
    for (float top_p : {0.2f, 0.5f, 0.85f, 0.9f, 0.999f}) {
      INFO("vocab " << logits->size() << " top_p " << top_p);
      SamplingParams p;
      p.top_p = top_p;
      const auto c = FilterCandidates(*logits, p);
      const auto expected = ReferenceTopP(*logits, top_p);
      CHECK(std::set<int32_t>(c.tokens.begin(), c.tokens.end()) == expected);
      if (logits == &ties && top_p == 0.2f) CHECK(expected == std::set<int32_t>{17});
    }
  }
}

TEST_CASE("penalties change logits exactly as vLLM/HF", "[sampling][penalties]") {
  // Values are exact in binary so the hand computation is exact.
  const std::vector<float> raw = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 0.0f, 4.0f};
  const Tokens prompt = {0, 1, 0, 0, 5};
  const Tokens output = {1, 2, 2, 6};
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  std::vector<float> z = raw;
  ApplyLogitsProcessors(absl::MakeSpan(z), p, prompt, output, {});
  CHECK(z[0] == 1.0f);                          // prompt only (3 times, once): 2 / 2
  CHECK(z[1] == -1.0f * 2 - 0.25f * 1 - 0.5f);  // prompt + output once: -1 * 2, then f and p
  CHECK(z[2] == 0.5f / 2 - 0.25f * 2 - 0.5f);   // output twice
  CHECK(z[3] == 3.0f);                          // unseen
  CHECK(z[4] == -2.0f);                         // unseen
  CHECK(z[5] == 0.0f);                          // prompt, logit 0 stays 0
  CHECK(z[6] == 4.0f / 2 - 0.25f - 0.5f);       // output once
  CHECK(z[1] == -2.75f);
  CHECK(z[2] == -0.75f);
  CHECK(z[6] == 1.25f);

  // Presence/frequency see only the output; negative values encourage.
  p = SamplingParams{};
  p.presence_penalty = -1.0f;
  p.frequency_penalty = -0.5f;
  z = raw;
  ApplyLogitsProcessors(absl::MakeSpan(z), p, prompt, output, {});
  CHECK(z[0] == 2.0f);
  CHECK(z[1] == -1.0f + 0.5f + 1.0f);
  CHECK(z[2] == 0.5f + 1.0f + 1.0f);
  CHECK(z[6] == 4.0f + 0.5f + 1.0f);

  // repetition_penalty < 1 raises positive seen logits and lowers negative ones.
  p = SamplingParams{};
  p.repetition_penalty = 0.5f;
  z = raw;
  ApplyLogitsProcessors(absl::MakeSpan(z), p, prompt, {}, {});
  CHECK(z[0] == 4.0f);
  CHECK(z[1] == -0.5f);
  CHECK(z[2] == 0.5f);  // not in the prompt

  // Out-of-vocabulary ids in the lists are ignored, never read or written.
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 1.0f;
  p.min_tokens = 5;
  p.logit_bias = {{7, 1.0f}, {-1, 1.0f}};
  z = raw;
  ApplyLogitsProcessors(absl::MakeSpan(z), p, {-1, 7, 1000}, {99}, {-5, 7});
  CHECK(z == raw);
}

TEST_CASE("penalties move the greedy choice", "[sampling][penalties]") {
  SamplingParams p;
  p.temperature = 0.0f;
  p.frequency_penalty = 1.0f;
  SequenceRng rng(1);
  const std::vector<float> logits = {3.0f, 2.5f, 0.0f};
  CHECK(SampleOnce(logits, p, rng, {}, {}).token == 0);
  CHECK(SampleOnce(logits, p, rng, {}, {0}).token == 1);  // 3 - 1 < 2.5
  p.frequency_penalty = 0.0f;
  p.repetition_penalty = 1.5f;
  CHECK(SampleOnce(logits, p, rng, {0}, {}).token == 1);  // 3 / 1.5 < 2.5
}

TEST_CASE("logit_bias is added; -100 bans a token", "[sampling][bias]") {
  const std::vector<float> logits = {5.0f, 0.0f, 0.0f, 0.0f};
  SamplingParams p;
  p.logit_bias = {{0, -100.0f}, {3, 0.75f}};
  std::vector<float> z = logits;
  ApplyLogitsProcessors(absl::MakeSpan(z), p, {}, {}, {});
  CHECK(z == std::vector<float>{-95.0f, 0.0f, 0.0f, 0.75f});
  const auto counts = Histogram(logits, p, 20000, 8);
  CHECK(counts.count(0) == 0);
  CHECK(counts.size() == 3);
  p.temperature = 0.0f;
  SequenceRng rng(1);
  CHECK(SampleOnce(logits, p, rng).token == 3);
  p.logit_bias = {{2, 100.0f}};
  CHECK(SampleOnce(logits, p, rng).token == 2);
}

TEST_CASE("min_tokens masks eos and stop tokens until reached", "[sampling][min_tokens]") {
  const std::vector<float> logits = {0.0f, 5.0f, 0.0f, 9.0f};
  const Tokens eos = {3};
  SamplingParams p;
  p.min_tokens = 2;
  p.stop_token_ids = {1};
  for (bool ignore_eos : {false, true}) {  // vLLM masks eos either way
    INFO("ignore_eos " << ignore_eos);
    p.ignore_eos = ignore_eos;
    p.temperature = 0.0f;
    SequenceRng rng(1);
    CHECK(SampleOnce(logits, p, rng, {}, {}, eos).token == 0);
    CHECK(SampleOnce(logits, p, rng, {}, {2}, eos).token == 0);
    CHECK(SampleOnce(logits, p, rng, {}, {2, 2}, eos).token == 3);
    p.temperature = 1.0f;
    const auto counts = Histogram(logits, p, 5000, 4, /*output=*/{0}, eos);
    CHECK(counts.count(1) == 0);
    CHECK(counts.count(3) == 0);
    CHECK(counts.size() == 2);
  }
}

TEST_CASE("when every token is masked the raw argmax is returned", "[sampling][min_tokens]") {
  SamplingParams p;
  p.min_tokens = 1;
  SequenceRng rng(1);
  CHECK(SampleOnce({1.0f, 2.0f}, p, rng, {}, {}, {0, 1}).token == 1);
  p.temperature = 0.0f;
  CHECK(SampleOnce({1.0f, 2.0f}, p, rng, {}, {}, {0, 1}).token == 1);
  CHECK(SampleOnce({kNaN, kNaN}, p, rng).token == 0);
  CHECK(SampleOnce({}, p, rng).token == -1);
}

TEST_CASE("NaN and -inf logits are never drawn", "[sampling]") {
  const std::vector<float> logits = {kNaN, 1.0f, kNegInf, 0.5f};
  SamplingParams p;
  p.logprobs = 1;
  SequenceRng rng(17);
  for (int i = 0; i < 2000; ++i) {
    const auto r = SampleOnce(logits, p, rng);
    REQUIRE((r.token == 1 || r.token == 3));
    REQUIRE(std::isfinite(r.logprob));
  }
}

// The kept set by the letter of kernels/sampling.h on integer weights: top-k on the logits, then
// every weight sorted (weight descending, id ascending) and kept while the weight before it is
// below ceil(top_p * total), then min-p; a full sort, no selection tricks.
std::set<int32_t> ReferenceKept(const std::vector<float>& z, const SamplingParams& p) {
  namespace sm = kernels::sampling;
  const float z_max = *std::max_element(z.begin(), z.end());
  std::vector<float> sorted_z = z;
  std::sort(sorted_z.begin(), sorted_z.end(), std::greater<float>());
  const bool top_k = p.top_k > 0 && static_cast<size_t>(p.top_k) < z.size();
  const float kth = top_k ? sorted_z[p.top_k - 1] : -std::numeric_limits<float>::infinity();
  std::vector<std::pair<uint64_t, int32_t>> w;  // (weight, id)
  uint64_t total = 0;
  for (size_t i = 0; i < z.size(); ++i) {
    if (!(z[i] > kNegInf) || z[i] < kth) continue;
    const uint64_t wi = sm::QuantizedExp(
        sm::ScaledLogit(z[i], z_max, sm::DivRn(1.0f, p.temperature)), sm::kExp2Table);
    if (wi == 0) continue;
    w.emplace_back(wi, static_cast<int32_t>(i));
    total += wi;
  }
  std::sort(w.begin(), w.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  const uint64_t target = sm::CeilMulUnit(total, p.top_p);
  std::set<int32_t> keep;
  uint64_t before = 0;
  for (const auto& [wi, id] : w) {
    if (before >= target) break;
    if (wi >= std::max<uint64_t>(sm::MinPThreshold(p.min_p), 1)) keep.insert(id);
    before += wi;
  }
  return keep;
}

std::set<int32_t> Support(const std::vector<float>& z, const SamplingParams& p) {
  const auto c = FilterCandidates(z, p);
  CHECK(std::is_sorted(c.tokens.begin(), c.tokens.end()));
  return std::set<int32_t>(c.tokens.begin(), c.tokens.end());
}

TEST_CASE("top-k, top-p and min-p sets on hand-made rows with ties", "[sampling][filter]") {
  SamplingParams p;
  const std::vector<float> flat(5, 0.0f);  // five weights of exactly 2^40
  // top_p 0.375 (exact in binary): target 1.875 * 2^40 -> two tokens, the lowest ids.
  p.top_p = 0.375f;
  CHECK(Support(flat, p) == std::set<int32_t>{0, 1});
  // 0.4f is a hair above 0.4: the target passes 2 * 2^40 and a third token is needed.
  p.top_p = 0.4f;
  CHECK(Support(flat, p) == std::set<int32_t>{0, 1, 2});
  p.top_p = 0.5f;
  CHECK(Support(flat, p) == std::set<int32_t>{0, 1, 2});
  p.top_p = 0.2f;  // 0.2f * 5 > 1 by a hair
  CHECK(Support(flat, p) == std::set<int32_t>{0, 1});
  p.top_p = 0.125f;
  CHECK(Support(flat, p) == std::set<int32_t>{0});

  // Two tie groups: {1, 4} most likely, then {0, 2, 5}; the cut falls inside the second group
  // and keeps its lower ids.
  const std::vector<float> groups = {0.0f, 1.0f, 0.0f, -5.0f, 1.0f, 0.0f};
  for (float top_p : {0.3f, 0.6f, 0.7f, 0.8f, 0.9f, 0.99f, 1.0f}) {
    INFO("top_p " << top_p);
    p = SamplingParams{};
    p.top_p = top_p;
    CHECK(Support(groups, p) == ReferenceKept(groups, p));
  }
  // Weights 1 (ids 1, 4), e^-1 (0, 2, 5), e^-6 (3): mass .644, .118 each, .001.
  p.top_p = 0.6f;  // {1, 4} are enough
  CHECK(Support(groups, p) == std::set<int32_t>{1, 4});
  p.top_p = 0.7f;  // one more, the lowest id of the next group
  CHECK(Support(groups, p) == std::set<int32_t>{0, 1, 4});
  p.top_p = 0.8f;  // two more
  CHECK(Support(groups, p) == std::set<int32_t>{0, 1, 2, 4});

  // top-k keeps every tie with the k-th, and +0 ties -0.
  p = SamplingParams{};
  p.top_k = 1;
  CHECK(Support({0.0f, -0.0f, -1.0f}, p) == std::set<int32_t>{0, 1});
  p.top_k = 2;
  CHECK(Support(groups, p) == std::set<int32_t>{1, 4});
  p.top_k = 3;
  CHECK(Support(groups, p) == std::set<int32_t>{0, 1, 2, 4, 5});
  // top-k then top-p renormalises over the k kept.
  p.top_p = 0.5f;
  CHECK(Support(groups, p) == ReferenceKept(groups, p));

  // min-p on the weights: ties with the most likely stay, a token at e^-1 of it needs
  // min_p <= e^-1.
  p = SamplingParams{};
  p.min_p = 1.0f;
  CHECK(Support({3.0f, 3.0f, 1.0f, 3.0f}, p) == std::set<int32_t>{0, 1, 3});
  p.min_p = 0.36f;
  CHECK(Support({0.0f, -1.0f, -2.0f}, p) == std::set<int32_t>{0, 1});
  p.min_p = 0.37f;
  CHECK(Support({0.0f, -1.0f, -2.0f}, p) == std::set<int32_t>{0});
}

TEST_CASE("filters match the integer reference on random rows with ties", "[sampling][filter]") {
  std::mt19937 gen(12);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> z(1 + gen() % 300);
    const bool grid = trial % 2 == 0;
    for (float& x : z) x = grid ? std::round(normal(gen) * 2.0f) / 2.0f : normal(gen);
    SamplingParams p;
    p.temperature = std::vector<float>{0.25f, 0.7f, 1.0f, 3.0f}[gen() % 4];
    p.top_k = std::vector<int32_t>{-1, 1, 3, 10, 100}[gen() % 5];
    p.top_p = std::vector<float>{1.0f, 0.95f, 0.5f, 0.1f}[gen() % 4];
    p.min_p = std::vector<float>{0.0f, 0.02f, 0.2f}[gen() % 3];
    INFO("trial " << trial);
    CHECK(Support(z, p) == ReferenceKept(z, p));
  }
}

TEST_CASE("first draws of many seeds follow the filtered softmax", "[sampling][statistics]") {
  // One draw per seed (the first block of each stream), as a server sees: top-k 5, top-p 0.8
  // and min-p 0.1 leave kIds ranks 0-2 (mass .3, .25, .2 -> .4, .33, .27).
  const std::vector<float> logits = RankedLogits();
  SamplingParams p;
  p.top_k = 5;
  p.top_p = 0.8f;
  p.min_p = 0.1f;
  constexpr int kSeeds = 60000;
  std::map<int32_t, int> counts;
  for (int seed = 0; seed < kSeeds; ++seed) {
    SequenceRng rng(static_cast<uint64_t>(seed) * 7919, /*stream=*/seed % 3);
    ++counts[SampleOnce(logits, p, rng).token];
  }
  REQUIRE(counts.size() == 3);
  std::map<int32_t, int> kept;
  std::vector<double> want;
  for (int r = 0; r < 3; ++r) {
    kept[r] = counts[kIds[r]];
    want.push_back(kProbs[r] / 0.75);
  }
  CHECK(ChiSquare(kept, want, kSeeds) < ChiSquareCritical(2, 1e-6));
}

TEST_CASE("the allowed bitmask masks tokens after the penalties", "[sampling][mask]") {
  // 40 tokens: two words; token 33 (second word) is the best allowed one.
  std::vector<float> logits(40, 0.0f);
  logits[4] = 9.0f;   // masked
  logits[33] = 3.0f;  // allowed
  logits[7] = 2.0f;   // allowed
  std::vector<uint32_t> allowed = {(1u << 7) | (1u << 9), 1u << (33 - 32)};
  SamplingParams p;
  p.temperature = 0.0f;
  SequenceRng rng(1);
  CHECK(Sample(logits, p, {}, {}, {}, rng, allowed).token == 33);
  // A presence penalty of 2 on token 33 drops it below 7; the mask still rules out 4.
  p.presence_penalty = 2.0f;
  CHECK(Sample(logits, p, {}, {33}, {}, rng, allowed).token == 7);
  // Sampling never leaves the mask; 7, 9 and 33 all appear.
  p = SamplingParams{};
  std::map<int32_t, int> counts;
  for (int i = 0; i < 5000; ++i) ++counts[Sample(logits, p, {}, {}, {}, rng, allowed).token];
  CHECK(counts.size() == 3);
  CHECK(counts.count(7) == 1);
  CHECK(counts.count(9) == 1);
  CHECK(counts.count(33) == 1);
  // Bits past the span count as 0: one word allows only 7 and 9.
  CHECK(Sample(logits, p, {}, {}, {}, rng, absl::MakeConstSpan(allowed.data(), 1)).token != 33);
  // Everything masked: the raw argmax, as when min_tokens masks every token.
  const std::vector<uint32_t> none = {0u, 0u};
  CHECK(Sample(logits, p, {}, {}, {}, rng, none).token == 4);
  p.temperature = 0.0f;
  CHECK(Sample(logits, p, {}, {}, {}, rng, none).token == 4);
}

TEST_CASE("logit_bias comes before the repetition penalty", "[sampling][penalties]") {
  SamplingParams p;
  p.logit_bias = {{0, -3.0f}};
  p.repetition_penalty = 2.0f;
  std::vector<float> z = {1.0f, 1.0f};
  ApplyLogitsProcessors(absl::MakeSpan(z), p, {0, 1}, {}, {});
  CHECK(z[0] == -4.0f);  // (1 - 3) * 2, not 1 / 2 - 3
  CHECK(z[1] == 0.5f);
}

// A deterministic stand-in for a model: the logits of step `step` for sequence `seq`.
std::vector<float> StepLogits(int seq, int step) {
  std::mt19937 gen(static_cast<uint32_t>(seq * 1000 + step));
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(64);
  for (float& l : logits) l = normal(gen);
  return logits;
}

TEST_CASE("a seeded sequence draws the same tokens whatever the batch", "[sampling][seed]") {
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  p.frequency_penalty = 0.3f;
  constexpr int kSteps = 60;

  // Alone.
  SequenceRng alone_rng(42);
  Tokens alone;
  for (int step = 0; step < kSteps; ++step) {
    alone.push_back(SampleOnce(StepLogits(0, step), p, alone_rng, {}, alone).token);
  }

  // Same seed again: same tokens.
  SequenceRng again_rng(42);
  Tokens again;
  for (int step = 0; step < kSteps; ++step) {
    again.push_back(SampleOnce(StepLogits(0, step), p, again_rng, {}, again).token);
  }
  CHECK(again == alone);

  // In a batch with a differently seeded and an unseeded sequence, sampled in a shuffled order
  // each step: sequence 0 still draws the same tokens.
  std::vector<SequenceRng> rngs = {SequenceRng(42), SequenceRng(7), SequenceRng(std::nullopt)};
  std::vector<Tokens> outs(3);
  std::mt19937 shuffle_gen(5);
  std::vector<int> order = {0, 1, 2};
  for (int step = 0; step < kSteps; ++step) {
    std::shuffle(order.begin(), order.end(), shuffle_gen);
    for (int seq : order) {
      outs[seq].push_back(SampleOnce(StepLogits(seq, step), p, rngs[seq], {}, outs[seq]).token);
    }
  }
  CHECK(outs[0] == alone);

  // A different seed gives a different sequence (60 draws over a spread distribution).
  SequenceRng other_rng(43);
  Tokens other;
  for (int step = 0; step < kSteps; ++step) {
    other.push_back(SampleOnce(StepLogits(0, step), p, other_rng, {}, other).token);
  }
  CHECK(other != alone);
}

// log-softmax in double: the reference for logprobs.
std::vector<double> LogSoftmax(const std::vector<float>& logits) {
  const double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float l : logits) sum += std::exp(l - max);
  const double lse = max + std::log(sum);
  std::vector<double> out;
  for (float l : logits) out.push_back(l - lse);
  return out;
}

TEST_CASE("logprobs are the log-softmax of the raw logits", "[sampling][logprobs]") {
  std::mt19937 gen(21);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (size_t vocab : {8u, 769u, 5125u}) {
    std::vector<float> logits(vocab);
    for (float& l : logits) l = normal(gen);
    const auto expected = LogSoftmax(logits);
    Tokens by_logit(vocab);
    std::iota(by_logit.begin(), by_logit.end(), 0);
    std::sort(by_logit.begin(), by_logit.end(),
              [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });

    SamplingParams p;
    p.logprobs = 5;
    // Processing that changes the distribution must not change the reported logprobs.
    p.temperature = 0.3f;
    p.top_k = 3;
    p.repetition_penalty = 1.7f;
    p.logit_bias = {{static_cast<int32_t>(vocab - 1), 50.0f}};
    SequenceRng rng(vocab);
    for (int i = 0; i < 20; ++i) {
      INFO("vocab " << vocab << " draw " << i);
      const auto r = SampleOnce(logits, p, rng, {1, 2, 3});
      CHECK(r.token == static_cast<int32_t>(vocab - 1));  // the +50 bias wins under top_k 3
      CHECK(r.logprob == Approx(expected[r.token]).margin(1e-5));
      REQUIRE(r.top.size() == 5);
      for (size_t k = 0; k < 5; ++k) {
        CHECK(r.top[k].token == by_logit[k]);
        CHECK(r.top[k].logprob == Approx(expected[by_logit[k]]).margin(1e-5));
        if (k > 0) CHECK(r.top[k - 1].logprob >= r.top[k].logprob);
      }
    }
  }
}

TEST_CASE("logprobs 0, -1, the whole vocabulary, and ties", "[sampling][logprobs]") {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f};
  const auto expected = LogSoftmax(logits);
  SequenceRng rng(2);
  SamplingParams p;
  p.temperature = 0.0f;

  p.logprobs = 0;
  auto r = SampleOnce(logits, p, rng);
  CHECK(r.token == 1);
  CHECK(r.logprob == Approx(expected[1]).margin(1e-6));
  CHECK(r.top.empty());

  p.logprobs = -1;
  r = SampleOnce(logits, p, rng);
  CHECK(r.logprob == 0.0f);
  CHECK(r.top.empty());

  p.logprobs = 4;
  r = SampleOnce(logits, p, rng);
  REQUIRE(r.top.size() == 4);
  CHECK(r.top[0].token == 1);  // tie with 2: lower id first
  CHECK(r.top[1].token == 2);
  CHECK(r.top[2].token == 3);
  CHECK(r.top[3].token == 0);
  double mass = 0.0;
  for (const auto& t : r.top) mass += std::exp(static_cast<double>(t.logprob));
  CHECK(mass == Approx(1.0).margin(1e-6));
}

TEST_CASE("TokenLogprobs scores a named token as Sample reports a drawn one",
          "[sampling][logprobs]") {
  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (size_t vocab : {3u, 769u}) {
    INFO("vocab " << vocab);
    std::vector<float> logits(vocab);
    for (float& l : logits) l = normal(gen);
    const auto expected = LogSoftmax(logits);
    // The least likely token: never what greedy sampling would pick.
    const auto least =
        static_cast<int32_t>(std::min_element(logits.begin(), logits.end()) - logits.begin());
    const SampleResult r = TokenLogprobs(logits, least, 2);
    CHECK(r.token == least);
    CHECK(r.logprob == Approx(expected[least]).margin(1e-5));
    REQUIRE(r.top.size() == 2);
    // The same alternatives as Sample's logprobs for its greedy token.
    SamplingParams p;
    p.temperature = 0.0f;
    p.logprobs = 2;
    SequenceRng rng(1);
    const SampleResult drawn = SampleOnce(logits, p, rng);
    for (size_t k = 0; k < 2; ++k) {
      CHECK(r.top[k].token == drawn.top[k].token);
      CHECK(r.top[k].logprob == drawn.top[k].logprob);
    }
    // top_k past the vocabulary is capped; 0 gives none.
    CHECK(TokenLogprobs(logits, 0, 50).top.size() == std::min<size_t>(vocab, 50));
    CHECK(TokenLogprobs(logits, 0, 0).top.empty());
  }
}

TEST_CASE("a 152k vocabulary with every knob on", "[sampling][large]") {
  constexpr size_t kVocab = 151936;
  std::mt19937 gen(8);
  std::normal_distribution<float> normal(0.0f, 2.5f);
  std::vector<float> logits(kVocab);
  for (float& l : logits) l = normal(gen);
  Tokens prompt(2000);
  for (auto& t : prompt) t = static_cast<int32_t>(gen() % kVocab);
  Tokens output;
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_k = 50;
  p.top_p = 0.9f;
  p.min_p = 0.05f;
  p.repetition_penalty = 1.1f;
  p.presence_penalty = 0.2f;
  p.frequency_penalty = 0.2f;
  p.logprobs = 20;
  REQUIRE(ValidateSamplingParams(p, kVocab).ok());
  SequenceRng rng(77);
  for (int step = 0; step < 30; ++step) {
    std::vector<float> z = logits;
    ApplyLogitsProcessors(absl::MakeSpan(z), p, prompt, output, {});
    const auto c = FilterCandidates(z, p);
    REQUIRE(!c.tokens.empty());
    REQUIRE(c.tokens.size() <= 50);
    const auto r = SampleOnce(logits, p, rng, prompt, output);
    CHECK(std::find(c.tokens.begin(), c.tokens.end(), r.token) != c.tokens.end());
    CHECK(r.top.size() == 20);
    output.push_back(r.token);
  }
  // top_p alone over the whole vocabulary (the sorted path past the first chunk).
  p.top_k = -1;
  p.min_p = 0.0f;
  p.temperature = 5.0f;
  const auto c = FilterCandidates(logits, p);
  CHECK(c.tokens.size() > 1024);
  CHECK(c.tokens.size() < kVocab);
}

}  // namespace
}  // namespace arbor::engine
