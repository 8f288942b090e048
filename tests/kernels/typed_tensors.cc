#include "tests/kernels/typed_tensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace arbor::testing {

using kernels::Backend;
using kernels::DeviceBuffer;
using kernels::DType;

HostTensor RandomTensor(std::mt19937_64& rng, DType dtype, int64_t rows, int64_t cols, float lo,
                        float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  HostTensor t{dtype, rows, cols, std::vector<float>(size_t(rows * cols))};
  for (float& x : t.v) x = kernels::RoundTo(dtype, dist(rng));
  return t;
}

absl::StatusOr<DeviceBuffer> UploadBytes(Backend& be, const void* data, size_t bytes) {
  auto buf = be.Allocate(std::max<size_t>(bytes, 1));
  if (!buf.ok()) return buf.status();
  if (bytes > 0) {
    if (auto s = be.CopyToDevice(buf->data(), data, bytes, be.default_stream()); !s.ok()) return s;
  }
  // Finished before it is handed out: tests also launch kernels on other streams (the legacy
  // one), which the backend's non-blocking stream does not order against.
  if (auto s = be.default_stream().Synchronize(); !s.ok()) return s;
  return buf;
}

absl::StatusOr<DeviceBuffer> UploadInts(Backend& be, const std::vector<int32_t>& v) {
  return UploadBytes(be, v.data(), v.size() * sizeof(int32_t));
}

absl::StatusOr<DeviceBuffer> UploadFloats(Backend& be, const std::vector<float>& v) {
  return UploadBytes(be, v.data(), v.size() * sizeof(float));
}

absl::StatusOr<std::vector<uint8_t>> DownloadBytes(Backend& be, const void* data, size_t bytes) {
  std::vector<uint8_t> out(bytes);
  if (auto s = be.CopyToHost(out.data(), data, bytes, be.default_stream()); !s.ok()) return s;
  if (auto s = be.default_stream().Synchronize(); !s.ok()) return s;
  return out;
}

absl::StatusOr<DeviceTensor> Poisoned(Backend& be, DType dtype, int64_t rows, int64_t cols,
                                      int64_t pad) {
  const size_t bytes = size_t(rows * (cols + pad)) * kernels::DTypeSize(dtype);
  auto buf = be.Allocate(std::max<size_t>(bytes, 1));
  if (!buf.ok()) return buf.status();
  if (auto s = be.Fill(buf->data(), 0xFF, bytes, be.default_stream()); !s.ok()) return s;
  if (auto s = be.default_stream().Synchronize(); !s.ok()) return s;  // as UploadBytes
  DeviceTensor out;
  out.view = kernels::Tensor{buf->data(), dtype, rows, cols, cols + pad};
  out.buffer = std::move(*buf);
  return out;
}

absl::StatusOr<DeviceTensor> Upload(Backend& be, const HostTensor& t, int64_t pad) {
  // Padding columns are poisoned: an op that reads past its columns sees NaN.
  const int64_t stride = t.cols + pad;
  const size_t elem = kernels::DTypeSize(t.dtype);
  std::vector<uint8_t> bytes(size_t(t.rows * stride) * elem, 0xFF);
  for (int64_t r = 0; r < t.rows; ++r) {
    for (int64_t c = 0; c < t.cols; ++c) {
      kernels::StoreFromFloat(bytes.data(), t.dtype, r * stride + c, t.at(r, c));
    }
  }
  auto buf = UploadBytes(be, bytes.data(), bytes.size());
  if (!buf.ok()) return buf.status();
  DeviceTensor out;
  out.view = kernels::Tensor{buf->data(), t.dtype, t.rows, t.cols, stride};
  out.buffer = std::move(*buf);
  return out;
}

absl::StatusOr<HostTensor> Download(Backend& be, const kernels::Tensor& t) {
  const size_t bytes = size_t(t.rows * t.stride) * kernels::DTypeSize(t.dtype);
  auto raw = DownloadBytes(be, t.data, bytes);
  if (!raw.ok()) return raw.status();
  HostTensor out{t.dtype, t.rows, t.cols, std::vector<float>(size_t(t.rows * t.cols))};
  for (int64_t r = 0; r < t.rows; ++r) {
    for (int64_t c = 0; c < t.cols; ++c) {
      out.v[size_t(r * t.cols + c)] = kernels::LoadAsFloat(raw->data(), t.dtype, r * t.stride + c);
    }
  }
  return out;
}

double Ulp(DType dtype, double x) {
  const int bits = dtype == DType::kBF16 ? 8 : dtype == DType::kF16 ? 11 : 24;
  const double ax = std::max(std::fabs(x), dtype == DType::kF16 ? 6.103515625e-05 : 1e-30);
  return std::ldexp(1.0, std::ilogb(ax) - (bits - 1));
}

}  // namespace arbor::testing
