// bench_linear: the few-row Linear of decode steps (kernels/cuda/skinny_linear.cu) at a model's
// projection shapes (default: tools/bench/llama3-8b, whose qkv, o, gate_up, down and lm_head
// are y [m, n] = x [m, k] w[n, k]^T in bf16), for m = 1, 2 and 4 rows. Every tiling is timed,
// and so is cuBLASLt (the CUDA backend's Linear in deterministic mode, which does not take the
// skinny kernel), as weight bytes read per second over the best device bandwidth measured in
// the same process (tools/bench/bandwidth.h). Each shape's weight rotates over copies that
// together exceed L2 many times, so no launch finds its weight cached; a time is the median
// over --iters rounds of one launch per copy (CUDA events), divided by the copies.
//
// The sweep is printed as a table: it is what SkinnyTilingFor's choices rest on. Appended to
// bench/results.json (BENCHMARKS.md), for the tiling SkinnyTilingFor picks:
//  - linear.skinny_m<m>.<shape>.bw_fraction for m = 1, and
//  - linear.skinny_m<m>.layer.bw_fraction: qkv + o + gate_up + down, one decoder layer's
//    weights over the sum of their times, for m = 1 and 4; with the same layer through
//    cuBLASLt as the second figure's peer (linear.skinny_m<m>.layer.vs_cublaslt).
//
//   bench_linear [--config tools/bench/llama3-8b] [--iters 30] [--results bench/results.json]
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/launch.h"
#include "tools/bench/bandwidth.h"
#include "tools/bench/results.h"

namespace {

using arbor::kernels::DType;
using arbor::kernels::LinearArgs;
using arbor::kernels::SkinnyTiling;
using arbor::kernels::Tensor;

constexpr size_t kRotateBytes = size_t(768) << 20;  // each shape's weight copies, at least
constexpr int kMaxRows = 4;

struct Shape {
  std::string name;
  int64_t n, k;
};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "bench_linear: %s\n", msg.c_str());
  return 1;
}

bool Check(cudaError_t e, const char* what, std::string* error) {
  if (e == cudaSuccess) return true;
  *error = std::string(what) + ": " + cudaGetErrorString(e);
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) {
    if (chdir(ws) != 0) return Fail("cannot enter BUILD_WORKSPACE_DIRECTORY");
  }
  std::string config = "tools/bench/llama3-8b", results = "bench/results.json";
  int iters = 30;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) return Fail("missing value for " + k);
    const std::string v = argv[++i];
    if (k == "--config") {
      config = v;
    } else if (k == "--iters") {
      iters = std::atoi(v.c_str());
    } else if (k == "--results") {
      results = v;
    } else {
      return Fail("unknown flag " + k);
    }
  }
  if (iters <= 0) return Fail("--iters must be > 0");
  std::ifstream in(config + "/config.json");
  if (!in) return Fail("cannot read " + config + "/config.json");
  const nlohmann::json c = nlohmann::json::parse(in, nullptr, false);
  if (c.is_discarded()) return Fail(config + "/config.json is not JSON");
  const int64_t hidden = c.value("hidden_size", int64_t(0));
  const int64_t heads = c.value("num_attention_heads", int64_t(0));
  const int64_t kv_heads = c.value("num_key_value_heads", heads);
  const int64_t head_dim = c.value("head_dim", heads > 0 ? hidden / heads : int64_t(0));
  const int64_t inter = c.value("intermediate_size", int64_t(0));
  const int64_t vocab = c.value("vocab_size", int64_t(0));
  if (hidden <= 0 || heads <= 0 || kv_heads <= 0 || head_dim <= 0 || inter <= 0 || vocab <= 0) {
    return Fail(config + "/config.json lacks a positive hidden_size, num_attention_heads, "
                         "intermediate_size or vocab_size");
  }
  // The model's fused projections, as engine::Model holds them.
  const std::vector<Shape> shapes = {{"qkv", (heads + 2 * kv_heads) * head_dim, hidden},
                                     {"o", hidden, heads * head_dim},
                                     {"gate_up", 2 * inter, hidden},
                                     {"down", hidden, inter},
                                     {"lm_head", vocab, hidden}};

  auto made = arbor::kernels::CreateCudaBackend(0);
  if (!made.ok()) return Fail(std::string(made.status().message()));
  arbor::kernels::Backend& be = **made;
  arbor::kernels::Stream& st = be.default_stream();
  const cudaStream_t stream = static_cast<cudaStream_t>(st.native());
  auto info = be.Info();
  if (!info.ok()) return Fail(std::string(info.status().message()));
  arbor::bench::Bandwidth bw;
  const char* bw_err = nullptr;
  if (!arbor::bench::MeasureBandwidth(size_t(2) << 30, 20, &bw, &bw_err)) return Fail(bw_err);
  std::printf("%s: bandwidth copy %.2f TB/s, read-only stream %.2f TB/s\n", info->name.c_str(),
              bw.copy_bytes_per_s / 1e12, bw.stream_bytes_per_s / 1e12);

  cudaEvent_t start, stop;
  std::string error;
  if (!Check(cudaEventCreate(&start), "cudaEventCreate", &error) ||
      !Check(cudaEventCreate(&stop), "cudaEventCreate", &error)) {
    return Fail(error);
  }
  // Times in ms: [shape][m][impl], impl a tiling name or "cublaslt".
  std::map<std::string, std::map<int, std::map<std::string, double>>> ms;
  // Each tiling by name, then cuBLASLt (kAuto stands for it here: it is never a sweep entry).
  std::vector<std::pair<std::string, SkinnyTiling>> impls;
  for (const SkinnyTiling t : arbor::kernels::kSkinnyTilings) {
    impls.emplace_back(arbor::kernels::SkinnyTilingName(t), t);
  }
  impls.emplace_back("cublaslt", SkinnyTiling::kAuto);

  for (const Shape& sh : shapes) {
    const size_t w_bytes = size_t(sh.n * sh.k) * 2;
    const int copies = int(std::max<size_t>(2, (kRotateBytes + w_bytes - 1) / w_bytes));
    void *w = nullptr, *x = nullptr, *y = nullptr;
    if (!Check(cudaMalloc(&w, w_bytes * size_t(copies)), "cudaMalloc weights", &error) ||
        !Check(cudaMalloc(&x, size_t(kMaxRows * sh.k) * 2), "cudaMalloc x", &error) ||
        !Check(cudaMalloc(&y, size_t(kMaxRows * sh.n) * 2), "cudaMalloc y", &error)) {
      return Fail(error);
    }
    const Tensor w_all{w, DType::kBF16, sh.n * copies, sh.k, sh.k};
    if (!Check(arbor::kernels::LaunchRandomFill({w_all, 1, 1, -0.05f, 0.05f}, stream), "fill",
               &error) ||
        !Check(arbor::kernels::LaunchRandomFill(
                   {Tensor{x, DType::kBF16, kMaxRows, sh.k, sh.k}, 1, 2, -1.0f, 1.0f}, stream),
               "fill", &error)) {
      return Fail(error);
    }
    for (int m = 1; m <= kMaxRows; m *= 2) {
      for (const auto& entry : impls) {
        const std::string& impl = entry.first;
        const SkinnyTiling tiling = entry.second;
        auto launch = [&](int copy) -> bool {
          LinearArgs a{Tensor{x, DType::kBF16, m, sh.k, sh.k},
                       Tensor{static_cast<char*>(w) + size_t(copy) * w_bytes, DType::kBF16, sh.n,
                              sh.k, sh.k},
                       nullptr, Tensor{y, DType::kBF16, m, sh.n, sh.n}, false};
          if (tiling == SkinnyTiling::kAuto) {
            be.SetDeterministic(true);
            const bool ok = be.Linear(a, st).ok();
            be.SetDeterministic(false);
            return ok;
          }
          return arbor::kernels::LaunchSkinnyLinear(a, stream, tiling) == cudaSuccess;
        };
        std::vector<float> rounds;
        for (int r = 0; r < iters + 2; ++r) {  // two warm-up rounds
          cudaEventRecord(start, stream);
          for (int i = 0; i < copies; ++i) {
            if (!launch(i)) return Fail(sh.name + ": " + impl + " failed to launch");
          }
          cudaEventRecord(stop, stream);
          if (!Check(cudaEventSynchronize(stop), sh.name.c_str(), &error)) return Fail(error);
          float elapsed = 0;
          cudaEventElapsedTime(&elapsed, start, stop);
          if (r >= 2) rounds.push_back(elapsed / float(copies));
        }
        std::sort(rounds.begin(), rounds.end());
        ms[sh.name][m][impl] = rounds[rounds.size() / 2];
      }
    }
    cudaFree(w);
    cudaFree(x);
    cudaFree(y);
  }

  // The sweep: fraction of the best bandwidth per shape, m and implementation; * marks the pick.
  std::printf("%-8s %-2s", "shape", "m");
  for (const auto& impl : impls) std::printf(" %10s", impl.first.c_str());
  std::printf("   (weight bytes / time / best bandwidth; * SkinnyTilingFor's pick)\n");
  for (const Shape& sh : shapes) {
    for (int m = 1; m <= kMaxRows; m *= 2) {
      const std::string pick =
          arbor::kernels::SkinnyTilingName(arbor::kernels::SkinnyTilingFor(sh.k));
      std::printf("%-8s %-2d", sh.name.c_str(), m);
      for (const auto& entry : impls) {
        const double frac =
            double(sh.n * sh.k) * 2 / (ms[sh.name][m][entry.first] * 1e-3) / bw.best();
        std::printf(" %9.3f%s", frac, entry.first == pick ? "*" : " ");
      }
      std::printf("\n");
    }
  }

  std::string command = "bench_linear";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  const std::string date = absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone());
  nlohmann::json records = nlohmann::json::array();
  auto record = [&](const std::string& name, double value, const std::string& unit,
                    double baseline, double ratio, const std::string& note) {
    records.push_back({{"name", name + " (" + note + ", " + config + ", bf16)"},
                       {"value", value},
                       {"unit", unit},
                       {"baseline", baseline},
                       {"ratio", ratio},
                       {"target", nullptr},
                       {"card", info->name},
                       {"date", date},
                       {"command", command}});
  };
  for (int m : {1, 4}) {
    double layer_bytes = 0, layer_ms = 0, layer_lt_ms = 0;
    for (const Shape& sh : shapes) {
      const std::string pick =
          arbor::kernels::SkinnyTilingName(arbor::kernels::SkinnyTilingFor(sh.k));
      const double bytes = double(sh.n * sh.k) * 2, t = ms[sh.name][m][pick];
      if (sh.name != "lm_head") {
        layer_bytes += bytes;
        layer_ms += t;
        layer_lt_ms += ms[sh.name][m]["cublaslt"];
      }
      if (m == 1) {
        const double tbs = bytes / (t * 1e-3) / 1e12;
        record("linear.skinny_m1." + sh.name + ".bw_fraction", tbs, "TB/s", bw.best() / 1e12,
               tbs * 1e12 / bw.best(),
               "n " + std::to_string(sh.n) + ", k " + std::to_string(sh.k) + ", tiling " + pick +
                   "; weight bytes per second over the best of copy and read-only streaming "
                   "bandwidth");
      }
    }
    const std::string mm = "linear.skinny_m" + std::to_string(m) + ".layer";
    const double tbs = layer_bytes / (layer_ms * 1e-3) / 1e12;
    record(mm + ".bw_fraction", tbs, "TB/s", bw.best() / 1e12, tbs * 1e12 / bw.best(),
           "qkv + o + gate_up + down of one decoder layer, " + std::to_string(m) +
               " rows, each at SkinnyTilingFor's tiling; weight bytes over the sum of their times "
               "over the best device bandwidth");
    record(mm + ".vs_cublaslt", layer_ms * 1e3, "us", layer_lt_ms * 1e3, layer_lt_ms / layer_ms,
           "the same layer's four projections, " + std::to_string(m) +
               " rows: cuBLASLt's time (the baseline) over the skinny kernel's (the value); "
               "ratio > 1: the skinny kernel is faster");
    std::printf("m %d layer: %.1f us at %.3f of the bandwidth; cuBLASLt %.1f us (%.2fx)\n", m,
                layer_ms * 1e3, tbs * 1e12 / bw.best(), layer_lt_ms * 1e3, layer_lt_ms / layer_ms);
  }
  arbor::bench::AppendResults(results, records);
  std::printf("appended %zu records to %s\n", records.size(), results.c_str());
  return 0;
}
