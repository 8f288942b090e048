#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/sampling_math.h"

namespace arbor::kernels {
namespace {

namespace sm = sampling;

bool InVocab(int32_t id, int64_t vocab) { return id >= 0 && id < vocab; }

bool BitSet(const uint32_t* words, int64_t i) { return ((words[i >> 5] >> (i & 31)) & 1u) != 0; }

// The k-th largest key above kNegInfKey (finite and +inf logits), or kNegInfKey + 1 (the
// smallest such key: every one passes) when fewer than k are. A min-heap of the k best for small
// k (one pass, mostly one comparison per token), nth_element otherwise.
uint32_t KthLargestKey(const float* z, int64_t vocab, int64_t k) {
  constexpr int64_t kHeapLimit = 4096;
  constexpr uint32_t kAll = sm::kNegInfKey + 1;
  std::vector<uint32_t> best;
  if (k <= kHeapLimit) {
    best.reserve(static_cast<size_t>(k));
    const auto cmp = std::greater<uint32_t>();  // front() is the smallest kept
    for (int64_t i = 0; i < vocab; ++i) {
      const uint32_t key = sm::OrderedKey(sm::NanToNegInf(z[i]));
      if (key <= sm::kNegInfKey) continue;
      if (static_cast<int64_t>(best.size()) < k) {
        best.push_back(key);
        if (static_cast<int64_t>(best.size()) == k) std::make_heap(best.begin(), best.end(), cmp);
      } else if (key > best.front()) {
        std::pop_heap(best.begin(), best.end(), cmp);
        best.back() = key;
        std::push_heap(best.begin(), best.end(), cmp);
      }
    }
    return static_cast<int64_t>(best.size()) < k ? kAll : best.front();
  }
  for (int64_t i = 0; i < vocab; ++i) {
    const uint32_t key = sm::OrderedKey(sm::NanToNegInf(z[i]));
    if (key > sm::kNegInfKey) best.push_back(key);
  }
  if (static_cast<int64_t>(best.size()) < k) return kAll;
  const auto kth = best.begin() + (k - 1);
  std::nth_element(best.begin(), kth, best.end(), std::greater<uint32_t>());
  return *kth;
}

struct Selected {
  uint64_t key;     // the selected key K*
  uint64_t before;  // the value of the items with a key above K*
};

// Of `items` (key, value > 0), the key K* such that the items above K* hold less than `want`
// and those at or above it at least `want` (1 <= want <= the total). Radix select, 12 bits of
// key at a time from the top, each level keeping only the items of the chosen bucket.
Selected SelectByValue(std::vector<std::pair<uint64_t, uint64_t>> items, int key_bits,
                       uint64_t want) {
  constexpr int kDigitBits = 12;
  uint64_t prefix = 0;
  uint64_t before = 0;
  std::vector<uint64_t> hist;
  for (int hi = key_bits; hi > 0; hi -= kDigitBits) {
    const int lo = std::max(hi - kDigitBits, 0);
    const uint64_t bins = uint64_t{1} << (hi - lo);
    hist.assign(bins, 0);
    for (const auto& item : items) hist[(item.first >> lo) & (bins - 1)] += item.second;
    uint64_t chosen = 0;
    for (uint64_t b = bins; b-- > 0;) {
      if (before + hist[b] >= want) {
        chosen = b;
        break;
      }
      before += hist[b];
    }
    prefix |= chosen << lo;
    items.erase(std::remove_if(items.begin(), items.end(),
                               [&](const std::pair<uint64_t, uint64_t>& item) {
                                 return ((item.first >> lo) & (bins - 1)) != chosen;
                               }),
                items.end());
  }
  return {prefix, before};
}

absl::Status CheckRow(const SampleRow& r, int64_t row, int64_t num_slots) {
  auto bad = [row](const char* what) {
    return absl::InvalidArgumentError(absl::StrCat("sampling row ", row, ": ", what));
  };
  if (!(r.temperature >= 0.0f) || !std::isfinite(r.temperature)) {
    return bad("temperature must be finite and >= 0");
  }
  if (!(r.top_p > 0.0f && r.top_p <= 1.0f)) return bad("top_p must be in (0, 1]");
  if (!(r.min_p >= 0.0f && r.min_p <= 1.0f)) return bad("min_p must be in [0, 1]");
  if (!(r.repetition_penalty > 0.0f) || !std::isfinite(r.repetition_penalty)) {
    return bad("repetition_penalty must be finite and > 0");
  }
  if (!std::isfinite(r.frequency_penalty) || !std::isfinite(r.presence_penalty)) {
    return bad("frequency and presence penalties must be finite");
  }
  if (r.logprobs < -1 || r.logprobs > kMaxTopLogprobs) return bad("logprobs must be in [-1, 20]");
  if (r.penalty_slot < -1 || r.penalty_slot >= num_slots) {
    return bad("penalty_slot out of range");
  }
  return absl::OkStatus();
}

bool PenaltiesOn(const SampleRow& r) {
  return r.repetition_penalty != 1.0f || r.frequency_penalty != 0.0f || r.presence_penalty != 0.0f;
}

absl::Status CheckOffsets(const int32_t* offsets, int64_t n, const char* what) {
  if (offsets == nullptr) return absl::OkStatus();
  if (offsets[0] != 0) return absl::InvalidArgumentError(absl::StrCat(what, "[0] must be 0"));
  for (int64_t i = 0; i < n; ++i) {
    if (offsets[i + 1] < offsets[i]) {
      return absl::InvalidArgumentError(absl::StrCat(what, " must be non-decreasing"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckArgs(const SampleArgs& a) {
  if (a.vocab < 1 || a.vocab > sm::kMaxVocab) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: vocab out of range: ", a.vocab));
  }
  if (a.num_rows < 0 || a.num_rows > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: num_rows out of range: ", a.num_rows));
  }
  if (a.num_rows == 0) return absl::OkStatus();
  if (a.logits == nullptr || a.rows == nullptr || a.tokens_out == nullptr) {
    return absl::InvalidArgumentError("sampling: logits, rows and tokens_out are required");
  }
  if (a.logits_stride < a.vocab) {
    return absl::InvalidArgumentError("sampling: logits_stride must be >= vocab");
  }
  if (auto s = CheckOffsets(a.bias_offsets, a.num_rows, "bias_offsets"); !s.ok()) return s;
  if (auto s = CheckOffsets(a.stop_offsets, a.num_rows, "stop_offsets"); !s.ok()) return s;
  // The id and value arrays may be null only when the offsets hold no entries.
  const bool bias = a.bias_offsets != nullptr && a.bias_offsets[a.num_rows] > 0;
  const bool stop = a.stop_offsets != nullptr && a.stop_offsets[a.num_rows] > 0;
  if ((bias && (a.bias_ids == nullptr || a.bias_values == nullptr)) ||
      (stop && a.stop_ids == nullptr) || a.num_eos < 0 ||
      (a.num_eos > 0 && a.eos_ids == nullptr)) {
    return absl::InvalidArgumentError("sampling: bias, stop or eos arrays incomplete");
  }
  for (int64_t r = 0; r < a.num_rows; ++r) {
    const SampleRow& row = a.rows[r];
    if (auto s = CheckRow(row, r, a.num_slots); !s.ok()) return s;
    if (row.penalty_slot >= 0 && PenaltiesOn(row) &&
        (a.prompt_seen == nullptr || a.output_counts == nullptr)) {
      return absl::InvalidArgumentError("sampling: a row uses penalty state that is null");
    }
    if (row.logprobs >= 0 && a.logprob_out == nullptr) {
      return absl::InvalidArgumentError("sampling: a row asks for logprobs: logprob_out is null");
    }
    if (row.logprobs > 0 && (a.top_ids_out == nullptr || a.top_logprobs_out == nullptr)) {
      return absl::InvalidArgumentError("sampling: a row asks for top logprobs: outputs are null");
    }
    if (a.bias_offsets != nullptr) {
      std::unordered_set<int32_t> ids;
      for (int32_t e = a.bias_offsets[r]; e < a.bias_offsets[r + 1]; ++e) {
        if (!ids.insert(a.bias_ids[e]).second) {
          return absl::InvalidArgumentError(
              absl::StrCat("sampling row ", r, ": logit_bias id ", a.bias_ids[e], " repeated"));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

KeptTokens KeepTokens(const float* z, int64_t vocab, const SampleFilter& filter) {
  KeptTokens out;
  float z_max = sm::NegInf();
  for (int64_t i = 0; i < vocab; ++i) {
    const float x = sm::NanToNegInf(z[i]);
    if (x > z_max) z_max = x;
  }
  if (z_max == sm::NegInf()) return out;
  if (!(filter.temperature > 0.0f)) {  // greedy: the argmax alone
    out.tokens.push_back(ArgMaxLogit(z, vocab));
    out.weights.push_back(sm::kWeightOne);
    return out;
  }

  // top-k: keep keys >= the k-th largest (min_key).
  uint32_t min_key = sm::kNegInfKey + 1;
  if (filter.top_k > 0 && filter.top_k < vocab) min_key = KthLargestKey(z, vocab, filter.top_k);

  std::vector<uint64_t> w(static_cast<size_t>(vocab), 0);
  uint64_t total = 0;
  const float inv_temperature = sm::DivRn(1.0f, filter.temperature);
  for (int64_t i = 0; i < vocab; ++i) {
    const float x = sm::NanToNegInf(z[i]);
    if (sm::OrderedKey(x) < min_key) continue;
    w[i] = sm::QuantizedExp(sm::ScaledLogit(x, z_max, inv_temperature), sm::kExp2Table);
    total += w[i];
  }

  // top-p: the weight w* of the last token kept (by weight descending, id ascending) and the
  // id of the last kept token of weight w*.
  const bool top_p = filter.top_p < 1.0f;
  uint64_t cut_key = 0;
  int64_t tie_last = vocab;
  if (top_p) {
    const uint64_t target = sm::CeilMulUnit(total, filter.top_p);  // >= 1: total >= 2^40
    std::vector<std::pair<uint64_t, uint64_t>> items;
    for (int64_t i = 0; i < vocab; ++i) {
      if (w[i] > 0) items.emplace_back(sm::WeightKey(w[i]), w[i]);
    }
    const Selected cut = SelectByValue(std::move(items), sm::kWeightKeyBits, target);
    cut_key = cut.key;
    const uint64_t w_cut = sm::WeightFromKey(static_cast<uint32_t>(cut.key));
    const uint64_t ties = (target - cut.before + w_cut - 1) / w_cut;  // >= 1
    uint64_t seen = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (w[i] == w_cut && ++seen == ties) {
        tie_last = i;
        break;
      }
    }
  }

  const uint64_t min_w = std::max<uint64_t>(sm::MinPThreshold(filter.min_p), 1);
  for (int64_t i = 0; i < vocab; ++i) {
    if (w[i] < min_w) continue;
    if (top_p) {
      const uint64_t key = sm::WeightKey(w[i]);
      if (key < cut_key || (key == cut_key && i > tie_last)) continue;
    }
    out.tokens.push_back(static_cast<int32_t>(i));
    out.weights.push_back(w[i]);
  }
  return out;
}

int32_t DrawKept(const KeptTokens& kept, uint64_t random_bits) {
  if (kept.tokens.empty()) return -1;
  uint64_t total = 0;
  for (uint64_t w : kept.weights) total += w;
  const uint64_t target = sm::DrawTarget(random_bits, total);
  uint64_t sum = 0;
  for (size_t i = 0; i < kept.tokens.size(); ++i) {
    sum += kept.weights[i];
    if (sum > target) return kept.tokens[i];
  }
  return kept.tokens.back();  // unreachable: target < total
}

int32_t ArgMaxLogit(const float* values, int64_t n) {
  uint32_t best_key = sm::kNegInfKey;
  int32_t best = -1;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t key = sm::OrderedKey(sm::NanToNegInf(values[i]));
    if (key > best_key) {
      best_key = key;
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

int32_t ChooseToken(const float* raw, const float* z, int64_t vocab, const SampleFilter& filter,
                    uint64_t random_bits) {
  int32_t token = filter.temperature == 0.0f
                      ? ArgMaxLogit(z, vocab)
                      : DrawKept(KeepTokens(z, vocab, filter), random_bits);
  if (token < 0) token = std::max(ArgMaxLogit(raw, vocab), 0);  // everything masked
  return token;
}

RawLogSoftmax::RawLogSoftmax(const float* logits, int64_t vocab)
    : logits_(logits), vocab_(vocab), max_(sm::NegInf()) {
  for (int64_t i = 0; i < vocab; ++i) {
    const float x = sm::NanToNegInf(logits[i]);
    if (x > max_) max_ = x;
  }
  if (max_ == sm::PosInf()) {
    for (int64_t i = 0; i < vocab; ++i) inf_count_ += logits[i] == sm::PosInf();
  } else if (max_ > sm::NegInf()) {
    double sum = 0.0;
    for (int64_t i = 0; i < vocab; ++i) {
      const float x = sm::NanToNegInf(logits[i]);
      if (x > sm::NegInf()) sum += static_cast<double>(std::exp(x - max_));
    }
    log_sum_exp_ = static_cast<double>(max_) + std::log(sum);
  }
}

float RawLogSoftmax::operator()(int32_t token) const {
  const float x = sm::NanToNegInf(logits_[token]);
  if (inf_count_ > 0) {  // the +inf logits share all the mass
    return x == sm::PosInf() ? static_cast<float>(-std::log(static_cast<double>(inf_count_)))
                             : sm::NegInf();
  }
  if (max_ == sm::NegInf()) {  // every logit -inf or NaN: no information, uniform
    return static_cast<float>(-std::log(static_cast<double>(vocab_)));
  }
  if (!(x > sm::NegInf())) return sm::NegInf();
  return static_cast<float>(static_cast<double>(x) - log_sum_exp_);
}

std::vector<int32_t> TopRawTokens(const float* logits, int64_t vocab, int32_t n) {
  const size_t top_n = static_cast<size_t>(std::min<int64_t>(std::max(n, 0), vocab));
  std::vector<int32_t> out;
  if (top_n == 0) return out;
  // The top_n largest keys in one pass over a heap whose front is the least likely kept.
  struct Entry {
    uint32_t key;
    int32_t token;
  };
  auto more_likely = [](const Entry& a, const Entry& b) {
    return a.key > b.key || (a.key == b.key && a.token < b.token);
  };
  std::vector<Entry> best;
  best.reserve(top_n);
  for (int64_t i = 0; i < vocab; ++i) {
    const Entry e{sm::OrderedKey(sm::NanToNegInf(logits[i])), static_cast<int32_t>(i)};
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
  out.reserve(top_n);
  for (const Entry& e : best) out.push_back(e.token);
  return out;
}

absl::Status SampleCpu(const SampleArgs& a) {
  if (auto s = CheckArgs(a); !s.ok()) return s;
  const int64_t vocab = a.vocab;
  const int64_t words = SampleMaskWords(vocab);
  std::vector<float> z(static_cast<size_t>(vocab));
  for (int64_t r = 0; r < a.num_rows; ++r) {
    const SampleRow& row = a.rows[r];
    const float* raw = a.logits + r * a.logits_stride;

    // Steps 1-3 (kernels/sampling.h).
    for (int64_t i = 0; i < vocab; ++i) z[i] = sm::NanToNegInf(raw[i]);
    if (a.bias_offsets != nullptr) {
      for (int32_t e = a.bias_offsets[r]; e < a.bias_offsets[r + 1]; ++e) {
        const int32_t id = a.bias_ids[e];
        if (InVocab(id, vocab)) z[id] = sm::AddRn(z[id], a.bias_values[e]);
      }
    }
    if (row.penalty_slot >= 0 && PenaltiesOn(row)) {
      const uint32_t* seen = a.prompt_seen + row.penalty_slot * words;
      const int32_t* counts = a.output_counts + row.penalty_slot * vocab;
      for (int64_t i = 0; i < vocab; ++i) {
        z[i] = sm::PenalizeLogit(z[i], BitSet(seen, i), counts[i], row.repetition_penalty,
                                 row.frequency_penalty, row.presence_penalty);
      }
    }
    if (row.mask_eos_and_stop != 0) {
      for (int64_t e = 0; e < a.num_eos; ++e) {
        if (InVocab(a.eos_ids[e], vocab)) z[a.eos_ids[e]] = sm::NegInf();
      }
      if (a.stop_offsets != nullptr) {
        for (int32_t e = a.stop_offsets[r]; e < a.stop_offsets[r + 1]; ++e) {
          if (InVocab(a.stop_ids[e], vocab)) z[a.stop_ids[e]] = sm::NegInf();
        }
      }
    }
    if (a.allowed != nullptr) {
      const uint32_t* allowed = a.allowed + r * words;
      for (int64_t i = 0; i < vocab; ++i) {
        if (!BitSet(allowed, i)) z[i] = sm::NegInf();
      }
    }

    // Steps 4-6.
    const SampleFilter filter{row.temperature, row.top_k, row.top_p, row.min_p};
    const uint64_t bits = row.temperature > 0.0f
                              ? sm::PhiloxRandom64(row.rng_key, row.rng_stream, row.rng_counter)
                              : 0;
    const int32_t token = ChooseToken(raw, z.data(), vocab, filter, bits);
    a.tokens_out[r] = token;

    // Log-probs of the raw logits.
    std::vector<int32_t> top;
    float logprob = 0.0f;
    std::vector<float> top_logprobs;
    if (row.logprobs >= 0) {
      const RawLogSoftmax log_softmax(raw, vocab);
      logprob = log_softmax(token);
      top = TopRawTokens(raw, vocab, row.logprobs);
      for (int32_t t : top) top_logprobs.push_back(log_softmax(t));
    }
    if (a.logprob_out != nullptr) a.logprob_out[r] = logprob;
    for (int32_t j = 0; j < kMaxTopLogprobs; ++j) {
      const bool set = static_cast<size_t>(j) < top.size();
      if (a.top_ids_out != nullptr) a.top_ids_out[r * kMaxTopLogprobs + j] = set ? top[j] : -1;
      if (a.top_logprobs_out != nullptr) {
        a.top_logprobs_out[r * kMaxTopLogprobs + j] = set ? top_logprobs[j] : 0.0f;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status UpdatePenaltyStateCpu(const PenaltyUpdateArgs& a) {
  if (a.num_rows < 0 || a.vocab < 1 || a.num_slots < 0) {
    return absl::InvalidArgumentError("penalty update: bad shape");
  }
  if (a.num_rows == 0) return absl::OkStatus();
  if (a.output_counts == nullptr || a.slots == nullptr || a.tokens == nullptr) {
    return absl::InvalidArgumentError("penalty update: null pointer");
  }
  for (int64_t r = 0; r < a.num_rows; ++r) {
    const int32_t slot = a.slots[r];
    const int32_t token = a.tokens[r];
    if (slot < 0 || slot >= a.num_slots || !InVocab(token, a.vocab)) continue;
    ++a.output_counts[slot * a.vocab + token];
  }
  return absl::OkStatus();
}

absl::Status ResetPenaltySlotsCpu(const PenaltyResetArgs& a) {
  if (a.num_resets < 0 || a.num_resets > 65535 || a.vocab < 1 || a.num_slots < 0) {
    return absl::InvalidArgumentError("penalty reset: bad shape");
  }
  if (a.num_resets == 0) return absl::OkStatus();
  if (a.prompt_seen == nullptr || a.output_counts == nullptr || a.slots == nullptr ||
      a.prompt_offsets == nullptr || (a.output_offsets != nullptr && a.output_ids == nullptr)) {
    return absl::InvalidArgumentError("penalty reset: null pointer");
  }
  if (auto s = CheckOffsets(a.prompt_offsets, a.num_resets, "prompt_offsets"); !s.ok()) return s;
  if (auto s = CheckOffsets(a.output_offsets, a.num_resets, "output_offsets"); !s.ok()) return s;
  if (a.prompt_offsets[a.num_resets] > 0 && a.prompt_ids == nullptr) {
    return absl::InvalidArgumentError("penalty reset: prompt_ids is null");
  }
  std::unordered_set<int32_t> slots;
  for (int64_t i = 0; i < a.num_resets; ++i) {
    if (a.slots[i] < 0 || a.slots[i] >= a.num_slots || !slots.insert(a.slots[i]).second) {
      return absl::InvalidArgumentError("penalty reset: slots out of range or repeated");
    }
  }
  const int64_t words = SampleMaskWords(a.vocab);
  for (int64_t i = 0; i < a.num_resets; ++i) {
    uint32_t* seen = a.prompt_seen + a.slots[i] * words;
    int32_t* counts = a.output_counts + a.slots[i] * a.vocab;
    std::fill(seen, seen + words, 0u);
    std::fill(counts, counts + a.vocab, 0);
    for (int32_t e = a.prompt_offsets[i]; e < a.prompt_offsets[i + 1]; ++e) {
      const int32_t t = a.prompt_ids[e];
      if (InVocab(t, a.vocab)) seen[t >> 5] |= 1u << (t & 31);
    }
    if (a.output_offsets != nullptr) {
      for (int32_t e = a.output_offsets[i]; e < a.output_offsets[i + 1]; ++e) {
        if (InVocab(a.output_ids[e], a.vocab)) ++counts[a.output_ids[e]];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace arbor::kernels
