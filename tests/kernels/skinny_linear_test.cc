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

TEST_CASE("SkinnyTilingFor names a real tiling for the decode shapes", "[kernels]") {
  for (const int64_t k : {int64_t(8), int64_t(4096), int64_t(8192), int64_t(14336)}) {
    const kernels::SkinnyTiling t = kernels::SkinnyTilingFor(k);
    CHECK(t != kernels::SkinnyTiling::kAuto);
    CHECK(std::string(kernels::SkinnyTilingName(t)) != "?");
  }
}

}  // namespace
}  // namespace arbor::testing
