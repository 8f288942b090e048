#include "tests/kernels/op_runner.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace arbor::testing {
namespace {

using kernels::Backend;
using kernels::DeviceBuffer;

absl::StatusOr<DeviceBuffer> Upload(Backend& be, const std::vector<float>& host) {
  auto buf = be.Allocate(host.size() * sizeof(float));
  if (!buf.ok()) return buf.status();
  if (auto s = be.CopyToDevice(buf->data(), host.data(), host.size() * sizeof(float),
                               be.default_stream());
      !s.ok()) {
    return s;
  }
  return buf;
}

absl::StatusOr<DeviceBuffer> UploadInts(Backend& be, const std::vector<int32_t>& host) {
  auto buf = be.Allocate(std::max<size_t>(1, host.size()) * sizeof(int32_t));
  if (!buf.ok()) return buf.status();
  if (auto s = be.CopyToDevice(buf->data(), host.data(), host.size() * sizeof(int32_t),
                               be.default_stream());
      !s.ok()) {
    return s;
  }
  return buf;
}

absl::StatusOr<DeviceBuffer> Poisoned(Backend& be, size_t n) {
  auto buf = be.Allocate(n * sizeof(float));
  if (!buf.ok()) return buf.status();
  if (auto s = be.Fill(buf->data(), 0xFF, n * sizeof(float), be.default_stream()); !s.ok()) {
    return s;
  }
  return buf;
}

absl::StatusOr<std::vector<float>> Download(Backend& be, const DeviceBuffer& buf, size_t n) {
  std::vector<float> host(n);
  if (auto s = be.CopyToHost(host.data(), buf.data(), n * sizeof(float), be.default_stream());
      !s.ok()) {
    return s;
  }
  if (auto s = be.default_stream().Synchronize(); !s.ok()) return s;
  return host;
}

#define ASSIGN_OR_RETURN_T(lhs, expr)           \
  auto lhs##_or = (expr);                       \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto lhs = std::move(*lhs##_or)

}  // namespace

absl::StatusOr<std::vector<float>> RunRmsNorm(Backend& be, const std::vector<float>& x,
                                              const std::vector<float>& w, int64_t rows,
                                              int64_t cols, float eps) {
  ASSIGN_OR_RETURN_T(dx, Upload(be, x));
  ASSIGN_OR_RETURN_T(dw, Upload(be, w));
  ASSIGN_OR_RETURN_T(dy, Poisoned(be, x.size()));
  if (auto s = be.RmsNorm({dx.as<float>(), dw.as<float>(), dy.as<float>(), rows, cols, eps},
                          be.default_stream());
      !s.ok()) {
    return s;
  }
  return Download(be, dy, x.size());
}

absl::StatusOr<std::vector<float>> RunSiluMul(Backend& be, const std::vector<float>& gate,
                                              const std::vector<float>& up) {
  ASSIGN_OR_RETURN_T(dg, Upload(be, gate));
  ASSIGN_OR_RETURN_T(du, Upload(be, up));
  ASSIGN_OR_RETURN_T(dout, Poisoned(be, gate.size()));
  if (auto s = be.SiluMul({dg.as<float>(), du.as<float>(), dout.as<float>(), int64_t(gate.size())},
                          be.default_stream());
      !s.ok()) {
    return s;
  }
  return Download(be, dout, gate.size());
}

absl::StatusOr<std::vector<float>> RunAxpy(Backend& be, const std::vector<float>& x,
                                           const std::vector<float>& y, float alpha) {
  ASSIGN_OR_RETURN_T(dx, Upload(be, x));
  ASSIGN_OR_RETURN_T(dy, Upload(be, y));
  if (auto s =
          be.Axpy({dx.as<float>(), dy.as<float>(), int64_t(x.size()), alpha}, be.default_stream());
      !s.ok()) {
    return s;
  }
  return Download(be, dy, y.size());
}

absl::StatusOr<std::vector<float>> RunGemm(Backend& be, const std::vector<float>& a,
                                           const std::vector<float>& b, int64_t m, int64_t n,
                                           int64_t k) {
  ASSIGN_OR_RETURN_T(da, Upload(be, a));
  ASSIGN_OR_RETURN_T(db, Upload(be, b));
  ASSIGN_OR_RETURN_T(dc, Poisoned(be, size_t(m * n)));
  if (auto s = be.Gemm({da.as<float>(), db.as<float>(), dc.as<float>(), m, n, k, 0.0f},
                       be.default_stream());
      !s.ok()) {
    return s;
  }
  return Download(be, dc, size_t(m * n));
}

absl::StatusOr<std::vector<float>> RunEmbedding(Backend& be, const std::vector<int32_t>& ids,
                                                const std::vector<float>& table, int64_t hidden) {
  ASSIGN_OR_RETURN_T(di, UploadInts(be, ids));
  ASSIGN_OR_RETURN_T(dt, Upload(be, table));
  const size_t n = ids.size() * size_t(hidden);
  ASSIGN_OR_RETURN_T(dout, Poisoned(be, n));
  if (auto s = be.Embedding({di.as<int32_t>(), dt.as<float>(), dout.as<float>(),
                             int64_t(ids.size()), int64_t(table.size()) / hidden, hidden},
                            be.default_stream());
      !s.ok()) {
    return s;
  }
  return Download(be, dout, n);
}

absl::StatusOr<std::vector<float>> RunBiasAdd(Backend& be, const std::vector<float>& x,
                                              const std::vector<float>& bias) {
  ASSIGN_OR_RETURN_T(dx, Upload(be, x));
  ASSIGN_OR_RETURN_T(db, Upload(be, bias));
  const int64_t cols = int64_t(bias.size());
  if (auto s = be.BiasAdd({dx.as<float>(), db.as<float>(), int64_t(x.size()) / cols, cols},
                          be.default_stream());
      !s.ok()) {
    return s;
  }
  return Download(be, dx, x.size());
}

absl::StatusOr<std::vector<float>> RunRope(Backend& be, const std::vector<float>& q,
                                           const std::vector<float>& k,
                                           const std::vector<int32_t>& positions,
                                           const std::vector<float>& inv_freq, int64_t hq,
                                           int64_t hkv, int64_t d) {
  ASSIGN_OR_RETURN_T(dq, Upload(be, q));
  ASSIGN_OR_RETURN_T(dk, Upload(be, k));
  ASSIGN_OR_RETURN_T(dp, UploadInts(be, positions));
  ASSIGN_OR_RETURN_T(df, Upload(be, inv_freq));
  if (auto s = be.Rope({dq.as<float>(), dk.as<float>(), dp.as<int32_t>(), df.as<float>(),
                        int64_t(positions.size()), hq, hkv, d},
                       be.default_stream());
      !s.ok()) {
    return s;
  }
  ASSIGN_OR_RETURN_T(oq, Download(be, dq, q.size()));
  ASSIGN_OR_RETURN_T(ok, Download(be, dk, k.size()));
  oq.insert(oq.end(), ok.begin(), ok.end());
  return oq;
}

absl::StatusOr<std::vector<float>> RunPagedAttention(Backend& be, const PagedCase& c) {
  const int64_t kv_dim = c.hkv * c.d, seqs = int64_t(c.lengths.size());
  int64_t max_blocks = 1, total_blocks = 0;
  for (int64_t len : c.lengths) {
    const int64_t b = (len + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, b);
    total_blocks += b;
  }
  // Pages in shuffled order, with spare pages, so page ids are not positions.
  const int64_t num_pages = total_blocks + 3;
  std::vector<int32_t> pages(static_cast<size_t>(num_pages));
  for (int64_t i = 0; i < num_pages; ++i) pages[size_t(i)] = int32_t(i);
  std::shuffle(pages.begin(), pages.end(), std::mt19937_64(c.page_seed));
  std::vector<int32_t> tables(size_t(seqs * max_blocks), -1);
  std::vector<int32_t> slots, token_seq, positions;
  std::vector<float> k_rows, v_rows, q_rows;
  size_t next = 0;
  for (int64_t s = 0; s < seqs; ++s) {
    for (int64_t b = 0; b * c.block_size < c.lengths[size_t(s)]; ++b) {
      tables[size_t(s * max_blocks + b)] = pages[next++];
    }
    for (int64_t j = 0; j < c.lengths[size_t(s)]; ++j) {
      slots.push_back(tables[size_t(s * max_blocks + j / c.block_size)] * int32_t(c.block_size) +
                      int32_t(j % c.block_size));
    }
    k_rows.insert(k_rows.end(), c.k[size_t(s)].begin(), c.k[size_t(s)].end());
    v_rows.insert(v_rows.end(), c.v[size_t(s)].begin(), c.v[size_t(s)].end());
    q_rows.insert(q_rows.end(), c.q[size_t(s)].begin(), c.q[size_t(s)].end());
    for (int64_t j = c.lengths[size_t(s)] - c.new_tokens[size_t(s)]; j < c.lengths[size_t(s)];
         ++j) {
      token_seq.push_back(int32_t(s));
      positions.push_back(int32_t(j));
    }
  }
  const size_t page_elems = size_t(c.num_layers * 2 * c.block_size * kv_dim);
  ASSIGN_OR_RETURN_T(dpool, Poisoned(be, size_t(num_pages) * page_elems));
  ASSIGN_OR_RETURN_T(dk, Upload(be, k_rows));
  ASSIGN_OR_RETURN_T(dv, Upload(be, v_rows));
  ASSIGN_OR_RETURN_T(dq, Upload(be, q_rows));
  ASSIGN_OR_RETURN_T(dslots, UploadInts(be, slots));
  ASSIGN_OR_RETURN_T(dtables, UploadInts(be, tables));
  ASSIGN_OR_RETURN_T(dseq, UploadInts(be, token_seq));
  ASSIGN_OR_RETURN_T(dpos, UploadInts(be, positions));
  ASSIGN_OR_RETURN_T(dout, Poisoned(be, q_rows.size()));
  const kernels::PagedKv kv{dpool.as<float>(), c.block_size, c.num_layers, kv_dim, c.layer};
  if (auto s = be.KvWrite(
          {dk.as<float>(), dv.as<float>(), dslots.as<int32_t>(), kv, int64_t(slots.size())},
          be.default_stream());
      !s.ok()) {
    return s;
  }
  if (auto s = be.PagedAttention(
          {dq.as<float>(), dout.as<float>(), kv, dtables.as<int32_t>(), dseq.as<int32_t>(),
           dpos.as<int32_t>(), int64_t(token_seq.size()), seqs, max_blocks, c.hq, c.hkv, c.d,
           c.window, 1.0f / std::sqrt(float(c.d))},
          be.default_stream());
      !s.ok()) {
    return s;
  }
  return Download(be, dout, q_rows.size());
}

absl::StatusOr<std::vector<float>> RunTopKSoftmax(Backend& be, const std::vector<float>& logits,
                                                  int64_t experts, int64_t k) {
  const int64_t tokens = int64_t(logits.size()) / experts;
  ASSIGN_OR_RETURN_T(dl, Upload(be, logits));
  ASSIGN_OR_RETURN_T(dw, Poisoned(be, size_t(tokens * k)));
  ASSIGN_OR_RETURN_T(de, Poisoned(be, size_t(tokens * k)));
  if (auto s = be.TopKSoftmax(
          {dl.as<float>(), dw.as<float>(), de.as<int32_t>(), tokens, experts, k, true},
          be.default_stream());
      !s.ok()) {
    return s;
  }
  ASSIGN_OR_RETURN_T(w, Download(be, dw, size_t(tokens * k)));
  std::vector<int32_t> ids(size_t(tokens * k));
  if (auto s =
          be.CopyToHost(ids.data(), de.data(), ids.size() * sizeof(int32_t), be.default_stream());
      !s.ok()) {
    return s;
  }
  for (int32_t id : ids) w.push_back(float(id));
  return w;
}

absl::StatusOr<std::vector<float>> RunGatherScatter(Backend& be, const std::vector<float>& src,
                                                    const std::vector<int32_t>& index,
                                                    const std::vector<float>& scale, int64_t cols) {
  const int64_t rows = int64_t(src.size()) / cols;
  const int64_t n = int64_t(index.size());
  ASSIGN_OR_RETURN_T(ds, Upload(be, src));
  ASSIGN_OR_RETURN_T(di, UploadInts(be, index));
  ASSIGN_OR_RETURN_T(dsc, Upload(be, scale));
  ASSIGN_OR_RETURN_T(dg, Poisoned(be, size_t(n * cols)));
  if (auto s = be.GatherRows({ds.as<float>(), di.as<int32_t>(), dg.as<float>(), n, rows, cols},
                             be.default_stream());
      !s.ok()) {
    return s;
  }
  if (auto s = be.ScatterAddRows(
          {dg.as<float>(), di.as<int32_t>(), dsc.as<float>(), ds.as<float>(), n, rows, cols},
          be.default_stream());
      !s.ok()) {
    return s;
  }
  return Download(be, ds, src.size());
}

std::vector<double> RefEmbedding(const std::vector<int32_t>& ids, const std::vector<float>& table,
                                 int64_t hidden) {
  std::vector<double> out;
  for (int32_t id : ids) {
    for (int64_t c = 0; c < hidden; ++c) out.push_back(table[size_t(id * hidden + c)]);
  }
  return out;
}

std::vector<double> RefBiasAdd(const std::vector<float>& x, const std::vector<float>& bias) {
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = double(x[i]) + double(bias[i % bias.size()]);
  return out;
}

std::vector<double> RefRope(const std::vector<float>& q, const std::vector<float>& k,
                            const std::vector<int32_t>& positions,
                            const std::vector<float>& inv_freq, int64_t d) {
  std::vector<double> out;
  const int64_t half = d / 2;
  for (const auto* x : {&q, &k}) {
    const int64_t heads = int64_t(x->size()) / (int64_t(positions.size()) * d);
    for (size_t t = 0; t < positions.size(); ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* v = x->data() + (int64_t(t) * heads + h) * d;
        std::vector<double> r(static_cast<size_t>(d));
        for (int64_t i = 0; i < half; ++i) {
          const double angle = double(float(positions[t]) * inv_freq[size_t(i)]);
          r[size_t(i)] = v[i] * std::cos(angle) - v[i + half] * std::sin(angle);
          r[size_t(i + half)] = v[i + half] * std::cos(angle) + v[i] * std::sin(angle);
        }
        out.insert(out.end(), r.begin(), r.end());
      }
    }
  }
  return out;
}

std::vector<double> RefPagedAttention(const PagedCase& c) {
  std::vector<double> out;
  for (size_t s = 0; s < c.lengths.size(); ++s) {
    const auto& k = c.k[s];
    const auto& v = c.v[s];
    const auto& q = c.q[s];
    const int64_t len = c.lengths[s], fresh = c.new_tokens[s];
    for (int64_t t = 0; t < fresh; ++t) {
      const int64_t p = len - fresh + t;
      for (int64_t h = 0; h < c.hq; ++h) {
        const int64_t kh = h / (c.hq / c.hkv);
        std::vector<double> w;
        std::vector<int64_t> js;
        double mx = -INFINITY;
        for (int64_t j = 0; j <= p; ++j) {
          if (c.window > 0 && j <= p - c.window) continue;
          double dot = 0;
          for (int64_t e = 0; e < c.d; ++e) {
            dot +=
                double(q[size_t((t * c.hq + h) * c.d + e)]) * k[size_t((j * c.hkv + kh) * c.d + e)];
          }
          w.push_back(dot / std::sqrt(double(c.d)));
          js.push_back(j);
          mx = std::max(mx, w.back());
        }
        double sum = 0;
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (int64_t e = 0; e < c.d; ++e) {
          double acc = 0;
          for (size_t i = 0; i < js.size(); ++i) {
            acc += w[i] * v[size_t((js[i] * c.hkv + kh) * c.d + e)];
          }
          out.push_back(acc / sum);
        }
      }
    }
  }
  return out;
}

std::vector<double> RefTopKSoftmax(const std::vector<float>& logits, int64_t experts, int64_t k) {
  const int64_t tokens = int64_t(logits.size()) / experts;
  std::vector<double> weights, ids;
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int64_t> order(static_cast<size_t>(experts));
    for (int64_t e = 0; e < experts; ++e) order[size_t(e)] = e;
    const float* l = logits.data() + t * experts;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l[a] > l[b]; });
    double kept = 0;
    for (int64_t i = 0; i < k; ++i) kept += std::exp(double(l[order[size_t(i)]]));
    for (int64_t i = 0; i < k; ++i) {
      weights.push_back(std::exp(double(l[order[size_t(i)]])) / kept);
      ids.push_back(double(order[size_t(i)]));
    }
  }
  weights.insert(weights.end(), ids.begin(), ids.end());
  return weights;
}

std::vector<double> RefGatherScatter(const std::vector<float>& src,
                                     const std::vector<int32_t>& index,
                                     const std::vector<float>& scale, int64_t cols) {
  std::vector<double> out(src.begin(), src.end());
  for (size_t i = 0; i < index.size(); ++i) {
    for (int64_t c = 0; c < cols; ++c) {
      out[size_t(index[i] * cols + c)] += double(scale[i]) * src[size_t(index[i] * cols + c)];
    }
  }
  return out;
}

std::vector<double> RefRmsNorm(const std::vector<float>& x, const std::vector<float>& w,
                               int64_t rows, int64_t cols, float eps) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < cols; ++c) ss += double(x[r * cols + c]) * x[r * cols + c];
    const double inv = 1.0 / std::sqrt(ss / double(cols) + double(eps));
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = double(x[r * cols + c]) * inv * w[c];
  }
  return y;
}

std::vector<double> RefSiluMul(const std::vector<float>& gate, const std::vector<float>& up) {
  std::vector<double> out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    out[i] = g / (1.0 + std::exp(-g)) * double(up[i]);
  }
  return out;
}

std::vector<double> RefAxpy(const std::vector<float>& x, const std::vector<float>& y, float alpha) {
  std::vector<double> out(y.size());
  for (size_t i = 0; i < y.size(); ++i) out[i] = double(y[i]) + double(alpha) * double(x[i]);
  return out;
}

std::vector<double> RefGemm(const std::vector<float>& a, const std::vector<float>& b, int64_t m,
                            int64_t n, int64_t k) {
  std::vector<double> c(size_t(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < k; ++p) acc += double(a[i * k + p]) * double(b[j * k + p]);
      c[i * n + j] = acc;
    }
  }
  return c;
}

}  // namespace arbor::testing
