#include "tests/kernels/op_runner.h"

#include <cmath>

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
