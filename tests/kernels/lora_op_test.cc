// Lora (kernels/lora.h): the CPU reference against a naive dense computation (double sums,
// rounded at the op's points) on fresh random odd sizes: ranks 8-128 (and 12) mixed in one
// batch, base-only tokens and slots without a target interleaved, segments of 1 to 70 tokens,
// adapters in small pages handed out in shuffled order so matrices span pages and rows straddle
// them, pool bytes outside any adapter poisoned with NaN; argument checks. On a GPU ([gpu]): the
// CUDA op in both schedules against the CPU reference, with the shrink workspace poisoned (NaN).
// Everywhere: base-only rows, rows of slots without the target, and columns between and beside
// the targets unchanged bit for bit, the stride's padding still NaN; a NaN never passes. On a
// GPU, prefill-shaped batches that reach the tensor-core segment path, run twice for equal bits.
// Expert rows (MoE pairs grouped by expert): the same checks, on the CPU against the naive
// computation and on a GPU for CUDA against it too, in both schedules (the same bits: expert
// rows run per token), with experts that get no row (the first and the last expert among them),
// slots of -1, adapters of ranks 8-128 lacking some experts' matrices, and rows before and after
// the experts' range whose token has an adapter, which must stay untouched.
#include "kernels/lora.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/kernels/typed_tensors.h"

namespace arbor::testing {
namespace {

using kernels::Backend;
using kernels::DType;
using kernels::LoraSchedule;

constexpr int64_t kMatrices = 5;  // directory entries per adapter (token rows)

struct Case {
  int64_t in;
  std::vector<int64_t> outs;  // per target
  DType dtype;
  int64_t page_bytes;
  std::vector<int32_t> ranks;  // per slot
  int64_t runs;                // runs of tokens drawn
  int64_t pad = 0;             // extra columns of x's and y's strides
  int64_t max_run = 70;        // longest run drawn
  // When set: runs of exactly these lengths, in order, each under a slot drawn from the
  // adapters, with 0 to 3 base-only tokens after each (instead of `runs` drawn runs).
  std::vector<int64_t> lengths = {};
};

std::string Describe(const Case& c) {
  std::string s = "in " + std::to_string(c.in) + ", outs";
  for (int64_t o : c.outs) s += " " + std::to_string(o);
  s += std::string(", ") + kernels::DTypeName(c.dtype) + ", page_bytes " +
       std::to_string(c.page_bytes) + ", ranks";
  for (int32_t r : c.ranks) s += " " + std::to_string(r);
  if (!c.lengths.empty()) {
    s += ", runs";
    for (int64_t l : c.lengths) s += " " + std::to_string(l);
  }
  return s + ", pad " + std::to_string(c.pad);
}

// One adapter: dense A and B per matrix id (empty: absent), its scale.
struct Adapter {
  int32_t rank;
  float scale;
  std::vector<HostTensor> a, b;  // [Inputs::num_matrices]
};

struct Inputs {
  HostTensor x, y;  // y: the base output the op adds into
  std::vector<int32_t> token_slot;
  std::vector<Adapter> adapters;
  int64_t num_matrices = kMatrices;      // directory entries per adapter
  std::vector<int64_t> matrix, out_col;  // per target
  int64_t y_cols = 0;
  // Per row of x: the slot it runs under (-1: none) and what its matrix ids add to the targets'
  // (an expert row's e * expert_stride). Token rows: token_slot and 0.
  std::vector<int32_t> row_slot;
  std::vector<int64_t> row_shift;
  // Expert rows (empty for token rows): offsets [experts + 1] and each row's token.
  std::vector<int32_t> expert_offsets, row_token;
  int64_t expert_stride = 0;
  // The pool: every adapter's stream in shuffled pages; bytes outside any stream are NaN.
  std::vector<uint8_t> pool;
  std::vector<int32_t> page_table, slot_pages, slot_rank;
  std::vector<float> slot_scale;
  int32_t max_rank = 0;
};

// The targets' matrix ids (`ids`) and columns of y: a 3-column gap before each but the first,
// two columns after the last.
void LayOutTargets(const Case& c, const int64_t* ids, Inputs* in) {
  for (size_t g = 0; g < c.outs.size(); ++g) {
    in->matrix.push_back(ids[g]);
    in->out_col.push_back(in->y_cols + (g > 0 ? 3 : 0));
    in->y_cols = in->out_col.back() + c.outs[g];
  }
  in->y_cols += 2;
}

// Random A [rank, in] and B [out_g, rank] of target g at matrix id m of `ad`.
void DrawMatrices(std::mt19937_64& rng, const Case& c, size_t g, int64_t m, Adapter* ad) {
  const float as = 1.0f / std::sqrt(float(c.in)), bs = 1.0f / std::sqrt(float(ad->rank));
  ad->a[size_t(m)] = RandomTensor(rng, c.dtype, ad->rank, c.in, -as, as);
  ad->b[size_t(m)] = RandomTensor(rng, c.dtype, c.outs[g], ad->rank, -bs, bs);
}

// The adapters' streams into the pool, in shuffled pages of c.page_bytes.
void Pack(std::mt19937_64& rng, const Case& c, Inputs* out) {
  Inputs& in = *out;
  const DType dt = c.dtype;
  const int64_t elem = int64_t(kernels::DTypeSize(dt));
  // Streams: the directory, then the matrices at 16-byte aligned offsets, some 16 bytes apart.
  std::vector<std::vector<uint8_t>> streams;
  std::bernoulli_distribution gap(0.5);
  for (const Adapter& ad : in.adapters) {
    std::vector<int64_t> dir(size_t(in.num_matrices * 2), -1);
    int64_t used = in.num_matrices * kernels::kLoraDirectoryEntryBytes;
    std::vector<uint8_t> bytes(static_cast<size_t>(used));
    for (int64_t m = 0; m < in.num_matrices; ++m) {
      for (int ab = 0; ab < 2; ++ab) {
        const HostTensor& t = ab == 0 ? ad.a[size_t(m)] : ad.b[size_t(m)];
        if (t.v.empty()) continue;
        used = (used + 15) / 16 * 16 + (gap(rng) ? 16 : 0);
        dir[size_t(m * 2 + ab)] = used;
        bytes.resize(size_t(used + int64_t(t.v.size()) * elem), 0xFF);
        for (size_t i = 0; i < t.v.size(); ++i) {
          kernels::StoreFromFloat(bytes.data() + used, dt, int64_t(i), t.v[i]);
        }
        used += int64_t(t.v.size()) * elem;
      }
    }
    std::memcpy(bytes.data(), dir.data(), dir.size() * sizeof(int64_t));
    streams.push_back(std::move(bytes));
  }
  int64_t num_pages = 3;  // pages no adapter has
  for (const auto& s : streams) num_pages += (int64_t(s.size()) + c.page_bytes - 1) / c.page_bytes;
  std::vector<int32_t> order(static_cast<size_t>(num_pages));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  in.pool.assign(size_t(num_pages * c.page_bytes), 0xFF);
  size_t next = 0;
  for (size_t s = 0; s < streams.size(); ++s) {
    in.slot_pages.push_back(int32_t(in.page_table.size()));
    in.slot_rank.push_back(in.adapters[s].rank);
    in.slot_scale.push_back(in.adapters[s].scale);
    for (size_t at = 0; at < streams[s].size(); at += size_t(c.page_bytes)) {
      const int32_t page = order[next++];
      in.page_table.push_back(page);
      const size_t len = std::min(size_t(c.page_bytes), streams[s].size() - at);
      std::memcpy(in.pool.data() + size_t(page) * size_t(c.page_bytes), streams[s].data() + at,
                  len);
    }
  }
}

Inputs Draw(std::mt19937_64& rng, const Case& c) {
  Inputs in;
  const DType dt = c.dtype;
  // Targets read matrices 3, 1, 4 (not in id order).
  const int64_t ids[] = {3, 1, 4};
  LayOutTargets(c, ids, &in);
  std::uniform_real_distribution<float> scale(0.25f, 2.0f);
  std::bernoulli_distribution absent(0.15);
  for (size_t s = 0; s < c.ranks.size(); ++s) {
    Adapter ad{c.ranks[s], scale(rng), std::vector<HostTensor>(kMatrices),
               std::vector<HostTensor>(kMatrices)};
    for (size_t g = 0; g < c.outs.size(); ++g) {
      if (s > 0 && absent(rng)) continue;  // this adapter does not adapt target g
      DrawMatrices(rng, c, g, in.matrix[g], &ad);
    }
    in.max_rank = std::max(in.max_rank, ad.rank);
    in.adapters.push_back(std::move(ad));
  }
  Pack(rng, c, &in);
  // Tokens: runs of one slot (or of base-only tokens) of 1 to 70 tokens.
  const int64_t lengths[] = {1, 1, 2, 5, 31, 32, 33, 70};
  std::uniform_int_distribution<size_t> length(0, std::size(lengths) - 1);
  std::uniform_int_distribution<int32_t> slot(-1, int32_t(c.ranks.size()) - 1);
  for (int64_t r = 0; r < c.runs; ++r) {
    const int64_t len = std::min(c.max_run, lengths[length(rng)]);
    in.token_slot.insert(in.token_slot.end(), size_t(len), slot(rng));
  }
  std::uniform_int_distribution<int32_t> adapter(0, int32_t(c.ranks.size()) - 1);
  std::uniform_int_distribution<int64_t> gap_len(0, 3);
  for (int64_t len : c.lengths) {
    in.token_slot.insert(in.token_slot.end(), size_t(len), adapter(rng));
    in.token_slot.insert(in.token_slot.end(), size_t(gap_len(rng)), -1);
  }
  if (in.token_slot.size() % 2 == 0) in.token_slot.push_back(-1);  // odd n
  const int64_t n = int64_t(in.token_slot.size());
  in.row_slot = in.token_slot;
  in.row_shift.assign(size_t(n), 0);
  in.x = RandomTensor(rng, dt, n, c.in);
  in.y = RandomTensor(rng, dt, n, in.y_cols);
  return in;
}

// Expert rows: `tokens` tokens (slots drawn from -1 and the adapters; token 0 has one), each
// routed to top_k distinct experts outside `idle`, as MoePermute groups the pairs (by expert,
// tokens ascending within one), after `before` rows and followed by `after` rows that lie
// outside the experts' range (their token has an adapter: a kernel that took them would write).
struct ExpertCase {
  Case c;  // in, outs, dtype, page_bytes, ranks, pad (runs unused)
  int64_t experts;
  int64_t tokens;
  int64_t top_k;
  std::vector<int64_t> idle;  // experts no row is routed to
  int64_t before = 0, after = 0;
};

std::string Describe(const ExpertCase& e) {
  std::string s = Describe(e.c) + ", " + std::to_string(e.experts) + " experts (idle";
  for (int64_t x : e.idle) s += " " + std::to_string(x);
  return s + "), " + std::to_string(e.tokens) + " tokens, top " + std::to_string(e.top_k) +
         ", rows outside " + std::to_string(e.before) + " + " + std::to_string(e.after);
}

// Expert matrix ids as the engine lays them out (engine/lora/adapter.h LoraExpertMatrixId):
// after kMatrices ids of token rows (absent here), kExpertStride per expert, the targets at
// offsets 2, 0, 1 of expert 0's (not in id order).
constexpr int64_t kExpertStride = 3;

Inputs DrawExperts(std::mt19937_64& rng, const ExpertCase& e) {
  const Case& c = e.c;
  Inputs in;
  in.num_matrices = kMatrices + e.experts * kExpertStride;
  in.expert_stride = kExpertStride;
  const int64_t ids[] = {kMatrices + 2, kMatrices + 0, kMatrices + 1};
  LayOutTargets(c, ids, &in);
  std::uniform_real_distribution<float> scale(0.25f, 2.0f);
  std::bernoulli_distribution absent(0.25);
  for (size_t s = 0; s < c.ranks.size(); ++s) {
    Adapter ad{c.ranks[s], scale(rng), std::vector<HostTensor>(size_t(in.num_matrices)),
               std::vector<HostTensor>(size_t(in.num_matrices))};
    for (int64_t x = 0; x < e.experts; ++x) {
      for (size_t g = 0; g < c.outs.size(); ++g) {
        // Adapter 0 adapts every expert's targets; the others lack some of them.
        if (s > 0 && absent(rng)) continue;
        DrawMatrices(rng, c, g, in.matrix[g] + x * kExpertStride, &ad);
      }
    }
    in.max_rank = std::max(in.max_rank, ad.rank);
    in.adapters.push_back(std::move(ad));
  }
  Pack(rng, c, &in);
  std::uniform_int_distribution<int32_t> slot(-1, int32_t(c.ranks.size()) - 1);
  for (int64_t t = 0; t < e.tokens; ++t) in.token_slot.push_back(t == 0 ? 0 : slot(rng));
  std::vector<int64_t> routable;
  for (int64_t x = 0; x < e.experts; ++x) {
    if (std::find(e.idle.begin(), e.idle.end(), x) == e.idle.end()) routable.push_back(x);
  }
  REQUIRE(int64_t(routable.size()) >= e.top_k);
  std::vector<std::vector<int32_t>> rows_of(size_t(e.experts));  // tokens, ascending
  for (int64_t t = 0; t < e.tokens; ++t) {
    std::vector<int64_t> pick = routable;
    std::shuffle(pick.begin(), pick.end(), rng);
    for (int64_t k = 0; k < e.top_k; ++k) rows_of[size_t(pick[size_t(k)])].push_back(int32_t(t));
  }
  auto outside = [&] {
    in.row_token.push_back(0);
    in.row_slot.push_back(-1);
    in.row_shift.push_back(0);
  };
  for (int64_t r = 0; r < e.before; ++r) outside();
  for (int64_t x = 0; x < e.experts; ++x) {
    in.expert_offsets.push_back(int32_t(in.row_token.size()));
    for (int32_t t : rows_of[size_t(x)]) {
      in.row_token.push_back(t);
      in.row_slot.push_back(in.token_slot[size_t(t)]);
      in.row_shift.push_back(x * kExpertStride);
    }
  }
  in.expert_offsets.push_back(int32_t(in.row_token.size()));
  for (int64_t r = 0; r < e.after; ++r) outside();
  const int64_t n = int64_t(in.row_token.size());
  in.x = RandomTensor(rng, c.dtype, n, c.in);
  in.y = RandomTensor(rng, c.dtype, n, in.y_cols);
  return in;
}

// The op's result in double sums, rounded at the op's points, and a tolerance per element
// for a different summation order (a few units in the last place of each rounded step).
struct Expected {
  std::vector<double> y, tol;
};

double Unit(DType dt) {
  return dt == DType::kBF16 ? 1.0 / 256 : dt == DType::kF16 ? 1.0 / 2048 : 1.0 / (1 << 23);
}

Expected Naive(const Case& c, const Inputs& in) {
  const DType dt = c.dtype;
  const int64_t n = in.x.rows;
  Expected e{std::vector<double>(in.y.v.begin(), in.y.v.end()),
             std::vector<double>(in.y.v.size(), 0.0)};
  for (int64_t t = 0; t < n; ++t) {
    const int32_t s = in.row_slot[size_t(t)];
    if (s < 0) continue;
    const Adapter& ad = in.adapters[size_t(s)];
    for (size_t g = 0; g < c.outs.size(); ++g) {
      const int64_t m = in.matrix[g] + in.row_shift[size_t(t)];
      const HostTensor& a = ad.a[size_t(m)];
      const HostTensor& b = ad.b[size_t(m)];
      if (a.v.empty()) continue;
      std::vector<double> v(size_t(ad.rank)), v_mag(size_t(ad.rank));
      for (int32_t j = 0; j < ad.rank; ++j) {
        double acc = 0, mag = 0;
        for (int64_t i = 0; i < c.in; ++i) {
          acc += double(in.x.at(t, i)) * a.at(j, i);
          mag += std::fabs(double(in.x.at(t, i)) * a.at(j, i));
        }
        v[size_t(j)] = kernels::RoundTo(dt, float(acc));
        v_mag[size_t(j)] = std::fabs(v[size_t(j)]) + mag * 1e-6;
      }
      for (int64_t col = 0; col < c.outs[g]; ++col) {
        double acc = 0, mag = 0;
        for (int32_t j = 0; j < ad.rank; ++j) {
          acc += v[size_t(j)] * b.at(col, j);
          mag += v_mag[size_t(j)] * std::fabs(b.at(col, j));
        }
        const float add = kernels::RoundTo(dt, ad.scale * kernels::RoundTo(dt, float(acc)));
        const size_t at = size_t(t * in.y_cols + in.out_col[g] + col);
        e.y[at] = kernels::RoundTo(dt, float(e.y[at]) + add);
        // v's entries one unit apart, then each rounding one unit apart, in float sums.
        e.tol[at] = 3 * Unit(dt) * ad.scale * mag + 2 * Ulp(dt, std::fabs(e.y[at])) +
                    2 * Ulp(dt, std::fabs(add)) + 1e-6 * ad.scale * mag;
      }
    }
  }
  return e;
}

// Runs the op on `be` and returns y [n, y_cols] with its padding columns.
std::vector<float> Run(Backend& be, const Case& c, const Inputs& in, LoraSchedule schedule) {
  const int64_t n = in.x.rows;
  auto x = Upload(be, in.x, c.pad);
  auto y = Upload(be, in.y, c.pad);
  auto pool = UploadBytes(be, in.pool.data(), in.pool.size());
  auto table = UploadInts(be, in.page_table);
  auto slot_pages = UploadInts(be, in.slot_pages);
  auto slot_rank = UploadInts(be, in.slot_rank);
  auto slot_scale = UploadFloats(be, in.slot_scale);
  auto token_slot = UploadInts(be, in.token_slot);
  const bool experts = !in.expert_offsets.empty();
  // Token rows: a placeholder, never read.
  auto offsets = UploadInts(be, experts ? in.expert_offsets : std::vector<int32_t>{0});
  auto row_token = UploadInts(be, experts ? in.row_token : std::vector<int32_t>{0});
  const int64_t shrink_floats = kernels::LoraShrinkFloats(n, int64_t(c.outs.size()), in.max_rank);
  auto shrink = be.Allocate(size_t(shrink_floats) * 4);
  REQUIRE((x.ok() && y.ok() && pool.ok() && table.ok() && slot_pages.ok() && slot_rank.ok() &&
           slot_scale.ok() && token_slot.ok() && offsets.ok() && row_token.ok() && shrink.ok()));
  REQUIRE(be.Fill(shrink->data(), 0xFF, size_t(shrink_floats) * 4, be.default_stream()).ok());
  kernels::LoraArgs args;
  args.x = x->view;
  args.y = y->view;
  args.token_slot = token_slot->as<int32_t>();
  args.w = {pool->data(),
            c.page_bytes,
            table->as<int32_t>(),
            slot_pages->as<int32_t>(),
            slot_rank->as<int32_t>(),
            slot_scale->as<float>(),
            int64_t(in.adapters.size())};
  args.num_targets = int32_t(c.outs.size());
  for (size_t g = 0; g < c.outs.size(); ++g) {
    args.targets[g] = {in.matrix[g], in.out_col[g], c.outs[g]};
  }
  args.max_rank = in.max_rank;
  args.shrink = shrink->as<float>();
  args.schedule = schedule;
  if (experts) {
    args.expert_offsets = offsets->as<int32_t>();
    args.row_token = row_token->as<int32_t>();
    args.num_experts = int64_t(in.expert_offsets.size()) - 1;
    args.expert_matrix_stride = in.expert_stride;
  }
  const absl::Status s = be.Lora(args, be.default_stream());
  INFO(s.ToString());
  REQUIRE(s.ok());
  auto raw =
      DownloadBytes(be, y->view.data, size_t(n * y->view.stride) * kernels::DTypeSize(c.dtype));
  REQUIRE(raw.ok());
  std::vector<float> out(size_t(n * y->view.stride));
  for (size_t i = 0; i < out.size(); ++i) out[i] = kernels::LoadAsFloat(raw->data(), c.dtype, i);
  return out;
}

// Every element of `got` (with its stride's padding) against `want`: elements the op adds to
// within tolerance, every other one (NaN included) the same bits as before.
void Check(const Case& c, const Inputs& in, const Expected& want, const std::vector<float>& got) {
  const int64_t n = in.x.rows, stride = in.y_cols + c.pad;
  int64_t bad = 0, checked = 0;
  std::string first;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t col = 0; col < stride; ++col) {
      const float g = got[size_t(t * stride + col)];
      bool ok;
      if (col >= in.y_cols) {
        ok = std::isnan(g);  // padding: poisoned by Upload, never written
      } else {
        const size_t at = size_t(t * in.y_cols + col);
        const float before = in.y.v[at];
        if (want.tol[at] == 0) {  // not added to: same bits
          ok = std::memcmp(&g, &before, 4) == 0;
        } else {
          ok = std::fabs(g - want.y[at]) <= want.tol[at];  // NaN fails
          ++checked;
        }
      }
      if (!ok && bad++ == 0) {
        first = "row " + std::to_string(t) + " (slot " + std::to_string(in.row_slot[size_t(t)]) +
                ", matrix shift " + std::to_string(in.row_shift[size_t(t)]) + ") column " +
                std::to_string(col) + ": got " + std::to_string(g) +
                (col < in.y_cols ? ", want " + std::to_string(want.y[size_t(t * in.y_cols + col)])
                                 : std::string(", want the padding's NaN"));
      }
    }
  }
  INFO(first);
  CHECK(bad == 0);
  CHECK(checked > 0);
}

std::vector<Case> Cases() {
  return {
      {77, {45, 13, 13}, DType::kF32, 112, {8, 16, 12}, 7},
      {769, {300, 61, 61}, DType::kBF16, 4096, {8, 16, 32, 64, 128}, 9},
      {64, {128, 128}, DType::kBF16, 272, {16, 128, 8}, 8, 3},  // gate/up, strided
      {256, {100}, DType::kF16, 1024, {64, 32, 8, 128}, 6},
      {129, {257}, DType::kBF16, 2048, {128, 12}, 5, 1},
  };
}

// Odd sizes (Mixtral-like hidden 72 and intermediate 40): gate/up, down and three targets.
std::vector<ExpertCase> ExpertCases() {
  std::vector<ExpertCase> cases = {
      // gate/up; the first, a middle and the last expert idle; rows straddle 272-byte pages.
      {{72, {40, 40}, DType::kBF16, 272, {8, 16, 128, 32}, 0}, 8, 37, 2, {0, 3, 7}, 2, 3},
      // down, strided; rank 12 (B rows not a multiple of 16 bytes).
      {{40, {72}, DType::kF16, 112, {64, 8, 12}, 0, 3}, 8, 23, 2, {1, 2, 6}, 0, 5},
      // f32 with x rows not a multiple of 16 bytes, three targets, top 3 of 5.
      {{75, {33, 20, 21}, DType::kF32, 4096, {16, 128}, 0}, 5, 19, 3, {4}, 4, 0},
      // 64 experts, every even one and the last idle.
      {{72, {40, 40}, DType::kBF16, 1040, {128, 96, 8}, 0, 1}, 64, 50, 2, {}, 1, 1},
      // One expert.
      {{77, {40}, DType::kF16, 528, {32}, 0}, 1, 9, 1, {}, 3, 2},
  };
  for (int64_t x = 0; x < 64; x += 2) cases[3].idle.push_back(x);
  cases[3].idle.push_back(63);
  return cases;
}

TEST_CASE("Lora on the CPU equals a naive dense computation", "[kernels][lora]") {
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed() + 41);
  for (const Case& c : Cases()) {
    INFO(Describe(c));
    const Inputs in = Draw(rng, c);
    Check(c, in, Naive(c, in), Run(cpu, c, in, LoraSchedule::kPerToken));
  }
}

TEST_CASE("Lora on the CPU: expert rows equal a naive dense computation", "[kernels][lora]") {
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed() + 44);
  for (const ExpertCase& e : ExpertCases()) {
    INFO(Describe(e));
    const Inputs in = DrawExperts(rng, e);
    Check(e.c, in, Naive(e.c, in), Run(cpu, e.c, in, LoraSchedule::kPerToken));
  }
}

TEST_CASE("Lora refuses bad arguments naming the field", "[kernels][lora]") {
  kernels::CpuBackend cpu;
  std::vector<float> x(12), y(12), shrink(64);
  std::vector<int32_t> slots(3, -1);
  kernels::LoraArgs good;
  good.x = kernels::View(x.data(), DType::kF32, 3, 4);
  good.y = kernels::View(y.data(), DType::kF32, 3, 4);
  good.token_slot = slots.data();
  good.num_targets = 2;
  good.targets[0] = {0, 0, 2};
  good.targets[1] = {1, 2, 2};
  good.max_rank = 8;
  good.shrink = shrink.data();
  REQUIRE(cpu.Lora(good, cpu.default_stream()).ok());  // all base-only: nothing to do
  auto refused = [&](const std::function<void(kernels::LoraArgs&)>& edit, const char* field) {
    kernels::LoraArgs a = good;
    edit(a);
    const absl::Status s = cpu.Lora(a, cpu.default_stream());
    INFO(s.ToString());
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(s.message().find(field) != std::string::npos);
  };
  refused([](auto& a) { a.y.dtype = DType::kBF16; }, "y is bf16, want f32");
  refused([](auto& a) { a.y.rows = 2; }, "rows");
  refused([](auto& a) { a.token_slot = nullptr; }, "token_slot");
  refused([](auto& a) { a.num_targets = 4; }, "num_targets");
  refused([](auto& a) { a.max_rank = 129; }, "max_rank");
  refused([](auto& a) { a.targets[1].out_col = 1; }, "targets[1]");
  refused([](auto& a) { a.targets[1].out_features = 3; }, "targets[1]");
  refused([](auto& a) { a.shrink = nullptr; }, "shrink");
  refused([](auto& a) { a.w.num_slots = 1; }, "w.pool");
  refused([&](auto& a) { a.expert_offsets = slots.data(); }, "row_token");
  refused(
      [&](auto& a) {
        a.expert_offsets = slots.data();
        a.row_token = slots.data();
      },
      "num_experts");
  refused(
      [&](auto& a) { a.w = {x.data(), 24, slots.data(), slots.data(), slots.data(), y.data(), 1}; },
      "page_bytes");
}

TEST_CASE("Lora on CUDA matches the CPU reference in both schedules", "[kernels][lora][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  Backend& gpu = **cuda;
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed() + 42);
  std::vector<Case> cases = Cases();
  // Decode-shaped (one token per run) at Llama-3-8B's qkv, and a prefill-shaped batch.
  cases.push_back(
      {4096, {4096, 1024, 1024}, DType::kBF16, 2 << 20, {8, 16, 32, 64, 128}, 33, 0, 1});
  cases.push_back({4096, {14336}, DType::kBF16, 1 << 20, {16, 64}, 12, 0, 33});
  for (const Case& c : cases) {
    INFO(Describe(c));
    const Inputs in = Draw(rng, c);
    const Expected want = Naive(c, in);
    for (LoraSchedule schedule : {LoraSchedule::kPerToken, LoraSchedule::kSegments}) {
      INFO("schedule " << (schedule == LoraSchedule::kPerToken ? "per token" : "segments"));
      Check(c, in, want, Run(gpu, c, in, schedule));
    }
  }
  REQUIRE(gpu.Health().ok());
}

// Prefill-shaped batches for the tensor-core segment path (kernels/cuda/lora_mma.cuh): runs of
// 1, 15, 16, 17, 129 and 1000 tokens (around kLoraMmaMinRun and the 64-token tiles; the short
// ones go per token within the same call), ranks 8-128 mixed (and 24 and 12: a rank not a
// multiple of 16, and one not of 8, which goes per token), base-only tokens between runs,
// pages of 1040 or 528 bytes (every matrix spans pages; a 128-byte k-slice of a row straddles
// them), bf16 and f16, n below and above LoraShrinkSplits' threshold (split and unsplit
// shrink), strided x and y, qkv and gate/up targets. Two runs of the op give the same bits.
TEST_CASE("Lora on CUDA: tensor-core segments match the CPU reference, deterministically",
          "[kernels][lora][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  Backend& gpu = **cuda;
  std::mt19937_64 rng(Catch::rngSeed() + 43);
  const std::vector<int64_t> mixed = {1, 15, 17, 129, 1000, 16, 64, 3, 17};
  std::vector<Case> cases = {
      {512, {256, 64, 64}, DType::kBF16, 1040, {8, 16, 32, 64, 128}, 0, 0, 70, mixed},
      {264, {200}, DType::kF16, 528, {128, 8, 24, 12}, 0, 0, 70, {1000, 17, 15, 129, 1, 40}},
      {128, {96, 96}, DType::kBF16, 1040, {16, 128, 64}, 0, 8, 70, {129, 1000, 15, 33}},
      {64, {128, 128}, DType::kF16, 528, {16, 128}, 0, 0, 70, {4000, 17, 100, 1}},
      {4096, {4096, 1024, 1024}, DType::kBF16, 1 << 16, {8, 16, 32, 64, 128}, 0, 0, 70,
       {129, 1000, 17, 15, 1}},
  };
  for (const Case& c : cases) {
    INFO(Describe(c));
    const Inputs in = Draw(rng, c);
    const Expected want = Naive(c, in);
    const std::vector<float> first = Run(gpu, c, in, LoraSchedule::kSegments);
    Check(c, in, want, first);
    const std::vector<float> second = Run(gpu, c, in, LoraSchedule::kSegments);
    REQUIRE(first.size() == second.size());
    CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
  }
  REQUIRE(gpu.Health().ok());
}

// Expert rows on CUDA (per token in either schedule: a row's slot through its token, its matrices
// through a search of the offsets) against the naive computation, as the CPU is checked above.
// Both schedules give the same bits.
TEST_CASE("Lora on CUDA: expert rows match the CPU reference", "[kernels][lora][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  Backend& gpu = **cuda;
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed() + 45);
  std::vector<ExpertCase> cases = ExpertCases();
  cases.push_back({{1024, {2048, 2048}, DType::kBF16, 1 << 16, {16, 64}, 0}, 8, 16, 2, {5}});
  for (const ExpertCase& e : cases) {
    INFO(Describe(e));
    const Inputs in = DrawExperts(rng, e);
    const Expected want = Naive(e.c, in);
    Check(e.c, in, want, Run(cpu, e.c, in, LoraSchedule::kPerToken));
    const std::vector<float> per_token = Run(gpu, e.c, in, LoraSchedule::kPerToken);
    Check(e.c, in, want, per_token);
    const std::vector<float> segments = Run(gpu, e.c, in, LoraSchedule::kSegments);
    REQUIRE(per_token.size() == segments.size());
    CHECK(std::memcmp(per_token.data(), segments.data(), per_token.size() * sizeof(float)) == 0);
  }
  REQUIRE(gpu.Health().ok());
}

}  // namespace
}  // namespace arbor::testing
