#include "tests/kernels/op_cases.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>

#include "kernels/attention_plan.h"
#include "kernels/philox.h"
#include "tests/kernels/moe_reference.h"
#include "tests/kernels/typed_tensors.h"

namespace arbor::testing {
namespace {

using kernels::Backend;
using kernels::DType;
using kernels::RoundTo;
using kernels::Tensor;

constexpr DType kF32 = DType::kF32, kBF16 = DType::kBF16, kF16 = DType::kF16;

template <typename T>
T Must(absl::StatusOr<T> v) {
  INFO(v.status().ToString());
  REQUIRE(v.ok());
  return std::move(*v);
}

void Ok(const absl::Status& s) {
  INFO(s.ToString());
  REQUIRE(s.ok());
}

bool Is16(DType t) { return t != kF32; }

// The coarser of two dtypes (for a result that holds values of both).
DType Coarser(DType a, DType b) {
  if (a == kBF16 || b == kBF16) return kBF16;
  if (a == kF16 || b == kF16) return kF16;
  return kF32;
}

void Append(CaseResult& r, const HostTensor& t) {
  r.got.insert(r.got.end(), t.v.begin(), t.v.end());
}

// ---------------------------------------------------------------------------------- Linear
// d0 = m, d1 = n, d2 = k. Variants follow the sizes: a bias when k is odd or k % 16 == 8 (a
// shape the CUDA backend's few-row kernel takes: m <= 4, k % 8 == 0), accumulation into y
// when m is even, fp32 output of 16-bit inputs (an LM head) when n is odd, and x strided (a
// column slice) when m is a multiple of 3.
CaseResult Linear(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const int64_t m = c.d0, n = c.d1, k = c.d2;
  const bool bias = k % 2 == 1 || k % 16 == 8, accumulate = m % 2 == 0;
  const DType y_type = Is16(c.dtype) && n % 2 == 1 ? kF32 : c.dtype;
  const int64_t pad = m % 3 == 0 ? 3 : 0;
  const HostTensor x = RandomTensor(rng, c.dtype, m, k);
  const HostTensor w = RandomTensor(rng, c.dtype, n, k);
  const HostTensor b = RandomTensor(rng, c.dtype, 1, n);
  const HostTensor y0 = RandomTensor(rng, y_type, m, n);
  DeviceTensor dx = Must(Upload(be, x, pad)), dw = Must(Upload(be, w)), db = Must(Upload(be, b));
  DeviceTensor dy = accumulate ? Must(Upload(be, y0, 1)) : Must(Poisoned(be, y_type, m, n, 1));
  Ok(be.Linear({dx.view, dw.view, bias ? db.view.data : nullptr, dy.view, accumulate},
               be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dy.view)));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < k; ++p) acc += double(x.at(i, p)) * double(w.at(j, p));
      if (bias) acc += b.at(0, j);
      if (accumulate) acc += y0.at(i, j);
      r.want.push_back(acc);
    }
  }
  r.dtype = y_type;
  // fp32 accumulation over k terms of size <= 1; a 16-bit output adds one rounding.
  r.atol = 2e-6 * double(k);
  r.ulps = y_type == kF32 ? 0 : 1;
  return r;
}

// ------------------------------------------------------------------------ LinearSiluMul
// d0 = m, d1 = inter, d2 = k: Linear with the kSiluMul epilogue, w = [gate; up] [2 * inter, k],
// y [m, inter]. m <= 4 with 16-bit k % 8 == 0 takes the CUDA backend's fused few-row kernel,
// larger m cuBLASLt through the scratch; x strided when m is a multiple of 3.
CaseResult LinearSiluMul(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const int64_t m = c.d0, inter = c.d1, k = c.d2;
  const int64_t pad = m % 3 == 0 ? 8 : 0;
  const HostTensor x = RandomTensor(rng, c.dtype, m, k);
  const HostTensor w = RandomTensor(rng, c.dtype, 2 * inter, k);
  DeviceTensor dx = Must(Upload(be, x, pad)), dw = Must(Upload(be, w));
  DeviceTensor dy = Must(Poisoned(be, c.dtype, m, inter));
  DeviceTensor scratch = Must(Poisoned(be, c.dtype, m, 2 * inter));
  kernels::LinearArgs args{dx.view, dw.view, nullptr, dy.view};
  args.epilogue = kernels::LinearEpilogue::kSiluMul;
  args.scratch = scratch.view;
  Ok(be.Linear(args, be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dy.view)));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < inter; ++j) {
      double g = 0, u = 0;
      for (int64_t p = 0; p < k; ++p) {
        g += double(x.at(i, p)) * double(w.at(j, p));
        u += double(x.at(i, p)) * double(w.at(inter + j, p));
      }
      const float gr = RoundTo(c.dtype, float(g)), ur = RoundTo(c.dtype, float(u));
      const float silu = RoundTo(c.dtype, float(double(gr) / (1.0 + std::exp(-double(gr)))));
      r.want.push_back(double(silu) * double(ur));
    }
  }
  r.dtype = c.dtype;
  // gate and up each from an fp32 sum of k terms of size <= 1 (|sum| about sqrt(k)), each
  // rounding of gate, silu and up one unit apart at worst where fp32 and double straddle a
  // boundary, plus the product's own rounding.
  r.atol = 2e-6 * double(k) * (1.0 + std::sqrt(double(k)));
  r.ulps = Is16(c.dtype) ? 4 : 0;
  return r;
}

// ------------------------------------------------------------------------------ AddRmsNorm
// d0 = rows, d1 = cols; a residual delta unless there is one row. Output: y, then x.
CaseResult AddRmsNorm(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const int64_t rows = c.d0, cols = c.d1;
  const bool delta = rows > 1;
  const float eps = 1e-5f;
  HostTensor x = RandomTensor(rng, c.dtype, rows, cols, -3.0f, 3.0f);
  const HostTensor d = RandomTensor(rng, c.dtype, rows, cols, -1.0f, 1.0f);
  const HostTensor w = RandomTensor(rng, c.dtype, 1, cols, 0.5f, 1.5f);
  // x strided; by whole 16-byte steps where cols % 16 == 0, the CUDA backend's vector kernel.
  const int64_t pad = cols % 16 == 0 ? 8 : 2;
  DeviceTensor dx = Must(Upload(be, x, pad)), dd = Must(Upload(be, d)), dw = Must(Upload(be, w));
  DeviceTensor dy = Must(Poisoned(be, c.dtype, rows, cols));
  kernels::AddRmsNormArgs args{dx.view, delta ? dd.view : Tensor{}, dw.view.data, dy.view, eps};
  Ok(be.AddRmsNorm(args, be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dy.view)));
  std::vector<double> new_x;
  for (int64_t i = 0; i < rows; ++i) {
    double sum_sq = 0;
    for (int64_t j = 0; j < cols; ++j) {
      float h = x.at(i, j);
      if (delta) h = RoundTo(c.dtype, h + d.at(i, j));
      x.v[size_t(i * cols + j)] = h;
      sum_sq += double(h) * double(h);
    }
    const double inv = 1.0 / std::sqrt(sum_sq / double(cols) + double(eps));
    for (int64_t j = 0; j < cols; ++j) {
      r.want.push_back(double(RoundTo(c.dtype, float(double(x.at(i, j)) * inv))) * w.at(0, j));
    }
  }
  if (delta) {
    Append(r, Must(Download(be, dx.view)));
    r.want.insert(r.want.end(), x.v.begin(), x.v.end());
  }
  r.dtype = c.dtype;
  // The mean in fp32 against double may flip the inner rounding: up to two units.
  r.ulps = Is16(c.dtype) ? 2 : 16;
  r.atol = 1e-6;
  return r;
}

// ------------------------------------------------------------------------------- SiluMul
// d0 = rows, d1 = inter.
CaseResult SiluMul(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const int64_t rows = c.d0, inter = c.d1;
  const HostTensor gu = RandomTensor(rng, c.dtype, rows, 2 * inter, -8.0f, 8.0f);
  DeviceTensor dgu = Must(Upload(be, gu)), dout = Must(Poisoned(be, c.dtype, rows, inter));
  Ok(be.SiluMul({dgu.view, dout.view}, be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dout.view)));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < inter; ++j) {
      const double g = gu.at(i, j);
      const float silu = RoundTo(c.dtype, float(g / (1.0 + std::exp(-g))));
      r.want.push_back(double(silu) * gu.at(i, inter + j));
    }
  }
  r.dtype = c.dtype;
  // 16-bit: silu is rounded before the product, and where the backend's fp32 silu and this
  // double one straddle a rounding boundary they round one ulp apart; times `up` that is up
  // to two ulps of the product, plus the product's own rounding.
  r.ulps = Is16(c.dtype) ? 3 : 8;
  r.atol = 1e-7;
  return r;
}

// ------------------------------------------------------------------------------ Embedding
// d0 = tokens, d1 = vocab, d2 = hidden; one id out of range (its row must be zeros).
CaseResult Embedding(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  std::uniform_int_distribution<int32_t> id(0, int32_t(c.d1 - 1));
  std::vector<int32_t> ids(static_cast<size_t>(c.d0));
  for (auto& x : ids) x = id(rng);
  if (c.d0 > 2) ids[1] = int32_t(c.d1);  // out of range
  const HostTensor table = RandomTensor(rng, c.dtype, c.d1, c.d2);
  auto dids = Must(UploadInts(be, ids));
  DeviceTensor dt = Must(Upload(be, table)), dout = Must(Poisoned(be, c.dtype, c.d0, c.d2, 1));
  Ok(be.Embedding({dids.as<int32_t>(), dt.view, dout.view}, be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dout.view)));
  for (int32_t i : ids) {
    for (int64_t j = 0; j < c.d2; ++j) r.want.push_back(i < c.d1 ? table.at(i, j) : 0.0);
  }
  r.dtype = c.dtype;
  return r;
}

// ---------------------------------------------------------------------- paged KV helpers
struct Pages {
  int64_t block_size, num_layers, layer, kv_dim, num_pages;
  DType dtype;
  int64_t page_elems() const { return num_layers * 2 * block_size * kv_dim; }
  int64_t Offset(int64_t slot, int kv) const {
    return (slot / block_size) * page_elems() +
           ((layer * 2 + kv) * block_size + slot % block_size) * kv_dim;
  }
};

// ----------------------------------------------------------------------------- RopeKvWrite
// d0 = tokens, d1 = kv heads (q heads = 3 x), d2 = head_dim. f32 activations with an even
// number of kv heads write a bf16 cache. Output: the rotated qkv, then each token's K and V.
CaseResult RopeKvWrite(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.d0, hkv = c.d1, hq = 3 * c.d1, d = c.d2, half = d / 2;
  const int64_t cols = (hq + 2 * hkv) * d, q_dim = hq * d, kv_dim = hkv * d;
  const DType kv_type = c.dtype == kF32 && hkv % 2 == 0 ? kBF16 : c.dtype;
  Pages p{c.d0 % 2 ? 16 : 5, 2, 1, kv_dim, 0, kv_type};
  p.num_pages = (2 * n + p.block_size - 1) / p.block_size + 1;
  std::vector<int32_t> slots(static_cast<size_t>(p.num_pages * p.block_size));
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(size_t(n));
  std::uniform_int_distribution<int32_t> pos(0, 4095);
  std::vector<int32_t> positions(static_cast<size_t>(n));
  for (auto& x : positions) x = pos(rng);
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[size_t(i)] = float(1.0 / std::pow(10000.0, double(2 * i) / double(d)));
  }
  const float factor = hkv == 3 ? 0.875f : 1.0f;  // a rope attention_factor other than 1
  HostTensor qkv = RandomTensor(rng, c.dtype, n, cols);
  DeviceTensor dqkv = Must(Upload(be, qkv, 1));
  auto dpos = Must(UploadInts(be, positions));
  auto dslots = Must(UploadInts(be, slots));
  auto dfreq = Must(UploadFloats(be, inv_freq));
  const size_t page_bytes = size_t(p.page_elems()) * kernels::DTypeSize(kv_type);
  auto pages = Must(be.Allocate(page_bytes * size_t(p.num_pages)));
  Ok(be.Fill(pages.data(), 0xFF, page_bytes * size_t(p.num_pages), be.default_stream()));
  kernels::RopeKvWriteArgs args;
  args.qkv = dqkv.view;
  args.positions = dpos.as<int32_t>();
  args.inv_freq = dfreq.as<float>();
  args.attention_factor = factor;
  args.slots = dslots.as<int32_t>();
  args.kv = {pages.data(), kv_type, p.block_size, p.num_layers, kv_dim, p.layer};
  args.num_q_heads = hq;
  args.num_kv_heads = hkv;
  args.head_dim = d;
  Ok(be.RopeKvWrite(args, be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dqkv.view)));
  const auto raw = Must(DownloadBytes(be, pages.data(), page_bytes * size_t(p.num_pages)));
  for (int64_t t = 0; t < n; ++t) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int64_t j = 0; j < kv_dim; ++j) {
        r.got.push_back(
            kernels::LoadAsFloat(raw.data(), kv_type, p.Offset(slots[size_t(t)], kv) + j));
      }
    }
  }
  // Reference: rotate a copy of qkv with the op's roundings, cos/sin in double.
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(positions[size_t(t)]) * inv_freq[size_t(i)];
      const float cs = RoundTo(c.dtype, float(std::cos(double(angle))) * factor);
      const float sn = RoundTo(c.dtype, float(std::sin(double(angle))) * factor);
      for (int64_t h = 0; h < hq + hkv; ++h) {
        float& x0 = qkv.v[size_t(t * cols + h * d + i)];
        float& x1 = qkv.v[size_t(t * cols + h * d + i + half)];
        const float a = x0, b = x1;
        x0 = RoundTo(c.dtype, RoundTo(c.dtype, a * cs) - RoundTo(c.dtype, b * sn));
        x1 = RoundTo(c.dtype, RoundTo(c.dtype, b * cs) + RoundTo(c.dtype, a * sn));
      }
    }
  }
  r.want.assign(qkv.v.begin(), qkv.v.end());
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < 2 * kv_dim; ++j) {
      r.want.push_back(RoundTo(kv_type, qkv.at(t, q_dim + j)));
    }
  }
  r.dtype = Coarser(c.dtype, kv_type);
  // Angles up to 4096 rad: sin/cos of one fp32 angle differ by an ulp between libraries.
  r.ulps = Is16(r.dtype) ? 1 : 16;
  r.atol = 4e-6;
  return r;
}

// --------------------------------------------------------------------------- PagedAttention
// "attention": d0 = sequences, d1 = kv heads (q heads = 3 x), d2 = head_dim; random lengths up
// to 70 with 1-5 new tokens each; block size 5 and a window of 7 for an even number of kv
// heads, block size 16 and no window for odd; f32 queries over a bf16 cache when d2 is 8.
// "attention_prefill": d0 = sequences, d1 = GQA group (2 kv heads), d2 = head_dim; lengths up
// to 300, half the sequences new whole (a prompt), the others 1 to all of their tokens new (a
// chunked prefill continuing over cached pages); block size 16 and no window for an odd d0,
// block size 32 and a window of 100 for even.
// A case that names a window or a dilation (neighborhood attention, kernels/ops.h) takes them
// instead, its lengths grow by the window's span (up to 800 more) so that windows slide, and its
// "attention_prefill" sequences are a third each whole prompts, chunk continuations and single
// decode tokens (the split-KV rows). The reference walks the definition: positions pos,
// pos - dilation, ... down to 0, at most `window` of them.
// Runs of new tokens go to the CUDA backend's tensor-core kernel as prefill tiles
// (kernels/attention_plan.h) when the shapes fit, and decode rows split their keys in runs of
// 128; the case then runs the batch a second time per token, unsplit, and checks both against
// the reference.
CaseResult Attention(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const bool prefill = c.op == "attention_prefill";
  const int64_t hkv = prefill ? 2 : c.d1, group = prefill ? c.d1 : 3;
  const int64_t hq = group * hkv, d = c.d2, kv_dim = hkv * d;
  const DType kv_type = c.dtype == kF32 && d == 8 ? kBF16 : c.dtype;
  const bool even = prefill ? c.d0 % 2 == 0 : hkv % 2 == 0;
  const bool neighborhood = c.window >= 0 || c.dilation != 1;
  const int64_t window = c.window >= 0 ? c.window : even ? (prefill ? 100 : 7) : 0;
  const int64_t dilation = c.dilation;
  const int64_t span = window > 0 ? std::min<int64_t>((window - 1) * dilation + 1, 800) : 0;
  Pages p{even ? (prefill ? 32 : 5) : 16, 3, 1, kv_dim, 0, kv_type};
  std::uniform_int_distribution<int64_t> len(
      c.context > 0 ? c.context / 2 : 1,
      c.context > 0 ? c.context : (prefill ? 300 : 70) + (neighborhood ? span : 0));
  std::uniform_int_distribution<int64_t> fresh(1, 5), coin(0, 1), mode(0, 2);
  std::vector<int64_t> lengths, news;
  for (int64_t s = 0; s < c.d0; ++s) {
    lengths.push_back(len(rng));
    const int64_t m = !prefill ? -1 : neighborhood ? mode(rng) : coin(rng);
    if (!prefill) {
      news.push_back(std::min(lengths.back(), fresh(rng)));
    } else if (m == 1 && c.context == 0) {
      news.push_back(lengths.back());
    } else if (c.context > 0 && m != 2) {  // a chunk continuing over a long cached context
      news.push_back(std::uniform_int_distribution<int64_t>(1, std::min<int64_t>(
                         16, lengths.back()))(rng));
    } else if (m == 2) {
      news.push_back(1);
    } else {
      news.push_back(std::uniform_int_distribution<int64_t>(1, lengths.back())(rng));
    }
  }
  int64_t max_blocks = 1, total_blocks = 0;
  for (int64_t l : lengths) {
    max_blocks = std::max(max_blocks, (l + p.block_size - 1) / p.block_size);
    total_blocks += (l + p.block_size - 1) / p.block_size;
  }
  p.num_pages = total_blocks + 2;
  std::vector<int32_t> page_ids(static_cast<size_t>(p.num_pages));
  std::iota(page_ids.begin(), page_ids.end(), 0);
  std::shuffle(page_ids.begin(), page_ids.end(), rng);
  std::vector<int32_t> tables(size_t(c.d0 * max_blocks), -1);
  std::vector<uint8_t> pages(size_t(p.num_pages * p.page_elems()) * kernels::DTypeSize(kv_type),
                             0xFF);
  // The full K/V history of every sequence in its pages, rounded to the cache's dtype.
  std::vector<std::vector<float>> keys, values;
  size_t next_page = 0;
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int64_t s = 0; s < c.d0; ++s) {
    const int64_t blocks = (lengths[size_t(s)] + p.block_size - 1) / p.block_size;
    for (int64_t b = 0; b < blocks; ++b) tables[size_t(s * max_blocks + b)] = page_ids[next_page++];
    keys.emplace_back();
    values.emplace_back();
    for (int64_t j = 0; j < lengths[size_t(s)]; ++j) {
      const int64_t slot =
          int64_t(tables[size_t(s * max_blocks + j / p.block_size)]) * p.block_size +
          j % p.block_size;
      for (int kv = 0; kv < 2; ++kv) {
        for (int64_t e = 0; e < kv_dim; ++e) {
          const float v = RoundTo(kv_type, unit(rng));
          (kv == 0 ? keys : values).back().push_back(v);
          kernels::StoreFromFloat(pages.data(), kv_type, p.Offset(slot, kv) + e, v);
        }
      }
    }
  }
  std::vector<int32_t> token_seq, q_pos;
  for (int64_t s = 0; s < c.d0; ++s) {
    for (int64_t j = lengths[size_t(s)] - news[size_t(s)]; j < lengths[size_t(s)]; ++j) {
      token_seq.push_back(int32_t(s));
      q_pos.push_back(int32_t(j));
    }
  }
  const int64_t n = int64_t(token_seq.size());
  const HostTensor q = RandomTensor(rng, c.dtype, n, hq * d);
  DeviceTensor dq = Must(Upload(be, q, 2 * kv_dim));  // a slice of a fused qkv row
  DeviceTensor dout = Must(Poisoned(be, c.dtype, n, hq * d));
  auto dpages = Must(UploadBytes(be, pages.data(), pages.size()));
  auto dtables = Must(UploadInts(be, tables));
  auto dseq = Must(UploadInts(be, token_seq));
  auto dpos = Must(UploadInts(be, q_pos));
  std::vector<kernels::RowRun> runs;
  for (int64_t s = 0, row = 0; s < c.d0; row += news[size_t(s)], ++s) {
    runs.push_back({int32_t(row), int32_t(news[size_t(s)])});
  }
  const kernels::AttentionPlan plan =
      kernels::PlanAttention(runs, kernels::PrefillTileTokens(c.dtype, kv_type, d, group));
  auto dtiles = Must(UploadInts(be, plan.prefill_tiles.empty() ? std::vector<int32_t>{0}
                                                                 : plan.prefill_tiles));
  auto ddecode = Must(UploadInts(be, plan.decode_rows.empty() ? std::vector<int32_t>{0}
                                                               : plan.decode_rows));
  const float scale = float(1.0 / std::sqrt(double(d)));
  kernels::PagedAttentionArgs args;
  args.q = dq.view;
  args.out = dout.view;
  args.kv = {dpages.data(), kv_type, p.block_size, p.num_layers, kv_dim, p.layer};
  args.block_tables = dtables.as<int32_t>();
  args.token_seq = dseq.as<int32_t>();
  args.q_positions = dpos.as<int32_t>();
  args.num_seqs = c.d0;
  args.max_blocks = max_blocks;
  args.num_q_heads = hq;
  args.num_kv_heads = hkv;
  args.head_dim = d;
  args.sliding_window = window;
  args.dilation = dilation;
  args.scale = scale;
  args.prefill_tiles = dtiles.as<int32_t>();
  args.num_prefill_tiles = plan.num_tiles();
  args.decode_rows = ddecode.as<int32_t>();
  args.num_decode_rows = int64_t(plan.decode_rows.size());
  // Split-KV for the decode rows, in runs of 128 keys (the smallest split), over a NaN-poisoned
  // workspace: every split a row has must be written before the merge reads it.
  args.split_keys = 128;
  args.max_context = max_blocks * p.block_size;
  args.split_workspace_floats =
      n * hq * ((args.max_context + args.split_keys - 1) / args.split_keys) * (d + 2);
  auto dsplit = Must(UploadFloats(be, std::vector<float>(size_t(args.split_workspace_floats), NAN)));
  args.split_workspace = dsplit.as<float>();
  Ok(be.PagedAttention(args, be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dout.view)));
  // Every row per token, unsplit, as well (the bits the batch-invariance check below needs).
  HostTensor per_token;
  {
    DeviceTensor again = Must(Poisoned(be, c.dtype, n, hq * d));
    kernels::PagedAttentionArgs all = args;
    all.out = again.view;
    all.num_prefill_tiles = 0;
    all.split_workspace = nullptr;
    Ok(be.PagedAttention(all, be.default_stream()));
    per_token = Must(Download(be, again.view));
    Append(r, per_token);
  }
  // Batch invariance: the last token alone (per token) gives the bits it gave in the batch run
  // per token (the CUDA kernel serves a head per CTA for small grids and several for large).
  {
    DeviceTensor alone = Must(Poisoned(be, c.dtype, 1, hq * d));
    kernels::PagedAttentionArgs one = args;
    one.q = kernels::Rows(dq.view, n - 1, 1);
    one.out = alone.view;
    one.token_seq = dseq.as<int32_t>() + (n - 1);
    one.q_positions = dpos.as<int32_t>() + (n - 1);
    one.num_prefill_tiles = 0;
    one.split_workspace = nullptr;
    Ok(be.PagedAttention(one, be.default_stream()));
    const HostTensor got = Must(Download(be, alone.view));
    const std::vector<float>& batch = per_token.v;
    const size_t last = size_t((n - 1) * hq * d);
    for (int64_t e = 0; e < hq * d; ++e) {
      INFO("element " << e << " of the last token alone");
      REQUIRE(std::memcmp(&got.v[size_t(e)], &batch[last + size_t(e)], sizeof(float)) == 0);
    }
  }
  for (int64_t t = 0; t < n; ++t) {
    const int64_t s = token_seq[size_t(t)], pos = q_pos[size_t(t)];
    std::vector<int64_t> seen;  // the positions the token sees, by the definition
    for (int64_t j = pos; j >= 0 && (window == 0 || int64_t(seen.size()) < window); j -= dilation) {
      seen.push_back(j);
    }
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t off = (h / group) * d;
      std::vector<double> scores;
      double mx = -INFINITY;
      for (int64_t j : seen) {
        double dot = 0;
        for (int64_t e = 0; e < d; ++e) {
          dot += double(q.at(t, h * d + e)) * keys[size_t(s)][size_t(j * kv_dim + off + e)];
        }
        scores.push_back(dot * scale);
        mx = std::max(mx, scores.back());
      }
      double denom = 0;
      std::vector<double> acc(static_cast<size_t>(d), 0.0);
      for (size_t i = 0; i < seen.size(); ++i) {
        const int64_t j = seen[i];
        const double w = std::exp(scores[i] - mx);
        denom += w;
        for (int64_t e = 0; e < d; ++e)
          acc[size_t(e)] += w * values[size_t(s)][size_t(j * kv_dim + off + e)];
      }
      for (int64_t e = 0; e < d; ++e) r.want.push_back(acc[size_t(e)] / denom);
    }
  }
  r.want.insert(r.want.end(), r.want.begin(), r.want.end());
  r.dtype = c.dtype;
  r.ulps = Is16(c.dtype) ? 1 : 200;
  // The tensor-core kernel rounds each probability to the 16-bit type before P·V: an output,
  // a weighted mean of values in [-1, 1], moves by at most the type's unit roundoff.
  r.atol = plan.num_tiles() > 0 ? (c.dtype == kBF16 ? 0x1p-8 : 0x1p-11) : 2e-6;
  return r;
}

// ----------------------------------------------------------------------------- TopKSoftmax
// d0 = tokens, d1 = experts, d2 = k. Output: weights, then expert ids (as floats).
CaseResult TopK(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.d0, e = c.d1, k = c.d2;
  const HostTensor logits = RandomTensor(rng, c.dtype, n, e, -4.0f, 4.0f);
  DeviceTensor dl = Must(Upload(be, logits));
  auto dw = Must(be.Allocate(size_t(n * k) * 4));
  auto de = Must(be.Allocate(size_t(n * k) * 4));
  Ok(be.Fill(dw.data(), 0xFF, size_t(n * k) * 4, be.default_stream()));
  Ok(be.TopKSoftmax({dl.view, dw.as<float>(), de.as<int32_t>(), k, true}, be.default_stream()));
  CaseResult r;
  const auto w = Must(DownloadBytes(be, dw.data(), size_t(n * k) * 4));
  const auto ex = Must(DownloadBytes(be, de.data(), size_t(n * k) * 4));
  for (int64_t i = 0; i < n * k; ++i) r.got.push_back(reinterpret_cast<const float*>(w.data())[i]);
  for (int64_t i = 0; i < n * k; ++i) {
    r.got.push_back(float(reinterpret_cast<const int32_t*>(ex.data())[i]));
  }
  std::vector<double> ids;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int64_t> order(static_cast<size_t>(e));
    std::iota(order.begin(), order.end(), 0);
    // Largest first; ties to the lower expert id.
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return logits.at(t, a) > logits.at(t, b); });
    double mx = -INFINITY, sum = 0, kept = 0;
    for (int64_t j = 0; j < e; ++j) mx = std::max(mx, double(logits.at(t, j)));
    for (int64_t j = 0; j < e; ++j) sum += std::exp(double(logits.at(t, j)) - mx);
    for (int64_t j = 0; j < k; ++j)
      kept += std::exp(double(logits.at(t, order[size_t(j)])) - mx) / sum;
    for (int64_t j = 0; j < k; ++j) {
      r.want.push_back(std::exp(double(logits.at(t, order[size_t(j)])) - mx) / sum / kept);
      ids.push_back(double(order[size_t(j)]));
    }
  }
  r.want.insert(r.want.end(), ids.begin(), ids.end());
  r.ulps = 100;
  r.atol = 1e-6;
  return r;
}

// ------------------------------------------------------------------------- gather / scatter
// d0 = rows of src, d1 = distinct rows gathered, d2 = cols: dst = src[index]; then
// src[index] += scale * dst. Output: the gathered rows, then the updated src.
CaseResult GatherScatter(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  HostTensor src = RandomTensor(rng, c.dtype, c.d0, c.d2);
  std::vector<int32_t> index(static_cast<size_t>(c.d0));
  std::iota(index.begin(), index.end(), 0);
  std::shuffle(index.begin(), index.end(), rng);
  index.resize(size_t(c.d1));
  std::vector<float> scale(static_cast<size_t>(c.d1));
  std::uniform_real_distribution<float> s(-2.0f, 2.0f);
  for (auto& x : scale) x = s(rng);
  DeviceTensor dsrc = Must(Upload(be, src, 1));
  DeviceTensor ddst = Must(Poisoned(be, c.dtype, c.d1, c.d2));
  auto didx = Must(UploadInts(be, index));
  auto dscale = Must(UploadFloats(be, scale));
  Ok(be.GatherRows({dsrc.view, didx.as<int32_t>(), ddst.view}, be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, ddst.view)));
  Ok(be.ScatterAddRows({ddst.view, didx.as<int32_t>(), dscale.as<float>(), dsrc.view},
                       be.default_stream()));
  Append(r, Must(Download(be, dsrc.view)));
  for (int32_t i : index) {
    for (int64_t j = 0; j < c.d2; ++j) r.want.push_back(src.at(i, j));
  }
  for (size_t i = 0; i < index.size(); ++i) {
    for (int64_t j = 0; j < c.d2; ++j) {
      float& x = src.v[size_t(index[i] * c.d2 + j)];
      x = RoundTo(c.dtype, x + RoundTo(c.dtype, scale[i] * x));
    }
  }
  r.want.insert(r.want.end(), src.v.begin(), src.v.end());
  r.dtype = c.dtype;
  r.atol = 1e-6;
  return r;
}

// ------------------------------------------------------------------------------ MoeCombine
// d0 = tokens, d1 = k, d2 = hidden.
CaseResult MoeCombine(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.d0, k = c.d1, total = n * k + 3;
  const HostTensor y = RandomTensor(rng, c.dtype, total, c.d2);
  std::uniform_int_distribution<int32_t> row(0, int32_t(total - 1));
  std::uniform_real_distribution<float> w(0.0f, 1.0f);
  std::vector<int32_t> rows(static_cast<size_t>(n * k));
  std::vector<float> weights(static_cast<size_t>(n * k));
  for (auto& x : rows) x = row(rng);
  for (auto& x : weights) x = w(rng);
  DeviceTensor dy = Must(Upload(be, y)), dout = Must(Poisoned(be, c.dtype, n, c.d2, 1));
  auto drows = Must(UploadInts(be, rows));
  auto dw = Must(UploadFloats(be, weights));
  Ok(be.MoeCombine({dy.view, drows.as<int32_t>(), dw.as<float>(), dout.view, k},
                   be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dout.view)));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < c.d2; ++j) {
      float acc = 0.0f;
      for (int64_t e = 0; e < k; ++e) {
        const float wr = RoundTo(c.dtype, weights[size_t(t * k + e)]);
        acc = RoundTo(c.dtype, acc + RoundTo(c.dtype, wr * y.at(rows[size_t(t * k + e)], j)));
      }
      r.want.push_back(acc);
    }
  }
  r.dtype = c.dtype;
  r.atol = 1e-7;
  return r;
}

// The routing of an MoE case from its token count: n % 3 == 0, every token picks the same
// experts; 1, only the lower half of the experts is picked (the rest get no token; n = 1 too);
// 2, any experts.
Routing RoutingFor(int64_t n) {
  return n % 3 == 0 ? Routing::kSame : n % 3 == 1 ? Routing::kLowerHalf : Routing::kUniform;
}

// ------------------------------------------------------------------------------ MoePermute
// d0 = tokens, d1 = experts, d2 = k; the dtype is not the op's (its arrays are int32 and
// fp32). Output: expert_offsets, permuted_tokens, combine_rows (as floats; exact), then
// combine_weights; the reference is the host grouping Model::Moe used before the op.
CaseResult MoePermute(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.d0, experts = c.d1, k = c.d2;
  const std::vector<int32_t> chosen = RandomRouting(rng, n, k, experts, RoutingFor(n));
  std::vector<float> weights(static_cast<size_t>(n * k));
  std::uniform_real_distribution<float> w(0.0f, 1.0f);
  for (auto& x : weights) x = w(rng);
  auto dexperts = Must(UploadInts(be, chosen));
  auto dweights = Must(UploadFloats(be, weights));
  const size_t pair_bytes = size_t(n * k) * 4, offset_bytes = size_t(experts + 1) * 4;
  auto offsets = Must(be.Allocate(offset_bytes));
  auto tokens = Must(be.Allocate(pair_bytes));
  auto rows = Must(be.Allocate(pair_bytes));
  auto combine_weights = Must(be.Allocate(pair_bytes));
  for (auto* b : {&offsets, &tokens, &rows, &combine_weights}) {
    Ok(be.Fill(b->data(), 0xFF, b->bytes(), be.default_stream()));
  }
  kernels::MoePermuteArgs args;
  args.experts = dexperts.as<int32_t>();
  args.weights = dweights.as<float>();
  args.num_tokens = n;
  args.k = k;
  args.num_experts = experts;
  args.expert_offsets = offsets.as<int32_t>();
  args.permuted_tokens = tokens.as<int32_t>();
  args.combine_rows = rows.as<int32_t>();
  args.combine_weights = combine_weights.as<float>();
  Ok(be.MoePermute(args, be.default_stream()));
  CaseResult r;
  for (auto* b : {&offsets, &tokens, &rows}) {
    const auto raw = Must(DownloadBytes(be, b->data(), b->bytes()));
    for (size_t i = 0; i < raw.size() / 4; ++i) {
      r.got.push_back(float(reinterpret_cast<const int32_t*>(raw.data())[i]));
    }
  }
  const auto raw = Must(DownloadBytes(be, combine_weights.data(), pair_bytes));
  for (size_t i = 0; i < raw.size() / 4; ++i) {
    r.got.push_back(reinterpret_cast<const float*>(raw.data())[i]);
  }
  const HostMoeGrouping g = GroupOnHost(chosen, weights, n, k, experts);
  for (const auto* v : {&g.offsets, &g.tokens, &g.combine_rows}) {
    r.want.insert(r.want.end(), v->begin(), v->end());
  }
  r.want.insert(r.want.end(), g.combine_weights.begin(), g.combine_weights.end());
  return r;  // f32, no tolerance: exact
}

// --------------------------------------------------------------------------- GroupedLinear
// d0 = tokens, d1 = out, d2 = in; 8 experts, top-2 (Mixtral's), routed as RoutingFor says, so
// the rows are tokens * 2 pairs grouped by expert. x and w are strided: by 1 column (plain
// loads on CUDA) when tokens is odd, up to a multiple of 8 columns (the 16-byte cp.async path,
// with a k tail when in is not one) when even; y by 1, poisoned.
CaseResult GroupedLinear(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  constexpr int64_t kExperts = 8, kTopK = 2;
  const int64_t n = c.d0, out = c.d1, in = c.d2, total = n * kTopK;
  const HostMoeGrouping g =
      GroupOnHost(RandomRouting(rng, n, kTopK, kExperts, RoutingFor(n)),
                  std::vector<float>(size_t(total), 1.0f), n, kTopK, kExperts);
  const int64_t pad = n % 2 == 1 ? 1 : (8 - in % 8) % 8 + 8;
  const HostTensor x = RandomTensor(rng, c.dtype, total, in);
  const HostTensor w = RandomTensor(rng, c.dtype, kExperts * out, in);
  DeviceTensor dx = Must(Upload(be, x, pad)), dw = Must(Upload(be, w, pad));
  DeviceTensor dy = Must(Poisoned(be, c.dtype, total, out, 1));
  auto doffsets = Must(UploadInts(be, g.offsets));
  Ok(be.GroupedLinear({dx.view, dw.view, doffsets.as<int32_t>(), kExperts, dy.view},
                      be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dy.view)));
  for (int64_t e = 0; e < kExperts; ++e) {
    for (int64_t i = g.offsets[size_t(e)]; i < g.offsets[size_t(e + 1)]; ++i) {
      for (int64_t j = 0; j < out; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < in; ++p) acc += double(x.at(i, p)) * double(w.at(e * out + j, p));
        r.want.push_back(acc);
      }
    }
  }
  r.dtype = c.dtype;
  r.atol = 2e-6 * double(in);  // Linear's: fp32 accumulation over `in` terms of size <= 1
  r.ulps = Is16(c.dtype) ? 1 : 0;
  return r;
}

// ------------------------------------------------------------------------------ RandomFill
// d0 = rows, d1 = cols.
CaseResult RandomFill(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const uint64_t seed = rng(), stream = rng() % 1000;
  DeviceTensor dout = Must(Poisoned(be, c.dtype, c.d0, c.d1, 2));
  Ok(be.RandomFill({dout.view, seed, stream, -0.5f, 0.25f}, be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dout.view)));
  for (int64_t i = 0; i < c.d0 * c.d1; ++i) {
    r.want.push_back(
        RoundTo(c.dtype, kernels::PhiloxUniform(seed, stream, uint64_t(i), -0.5f, 0.25f)));
  }
  r.dtype = c.dtype;
  return r;
}

// -------------------------------------------------------------------------------- Convert
// d0 = rows, d1 = cols: f32 -> bf16, 16-bit -> f32.
CaseResult Convert(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  const DType to = c.dtype == kF32 ? kBF16 : kF32;
  const HostTensor src = RandomTensor(rng, c.dtype, c.d0, c.d1, -70000.0f, 70000.0f);
  DeviceTensor ds = Must(Upload(be, src, 1)), dd = Must(Poisoned(be, to, c.d0, c.d1));
  Ok(be.Convert({ds.view, dd.view}, be.default_stream()));
  CaseResult r;
  Append(r, Must(Download(be, dd.view)));
  for (float x : src.v) r.want.push_back(RoundTo(to, x));
  r.dtype = to;
  return r;
}

}  // namespace

const std::vector<OpCase>& OpCases() {
  static const std::vector<OpCase> cases = {
      // linear: m, n, k
      {"linear", kF32, 1, 1, 1},
      {"linear", kF32, 3, 5, 7},
      {"linear", kF32, 17, 769, 33},
      {"linear", kF32, 128, 67, 511},
      {"linear", kBF16, 1, 7, 64},
      {"linear", kBF16, 6, 769, 33},
      {"linear", kBF16, 64, 128, 4096},
      {"linear", kBF16, 33, 1001, 129},
      {"linear", kF16, 6, 33, 65},
      // m <= 4, k % 8 == 0: the CUDA backend's few-row kernel (kernels/cuda/skinny_linear.cu)
      {"linear", kBF16, 1, 1001, 136},
      {"linear", kBF16, 2, 6144, 4096},
      {"linear", kF16, 4, 130, 264},
      {"linear", kBF16, 4, 37, 8},
      // linear_silu_mul: m, inter, k
      {"linear_silu_mul", kF32, 1, 5, 7},
      {"linear_silu_mul", kF32, 6, 33, 64},
      {"linear_silu_mul", kBF16, 1, 37, 136},
      {"linear_silu_mul", kBF16, 3, 1001, 264},
      {"linear_silu_mul", kF16, 4, 130, 520},
      {"linear_silu_mul", kBF16, 2, 4099, 4096},
      {"linear_silu_mul", kBF16, 9, 257, 136},
      {"linear_silu_mul", kF16, 17, 65, 33},
      // add_rms_norm: rows, cols
      {"add_rms_norm", kF32, 1, 8, 0},
      {"add_rms_norm", kF32, 3, 769, 0},
      {"add_rms_norm", kF32, 17, 5125, 0},
      {"add_rms_norm", kBF16, 1, 4096, 0},
      {"add_rms_norm", kBF16, 7, 769, 0},
      {"add_rms_norm", kBF16, 64, 4096, 0},
      {"add_rms_norm", kF16, 5, 1000, 0},
      {"add_rms_norm", kBF16, 3, 2048, 0},
      {"add_rms_norm", kF16, 2, 8192, 0},
      // silu_mul: rows, inter
      {"silu_mul", kF32, 1, 1, 0},
      {"silu_mul", kF32, 7, 769, 0},
      {"silu_mul", kBF16, 3, 11008, 0},
      {"silu_mul", kBF16, 17, 769, 0},
      {"silu_mul", kF16, 2, 513, 0},
      // embedding: tokens, vocab, hidden
      {"embedding", kF32, 1, 7, 8},
      {"embedding", kF32, 5, 100, 33},
      {"embedding", kBF16, 37, 1001, 769},
      // rope_kv_write: tokens, kv heads (q = 3 x), head_dim
      {"rope_kv_write", kF32, 1, 1, 2},
      {"rope_kv_write", kF32, 13, 2, 64},
      {"rope_kv_write", kBF16, 7, 3, 128},
      {"rope_kv_write", kBF16, 5, 2, 64},
      {"rope_kv_write", kF16, 3, 1, 80},
      // attention: sequences, kv heads (q = 3 x), head_dim
      {"attention", kF32, 1, 1, 8},
      {"attention", kF32, 3, 2, 64},
      {"attention", kF32, 5, 1, 128},
      {"attention", kBF16, 4, 4, 24},
      {"attention", kBF16, 2, 2, 256},
      {"attention", kBF16, 3, 1, 128},
      {"attention", kF16, 2, 1, 64},
      // enough tokens (sequences x 1-5 new) for the CUDA kernel's several-heads-per-CTA launch
      {"attention", kBF16, 110, 2, 128},
      {"attention", kF16, 150, 1, 64},
      {"attention", kF32, 130, 2, 40},
      // attention_prefill: sequences, GQA group (2 kv heads), head_dim
      {"attention_prefill", kF32, 3, 4, 32},
      {"attention_prefill", kBF16, 3, 4, 128},
      {"attention_prefill", kBF16, 6, 1, 128},
      {"attention_prefill", kF16, 5, 8, 64},
      {"attention_prefill", kBF16, 4, 3, 64},
      {"attention_prefill", kF16, 7, 2, 128},
      {"attention_prefill", kBF16, 9, 5, 24},
      // Neighborhood attention (sizes as above, then window and dilation): windows 1, 7 and 256
      // with dilation 1, 2 and 4; head dims 64, 128 and 24 (the per-token kernel's generic
      // path); GQA groups 1, 4 and 8 (attention_prefill) and 3 (attention, decode rows only).
      {"attention_prefill", kBF16, 4, 1, 64, 1, 1},
      {"attention_prefill", kF16, 3, 4, 128, 1, 4},
      {"attention_prefill", kBF16, 5, 8, 64, 1, 2},
      {"attention_prefill", kBF16, 4, 8, 64, 7, 1},
      {"attention_prefill", kBF16, 3, 4, 128, 7, 2},
      {"attention_prefill", kF16, 4, 1, 64, 7, 4},
      {"attention_prefill", kBF16, 3, 8, 128, 256, 1},
      {"attention_prefill", kBF16, 4, 4, 64, 256, 2},
      {"attention_prefill", kF16, 3, 1, 128, 256, 4},
      {"attention_prefill", kBF16, 5, 4, 128, 0, 2},  // no window, dilated
      {"attention_prefill", kBF16, 3, 4, 24, 7, 2},
      {"attention_prefill", kBF16, 4, 8, 24, 1, 4},
      {"attention_prefill", kF32, 3, 1, 24, 256, 4},
      {"attention_prefill", kF32, 4, 4, 64, 7, 2},
      {"attention", kBF16, 40, 2, 128, 7, 2},
      {"attention", kF16, 6, 1, 24, 256, 4},
      {"attention", kF32, 5, 2, 64, 1, 4},
      {"attention", kBF16, 120, 2, 64, 0, 2},
      {"attention", kBF16, 90, 1, 128, 256, 1},
      // Long contexts (32k): split-KV over 64 runs, a 4k window over them, chunks continuing.
      {"attention", kBF16, 2, 2, 128, -1, 1, 32768},
      {"attention", kBF16, 3, 1, 128, 4096, 1, 32768},
      // The tensor-core decode kernel (16-bit, head_dim 64/128) at a 4k context: 64 ragged
      // sequences of 2k-4k keys, f16, 2 kv heads, split-KV over 32 runs; and dilated.
      {"attention", kF16, 64, 2, 64, 0, 1, 4096},
      {"attention", kBF16, 9, 4, 128, 300, 3, 4096},
      {"attention_prefill", kBF16, 2, 4, 128, 0, 1, 32768},
      // The tensor-core kernels' other head dims (decode and mma.sync prefill: 80, 96, 256).
      {"attention", kBF16, 7, 2, 80},
      {"attention", kF16, 5, 1, 96, 7, 2},
      {"attention", kBF16, 4, 2, 256, 0, 1, 4096},
      {"attention_prefill", kBF16, 4, 4, 80},
      {"attention_prefill", kF16, 3, 8, 96, 7, 2},
      {"attention_prefill", kBF16, 3, 1, 256, 256, 1},
      {"attention_prefill", kF16, 4, 2, 256},
      // top_k: tokens, experts, k
      {"top_k", kF32, 1, 2, 1},
      {"top_k", kF32, 37, 8, 2},
      {"top_k", kBF16, 101, 60, 6},
      // gather_scatter: src rows, gathered rows, cols
      {"gather_scatter", kF32, 1, 1, 5},
      {"gather_scatter", kF32, 19, 7, 769},
      {"gather_scatter", kBF16, 40, 19, 4096},
      // moe_combine: tokens, k, hidden
      {"moe_combine", kF32, 5, 2, 17},
      {"moe_combine", kBF16, 33, 2, 4096},
      {"moe_combine", kBF16, 7, 6, 769},
      // moe_permute: tokens, experts, k (the routing follows tokens % 3; see RoutingFor)
      {"moe_permute", kF32, 1, 8, 2},
      {"moe_permute", kF32, 13, 8, 2},
      {"moe_permute", kF32, 12, 8, 2},
      {"moe_permute", kF32, 1000, 8, 2},
      {"moe_permute", kBF16, 37, 60, 6},
      {"moe_permute", kBF16, 301, 256, 8},
      {"moe_permute", kBF16, 5, 3, 1},
      // grouped_linear: tokens (x 2 pairs, 8 experts), out, in
      {"grouped_linear", kF32, 1, 5, 3},
      {"grouped_linear", kF32, 13, 37, 769},
      {"grouped_linear", kF32, 300, 70, 96},
      {"grouped_linear", kBF16, 1, 37, 769},
      {"grouped_linear", kBF16, 13, 37, 769},
      {"grouped_linear", kBF16, 12, 37, 769},
      {"grouped_linear", kBF16, 2, 64, 128},
      {"grouped_linear", kBF16, 300, 70, 96},
      {"grouped_linear", kBF16, 200, 130, 4096},
      {"grouped_linear", kF16, 14, 33, 65},
      {"grouped_linear", kF16, 7, 37, 769},
      // random_fill: rows, cols
      {"random_fill", kF32, 3, 1001, 0},
      {"random_fill", kBF16, 17, 4097, 0},
      {"random_fill", kF16, 2, 33, 0},
      // convert: rows, cols
      {"convert", kF32, 3, 769, 0},
      {"convert", kBF16, 5, 33, 0},
      {"convert", kF16, 2, 1000, 0},
  };
  return cases;
}

CaseResult RunCase(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  if (c.op == "linear") return Linear(be, c, rng);
  if (c.op == "add_rms_norm") return AddRmsNorm(be, c, rng);
  if (c.op == "silu_mul") return SiluMul(be, c, rng);
  if (c.op == "linear_silu_mul") return LinearSiluMul(be, c, rng);
  if (c.op == "embedding") return Embedding(be, c, rng);
  if (c.op == "rope_kv_write") return RopeKvWrite(be, c, rng);
  if (c.op == "attention" || c.op == "attention_prefill") return Attention(be, c, rng);
  if (c.op == "top_k") return TopK(be, c, rng);
  if (c.op == "gather_scatter") return GatherScatter(be, c, rng);
  if (c.op == "moe_combine") return MoeCombine(be, c, rng);
  if (c.op == "moe_permute") return MoePermute(be, c, rng);
  if (c.op == "grouped_linear") return GroupedLinear(be, c, rng);
  if (c.op == "random_fill") return RandomFill(be, c, rng);
  if (c.op == "convert") return Convert(be, c, rng);
  FAIL("unknown op in the parity table: " << c.op);
  return {};
}

std::string Compare(const std::vector<float>& got, const std::vector<double>& want, DType dtype,
                    double ulps, double atol) {
  if (got.size() != want.size()) {
    return "size " + std::to_string(got.size()) + " != " + std::to_string(want.size());
  }
  std::ostringstream out;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = atol + ulps * Ulp(dtype, want[i]);
    // Equal values pass (infinities too); NaN never does.
    if (!(double(got[i]) == want[i] || std::fabs(double(got[i]) - want[i]) <= tol)) {
      if (++bad <= 5) {
        out << "[" << i << "] got " << got[i] << " want " << want[i] << " (tol " << tol << "); ";
      }
    }
  }
  if (bad > 0) out << bad << " of " << got.size() << " elements differ";
  return out.str();
}

std::string Describe(const OpCase& c) {
  std::string out = c.op + " " + kernels::DTypeName(c.dtype) + " [" + std::to_string(c.d0) +
                    ", " + std::to_string(c.d1) + ", " + std::to_string(c.d2) + "]";
  if (c.window >= 0) out += " window " + std::to_string(c.window);
  if (c.dilation != 1) out += " dilation " + std::to_string(c.dilation);
  return out;
}

}  // namespace arbor::testing
