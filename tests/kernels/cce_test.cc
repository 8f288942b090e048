// TargetLogprobs (kernels/cce.h): the CPU reference against a brute-force log-softmax of the
// full logits in double, on fresh random odd sizes (bias, softcap, top-k with exact ties across
// split boundaries, unscored rows, ranks: 1 + the ids strictly above the target, exact ties not
// counted); argument checks; the workspace bound. On a GPU ([gpu]): the
// CUDA op against the CPU reference (tensor-core path in bf16/f16, the plain path in f32 and
// for strides it cannot load), outputs poisoned with NaN first, the same bits on a second run
// and for a row scored alone (the vocab splits depend on the vocabulary only). On a Hopper, the
// same for the wgmma pass 1 (kernels/cuda/cce_sm90.cu) forced, at its edges (rows past a
// 128-row block, vocab past a 256-id tile and a split, hidden not a multiple of 64, targets in
// the last partial tile), and against the mma.sync kernel.
#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cce.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/launch.h"
#include "tests/kernels/typed_tensors.h"

namespace arbor::testing {
namespace {

using kernels::Backend;
using kernels::DType;

struct Case {
  int64_t n, vocab, hidden;
  DType dtype;
  bool bias = false;
  float softcap = 0.0f;
  int64_t top_k = 0;
  int64_t pad = 0;  // extra columns of x's stride
};

std::string Describe(const Case& c) {
  return "n " + std::to_string(c.n) + ", vocab " + std::to_string(c.vocab) + ", hidden " +
         std::to_string(c.hidden) + ", " + kernels::DTypeName(c.dtype) + ", bias " +
         std::to_string(c.bias) + ", softcap " + std::to_string(c.softcap) + ", top_k " +
         std::to_string(c.top_k) + ", pad " + std::to_string(c.pad);
}

// Ids whose LM-head row is zero and whose bias is kTieBias: exactly equal logits, the largest
// of the row when there is a bias, on both sides of split boundaries (kCceSplitVocab = 2048).
constexpr float kTieBias = 4.0f;
std::vector<int64_t> TieIds(int64_t vocab) {
  std::vector<int64_t> ids;
  for (int64_t v : {int64_t(3), int64_t(2047), int64_t(2048), int64_t(4100), vocab - 1}) {
    if (v < vocab && std::find(ids.begin(), ids.end(), v) == ids.end()) ids.push_back(v);
  }
  return ids;
}

struct Inputs {
  HostTensor x, w, bias;
  std::vector<int32_t> targets;
};

Inputs Draw(std::mt19937_64& rng, const Case& c) {
  Inputs in;
  // Hidden states of a normed layer and LM-head weights of a trained model's magnitude.
  in.x = RandomTensor(rng, c.dtype, c.n, c.hidden, -1.0f, 1.0f);
  const float ws = 2.0f / std::sqrt(float(c.hidden));
  in.w = RandomTensor(rng, c.dtype, c.vocab, c.hidden, -ws, ws);
  in.bias = RandomTensor(rng, c.dtype, 1, c.vocab, -0.5f, 0.5f);
  if (c.bias) {
    for (int64_t v : TieIds(c.vocab)) {
      for (int64_t e = 0; e < c.hidden; ++e) in.w.v[size_t(v * c.hidden + e)] = 0.0f;
      in.bias.v[size_t(v)] = kTieBias;
    }
  }
  std::uniform_int_distribution<int32_t> tok(0, int32_t(c.vocab - 1));
  for (int64_t i = 0; i < c.n; ++i) in.targets.push_back(tok(rng));
  if (c.n > 2) in.targets[1] = -1;  // an unscored row
  if (c.n > 3 && c.bias) in.targets[2] = int32_t(TieIds(c.vocab).back());
  return in;
}

struct Outputs {
  std::vector<float> logprobs, lse, top_logprobs;
  std::vector<int32_t> top_ids, ranks;
};

// The op on `be`, outputs poisoned (NaN, ids -1) first. A `kernel` other than kAuto (CUDA only)
// forces pass 1's tensor-core kernel through LaunchTargetLogprobs on the backend's stream.
Outputs Run(Backend& be, const Case& c, const Inputs& in,
            kernels::CceKernel kernel = kernels::CceKernel::kAuto) {
  auto x = Upload(be, in.x, c.pad);
  auto w = Upload(be, in.w);
  auto bias = Upload(be, in.bias);
  auto targets = UploadInts(be, in.targets);
  REQUIRE(x.ok());
  REQUIRE(w.ok());
  REQUIRE(bias.ok());
  REQUIRE(targets.ok());
  const size_t rows = size_t(c.n), top = size_t(c.n * std::max<int64_t>(c.top_k, 1));
  auto out = be.Allocate((3 * rows + 2 * top) * 4);
  const size_t ws_bytes = kernels::TargetLogprobsWorkspaceBytes(c.n, c.vocab, c.top_k);
  auto ws = be.Allocate(ws_bytes);
  REQUIRE(out.ok());
  REQUIRE(ws.ok());
  REQUIRE(be.Fill(out->data(), 0xFF, out->bytes(), be.default_stream()).ok());
  REQUIRE(be.Fill(ws->data(), 0xFF, ws->bytes(), be.default_stream()).ok());
  float* base = out->as<float>();
  kernels::TargetLogprobsArgs a;
  a.x = x->view;
  a.w = w->view;
  a.bias = c.bias ? bias->view.data : nullptr;
  a.softcap = c.softcap;
  a.targets = targets->as<int32_t>();
  a.logprobs = base;
  a.lse = base + rows;
  a.ranks = reinterpret_cast<int32_t*>(base + 2 * rows + 2 * top);
  a.top_k = c.top_k;
  a.top_logprobs = c.top_k > 0 ? base + 2 * rows : nullptr;
  a.top_ids = c.top_k > 0 ? reinterpret_cast<int32_t*>(base + 2 * rows + top) : nullptr;
  a.workspace = ws->data();
  a.workspace_bytes = ws_bytes;
  if (kernel == kernels::CceKernel::kAuto) {
    const absl::Status s = be.TargetLogprobs(a, be.default_stream());
    INFO(s.ToString());
    REQUIRE(s.ok());
  } else {
    REQUIRE(kernels::ValidateTargetLogprobs(a).ok());
    const cudaError_t e = kernels::LaunchTargetLogprobs(
        a, static_cast<cudaStream_t>(be.default_stream().native()), kernel);
    INFO(cudaGetErrorString(e));
    REQUIRE(e == cudaSuccess);
  }
  auto bytes = DownloadBytes(be, out->data(), out->bytes());
  REQUIRE(bytes.ok());
  const float* f = reinterpret_cast<const float*>(bytes->data());
  Outputs o;
  o.logprobs.assign(f, f + rows);
  o.lse.assign(f + rows, f + 2 * rows);
  if (c.top_k > 0) {
    o.top_logprobs.assign(f + 2 * rows, f + 2 * rows + top);
    const int32_t* ids = reinterpret_cast<const int32_t*>(f + 2 * rows + top);
    o.top_ids.assign(ids, ids + top);
  }
  const int32_t* ranks = reinterpret_cast<const int32_t*>(f + 2 * rows + 2 * top);
  o.ranks.assign(ranks, ranks + rows);
  return o;
}

// Row i's logits in double from the same (already rounded) values.
std::vector<double> Logits(const Case& c, const Inputs& in, int64_t i) {
  std::vector<double> z(size_t(c.vocab));
  for (int64_t v = 0; v < c.vocab; ++v) {
    double dot = 0.0;
    for (int64_t e = 0; e < c.hidden; ++e) dot += double(in.x.at(i, e)) * double(in.w.at(v, e));
    if (c.bias) dot += in.bias.v[size_t(v)];
    if (c.softcap > 0) dot = c.softcap * std::tanh(dot / c.softcap);
    z[size_t(v)] = dot;
  }
  return z;
}

double LogSumExp(const std::vector<double>& z) {
  const double m = *std::max_element(z.begin(), z.end());
  double s = 0.0;
  for (double v : z) s += std::exp(v - m);
  return m + std::log(s);
}

// Every output of `o` against log_softmax of the full logits in double, within `tol`. Top-k:
// distinct ids, reported log-probs equal to the ids' true ones, best first, nothing outside
// better than the last one kept, and exactly tied logits in ascending id order.
void CheckAgainstBruteForce(const Case& c, const Inputs& in, const Outputs& o, double tol) {
  int bad = 0;
  for (int64_t i = 0; i < c.n && bad < 5; ++i) {
    INFO("row " << i);
    const std::vector<double> z = Logits(c, in, i);
    const double lse = LogSumExp(z);
    const int32_t t = in.targets[size_t(i)];
    const double want = t < 0 ? 0.0 : z[size_t(t)] - lse;
    if (!(std::fabs(o.lse[size_t(i)] - lse) <= tol)) {
      ++bad;
      FAIL_CHECK("lse " << o.lse[size_t(i)] << ", want " << lse);
    }
    if (!(std::fabs(o.logprobs[size_t(i)] - want) <= tol)) {
      ++bad;
      FAIL_CHECK("logprob of " << t << ": " << o.logprobs[size_t(i)] << ", want " << want);
    }
    // The rank: 1 + the ids strictly above the target; ids within `tol` of it may fall either
    // way (exact ties never count).
    int64_t above = 0, near = 0;
    for (int64_t v = 0; t >= 0 && v < c.vocab; ++v) {
      if (v == t) continue;
      const double d = z[size_t(v)] - z[size_t(t)];
      above += d > 0;
      near += d != 0 && std::fabs(d) <= tol;
    }
    const int64_t rank = o.ranks[size_t(i)];
    if (t < 0 ? rank != 0 : std::llabs(rank - (1 + above)) > near) {
      ++bad;
      FAIL_CHECK("rank of " << t << ": " << rank << ", want " << 1 + above << " (" << near
                            << " ids within " << tol << ")");
    }
    if (c.top_k == 0) continue;
    std::vector<bool> kept(size_t(c.vocab), false);
    double worst_kept = INFINITY;
    for (int64_t j = 0; j < c.top_k; ++j) {
      const int32_t id = o.top_ids[size_t(i * c.top_k + j)];
      const float lp = o.top_logprobs[size_t(i * c.top_k + j)];
      INFO("top " << j << ": id " << id << ", logprob " << lp);
      REQUIRE(id >= 0);
      REQUIRE(id < c.vocab);
      REQUIRE(!kept[size_t(id)]);
      kept[size_t(id)] = true;
      CHECK(std::fabs(lp - (z[size_t(id)] - lse)) <= tol);
      if (j > 0) {
        const int32_t prev = o.top_ids[size_t(i * c.top_k + j - 1)];
        CHECK(z[size_t(prev)] >= z[size_t(id)] - tol);
        if (z[size_t(prev)] == z[size_t(id)]) CHECK(prev < id);  // exact tie: lower id first
      }
      worst_kept = std::min(worst_kept, z[size_t(id)]);
    }
    for (int64_t v = 0; v < c.vocab; ++v) {
      if (!kept[size_t(v)] && !(z[size_t(v)] <= worst_kept + tol)) {
        ++bad;
        FAIL_CHECK("id " << v << " (logit " << z[size_t(v)] << ") beats the kept " << worst_kept);
        break;
      }
    }
  }
  CHECK(bad == 0);
}

TEST_CASE("TargetLogprobs on the CPU equals log_softmax of the full logits", "[kernels]") {
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed() + 15);
  const std::vector<Case> cases = {
      {1, 1000, 64, DType::kF32},
      {7, 5003, 136, DType::kF32, true, 0.0f, 5},
      {33, 32771, 64, DType::kF32, true, 0.0f, 20},
      {33, 5003, 64, DType::kBF16, false, 30.0f, 3},
      {7, 1000, 4096, DType::kBF16, true, 0.0f, 1},
      {3, 32771, 4096, DType::kF32, false, 0.0f, 0},
      {7, 4100, 136, DType::kBF16, true, 2.0f, 20, 3},
      {1, 20, 8, DType::kF32, true, 0.0f, 20},  // top_k == vocab
  };
  for (const Case& c : cases) {
    INFO(Describe(c));
    const Inputs in = Draw(rng, c);
    const Outputs o = Run(cpu, c, in);
    CheckAgainstBruteForce(c, in, o, 1e-4);
    if (c.bias && c.top_k >= int64_t(TieIds(c.vocab).size())) {
      // The tied ids are the row's best (softcap keeps their order): ascending ids first.
      const std::vector<int64_t> ties = TieIds(c.vocab);
      for (int64_t i = 0; i < c.n; ++i) {
        for (size_t j = 0; j < ties.size(); ++j) {
          CHECK(o.top_ids[size_t(i * c.top_k) + j] == ties[j]);
        }
      }
    }
    // Row 2 scores the last tied id: tied with the row's best, nothing strictly above it.
    if (c.bias && c.n > 3) CHECK(o.ranks[2] == 1);
  }
}

TEST_CASE("TargetLogprobs refuses bad arguments naming the field", "[kernels]") {
  kernels::CpuBackend cpu;
  std::vector<float> x(4 * 8), w(16 * 8), out(64);
  std::vector<int32_t> targets(4, 0), ids(4 * 20);
  std::vector<char> ws(kernels::TargetLogprobsWorkspaceBytes(4, 16, 20));
  auto good = [&] {
    kernels::TargetLogprobsArgs a;
    a.x = kernels::View(x.data(), DType::kF32, 4, 8);
    a.w = kernels::View(w.data(), DType::kF32, 16, 8);
    a.targets = targets.data();
    a.logprobs = out.data();
    a.lse = out.data() + 4;
    a.workspace = ws.data();
    a.workspace_bytes = ws.size();
    return a;
  };
  REQUIRE(cpu.TargetLogprobs(good(), cpu.default_stream()).ok());
  auto expect = [&](kernels::TargetLogprobsArgs a, const std::string& field) {
    const absl::Status s = cpu.TargetLogprobs(a, cpu.default_stream());
    INFO(s.ToString());
    CHECK(absl::IsInvalidArgument(s));
    CHECK(std::string(s.message()).find(field) != std::string::npos);
  };
  auto a = good();
  a.x.data = nullptr;
  expect(a, "x is null");
  a = good();
  a.w.dtype = DType::kBF16;
  expect(a, "w is bf16");
  a = good();
  a.w.cols = 7;
  a.w.stride = 7;
  expect(a, "w has 7 columns");
  a = good();
  a.targets = nullptr;
  expect(a, "targets");
  a = good();
  a.lse = nullptr;
  expect(a, "lse");
  a = good();
  a.top_k = 21;
  expect(a, "top_k");
  a = good();
  a.top_k = 3;
  expect(a, "top_ids");
  a = good();
  a.w.rows = 2;
  a.top_k = 3;
  a.top_ids = ids.data();
  a.top_logprobs = out.data() + 8;
  expect(a, "exceeds the vocab");
  a = good();
  a.softcap = -1.0f;
  expect(a, "softcap");
  a = good();
  a.workspace_bytes = 8;
  expect(a, "workspace_bytes");
}

TEST_CASE("TargetLogprobs' workspace is under 1% of the logits it replaces", "[kernels]") {
  const int64_t n = 32768, vocab = 131072;
  const double logits = double(n) * double(vocab) * 4.0;
  CHECK(double(kernels::TargetLogprobsWorkspaceBytes(n, vocab, 0)) < 0.01 * logits);
  // Linear in rows: scoring in chunks bounds it for any prompt.
  CHECK(kernels::TargetLogprobsWorkspaceBytes(2 * n, vocab, 0) <=
        2 * kernels::TargetLogprobsWorkspaceBytes(n, vocab, 0));
}

bool SameBits(const Outputs& a, const Outputs& b) {
  auto same = [](const auto& x, const auto& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * 4) == 0;
  };
  return same(a.logprobs, b.logprobs) && same(a.lse, b.lse) &&
         same(a.top_logprobs, b.top_logprobs) && same(a.top_ids, b.top_ids) &&
         same(a.ranks, b.ranks);
}

TEST_CASE("TargetLogprobs on CUDA matches the CPU reference, bit-stable", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  Backend& gpu = **cuda;
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed() + 16);
  const std::vector<Case> cases = {
      {1, 1000, 64, DType::kBF16},
      {7, 5003, 136, DType::kBF16, true, 0.0f, 5},
      {33, 32771, 64, DType::kF16, true, 0.0f, 20},
      {130, 4099, 72, DType::kBF16, false, 30.0f, 3},    // two row blocks, hidden % 32 = 8
      {33, 32771, 4096, DType::kBF16, true, 0.0f, 0},
      {300, 2049, 4096, DType::kBF16, false, 0.0f, 20},  // a one-id last split
      {7, 5003, 136, DType::kF32, true, 0.0f, 5},         // the plain kernel
      {9, 4100, 136, DType::kBF16, true, 0.0f, 20, 3},   // odd stride: the plain kernel
  };
  for (const Case& c : cases) {
    INFO(Describe(c));
    const Inputs in = Draw(rng, c);
    const Outputs g = Run(gpu, c, in);
    const Outputs h = Run(cpu, c, in);
    // No rounding to 16 bits anywhere: the two differ by fp32 accumulation order only.
    const double tol = 2e-4 + 2e-6 * std::sqrt(double(c.hidden)) * 10;
    for (int64_t i = 0; i < c.n; ++i) {
      INFO("row " << i);
      REQUIRE(std::fabs(g.lse[size_t(i)] - h.lse[size_t(i)]) <= tol);  // NaN fails
      REQUIRE(std::fabs(g.logprobs[size_t(i)] - h.logprobs[size_t(i)]) <= tol);
      for (int64_t j = 0; j < c.top_k; ++j) {
        const size_t e = size_t(i * c.top_k + j);
        // Ids may swap where two logits are within the noise of each other (the brute-force
        // check below decides those); the log-probs at each rank agree.
        INFO("top " << j << ": cuda id " << g.top_ids[e] << ", cpu id " << h.top_ids[e]);
        REQUIRE(std::fabs(g.top_logprobs[e] - h.top_logprobs[e]) <= tol);
      }
    }
    if (c.hidden <= 136) CheckAgainstBruteForce(c, in, g, tol);
    if (c.hidden > 136) {
      // Too large to brute-force every row: the first rows' ranks against the full logits.
      Case few = c;
      few.n = std::min<int64_t>(c.n, 4);
      few.top_k = 0;
      for (const Outputs* o : {&g, &h}) {
        Outputs head;
        head.logprobs.assign(o->logprobs.begin(), o->logprobs.begin() + few.n);
        head.lse.assign(o->lse.begin(), o->lse.begin() + few.n);
        head.ranks.assign(o->ranks.begin(), o->ranks.begin() + few.n);
        CheckAgainstBruteForce(few, in, head, tol);
      }
    }
    // Same input, same bits; and a row's bits do not depend on the rows beside it.
    CHECK(SameBits(g, Run(gpu, c, in)));
    if (c.n > 1) {
      Case one = c;
      one.n = 1;
      Inputs first = in;
      first.x.rows = 1;
      first.x.v.resize(size_t(c.hidden));
      first.targets.resize(1);
      const Outputs alone = Run(gpu, one, first);
      CHECK(std::memcmp(&alone.lse[0], &g.lse[0], 4) == 0);
      CHECK(std::memcmp(&alone.logprobs[0], &g.logprobs[0], 4) == 0);
      CHECK(alone.ranks[0] == g.ranks[0]);
    }
  }
  REQUIRE(gpu.Health().ok());
}

// The first rows' outputs (ranks against the full logits) where brute force over every row
// is too slow.
void CheckHead(const Case& c, const Inputs& in, const Outputs& o, double tol) {
  Case few = c;
  few.n = std::min<int64_t>(c.n, 4);
  few.top_k = 0;
  Outputs head;
  head.logprobs.assign(o.logprobs.begin(), o.logprobs.begin() + few.n);
  head.lse.assign(o.lse.begin(), o.lse.begin() + few.n);
  head.ranks.assign(o.ranks.begin(), o.ranks.begin() + few.n);
  CheckAgainstBruteForce(few, in, head, tol);
}

TEST_CASE("TargetLogprobs' wgmma pass 1 matches the CPU reference, bit-stable", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  Backend& gpu = **cuda;
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed() + 17);
  // Edges of the Hopper kernel: 128-row blocks (rows 1, 130, 257), 256-id tiles and 2048-id
  // splits (vocab 1000: one partial tile; 4099: a 3-id last split; 6000: a last split of 7
  // tiles and 112 ids; 8197), 64-wide hidden steps (72, 1000: a partial last step; 256, 4096),
  // bias, softcap, f16, a padded x stride (16-byte rows still).
  const std::vector<Case> cases = {
      {1, 1000, 64, DType::kBF16},
      {130, 4099, 72, DType::kBF16, false, 30.0f},
      {257, 6000, 256, DType::kF16, true, 0.0f},
      {129, 8197, 1000, DType::kBF16, true, 30.0f, 0, 8},
      {33, 32771, 4096, DType::kBF16, true, 0.0f},
  };
  {
    // Top-k stays on the mma.sync kernel: a forced kWgmma is refused, not run.
    kernels::TargetLogprobsArgs a;
    a.x = kernels::Tensor{nullptr, DType::kBF16, 1, 64, 64};
    a.w = kernels::Tensor{nullptr, DType::kBF16, 1000, 64, 64};
    a.top_k = 3;
    CHECK_FALSE(kernels::TargetLogprobsSm90Fits(a));
    CHECK(kernels::LaunchTargetLogprobs(a, nullptr, kernels::CceKernel::kWgmma) ==
          cudaErrorNotSupported);
  }
  for (const Case& c : cases) {
    kernels::TargetLogprobsArgs probe;
    probe.x = kernels::Tensor{nullptr, c.dtype, c.n, c.hidden, c.hidden + c.pad};
    probe.w = kernels::Tensor{nullptr, c.dtype, c.vocab, c.hidden, c.hidden};
    if (!kernels::TargetLogprobsSm90Fits(probe)) {
      WARN("not a Hopper (or no cuTensorMapEncodeTiled): the wgmma pass 1 is not tested here");
      return;
    }
    INFO(Describe(c));
    Inputs in = Draw(rng, c);
    in.targets[0] = int32_t(c.vocab - 1);  // in the last, partial tile (and split)
    if (c.n > 5) in.targets[size_t(c.n - 1)] = int32_t(c.vocab - 2);
    const Outputs g = Run(gpu, c, in, kernels::CceKernel::kWgmma);
    const Outputs m = Run(gpu, c, in, kernels::CceKernel::kMmaSync);
    const Outputs h = Run(cpu, c, in);
    const double tol = 2e-4 + 2e-6 * std::sqrt(double(c.hidden)) * 10;
    for (int64_t i = 0; i < c.n; ++i) {
      INFO("row " << i);
      REQUIRE(std::fabs(g.lse[size_t(i)] - h.lse[size_t(i)]) <= tol);  // NaN fails
      REQUIRE(std::fabs(g.logprobs[size_t(i)] - h.logprobs[size_t(i)]) <= tol);
      REQUIRE(std::fabs(g.lse[size_t(i)] - m.lse[size_t(i)]) <= tol);
    }
    // Ranks (and the rest) against the full logits: every row where that is quick.
    if (double(c.n) * double(c.vocab) * double(c.hidden) <= 2e9) {
      CheckAgainstBruteForce(c, in, g, tol);
    } else {
      CheckHead(c, in, g, tol);
    }
    CHECK(SameBits(g, Run(gpu, c, in, kernels::CceKernel::kWgmma)));
    if (c.n > 1) {
      Case one = c;
      one.n = 1;
      Inputs first = in;
      first.x.rows = 1;
      first.x.v.resize(size_t(c.hidden));
      first.targets.resize(1);
      const Outputs alone = Run(gpu, one, first, kernels::CceKernel::kWgmma);
      CHECK(std::memcmp(&alone.lse[0], &g.lse[0], 4) == 0);
      CHECK(std::memcmp(&alone.logprobs[0], &g.logprobs[0], 4) == 0);
      CHECK(alone.ranks[0] == g.ranks[0]);
    }
  }
  REQUIRE(gpu.Health().ok());
}

}  // namespace
}  // namespace arbor::testing
