// bench_moe: one Mixtral-8x7B-shaped MoE layer (hidden 4096, inter 14336, 8 experts, top-2,
// bf16, seeded random weights) through engine::RunMoeLayer, the code every MoE layer of
// engine::Model runs, at a few token counts. Times are CUDA-event medians over --iters layers
// after 5 warm-ups, from the normed input to the layer's output (router, routing, grouping,
// both grouped GEMMs, SwiGLU and the weighted combine). Appends one record per token count to
// bench/results.json, named like tools/bench/moe_layer_torch.py's (a straightforward PyTorch
// loop over the experts on the same shapes); when --peer (default: the results file) holds the
// peer's record of that name on the same card, also a moe.mixtral_layer_vs_torch record with
// the peer's time as baseline (BENCHMARKS.md). GPU only.
//
//   bench_moe [--tokens 1,16,256] [--iters 50] [--results bench/results.json] [--peer FILE]
//             [--hidden 4096] [--inter 14336] [--experts 8] [--top-k 2]
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "engine/model/moe_layer.h"
#include "kernels/cuda/cuda_backend.h"
#include "tools/bench/results.h"

namespace {

using arbor::kernels::DeviceBuffer;
using arbor::kernels::DType;
using arbor::kernels::Tensor;

struct Args {
  std::vector<int64_t> tokens = {1, 16, 256};
  int iters = 50;
  std::string results = "bench/results.json";
  std::string peer;  // "": the results file
  int64_t hidden = 4096, inter = 14336, experts = 8, top_k = 2;
};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "bench_moe: %s\n", msg.c_str());
  return 2;
}

// The name both this tool and the PyTorch peer give a token count's record.
std::string RecordName(const Args& a, int64_t n) {
  return "moe.mixtral_layer (tokens " + std::to_string(n) + ", hidden " + std::to_string(a.hidden) +
         ", inter " + std::to_string(a.inter) + ", " + std::to_string(a.experts) +
         " experts, top-" + std::to_string(a.top_k) + ", bf16)";
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) {
    if (chdir(ws) != 0) return Fail("cannot enter BUILD_WORKSPACE_DIRECTORY");
  }
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) return Fail("missing value for " + k);
    const std::string v = argv[++i];
    if (k == "--tokens") {
      a.tokens = arbor::bench::ParseIntList(v);
    } else if (k == "--iters") {
      a.iters = std::atoi(v.c_str());
    } else if (k == "--results") {
      a.results = v;
    } else if (k == "--peer") {
      a.peer = v;
    } else if (k == "--hidden") {
      a.hidden = std::atoll(v.c_str());
    } else if (k == "--inter") {
      a.inter = std::atoll(v.c_str());
    } else if (k == "--experts") {
      a.experts = std::atoll(v.c_str());
    } else if (k == "--top-k") {
      a.top_k = std::atoll(v.c_str());
    } else {
      return Fail("unknown flag " + k);
    }
  }
  if (a.tokens.empty() || a.iters <= 0 || a.hidden <= 0 || a.inter <= 0 || a.experts <= 0 ||
      a.top_k <= 0 || a.top_k > a.experts) {
    return Fail("sizes must be > 0 and top-k <= experts");
  }
  for (int64_t n : a.tokens) {
    if (n <= 0) return Fail("token counts must be > 0");
  }
  if (a.peer.empty()) a.peer = a.results;

  auto made = arbor::kernels::CreateCudaBackend(0);
  if (!made.ok()) return Fail(std::string(made.status().message()));
  arbor::kernels::Backend& be = **made;
  auto& st = be.default_stream();
  auto info = be.Info();
  if (!info.ok()) return Fail(std::string(info.status().message()));

  const arbor::engine::MoeLayerShape shape{a.hidden, a.inter, a.experts, a.top_k, DType::kBF16};
  const int64_t max_n = *std::max_element(a.tokens.begin(), a.tokens.end());
  const int64_t max_pairs = max_n * a.top_k;
  std::vector<DeviceBuffer> owned;
  // A bf16 [rows, cols] tensor of its own buffer, seeded U(-bound, bound).
  auto make = [&](int64_t rows, int64_t cols, float bound, uint64_t stream,
                  bool fill) -> absl::StatusOr<Tensor> {
    auto buf = be.Allocate(size_t(rows * cols) * 2);
    if (!buf.ok()) return buf.status();
    const Tensor t = arbor::kernels::View(buf->data(), DType::kBF16, rows, cols);
    owned.push_back(std::move(*buf));
    if (fill) {
      if (auto s = be.RandomFill({t, 1, stream, -bound, bound}, st); !s.ok()) return s;
    }
    return t;
  };
  // Weights U(-a, a), a = sqrt(3 / in_features) (engine/model/weights.h's dummy weights).
  auto router = make(a.experts, a.hidden, std::sqrt(3.0f / float(a.hidden)), 1, true);
  auto gate_up =
      make(a.experts * 2 * a.inter, a.hidden, std::sqrt(3.0f / float(a.hidden)), 2, true);
  auto down = make(a.experts * a.hidden, a.inter, std::sqrt(3.0f / float(a.inter)), 3, true);
  auto hb = make(max_n, a.hidden, 1.0f, 4, true);
  auto out = make(max_n, a.hidden, 1.0f, 0, false);
  auto router_out = make(max_n, a.experts, 1.0f, 0, false);
  auto gate_up_out = make(max_pairs, 2 * a.inter, 1.0f, 0, false);
  auto act = make(max_pairs, a.inter, 1.0f, 0, false);
  auto pairs = make(max_pairs, a.hidden, 1.0f, 0, false);
  for (const auto* t :
       {&router, &gate_up, &down, &hb, &out, &router_out, &gate_up_out, &act, &pairs}) {
    if (!t->ok()) return Fail(std::string(t->status().message()));
  }
  auto scratch = be.Allocate(arbor::engine::MoeScratchBytes(shape, max_n));
  if (!scratch.ok()) return Fail(std::string(scratch.status().message()));
  const arbor::engine::MoeLayerWeights weights{router->data, gate_up->data, down->data};
  const arbor::engine::MoeLayerBuffers buffers{*router_out, *gate_up_out, *act, *pairs,
                                               scratch->data()};
  auto start = be.CreateEvent();
  auto stop = be.CreateEvent();
  if (!start.ok() || !stop.ok()) return Fail("cannot create events");
  if (auto s = st.Synchronize(); !s.ok()) return Fail(std::string(s.message()));
  const double weight_gb =
      double(a.experts) * double(3 * a.inter * a.hidden + a.hidden) * 2.0 / 1e9;
  std::printf("MoE layer: hidden %lld, inter %lld, %lld experts, top-%lld, bf16 (%.2f GB) on %s\n",
              (long long)a.hidden, (long long)a.inter, (long long)a.experts, (long long)a.top_k,
              weight_gb, info->name.c_str());

  std::string command = "bench_moe";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  const std::string date = absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone());
  nlohmann::json records = nlohmann::json::array();
  for (const int64_t n : a.tokens) {
    const Tensor in = arbor::kernels::Rows(*hb, 0, n);
    const Tensor y = arbor::kernels::Rows(*out, 0, n);
    std::vector<float> ms;
    for (int i = 0; i < a.iters + 5; ++i) {
      if (auto s = (*start)->Record(st); !s.ok()) return Fail(std::string(s.message()));
      if (auto s = arbor::engine::RunMoeLayer(be, st, shape, weights, in, buffers, y); !s.ok()) {
        return Fail(std::string(s.message()));
      }
      if (auto s = (*stop)->Record(st); !s.ok()) return Fail(std::string(s.message()));
      if (auto s = (*stop)->Synchronize(); !s.ok()) return Fail(std::string(s.message()));
      auto elapsed = (*stop)->ElapsedMsSince(**start);
      if (!elapsed.ok()) return Fail(std::string(elapsed.status().message()));
      if (i >= 5) ms.push_back(*elapsed);
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    const std::string name = RecordName(a, n);
    const nlohmann::json peer = arbor::bench::FindRecord(a.peer, name, "torch", info->name);
    std::printf("tokens %4lld: median %.3f ms (min %.3f, max %.3f)", (long long)n, median,
                double(ms.front()), double(ms.back()));
    const double torch_ms = peer.is_null() ? 0.0 : peer["value"].get<double>();
    if (peer.is_null()) {
      std::printf("; no PyTorch peer record in %s\n", a.peer.c_str());
    } else {
      std::printf("; PyTorch %.3f ms -> ratio %.3f\n", torch_ms, median / torch_ms);
    }
    records.push_back({{"name", name},
                       {"impl", "arbor"},
                       {"value", median},
                       {"unit", "ms"},
                       {"baseline", nullptr},
                       {"ratio", nullptr},
                       {"target", nullptr},
                       {"card", info->name},
                       {"date", date},
                       {"command", command}});
    if (!peer.is_null()) {
      std::string vs = name;
      vs.replace(0, std::string("moe.mixtral_layer").size(), "moe.mixtral_layer_vs_torch");
      records.push_back(
          {{"name", vs + "; baseline: tools/bench/moe_layer_torch.py, a PyTorch loop over experts"},
           {"value", median},
           {"unit", "ms"},
           {"baseline", torch_ms},
           {"ratio", median / torch_ms},
           {"target", nullptr},
           {"card", info->name},
           {"date", date},
           {"command", command + " (baseline: " + peer.value("command", "?") + ", " +
                           peer.value("date", "?") + ")"}});
    }
  }
  arbor::bench::AppendResults(a.results, records);
  std::printf("appended %zu records to %s\n", records.size(), a.results.c_str());
  return 0;
}
