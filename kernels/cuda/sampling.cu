// Token sampling on the device: one CTA of 512 threads per row, the rules of kernels/sampling.h
// with the arithmetic of kernels/sampling_math.h, so that each row's token (and top ids) equal
// SampleCpu's bit for bit.
//
// A row is a handful of passes over its vocabulary V, each reading 16-byte vectors with several
// loads in flight per thread. The workspace row ([SampleWorkspaceStride(V)] fp32, in L2) first
// holds the processed logits z, then their weights (exact integers, stored as floats):
//   1. raw -> NaN as -inf -> penalties -> allowed mask -> z; the raw and processed argmax (max of
//      packed (key, ~id)); logit_bias and min_tokens fix-ups after a barrier, then the processed
//      argmax again when there were any.
//   greedy: the processed argmax. Otherwise:
//   2. top-k: radix select of the k-th largest OrderedKey(z) (11-bit digits, 3 passes);
//   3. weights QuantizedExp((z - z_max) / T) of the tokens top-k keeps, written over z, and their
//      total K; when top-k keeps at most kListCap tokens they also go to a shared-memory list,
//      sorted by id, and steps 4-5 run on that list instead of the vocabulary;
//   4. top-p: radix select over the weights' float bits with mass (not count) histograms gives
//      the cut-off weight w*; a count walk finds the last tied token kept;
//   5. the kept total, the Philox draw, and a walk over exact integer prefix sums in id order:
//      per-warp segment sums, then one block scan over the segment that holds the target.
//   log-probs: a double sum of expf over the raw logits, and the top-n raw tokens by radix select
//   plus a walk for the ties at the n-th key.
// No pass sorts the vocabulary. Sums are integers (or, for log-probs only, doubles), so the
// token does not depend on the order in which threads add.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/sampling.h"
#include "kernels/sampling_math.h"

namespace arbor::kernels {
namespace {

namespace sm = sampling;
using u64 = unsigned long long;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kDigitBits = 11;  // radix select: 2048 bins
constexpr int kBins = 1 << kDigitBits;
constexpr int kUnroll = 2;       // vector loads in flight per thread in a pass
constexpr int kListCap = 2048;   // top-k sets up to this size are sampled from shared memory
constexpr unsigned kFullMask = 0xffffffffu;

__constant__ uint32_t kExp2TableDevice[sm::kExp2TableSize] = {ARBOR_SAMPLING_EXP2_TABLE};

struct alignas(16) Shared {
  u64 hist[kBins];  // radix-select histogram (counts or masses)
  alignas(16) float list_w[kListCap];  // the small-top-k list: weights, then ids
  int32_t list_id[kListCap];
  u64 warp[kWarps];  // per-warp partials of reductions and scans
  uint32_t exp2[sm::kExp2TableSize];
  SampleRow row;
  u64 sel_bin;
  u64 sel_before;
  u64 sel_at;
  long long found;
  int list_count;
  int top_count;
  uint32_t top_key[kMaxTopLogprobs];
  int32_t top_id[kMaxTopLogprobs];
};

// ---- Rows of floats, read four at a time --------------------------------------------------------

// Values [0, n) of a row; vector j holds values [4j, 4j + 4). Elements [0, readable) may be read
// (readable >= n: a padded workspace row). `vectors`: data is 16-byte aligned. `read_only` data
// (the raw logits, never written by the kernel) goes through the non-coherent cache.
struct Values {
  const float* data;
  int64_t n;
  int64_t readable;
  bool vectors;
  bool read_only;

  __device__ __forceinline__ int64_t Vectors() const { return (n + 3) / 4; }
  __device__ __forceinline__ float Load(int64_t i) const {
    return read_only ? __ldg(data + i) : data[i];
  }
  __device__ __forceinline__ float4 Load4(int64_t j) const {
    const int64_t i = 4 * j;
    if (vectors && i + 4 <= readable) {
      const float4* p = reinterpret_cast<const float4*>(data + i);
      return read_only ? __ldg(p) : *p;
    }
    float4 q;
    q.x = i < readable ? Load(i) : 0.0f;
    q.y = i + 1 < readable ? Load(i + 1) : 0.0f;
    q.z = i + 2 < readable ? Load(i + 2) : 0.0f;
    q.w = i + 3 < readable ? Load(i + 3) : 0.0f;
    return q;
  }
};

__device__ __forceinline__ float Lane(const float4& q, int k) {
  return k == 0 ? q.x : k == 1 ? q.y : k == 2 ? q.z : q.w;
}

// Calls f(i, x) for the values this thread owns (vectors threadIdx.x + m * kThreads), with
// kUnroll vector loads issued before any is used.
template <typename F>
__device__ __forceinline__ void ForEach(const Values& v, F f) {
  const int64_t nv = v.Vectors();
  for (int64_t j0 = threadIdx.x; j0 < nv; j0 += int64_t{kThreads} * kUnroll) {
    float4 q[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = j0 + int64_t{u} * kThreads;
      q[u] = j < nv ? v.Load4(j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = j0 + int64_t{u} * kThreads;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (j < nv && 4 * j + k < v.n) f(4 * j + k, Lane(q[u], k));
      }
    }
  }
}

// ---- Block-wide primitives (every thread of the CTA must call them) ---------------------------

__device__ __forceinline__ u64 WarpSum(u64 v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ u64 WarpMax(u64 v) {
  for (int o = 16; o > 0; o >>= 1) {
    const u64 other = __shfl_xor_sync(kFullMask, v, o);
    v = other > v ? other : v;
  }
  return v;
}

__device__ __forceinline__ double WarpSumDouble(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// The sum over the CTA, returned to every thread. Warp totals are added in warp order. Begins
// with a barrier (earlier readers of sh.warp are done) and ends with one, so it also orders every
// memory access before it against every access after it.
__device__ u64 BlockSum(u64 v, Shared& sh) {
  v = WarpSum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.warp[threadIdx.x >> 5] = v;
  __syncthreads();
  u64 total = 0;
  for (int w = 0; w < kWarps; ++w) total += sh.warp[w];
  return total;
}

__device__ u64 BlockMax(u64 v, Shared& sh) {
  v = WarpMax(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.warp[threadIdx.x >> 5] = v;
  __syncthreads();
  u64 best = 0;
  for (int w = 0; w < kWarps; ++w) best = sh.warp[w] > best ? sh.warp[w] : best;
  return best;
}

__device__ double BlockSumDouble(double v, Shared& sh) {
  v = WarpSumDouble(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) {
    sh.warp[threadIdx.x >> 5] = static_cast<u64>(__double_as_longlong(v));
  }
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kWarps; ++w) {
    total += __longlong_as_double(static_cast<long long>(sh.warp[w]));
  }
  return total;
}

// Exclusive prefix sum over threads in thread order; *total gets the CTA's sum.
__device__ u64 BlockExclusiveScan(u64 v, u64* total, Shared& sh) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  u64 x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const u64 up = __shfl_up_sync(kFullMask, x, o);
    if (lane >= o) x += up;
  }
  __syncthreads();
  if (lane == 31) sh.warp[warp] = x;
  __syncthreads();
  u64 before = 0;
  u64 sum = 0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += sh.warp[w];
    sum += sh.warp[w];
  }
  *total = sum;
  return before + x - v;
}

struct Selected {
  u64 key;     // K*
  u64 before;  // sum of the values of the items whose key is above K*
  u64 at;      // sum of the values of the items whose key is K*
  bool found;  // false when all the values sum to less than `want`
};

// Radix select over the values of `v` for which key_value(i, x, &key, &value) returns true with
// value > 0 (key < 2^key_bits): the key K* such that the items above K* hold less than `want`
// (>= 1) and those at or above it at least `want`. kDigitBits a pass from the top; each pass adds
// the values of the items that match the digits chosen so far into shared-memory bins. A thread
// keeps a one-bin running sum and flushes it when its bin changes, which keeps the atomics off
// the one hot bin that most tokens of a peaked distribution fall into.
template <typename KeyValue>
__device__ Selected BlockRadixSelect(const Values& v, int key_bits, u64 want, KeyValue key_value,
                                     Shared& sh) {
  u64 prefix = 0;
  u64 before = 0;
  u64 at = 0;
  for (int hi = key_bits; hi > 0; hi -= kDigitBits) {
    const int lo = hi > kDigitBits ? hi - kDigitBits : 0;
    const int bins = 1 << (hi - lo);
    for (int b = threadIdx.x; b < bins; b += kThreads) sh.hist[b] = 0;
    if (threadIdx.x == 0) {
      sh.sel_bin = 0;
      sh.sel_before = before;
      sh.sel_at = 0;
    }
    __syncthreads();
    int cached_bin = -1;
    u64 cached = 0;
    ForEach(v, [&](int64_t i, float x) {
      u64 key = 0;
      u64 value = 0;
      if (!key_value(i, x, &key, &value) || value == 0) return;
      if ((key >> hi) != (prefix >> hi)) return;
      const int bin = static_cast<int>((key >> lo) & static_cast<u64>(bins - 1));
      if (bin != cached_bin) {
        if (cached > 0) atomicAdd(&sh.hist[cached_bin], cached);
        cached_bin = bin;
        cached = 0;
      }
      cached += value;
    });
    if (cached > 0) atomicAdd(&sh.hist[cached_bin], cached);
    __syncthreads();
    // Thread t owns the bins at descending positions [t * per, t * per + per).
    const int per = (bins + kThreads - 1) / kThreads;
    u64 local = 0;
    for (int q = 0; q < per; ++q) {
      const int pos = threadIdx.x * per + q;
      if (pos < bins) local += sh.hist[bins - 1 - pos];
    }
    u64 level_total = 0;
    const u64 excl = BlockExclusiveScan(local, &level_total, sh);
    if (before + level_total < want) return {prefix, before, 0, false};  // uniform
    u64 acc = before + excl;
    for (int q = 0; q < per; ++q) {
      const int pos = threadIdx.x * per + q;
      if (pos >= bins) break;
      const u64 h = sh.hist[bins - 1 - pos];
      if (h > 0 && acc < want && want <= acc + h) {  // exactly one bin crosses
        sh.sel_bin = static_cast<u64>(bins - 1 - pos);
        sh.sel_before = acc;
        sh.sel_at = h;
      }
      acc += h;
    }
    __syncthreads();
    prefix |= sh.sel_bin << lo;
    before = sh.sel_before;
    at = sh.sel_at;
    __syncthreads();  // every thread has read sel_* before the next pass resets them
  }
  return {prefix, before, at, true};
}

// The lowest index i in [0, v.n) with sum_{i' <= i} value(i', x_i') > target, or -1 when the
// values sum to target or less. Each warp sums one contiguous segment of vectors; the CTA then
// scans the one segment that holds the target, one vector (4 consecutive values) a thread.
template <typename Value>
__device__ long long BlockWalk(const Values& v, u64 target, Value value, Shared& sh) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int64_t nv = v.Vectors();
  const int64_t seg = (nv + kWarps - 1) / kWarps;  // vectors a warp
  {
    const int64_t begin = warp * seg;
    const int64_t end = begin + seg < nv ? begin + seg : nv;
    u64 sum = 0;
#pragma unroll 4
    for (int64_t j = begin + lane; j < end; j += 32) {
      const float4 q = v.Load4(j);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (4 * j + k < v.n) sum += value(4 * j + k, Lane(q, k));
      }
    }
    sum = WarpSum(sum);
    __syncthreads();
    if (lane == 0) sh.warp[warp] = sum;
    if (threadIdx.x == 0) sh.found = -1;
    __syncthreads();
  }
  int chosen = -1;
  u64 rest = 0;
  u64 acc = 0;
  for (int w = 0; w < kWarps; ++w) {
    const u64 s = sh.warp[w];
    if (chosen < 0 && target < acc + s) {
      chosen = w;
      rest = target - acc;
    }
    acc += s;
  }
  if (chosen < 0) return -1;  // uniform: every thread read the same sums
  const int64_t s_begin = chosen * seg;
  const int64_t s_end = s_begin + seg < nv ? s_begin + seg : nv;
  for (int64_t tile = s_begin; tile < s_end; tile += kThreads) {
    const int64_t j = tile + threadIdx.x;
    const float4 q = j < s_end ? v.Load4(j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    u64 vals[4];
    u64 local = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      vals[k] = j < s_end && 4 * j + k < v.n ? value(4 * j + k, Lane(q, k)) : 0;
      local += vals[k];
    }
    u64 tile_total = 0;
    const u64 excl = BlockExclusiveScan(local, &tile_total, sh);
    if (rest < tile_total) {  // uniform
      if (excl <= rest && rest < excl + local) {
        u64 sum = excl;
        for (int k = 0; k < 4; ++k) {
          if (rest < sum + vals[k]) {
            sh.found = 4 * j + k;
            break;
          }
          sum += vals[k];
        }
      }
      __syncthreads();
      return sh.found;
    }
    rest -= tile_total;
  }
  return -1;
}

__device__ __forceinline__ bool BitSet(const uint32_t* words, int64_t i) {
  return ((words[i >> 5] >> (i & 31)) & 1u) != 0;
}

__device__ __forceinline__ float FloatFromOrderedKey(uint32_t key) {
  return sm::FloatFromBits((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// ---- Steps 4-6 ----------------------------------------------------------------------------------

// top-p, min-p and the draw over weights `w` (floats holding exact integers; index order is id
// order) whose total is `total`: the index drawn, or -1.
__device__ long long DrawFromWeights(const Values& w, const SampleRow& p, u64 total, Shared& sh) {
  const u64 min_w = sm::MinPThreshold(p.min_p) > 0 ? sm::MinPThreshold(p.min_p) : 1;
  bool top_p = p.top_p < 1.0f;
  uint32_t cut_key = 0;
  long long tie_last = w.n;
  if (top_p) {
    const u64 target = sm::CeilMulUnit(total, p.top_p);
    const Selected cut = BlockRadixSelect(
        w, sm::kWeightKeyBits, target,
        [](int64_t, float x, u64* key, u64* value) {
          *key = sm::FloatBits(x);
          *value = static_cast<u64>(x);
          return x > 0.0f;
        },
        sh);
    const uint32_t key = static_cast<uint32_t>(cut.key);
    const u64 w_cut = sm::WeightFromKey(key);
    if (cut.found && w_cut > 0 && target > cut.before) {
      const u64 ties = (target - cut.before + w_cut - 1) / w_cut;  // >= 1
      tie_last = BlockWalk(
          w, ties - 1, [key](int64_t, float x) -> u64 { return sm::FloatBits(x) == key ? 1 : 0; },
          sh);
      cut_key = key;
      if (tie_last < 0) tie_last = w.n;  // unreachable: `ties` tokens of weight w* exist
    } else {
      top_p = false;  // unreachable for valid rows: target <= total
    }
  }
  auto kept = [&](int64_t i, float x) -> u64 {
    const u64 wi = static_cast<u64>(x);
    if (wi < min_w) return 0;
    if (top_p) {
      const uint32_t key = sm::FloatBits(x);
      if (key < cut_key || (key == cut_key && i > tie_last)) return 0;
    }
    return wi;
  };
  u64 part = 0;
  ForEach(w, [&](int64_t i, float x) { part += kept(i, x); });
  const u64 kept_total = BlockSum(part, sh);
  const u64 bits = sm::PhiloxRandom64(p.rng_key, p.rng_stream, p.rng_counter);
  return BlockWalk(w, sm::DrawTarget(bits, kept_total), kept, sh);
}

// Steps 4-6 for temperature > 0 on the processed logits `z` (workspace row `zv`, largest value
// z_max > -inf): the token drawn, or -1. Overwrites z with the weights.
__device__ long long DrawToken(const Values& zv, float* z, const SampleRow& p, float z_max,
                               Shared& sh) {
  const int64_t vocab = zv.n;
  // top-k: keep OrderedKey(z) >= min_key.
  uint32_t min_key = sm::kNegInfKey + 1;
  bool list = false;
  if (p.top_k > 0 && p.top_k < vocab) {
    const Selected kth = BlockRadixSelect(
        zv, sm::kOrderedKeyBits, static_cast<u64>(p.top_k),
        [](int64_t, float x, u64* key, u64* value) {
          const uint32_t k = sm::OrderedKey(x);
          *key = k;
          *value = 1;
          return k > sm::kNegInfKey;
        },
        sh);
    if (kth.found) {
      min_key = static_cast<uint32_t>(kth.key);
      list = kth.before + kth.at <= kListCap;
    }
  }

  // Weights over z (vector j by the thread that owns it: no races), their total, and the list.
  if (threadIdx.x == 0) sh.list_count = 0;
  __syncthreads();
  const float inv_temperature = sm::DivRn(1.0f, p.temperature);
  const int64_t nv = zv.readable / 4;
  u64 part = 0;
  for (int64_t j0 = threadIdx.x; j0 < nv; j0 += int64_t{kThreads} * kUnroll) {
    float4 q[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = j0 + int64_t{u} * kThreads;
      q[u] = j < nv ? zv.Load4(j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = j0 + int64_t{u} * kThreads;
      if (j >= nv) break;
      float out[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t i = 4 * j + k;
        const float x = Lane(q[u], k);
        u64 wi = 0;
        if (i < vocab && sm::OrderedKey(x) >= min_key) {
          wi = sm::QuantizedExp(sm::ScaledLogit(x, z_max, inv_temperature), sh.exp2);
        }
        part += wi;
        out[k] = static_cast<float>(wi);  // exact: at most 24 significant bits
        if (list && wi > 0) {
          const int slot = atomicAdd(&sh.list_count, 1);
          if (slot < kListCap) {
            sh.list_id[slot] = static_cast<int32_t>(i);
            sh.list_w[slot] = out[k];
          }
        }
      }
      reinterpret_cast<float4*>(z)[j] = make_float4(out[0], out[1], out[2], out[3]);
    }
  }
  const u64 total = BlockSum(part, sh);  // its barriers complete the weights and the list

  if (!list) {
    const Values w{z, vocab, zv.readable, true, false};
    return DrawFromWeights(w, p, total, sh);
  }
  // Sort the list by id (bitonic over a power of two, padded with ids past every token).
  const int n = sh.list_count < kListCap ? sh.list_count : kListCap;
  int m = 1;
  while (m < n) m <<= 1;
  for (int t = n + static_cast<int>(threadIdx.x); t < m; t += kThreads) {
    sh.list_id[t] = 0x7fffffff;
    sh.list_w[t] = 0.0f;
  }
  __syncthreads();
  for (int k = 2; k <= m; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int t = threadIdx.x; t < m; t += kThreads) {
        const int partner = t ^ j;
        if (partner > t) {
          const bool ascending = (t & k) == 0;
          const int32_t a = sh.list_id[t];
          const int32_t b = sh.list_id[partner];
          if ((a > b) == ascending) {
            sh.list_id[t] = b;
            sh.list_id[partner] = a;
            const float wa = sh.list_w[t];
            sh.list_w[t] = sh.list_w[partner];
            sh.list_w[partner] = wa;
          }
        }
      }
      __syncthreads();
    }
  }
  const Values w{sh.list_w, n, kListCap, true, false};
  const long long pos = DrawFromWeights(w, p, total, sh);
  return pos < 0 ? -1 : sh.list_id[pos];
}

// ---- The sampling kernel ------------------------------------------------------------------------

__global__ void __launch_bounds__(kThreads, 1) SampleKernel(SampleArgs a) {
  // Raw storage: SampleRow's member initialisers would make Shared need a constructor.
  __shared__ alignas(16) unsigned char storage[sizeof(Shared)];
  Shared& sh = *reinterpret_cast<Shared*>(storage);
  const int64_t row = blockIdx.x;
  const int64_t vocab = a.vocab;
  const int64_t words = SampleMaskWords(vocab);
  const int64_t z_stride = SampleWorkspaceStride(vocab);
  if (threadIdx.x == 0) sh.row = a.rows[row];
  for (int i = threadIdx.x; i < sm::kExp2TableSize; i += kThreads) sh.exp2[i] = kExp2TableDevice[i];
  __syncthreads();
  const SampleRow& p = sh.row;
  const float* raw_row = a.logits + row * a.logits_stride;
  float* z = static_cast<float*>(a.workspace) + row * z_stride;
  const Values raw{raw_row, vocab, vocab, (reinterpret_cast<uintptr_t>(raw_row) & 15) == 0, true};
  const Values zv{z, vocab, z_stride, true, false};

  const bool penalties =
      p.penalty_slot >= 0 && p.penalty_slot < a.num_slots && a.prompt_seen != nullptr &&
      a.output_counts != nullptr &&
      (p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f);
  const uint32_t* seen = penalties ? a.prompt_seen + p.penalty_slot * words : nullptr;
  const int32_t* counts = penalties ? a.output_counts + p.penalty_slot * vocab : nullptr;
  const uint32_t* allowed = a.allowed != nullptr ? a.allowed + row * words : nullptr;
  const int32_t bias_begin = a.bias_offsets != nullptr ? a.bias_offsets[row] : 0;
  const int32_t bias_end = a.bias_offsets != nullptr ? a.bias_offsets[row + 1] : 0;
  const bool mask_stop = p.mask_eos_and_stop != 0;
  const int32_t stop_begin = mask_stop && a.stop_offsets != nullptr ? a.stop_offsets[row] : 0;
  const int32_t stop_end = mask_stop && a.stop_offsets != nullptr ? a.stop_offsets[row + 1] : 0;
  const bool fixups =
      bias_end > bias_begin || (mask_stop && (a.num_eos > 0 || stop_end > stop_begin));

  // Steps 1-3 but logit_bias and min_tokens, for one token whose (biased) logit is x.
  auto process = [&](int64_t i, float x) {
    if (penalties) {
      x = sm::PenalizeLogit(x, BitSet(seen, i), counts[i], p.repetition_penalty,
                            p.frequency_penalty, p.presence_penalty);
    }
    if (allowed != nullptr && !BitSet(allowed, i)) x = sm::NegInf();
    return x;
  };

  // Pass 1: z (padding at -inf), and the raw and processed argmax (packed (key, ~id), so the
  // max is the lowest id among ties).
  u64 raw_best = 0;
  u64 z_best = 0;
  const int64_t nv = z_stride / 4;
  for (int64_t j0 = threadIdx.x; j0 < nv; j0 += int64_t{kThreads} * kUnroll) {
    float4 q[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = j0 + int64_t{u} * kThreads;
      q[u] = j < nv ? raw.Load4(j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = j0 + int64_t{u} * kThreads;
      if (j >= nv) break;
      float out[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t i = 4 * j + k;
        out[k] = sm::NegInf();
        if (i < vocab) {
          const float x = sm::NanToNegInf(Lane(q[u], k));
          const u64 raw_pack = sm::ArgMaxPack(sm::OrderedKey(x), static_cast<int32_t>(i));
          raw_best = raw_pack > raw_best ? raw_pack : raw_best;
          out[k] = process(i, x);
          const u64 z_pack = sm::ArgMaxPack(sm::OrderedKey(out[k]), static_cast<int32_t>(i));
          z_best = z_pack > z_best ? z_pack : z_best;
        }
      }
      reinterpret_cast<float4*>(z)[j] = make_float4(out[0], out[1], out[2], out[3]);
    }
  }
  raw_best = BlockMax(raw_best, sh);  // its barrier orders pass 1's z writes before the fix-ups
  if (fixups) {
    // logit_bias comes before the penalties: redo those tokens from their raw logit. Ids are
    // unique within a row, so no two threads write one token.
    for (int32_t e = bias_begin + static_cast<int32_t>(threadIdx.x); e < bias_end; e += kThreads) {
      const int32_t id = a.bias_ids[e];
      if (id >= 0 && id < vocab) {
        z[id] = process(id, sm::AddRn(sm::NanToNegInf(raw.Load(id)), a.bias_values[e]));
      }
    }
    __syncthreads();
    if (mask_stop) {
      for (int64_t e = threadIdx.x; e < a.num_eos; e += kThreads) {
        const int32_t id = a.eos_ids[e];
        if (id >= 0 && id < vocab) z[id] = sm::NegInf();
      }
      for (int32_t e = stop_begin + static_cast<int32_t>(threadIdx.x); e < stop_end;
           e += kThreads) {
        const int32_t id = a.stop_ids[e];
        if (id >= 0 && id < vocab) z[id] = sm::NegInf();
      }
    }
    __syncthreads();
    z_best = 0;
    ForEach(zv, [&](int64_t i, float x) {
      const u64 z_pack = sm::ArgMaxPack(sm::OrderedKey(x), static_cast<int32_t>(i));
      z_best = z_pack > z_best ? z_pack : z_best;
    });
  }
  z_best = BlockMax(z_best, sh);

  const uint32_t z_max_key = sm::ArgMaxPackKey(z_best);
  long long token = -1;
  if (z_max_key > sm::kNegInfKey) {
    if (!(p.temperature > 0.0f)) {
      token = sm::ArgMaxPackId(z_best);  // greedy
    } else {
      token = DrawToken(zv, z, p, FloatFromOrderedKey(z_max_key), sh);
    }
  }
  if (token < 0) {  // everything masked: the raw argmax, or 0 when the raw logits are all -inf
    token = sm::ArgMaxPackKey(raw_best) > sm::kNegInfKey ? sm::ArgMaxPackId(raw_best) : 0;
  }

  // Log-probs of the raw logits.
  const int32_t want = p.logprobs < kMaxTopLogprobs ? p.logprobs : kMaxTopLogprobs;
  const int32_t top_n = want < vocab ? want : static_cast<int32_t>(vocab);
  float logprob = 0.0f;
  int written = 0;  // top entries thread 0 wrote
  if (want >= 0) {
    const float max = FloatFromOrderedKey(sm::ArgMaxPackKey(raw_best));
    double log_sum_exp = 0.0;
    u64 inf_count = 0;
    if (max == sm::PosInf()) {
      u64 c = 0;
      ForEach(raw, [&](int64_t, float x) { c += x == sm::PosInf() ? 1 : 0; });
      inf_count = BlockSum(c, sh);
    } else if (max > sm::NegInf()) {
      double s = 0.0;
      ForEach(raw, [&](int64_t, float x) {
        x = sm::NanToNegInf(x);
        if (x > sm::NegInf()) s += static_cast<double>(expf(sm::SubRn(x, max)));
      });
      log_sum_exp = static_cast<double>(max) + log(BlockSumDouble(s, sh));
    }
    // The same special cases as RawLogSoftmax (kernels/cpu/sampling.cc).
    auto log_softmax = [&](int64_t i) -> float {
      const float x = sm::NanToNegInf(raw.Load(i));
      if (inf_count > 0) {
        return x == sm::PosInf() ? static_cast<float>(-log(static_cast<double>(inf_count)))
                                 : sm::NegInf();
      }
      if (max == sm::NegInf()) return static_cast<float>(-log(static_cast<double>(vocab)));
      if (!(x > sm::NegInf())) return sm::NegInf();
      return static_cast<float>(static_cast<double>(x) - log_sum_exp);
    };
    logprob = log_softmax(token);

    if (top_n > 0) {
      const Selected nth = BlockRadixSelect(
          raw, sm::kOrderedKeyBits, static_cast<u64>(top_n),
          [](int64_t, float x, u64* key, u64* value) {
            *key = sm::OrderedKey(sm::NanToNegInf(x));
            *value = 1;
            return true;
          },
          sh);
      // Every token with a key above the n-th, and the lowest ids among those equal to it.
      const uint32_t nth_key = static_cast<uint32_t>(nth.key);
      const u64 ties = static_cast<u64>(top_n) - nth.before;  // >= 1
      const long long last = BlockWalk(
          raw, ties - 1,
          [nth_key](int64_t, float x) -> u64 {
            return sm::OrderedKey(sm::NanToNegInf(x)) == nth_key ? 1 : 0;
          },
          sh);
      if (threadIdx.x == 0) sh.top_count = 0;
      __syncthreads();
      ForEach(raw, [&](int64_t i, float x) {
        const uint32_t key = sm::OrderedKey(sm::NanToNegInf(x));
        if (key > nth_key || (key == nth_key && i <= last)) {
          const int slot = atomicAdd(&sh.top_count, 1);
          if (slot < kMaxTopLogprobs) {
            sh.top_key[slot] = key;
            sh.top_id[slot] = static_cast<int32_t>(i);
          }
        }
      });
      __syncthreads();
      if (threadIdx.x == 0) {
        const int n = sh.top_count < top_n ? sh.top_count : top_n;
        // Most likely first, ties to the lower id (n <= 20: insertion sort).
        for (int x = 1; x < n; ++x) {
          const uint32_t key = sh.top_key[x];
          const int32_t id = sh.top_id[x];
          int y = x - 1;
          while (y >= 0 &&
                 (sh.top_key[y] < key || (sh.top_key[y] == key && sh.top_id[y] > id))) {
            sh.top_key[y + 1] = sh.top_key[y];
            sh.top_id[y + 1] = sh.top_id[y];
            --y;
          }
          sh.top_key[y + 1] = key;
          sh.top_id[y + 1] = id;
        }
        for (int j = 0; j < n; ++j) {
          if (a.top_ids_out != nullptr) a.top_ids_out[row * kMaxTopLogprobs + j] = sh.top_id[j];
          if (a.top_logprobs_out != nullptr) {
            a.top_logprobs_out[row * kMaxTopLogprobs + j] = log_softmax(sh.top_id[j]);
          }
        }
        written = n;
      }
    }
  }

  if (threadIdx.x == 0) {
    a.tokens_out[row] = static_cast<int32_t>(token);
    if (a.logprob_out != nullptr) a.logprob_out[row] = logprob;
    for (int j = written; j < kMaxTopLogprobs; ++j) {
      if (a.top_ids_out != nullptr) a.top_ids_out[row * kMaxTopLogprobs + j] = -1;
      if (a.top_logprobs_out != nullptr) a.top_logprobs_out[row * kMaxTopLogprobs + j] = 0.0f;
    }
  }
}

// ---- Penalty state ------------------------------------------------------------------------------

constexpr int kUpdateThreads = 256;
constexpr int kResetThreads = 512;

__global__ void UpdatePenaltyStateKernel(PenaltyUpdateArgs a) {
  const int64_t r = int64_t{blockIdx.x} * kUpdateThreads + threadIdx.x;
  if (r >= a.num_rows) return;
  const int32_t slot = a.slots[r];
  const int32_t token = a.tokens[r];
  if (slot < 0 || slot >= a.num_slots || token < 0 || token >= a.vocab) return;
  atomicAdd(&a.output_counts[slot * a.vocab + token], 1);  // integer: order does not matter
}

__global__ void ResetPenaltySlotsKernel(PenaltyResetArgs a) {
  const int32_t slot = a.slots[blockIdx.x];
  if (slot < 0 || slot >= a.num_slots) return;  // uniform across the CTA
  const int64_t words = SampleMaskWords(a.vocab);
  uint32_t* seen = a.prompt_seen + slot * words;
  int32_t* counts = a.output_counts + slot * a.vocab;
  for (int64_t w = threadIdx.x; w < words; w += kResetThreads) seen[w] = 0;
  for (int64_t i = threadIdx.x; i < a.vocab; i += kResetThreads) counts[i] = 0;
  __syncthreads();  // cleared before any bit or count is set
  for (int32_t e = a.prompt_offsets[blockIdx.x] + static_cast<int32_t>(threadIdx.x);
       e < a.prompt_offsets[blockIdx.x + 1]; e += kResetThreads) {
    const int32_t t = a.prompt_ids[e];
    if (t >= 0 && t < a.vocab) atomicOr(&seen[t >> 5], 1u << (t & 31));
  }
  if (a.output_offsets != nullptr) {
    for (int32_t e = a.output_offsets[blockIdx.x] + static_cast<int32_t>(threadIdx.x);
         e < a.output_offsets[blockIdx.x + 1]; e += kResetThreads) {
      const int32_t t = a.output_ids[e];
      if (t >= 0 && t < a.vocab) atomicAdd(&counts[t], 1);
    }
  }
}

}  // namespace

cudaError_t LaunchSample(const SampleArgs& args, cudaStream_t stream) {
  if (args.num_rows == 0) return cudaSuccess;
  if (args.num_rows < 0 || args.num_rows > 65535 || args.vocab < 1 ||
      args.vocab > sampling::kMaxVocab || args.logits_stride < args.vocab ||
      args.logits == nullptr || args.rows == nullptr || args.tokens_out == nullptr ||
      args.workspace == nullptr ||
      args.workspace_bytes < SampleWorkspaceBytes(args.num_rows, args.vocab) ||
      (args.bias_offsets != nullptr && (args.bias_ids == nullptr || args.bias_values == nullptr)) ||
      (args.stop_offsets != nullptr && args.stop_ids == nullptr) || args.num_eos < 0 ||
      (args.num_eos > 0 && args.eos_ids == nullptr)) {
    return cudaErrorInvalidValue;
  }
  SampleKernel<<<dim3(static_cast<unsigned>(args.num_rows)), dim3(kThreads), 0, stream>>>(args);
  return cudaGetLastError();
}

cudaError_t LaunchUpdatePenaltyState(const PenaltyUpdateArgs& args, cudaStream_t stream) {
  if (args.num_rows == 0) return cudaSuccess;
  if (args.num_rows < 0 || args.num_rows > (int64_t{1} << 30) || args.vocab < 1 ||
      args.output_counts == nullptr || args.slots == nullptr || args.tokens == nullptr) {
    return cudaErrorInvalidValue;
  }
  const auto blocks = static_cast<unsigned>((args.num_rows + kUpdateThreads - 1) / kUpdateThreads);
  UpdatePenaltyStateKernel<<<dim3(blocks), dim3(kUpdateThreads), 0, stream>>>(args);
  return cudaGetLastError();
}

cudaError_t LaunchResetPenaltySlots(const PenaltyResetArgs& args, cudaStream_t stream) {
  if (args.num_resets == 0) return cudaSuccess;
  if (args.num_resets < 0 || args.num_resets > 65535 || args.vocab < 1 ||
      args.prompt_seen == nullptr || args.output_counts == nullptr || args.slots == nullptr ||
      args.prompt_offsets == nullptr ||
      (args.output_offsets != nullptr && args.output_ids == nullptr)) {
    return cudaErrorInvalidValue;
  }
  ResetPenaltySlotsKernel<<<dim3(static_cast<unsigned>(args.num_resets)), dim3(kResetThreads), 0,
                            stream>>>(args);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
