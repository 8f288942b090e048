// Causal neighborhood attention on the CPU reference (kernels/ops.h PagedAttentionArgs
// sliding_window and dilation), against the definition: a token at position p sees p,
// p - dilation, ... (>= 0), at most `window` of them. Checked three ways: a naive softmax over
// that list of positions; dilation d as plain (dilation 1) attention over the subsequence of p's
// group, gathered into a cache of its own; and window 1 as the token's own value row. The CUDA
// kernels are held to the same reference by the parity table (tests/kernels/op_cases.cc).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {
namespace {

constexpr int64_t kBlock = 4, kKvHeads = 2, kGroup = 2, kHeads = kKvHeads * kGroup, kDim = 8;
constexpr int64_t kKvDim = kKvHeads * kDim;

// One sequence of `length` positions, one layer, f32, in consecutive pages of kBlock tokens; a
// query row per position (row i at position i).
struct Sequence {
  int64_t length = 0;
  std::vector<float> pages;  // [pages, K/V, kBlock, kKvDim]
  std::vector<float> q;      // [length, kHeads * kDim]
  std::vector<int32_t> table, token_seq, positions;

  explicit Sequence(int64_t n) : length(n) {
    const int64_t num_pages = (n + kBlock - 1) / kBlock;
    pages.assign(size_t(num_pages * 2 * kBlock * kKvDim), NAN);  // unwritten slots: NaN
    q.resize(size_t(n * kHeads * kDim));
    for (int64_t b = 0; b < num_pages; ++b) table.push_back(int32_t(b));
    token_seq.assign(size_t(n), 0);
    for (int64_t i = 0; i < n; ++i) positions.push_back(int32_t(i));
  }
  // Position j's K (kv = 0) or V (kv = 1) row.
  float* Row(int64_t j, int kv) {
    return pages.data() + ((j / kBlock * 2 + kv) * kBlock + j % kBlock) * kKvDim;
  }
  float* Query(int64_t i) { return q.data() + i * kHeads * kDim; }

  // Every position's output: [length, kHeads * kDim].
  std::vector<float> Attend(int64_t window, int64_t dilation) {
    std::vector<float> out(q.size(), NAN);
    const absl::Status s = Run(window, dilation, out);
    INFO(s.ToString());
    REQUIRE(s.ok());
    return out;
  }
  absl::Status Run(int64_t window, int64_t dilation, std::vector<float>& out) {
    PagedAttentionArgs a;
    a.q = {q.data(), DType::kF32, length, kHeads * kDim, kHeads * kDim};
    a.out = {out.data(), DType::kF32, length, kHeads * kDim, kHeads * kDim};
    a.kv = {pages.data(), DType::kF32, kBlock, 1, kKvDim, 0};
    a.block_tables = table.data();
    a.token_seq = token_seq.data();
    a.q_positions = positions.data();
    a.num_seqs = 1;
    a.max_blocks = int64_t(table.size());
    a.num_q_heads = kHeads;
    a.num_kv_heads = kKvHeads;
    a.head_dim = kDim;
    a.sliding_window = window;
    a.dilation = dilation;
    a.scale = float(1.0 / std::sqrt(double(kDim)));
    CpuBackend cpu;
    return cpu.PagedAttention(a, cpu.default_stream());
  }
};

Sequence RandomSequence(int64_t n, std::mt19937_64& rng) {
  Sequence s(n);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int64_t j = 0; j < n; ++j) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int64_t e = 0; e < kKvDim; ++e) s.Row(j, kv)[e] = unit(rng);
    }
    for (int64_t e = 0; e < kHeads * kDim; ++e) s.Query(j)[e] = 3.0f * unit(rng);
  }
  return s;
}

TEST_CASE("AttentionKeys: the keys of a dilated window", "[kernels][attention]") {
  struct Want {
    int64_t pos, window, dilation, first, count;
  };
  for (const Want& w : std::vector<Want>{{0, 0, 1, 0, 1},
                                         {9, 0, 1, 0, 10},
                                         {9, 3, 1, 7, 3},
                                         {9, 1, 4, 9, 1},
                                         {10, 3, 4, 2, 3},
                                         {10, 0, 4, 2, 3},
                                         {10, 2, 4, 6, 2},
                                         {3, 0, 4, 3, 1},
                                         {11, 256, 4, 3, 3},
                                         {5, 7, 100, 5, 1},
                                         {-1, 0, 1, 0, 0},
                                         {-5, 3, 2, 0, 0}}) {
    INFO("pos " << w.pos << " window " << w.window << " dilation " << w.dilation);
    const AttentionKeyRange k = AttentionKeys(w.pos, w.window, w.dilation);
    CHECK(k.first == w.first);
    CHECK(k.count == w.count);
  }
}

TEST_CASE("dilated windows match a naive softmax over the definition's positions",
          "[kernels][attention]") {
  std::mt19937_64 rng(Catch::rngSeed());
  Sequence s = RandomSequence(61, rng);
  const double scale = 1.0 / std::sqrt(double(kDim));
  for (int64_t window : {0, 1, 2, 7, 256}) {
    for (int64_t dilation : {1, 2, 3, 4, 7}) {
      const std::vector<float> got = s.Attend(window, dilation);
      for (int64_t p = 0; p < s.length; ++p) {
        std::vector<int64_t> seen;
        for (int64_t j = p; j >= 0 && (window == 0 || int64_t(seen.size()) < window);
             j -= dilation) {
          seen.push_back(j);
        }
        for (int64_t h = 0; h < kHeads; ++h) {
          const int64_t off = (h / kGroup) * kDim;
          std::vector<double> w;
          for (int64_t j : seen) {
            double dot = 0;
            for (int64_t e = 0; e < kDim; ++e)
              dot += double(s.Query(p)[h * kDim + e]) * s.Row(j, 0)[off + e];
            w.push_back(std::exp(dot * scale));
          }
          double denom = 0;
          for (double x : w) denom += x;
          for (int64_t e = 0; e < kDim; ++e) {
            double want = 0;
            for (size_t i = 0; i < seen.size(); ++i)
              want += w[i] / denom * s.Row(seen[i], 1)[off + e];
            INFO("window " << window << " dilation " << dilation << " position " << p << " head "
                           << h << " dim " << e);
            REQUIRE(std::fabs(got[size_t((p * kHeads + h) * kDim + e)] - want) <= 1e-6);
          }
        }
      }
    }
  }
}

TEST_CASE("dilation d is plain attention over the group's subsequence", "[kernels][attention]") {
  std::mt19937_64 rng(Catch::rngSeed() + 1);
  Sequence s = RandomSequence(53, rng);
  for (int64_t window : {0, 1, 5, 256}) {
    for (int64_t dilation : {2, 3, 4}) {
      const std::vector<float> got = s.Attend(window, dilation);
      for (int64_t group = 0; group < dilation; ++group) {
        // The group's positions group, group + d, ... as a sequence of their own.
        Sequence sub((s.length - group + dilation - 1) / dilation);
        for (int64_t i = 0; i < sub.length; ++i) {
          const int64_t j = group + i * dilation;
          for (int kv = 0; kv < 2; ++kv) std::memcpy(sub.Row(i, kv), s.Row(j, kv), kKvDim * 4);
          std::memcpy(sub.Query(i), s.Query(j), kHeads * kDim * 4);
        }
        const std::vector<float> want = sub.Attend(window, 1);
        for (int64_t i = 0; i < sub.length; ++i) {
          INFO("window " << window << " dilation " << dilation << " position "
                         << group + i * dilation);
          // The same keys in the same order: the same bits.
          REQUIRE(std::memcmp(&got[size_t((group + i * dilation) * kHeads * kDim)],
                              &want[size_t(i * kHeads * kDim)], kHeads * kDim * 4) == 0);
        }
      }
    }
  }
}

TEST_CASE("window 1 is the token's own value; a window past the group is no window",
          "[kernels][attention]") {
  std::mt19937_64 rng(Catch::rngSeed() + 2);
  Sequence s = RandomSequence(37, rng);
  for (int64_t dilation : {1, 2, 4}) {
    const std::vector<float> own = s.Attend(1, dilation);
    for (int64_t p = 0; p < s.length; ++p) {
      for (int64_t h = 0; h < kHeads; ++h) {
        INFO("dilation " << dilation << " position " << p << " head " << h);
        REQUIRE(std::memcmp(&own[size_t((p * kHeads + h) * kDim)],
                            s.Row(p, 1) + (h / kGroup) * kDim, kDim * 4) == 0);
      }
    }
    // Position 36 has 36 / d + 1 <= 37 keys in its group: a window of 37 drops none.
    CHECK(s.Attend(37, dilation) == s.Attend(0, dilation));
  }
}

TEST_CASE("a dilation below 1 is refused, naming the field", "[kernels][attention]") {
  Sequence s(5);
  std::fill(s.pages.begin(), s.pages.end(), 0.0f);
  std::vector<float> out(s.q.size());
  for (int64_t dilation : {0, -3}) {
    const absl::Status st = s.Run(4, dilation, out);
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(st.message()),
               Catch::Contains("PagedAttention") && Catch::Contains("dilation must be >= 1"));
  }
  CHECK(s.Run(4, 1, out).ok());
}

}  // namespace
}  // namespace arbor::kernels
