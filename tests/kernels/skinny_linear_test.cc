// Every tiling of the few-row Linear (kernels/cuda/skinny_linear.cu), not only the one
// SkinnyTilingFor picks for a shape, against a host reference in double: fresh random inputs
// of odd sizes (n not a multiple of any tiling's columns, k from one 16-byte step to an 8B
// model's down projection), bias and accumulate, outputs poisoned (NaN) first so an element
// that is never written fails.
#include <catch2/catch.hpp>
#include <cmath>
#include <cuda_runtime_api.h>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/launch.h"
#include "tests/kernels/typed_tensors.h"

namespace arbor::testing {
namespace {

using kernels::DType;

struct Shape {
  int64_t m, n, k;
  DType in, out;
  bool bias, accumulate;
};

TEST_CASE("every skinny Linear tiling matches the host reference", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  std::mt19937_64 rng(Catch::rngSeed() + 7);
  const std::vector<Shape> shapes = {
      {1, 1, 8, DType::kBF16, DType::kBF16, false, false},
      {1, 37, 136, DType::kBF16, DType::kBF16, true, false},
      {2, 1001, 4104, DType::kBF16, DType::kF32, false, true},
      {3, 257, 264, DType::kF16, DType::kF16, true, true},
      {4, 4099, 520, DType::kBF16, DType::kBF16, false, false},
      {1, 515, 14336, DType::kBF16, DType::kBF16, false, false},
      {4, 9, 2056, DType::kF16, DType::kF32, true, false},
  };
  for (const Shape& sh : shapes) {
    const HostTensor x = RandomTensor(rng, sh.in, sh.m, sh.k);
    const HostTensor w = RandomTensor(rng, sh.in, sh.n, sh.k);
    const HostTensor bias = RandomTensor(rng, sh.in, 1, sh.n);
    const HostTensor y0 = RandomTensor(rng, sh.out, sh.m, sh.n);
    // x with a padded stride, as a slice of a fused activation buffer is.
    auto dx = Upload(be, x, 8);
    auto dw = Upload(be, w);
    auto db = Upload(be, bias);
    REQUIRE(dx.ok());
    REQUIRE(dw.ok());
    REQUIRE(db.ok());
    for (const kernels::SkinnyTiling tiling : kernels::kSkinnyTilings) {
      INFO("tiling " << kernels::SkinnyTilingName(tiling) << ", m " << sh.m << ", n " << sh.n
                     << ", k " << sh.k << ", bias " << sh.bias << ", accumulate "
                     << sh.accumulate);
      auto dy = sh.accumulate ? Upload(be, y0) : Poisoned(be, sh.out, sh.m, sh.n);
      REQUIRE(dy.ok());
      kernels::LinearArgs args{dx->view, dw->view, sh.bias ? db->view.data : nullptr, dy->view,
                               sh.accumulate};
      REQUIRE(kernels::SkinnyLinearFits(args));
      REQUIRE(kernels::LaunchSkinnyLinear(args, nullptr, tiling) == cudaSuccess);
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      auto y = Download(be, dy->view);
      REQUIRE(y.ok());
      int bad = 0;
      for (int64_t i = 0; i < sh.m; ++i) {
        for (int64_t c = 0; c < sh.n; ++c) {
          double ref = 0, mag = 0;
          for (int64_t e = 0; e < sh.k; ++e) {
            ref += double(x.at(i, e)) * double(w.at(c, e));
            mag += std::fabs(double(x.at(i, e)) * double(w.at(c, e)));
          }
          if (sh.bias) ref += bias.at(0, c);
          if (sh.accumulate) ref += y0.at(i, c);
          // fp32 accumulation over k, then one rounding to the output dtype.
          const double out_eps = sh.out == DType::kF32 ? 0.0 : sh.out == DType::kF16 ? 1e-3 : 8e-3;
          const double tol = 1e-5 * mag + out_eps * std::fabs(ref) + 1e-6;
          const float got = y->at(i, c);
          if (!(std::fabs(double(got) - ref) <= tol)) {  // NaN fails
            if (++bad <= 3) FAIL_CHECK("y[" << i << ", " << c << "] = " << got << ", want " << ref);
          }
        }
      }
      CHECK(bad == 0);
    }
  }
  REQUIRE(be.Health().ok());
}

// The SwiGLU epilogue: every CTA tiling's fused gate_up + SiLU equals that tiling's plain
// Linear into gate_up followed by the SiluMul kernel, bit for bit (the same sums in the same
// order, the same roundings), on odd shapes; the plain path is held to the host reference above
// and by ops_parity_test's linear_silu_mul rows.
TEST_CASE("the skinny SwiGLU epilogue equals Linear then SiluMul bit for bit", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  std::mt19937_64 rng(Catch::rngSeed() + 11);
  struct GluShape {
    int64_t m, inter, k;
    DType dtype;
  };
  const std::vector<GluShape> shapes = {{1, 1, 8, DType::kBF16},      {1, 37, 136, DType::kBF16},
                                        {2, 1001, 4104, DType::kF16}, {3, 257, 264, DType::kBF16},
                                        {4, 4099, 520, DType::kBF16}, {1, 515, 14336, DType::kF16}};
  for (const GluShape& sh : shapes) {
    const HostTensor x = RandomTensor(rng, sh.dtype, sh.m, sh.k);
    const HostTensor w = RandomTensor(rng, sh.dtype, 2 * sh.inter, sh.k);
    auto dx = Upload(be, x, 8);
    auto dw = Upload(be, w);
    REQUIRE(dx.ok());
    REQUIRE(dw.ok());
    for (const kernels::SkinnyTiling tiling : kernels::kSkinnyTilings) {
      if (tiling == kernels::SkinnyTiling::kWarpRows) continue;  // no epilogue there
      INFO("tiling " << kernels::SkinnyTilingName(tiling) << ", m " << sh.m << ", inter "
                     << sh.inter << ", k " << sh.k);
      auto gate_up = Poisoned(be, sh.dtype, sh.m, 2 * sh.inter);
      auto unfused = Poisoned(be, sh.dtype, sh.m, sh.inter);
      auto fused = Poisoned(be, sh.dtype, sh.m, sh.inter);
      auto untouched = Poisoned(be, sh.dtype, sh.m, 2 * sh.inter);
      REQUIRE(gate_up.ok());
      REQUIRE(unfused.ok());
      REQUIRE(fused.ok());
      REQUIRE(untouched.ok());
      const kernels::LinearArgs plain{dx->view, dw->view, nullptr, gate_up->view};
      REQUIRE(kernels::LaunchSkinnyLinear(plain, nullptr, tiling) == cudaSuccess);
      REQUIRE(kernels::LaunchSiluMul({gate_up->view, unfused->view}, nullptr) == cudaSuccess);
      kernels::LinearArgs glu{dx->view, dw->view, nullptr, fused->view};
      glu.epilogue = kernels::LinearEpilogue::kSiluMul;
      glu.scratch = untouched->view;
      REQUIRE(kernels::SkinnyLinearFits(glu));
      REQUIRE(kernels::LaunchSkinnyLinear(glu, nullptr, tiling) == cudaSuccess);
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      auto want = Download(be, unfused->view);
      auto got = Download(be, fused->view);
      auto scratch = Download(be, untouched->view);
      REQUIRE(want.ok());
      REQUIRE(got.ok());
      REQUIRE(scratch.ok());
      int bad = 0;
      for (size_t e = 0; e < want->v.size(); ++e) {
        const float a = got->v[e], b = want->v[e];
        // Same bits; NaN (an unwritten element, or a NaN from the plain path) never passes.
        if (!(a == b)) {
          if (++bad <= 3) FAIL_CHECK("y[" << e << "] = " << a << ", Linear + SiluMul gives " << b);
        }
      }
      CHECK(bad == 0);
      // The fused kernel never writes the scratch (still all NaN).
      int written = 0;
      for (const float v : scratch->v) written += v == v;
      CHECK(written == 0);
    }
  }
  REQUIRE(be.Health().ok());
}

// The RoPE epilogue: every CTA tiling's fused qkv projection + RoPE + KV write equals that
// tiling's plain Linear followed by the RopeKvWrite kernel, bit for bit, in the qkv buffer and in
// every byte of the KV pages: odd head dims, GQA, a bias (Qwen2), a padding row (slot -1), a KV
// cache of another dtype, positions up to 32k. The unfused ops are held to the CPU reference by
// ops_parity_test (linear and rope_kv_write rows).
TEST_CASE("the skinny RoPE epilogue equals Linear then RopeKvWrite bit for bit", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  std::mt19937_64 rng(Catch::rngSeed() + 13);
  struct RopeShape {
    int64_t m, q_heads, kv_heads, head_dim, k;
    DType dtype, kv_dtype;
    bool bias;
  };
  const std::vector<RopeShape> shapes = {
      {1, 32, 8, 128, 4096, DType::kBF16, DType::kBF16, false},
      {4, 4, 4, 64, 264, DType::kF16, DType::kF16, true},
      {3, 6, 2, 24, 136, DType::kBF16, DType::kF32, true},
      {2, 3, 1, 2, 8, DType::kBF16, DType::kBF16, false},
      {4, 14, 2, 64, 520, DType::kBF16, DType::kBF16, true},
  };
  for (const RopeShape& sh : shapes) {
    const int64_t n = (sh.q_heads + 2 * sh.kv_heads) * sh.head_dim;
    const int64_t kv_dim = sh.kv_heads * sh.head_dim, half = sh.head_dim / 2;
    const HostTensor x = RandomTensor(rng, sh.dtype, sh.m, sh.k);
    const HostTensor w = RandomTensor(rng, sh.dtype, n, sh.k);
    const HostTensor bias = RandomTensor(rng, sh.dtype, 1, n);
    auto dx = Upload(be, x, 8);
    auto dw = Upload(be, w);
    auto db = Upload(be, bias);
    REQUIRE(dx.ok());
    REQUIRE(dw.ok());
    REQUIRE(db.ok());
    // Pages of 16 tokens, 2 layers (the op writes layer 1), 3 pages; row 1 is padding.
    const int64_t block = 16, layers = 2, pages = 3;
    std::vector<int32_t> slots, positions;
    for (int64_t i = 0; i < sh.m; ++i) {
      slots.push_back(i == 1 ? -1 : int32_t((i * 37 + 5) % (pages * block)));
      positions.push_back(int32_t((i * 9973 + 11) % 32768));
    }
    std::vector<float> inv_freq;
    for (int64_t i = 0; i < half; ++i) {
      inv_freq.push_back(float(1.0 / std::pow(500000.0, double(2 * i) / double(sh.head_dim))));
    }
    auto dslots = UploadInts(be, slots);
    auto dpos = UploadInts(be, positions);
    auto dfreq = UploadFloats(be, inv_freq);
    REQUIRE(dslots.ok());
    REQUIRE(dpos.ok());
    REQUIRE(dfreq.ok());
    const size_t pool_bytes =
        size_t(pages * layers * 2 * block * kv_dim) * kernels::DTypeSize(sh.kv_dtype);
    for (const kernels::SkinnyTiling tiling : kernels::kSkinnyTilings) {
      if (tiling == kernels::SkinnyTiling::kWarpRows) continue;  // no epilogue there
      INFO("tiling " << kernels::SkinnyTilingName(tiling) << ", m " << sh.m << ", heads "
                     << sh.q_heads << "/" << sh.kv_heads << ", head_dim " << sh.head_dim
                     << ", k " << sh.k << ", bias " << sh.bias);
      std::vector<std::vector<uint8_t>> qkv_bytes, pool_bytes_out;
      for (const bool fused : {false, true}) {
        auto qkv = Poisoned(be, sh.dtype, sh.m, n);
        auto pool = be.Allocate(pool_bytes);
        REQUIRE(qkv.ok());
        REQUIRE(pool.ok());
        REQUIRE(be.Fill(pool->data(), 0xFF, pool_bytes, be.default_stream()).ok());
        // The pool's fill ran on the backend's (non-blocking) stream; these launches use the
        // legacy stream: wait for it first (Upload and Poisoned wait for their own).
        REQUIRE(be.default_stream().Synchronize().ok());
        kernels::RopeKvWriteArgs rope;
        rope.qkv = qkv->view;
        rope.positions = dpos->as<int32_t>();
        rope.inv_freq = dfreq->as<float>();
        rope.attention_factor = sh.bias ? 0.875f : 1.0f;
        rope.slots = dslots->as<int32_t>();
        rope.kv = {pool->data(), sh.kv_dtype, block, layers, kv_dim, 1};
        rope.num_q_heads = sh.q_heads;
        rope.num_kv_heads = sh.kv_heads;
        rope.head_dim = sh.head_dim;
        kernels::LinearArgs args{dx->view, dw->view, sh.bias ? db->view.data : nullptr,
                                 qkv->view};
        if (fused) {
          args.epilogue = kernels::LinearEpilogue::kRopeKvWrite;
          args.rope = rope;
          REQUIRE(kernels::SkinnyLinearFits(args));
          REQUIRE(kernels::LaunchSkinnyLinear(args, nullptr, tiling) == cudaSuccess);
        } else {
          REQUIRE(kernels::LaunchSkinnyLinear(args, nullptr, tiling) == cudaSuccess);
          REQUIRE(kernels::LaunchRopeKvWrite(rope, nullptr) == cudaSuccess);
        }
        REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
        auto q = DownloadBytes(be, qkv->view.data, size_t(sh.m * n) * kernels::DTypeSize(sh.dtype));
        auto p = DownloadBytes(be, pool->data(), pool_bytes);
        REQUIRE(q.ok());
        REQUIRE(p.ok());
        qkv_bytes.push_back(*q);
        pool_bytes_out.push_back(*p);
      }
      // Poisoned qkv (NaN) would compare equal as bytes: the unfused path writes every element
      // (it is held to the reference elsewhere), so equal bytes mean the fused one did too.
      CHECK(qkv_bytes[0] == qkv_bytes[1]);
      CHECK(pool_bytes_out[0] == pool_bytes_out[1]);
    }
  }
  REQUIRE(be.Health().ok());
}

TEST_CASE("SkinnyTilingFor names a real tiling for the decode shapes", "[kernels]") {
  for (const int64_t k : {int64_t(8), int64_t(4096), int64_t(8192), int64_t(14336)}) {
    const kernels::SkinnyTiling t = kernels::SkinnyTilingFor(k);
    CHECK(t != kernels::SkinnyTiling::kAuto);
    CHECK(std::string(kernels::SkinnyTilingName(t)) != "?");
  }
}

}  // namespace
}  // namespace arbor::testing
