// bench_cce: log-probs of given targets for N rows against a V-token vocabulary at hidden D in
// bf16 (issue 15), Arbor's fused kernel (Backend::TargetLogprobs, kernels/cuda/cce.cu) against
// (a) the dense path: the CUDA backend's Linear (cuBLASLt, bf16 in, fp32 logits [N, V]) then a
// one-pass log-softmax + gather kernel (tools/bench/cce_dense.cu). Where the [N, V] fp32 logits
// do not fit the card, (a) runs in row chunks that do, and its record says so. Times are CUDA-event
// medians over --iters runs after 2 warm-ups. Memory is what each path allocates beyond x and
// the LM head (neither kernel allocates on its own): the fused workspace and outputs, the dense
// logits and outputs; the cudaMemGetInfo delta around those allocations is printed beside it.
// The two paths' log-probs are compared (max |difference|) so a figure never comes from a
// broken run. The fused path is timed with each pass-1 kernel that takes the shape
// (kernels/cuda/launch.h CceKernel: mma.sync everywhere, wgmma on a Hopper), forced, and
// printed side by side; the records take the default's (kAuto's pick, named in the command).
//
// Records (bench/results.json, BENCHMARKS.md), per shape n<N>_v<V> (1k = 1024):
//  - cce.time_vs_dense.<shape>: fused ms (value) over dense ms (baseline); target <= 1.0;
//  - cce.memory_vs_dense.<shape>: fused bytes over dense bytes;
//  - cce.memory_fraction_32k_128k: fused bytes over the 32k x 128k fp32 logits; target <= 0.01;
//  - cce.time_vs_torch.<shape>: where tools/bench/cce_torch.py ran first on this card (its
//    cce.torch_ms.<shape> records in --results), fused ms over torch's.
//
//   bench_cce [--rows 1024,8192,32768] [--vocabs 32768,131072] [--hidden 4096] [--iters 10]
//             [--results bench/results.json]
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/launch.h"
#include "tools/bench/cce_dense.h"
#include "tools/bench/results.h"

namespace {

using arbor::kernels::Backend;
using arbor::kernels::CceKernel;
using arbor::kernels::DeviceBuffer;
using arbor::kernels::DType;
using arbor::kernels::Tensor;

// One pass-1 kernel's median time and log-probs on a shape.
struct KernelRun {
  CceKernel kernel;
  double ms;
  std::vector<float> logprobs;
};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "bench_cce: %s\n", msg.c_str());
  return 1;
}

std::string Label(int64_t n) {
  return n % 1024 == 0 ? std::to_string(n / 1024) + "k" : std::to_string(n);
}

size_t FreeBytes() {
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  return free_b;
}

// Median ms of `iters` runs of `fn` (after 2 warm-ups); negative when fn fails.
template <typename Fn>
double TimeMs(cudaStream_t stream, int iters, Fn fn) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> ms;
  for (int i = 0; i < iters + 2; ++i) {
    cudaEventRecord(start, stream);
    if (!fn()) return -1;
    cudaEventRecord(stop, stream);
    if (cudaEventSynchronize(stop) != cudaSuccess) return -1;
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    if (i >= 2) ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) {
    if (chdir(ws) != 0) return Fail("cannot enter BUILD_WORKSPACE_DIRECTORY");
  }
  std::string rows_flag = "1024,8192,32768", vocabs_flag = "32768,131072";
  std::string results = "bench/results.json";
  int64_t hidden = 4096;
  int iters = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) return Fail("missing value for " + k);
    const std::string v = argv[++i];
    if (k == "--rows") {
      rows_flag = v;
    } else if (k == "--vocabs") {
      vocabs_flag = v;
    } else if (k == "--hidden") {
      hidden = std::atoll(v.c_str());
    } else if (k == "--iters") {
      iters = std::atoi(v.c_str());
    } else if (k == "--results") {
      results = v;
    } else {
      return Fail("unknown flag " + k);
    }
  }
  const std::vector<int64_t> rows_list = arbor::bench::ParseIntList(rows_flag);
  const std::vector<int64_t> vocabs = arbor::bench::ParseIntList(vocabs_flag);
  if (rows_list.empty() || vocabs.empty() || iters <= 0 || hidden <= 0 || hidden % 8 != 0) {
    return Fail("--rows, --vocabs and --iters must be positive; --hidden a multiple of 8");
  }
  for (int64_t v : vocabs) {
    if (v <= 0 || v % 4 != 0) return Fail("--vocabs must be positive multiples of 4");
  }
  for (int64_t n : rows_list) {
    if (n <= 0) return Fail("--rows must be positive");
  }

  auto made = arbor::kernels::CreateCudaBackend(0);
  if (!made.ok()) return Fail(std::string(made.status().message()));
  Backend& be = **made;
  arbor::kernels::Stream& st = be.default_stream();
  const cudaStream_t stream = static_cast<cudaStream_t>(st.native());
  auto info = be.Info();
  if (!info.ok()) return Fail(std::string(info.status().message()));
  std::printf("%s: hidden %lld, bf16, fp32 logits for the dense path\n", info->name.c_str(),
              static_cast<long long>(hidden));

  std::string command = "bench_cce";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  const std::string date = absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone());
  nlohmann::json records = nlohmann::json::array();
  auto record = [&](const std::string& name, double value, const std::string& unit,
                    double baseline, const nlohmann::json& target, const std::string& note) {
    records.push_back({{"name", name},
                       {"value", value},
                       {"unit", unit},
                       {"baseline", baseline},
                       {"ratio", baseline > 0 ? value / baseline : 0.0},
                       {"target", target},
                       {"card", info->name},
                       {"date", date},
                       {"command", command + " (" + note + ")"}});
  };

  std::mt19937_64 rng(15);
  for (const int64_t vocab : vocabs) {
    auto w = be.Allocate(size_t(vocab * hidden) * 2);
    if (!w.ok()) return Fail("LM head: " + std::string(w.status().message()));
    const Tensor wt{w->data(), DType::kBF16, vocab, hidden, hidden};
    if (!be.RandomFill({wt, 15, 1, -0.03f, 0.03f}, st).ok()) return Fail("fill w");
    for (const int64_t n : rows_list) {
      const std::string shape = "n" + Label(n) + "_v" + Label(vocab);
      auto x = be.Allocate(size_t(n * hidden) * 2);
      if (!x.ok()) return Fail("x: " + std::string(x.status().message()));
      const Tensor xt{x->data(), DType::kBF16, n, hidden, hidden};
      if (!be.RandomFill({xt, 15, 2, -1.0f, 1.0f}, st).ok()) return Fail("fill x");
      std::vector<int32_t> host_targets(static_cast<size_t>(n));
      std::uniform_int_distribution<int32_t> tok(0, int32_t(vocab - 1));
      for (int32_t& t : host_targets) t = tok(rng);
      auto targets = be.Allocate(size_t(n) * 4);
      if (!targets.ok()) return Fail("targets");
      if (!be.CopyToDevice(targets->data(), host_targets.data(), size_t(n) * 4, st).ok()) {
        return Fail("copy targets");
      }
      if (!st.Synchronize().ok()) return Fail("synchronize");

      // Fused: workspace and outputs are all it needs.
      const size_t free0 = FreeBytes();
      const size_t ws_bytes = arbor::kernels::TargetLogprobsWorkspaceBytes(n, vocab, 0);
      auto ws = be.Allocate(ws_bytes);
      auto fused_out = be.Allocate(size_t(n) * 8);
      if (!ws.ok() || !fused_out.ok()) return Fail(shape + ": fused buffers");
      const size_t fused_delta = free0 - FreeBytes();
      const double fused_bytes = double(ws_bytes + size_t(n) * 8);
      arbor::kernels::TargetLogprobsArgs a;
      a.x = xt;
      a.w = wt;
      a.targets = targets->as<int32_t>();
      a.logprobs = fused_out->as<float>();
      a.lse = fused_out->as<float>() + n;
      a.workspace = ws->data();
      a.workspace_bytes = ws_bytes;
      // Each pass-1 kernel that takes the shape (wgmma: Hopper only), forced; the default's
      // (kAuto's pick) time is the one recorded.
      const CceKernel picked = arbor::kernels::CceAutoWgmma() &&
                                       arbor::kernels::TargetLogprobsSm90Fits(a)
                                   ? CceKernel::kWgmma
                                   : CceKernel::kMmaSync;
      std::vector<KernelRun> runs;
      for (const CceKernel kernel : arbor::kernels::kCceKernels) {
        if (kernel == CceKernel::kWgmma && !arbor::kernels::TargetLogprobsSm90Fits(a)) continue;
        KernelRun run{kernel, 0, std::vector<float>(static_cast<size_t>(n))};
        run.ms = TimeMs(stream, iters, [&] {
          return arbor::kernels::LaunchTargetLogprobs(a, stream, kernel) == cudaSuccess;
        });
        if (run.ms < 0) {
          return Fail(shape + ": fused kernel " + arbor::kernels::CceKernelName(kernel) +
                      " failed");
        }
        if (!be.CopyToHost(run.logprobs.data(), a.logprobs, size_t(n) * 4, st).ok() ||
            !st.Synchronize().ok()) {
          return Fail("copy fused");
        }
        runs.push_back(std::move(run));
      }
      const KernelRun* fused = nullptr;
      for (const KernelRun& run : runs) {
        if (run.kernel == picked) fused = &run;
      }
      if (fused == nullptr) return Fail(shape + ": the default kernel did not run");
      const double fused_ms = fused->ms;
      ws = DeviceBuffer();

      // Dense: fp32 logits for as many rows as fit (all of them on an 80 GB card).
      const size_t row_bytes = size_t(vocab) * 4;
      const size_t free1 = FreeBytes();
      const size_t reserve = size_t(2) << 30;  // cuBLASLt's workspace and the allocator's slack
      int64_t chunk = n;
      if (free1 < reserve + row_bytes) return Fail(shape + ": no room for one logits row");
      chunk = std::min<int64_t>(n, int64_t((free1 - reserve) / row_bytes));
      auto logits = be.Allocate(size_t(chunk) * row_bytes);
      auto dense_out = be.Allocate(size_t(n) * 8);
      if (!logits.ok() || !dense_out.ok()) return Fail(shape + ": dense buffers");
      const size_t dense_delta = free1 - FreeBytes();
      const double dense_bytes = double(size_t(chunk) * row_bytes + size_t(n) * 8);
      float* dense_lp = dense_out->as<float>();
      auto dense = [&] {
        for (int64_t r0 = 0; r0 < n; r0 += chunk) {
          const int64_t m = std::min(chunk, n - r0);
          arbor::kernels::LinearArgs lin;
          lin.x = arbor::kernels::Rows(xt, r0, m);
          lin.w = wt;
          lin.y = Tensor{logits->data(), DType::kF32, m, vocab, vocab};
          if (!be.Linear(lin, st).ok()) return false;
          if (arbor::bench::LaunchDenseLogSoftmaxGather(
                  logits->as<float>(), m, vocab, targets->as<int32_t>() + r0, dense_lp + r0,
                  dense_lp + n + r0, stream) != cudaSuccess) {
            return false;
          }
        }
        return true;
      };
      const double dense_ms = TimeMs(stream, iters, dense);
      if (dense_ms < 0) return Fail(shape + ": dense path failed");
      std::vector<float> dense_host(static_cast<size_t>(n));
      if (!be.CopyToHost(dense_host.data(), dense_lp, size_t(n) * 4, st).ok()) {
        return Fail("copy dense");
      }
      logits = DeviceBuffer();
      auto max_diff_of = [&](const std::vector<float>& lp) {
        double max_diff = 0;
        for (int64_t i = 0; i < n; ++i) {
          const double d = std::fabs(double(lp[size_t(i)]) - dense_host[size_t(i)]);
          max_diff = std::isnan(d) ? INFINITY : std::max(max_diff, d);
        }
        return max_diff;
      };
      const double max_diff = max_diff_of(fused->logprobs);
      const std::string chunked =
          chunk < n ? ", dense logits in chunks of " + std::to_string(chunk) + " rows" : "";
      for (const KernelRun& run : runs) {
        const double diff = max_diff_of(run.logprobs);
        std::printf("%-12s   pass 1 %-8s %9.3f ms | fused/dense %.3f | max |dlogprob| %.2e%s\n",
                    shape.c_str(), arbor::kernels::CceKernelName(run.kernel), run.ms,
                    run.ms / dense_ms, diff, run.kernel == picked ? " (default)" : "");
        if (!(diff < 2e-2)) {
          return Fail(shape + ": " + arbor::kernels::CceKernelName(run.kernel) +
                      " and dense log-probs disagree");
        }
      }
      std::printf(
          "%-12s fused %9.3f ms %10.1f MB (memgetinfo %8.1f MB) | dense %9.3f ms %10.1f MB "
          "(memgetinfo %8.1f MB)%s | fused/dense %.3f | max |dlogprob| %.2e\n",
          shape.c_str(), fused_ms, fused_bytes / 1e6, fused_delta / 1e6, dense_ms,
          dense_bytes / 1e6, dense_delta / 1e6, chunked.c_str(), fused_ms / dense_ms, max_diff);
      if (!(max_diff < 2e-2)) return Fail(shape + ": fused and dense log-probs disagree");
      const std::string note = "N " + std::to_string(n) + ", V " + std::to_string(vocab) +
                               ", D " + std::to_string(hidden) + ", bf16, pass 1 " +
                               arbor::kernels::CceKernelName(picked) +
                               "; dense = cuBLASLt fp32 logits + one-pass log-softmax/gather" +
                               chunked;
      record("cce.time_vs_dense." + shape, fused_ms, "ms", dense_ms, "<= 1.0", note);
      record("cce.memory_vs_dense." + shape, fused_bytes / 1e6, "MB", dense_bytes / 1e6, nullptr,
             note);
      if (n == 32768 && vocab == 131072) {
        const double logits_mb = double(n) * double(vocab) * 4 / 1e6;
        record("cce.memory_fraction_32k_128k", fused_bytes / 1e6, "MB", logits_mb, "<= 0.01",
               note + "; baseline: the fp32 logits' size");
      }
      const nlohmann::json peer =
          arbor::bench::FindRecord(results, "cce.torch_ms." + shape, "torch", info->name);
      if (peer.is_object()) {
        const double torch_ms = peer["value"].get<double>();
        record("cce.time_vs_torch." + shape, fused_ms, "ms", torch_ms, nullptr,
               note + "; baseline: log_softmax(x @ W.T) + gather in PyTorch (cce_torch.py)");
        std::printf("%-12s torch %9.3f ms: fused/torch %.3f\n", shape.c_str(), torch_ms,
                    fused_ms / torch_ms);
      }
    }
  }
  arbor::bench::AppendResults(results, records);
  std::printf("appended %zu records to %s\n", records.size(), results.c_str());
  return 0;
}
