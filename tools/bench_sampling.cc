// bench_sampling: the GPU sampler (kernels/cuda/sampling.h, LaunchSample) per step, for batch
// sizes x a vocabulary, and a floor measured in the same process: a device-to-device copy of
// the batch's logits (the bytes the sampler's first pass reads and writes). Appends one record
// per (knobs, batch) to bench/results.json (see BENCHMARKS.md).
//
//   bench_sampling [--vocab 128256] [--batches 1,64,256] [--iters 100]
//                  [--results bench/results.json]
//
// Logits are N(0, 2.5) (a spread like a language model's); each row has its own Philox
// counter. Times are CUDA-event medians over --iters launches after 10 warm-ups.
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda/sampling.h"
#include "kernels/sampling.h"
#include "tools/bench/results.h"

namespace {

using arbor::kernels::SampleRow;

struct Args {
  int64_t vocab = 128256;
  std::vector<int64_t> batches = {1, 64, 256};
  int iters = 100;
  std::string results = "bench/results.json";
};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "bench_sampling: %s\n", msg.c_str());
  return 1;
}

#define CUDA_OR_FAIL(expr)                                                                    \
  do {                                                                                        \
    const cudaError_t err_ = (expr);                                                          \
    if (err_ != cudaSuccess) return Fail(#expr ": " + std::string(cudaGetErrorString(err_))); \
  } while (0)

double Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : double(v[v.size() / 2]);
}

struct Knobs {
  std::string name;
  SampleRow row;
};

std::vector<Knobs> AllKnobs() {
  std::vector<Knobs> out;
  SampleRow greedy;
  greedy.temperature = 0.0f;
  out.push_back({"greedy", greedy});
  SampleRow typical;
  typical.temperature = 0.7f;
  typical.top_k = 50;
  typical.top_p = 0.9f;
  out.push_back({"T 0.7, top_k 50, top_p 0.9", typical});
  SampleRow top_p;
  top_p.temperature = 1.0f;
  top_p.top_p = 0.95f;
  out.push_back({"T 1, top_p 0.95", top_p});
  SampleRow full = typical;
  full.min_p = 0.05f;
  full.repetition_penalty = 1.1f;
  full.frequency_penalty = 0.2f;
  full.presence_penalty = 0.2f;
  full.logprobs = 5;
  out.push_back({"T 0.7, top_k 50, top_p 0.9, min_p 0.05, penalties, logprobs 5", full});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) {
    if (chdir(ws) != 0) return Fail("cannot enter BUILD_WORKSPACE_DIRECTORY");
  }
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--vocab") {
      a.vocab = std::atoll(v.c_str());
    } else if (k == "--iters") {
      a.iters = std::atoi(v.c_str());
    } else if (k == "--results") {
      a.results = v;
    } else if (k == "--batches") {
      a.batches.clear();
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ',')) a.batches.push_back(std::atoll(item.c_str()));
    } else {
      return Fail("unknown flag " + k);
    }
  }
  if (a.vocab < 1 || a.iters < 1 || a.batches.empty()) return Fail("bad sizes");
  const int64_t max_batch = *std::max_element(a.batches.begin(), a.batches.end());
  const int64_t v = a.vocab;
  const int64_t words = arbor::kernels::SampleMaskWords(v);

  cudaDeviceProp prop{};
  CUDA_OR_FAIL(cudaGetDeviceProperties(&prop, 0));
  const std::string card = prop.name;

  // Inputs: logits, a penalty slot per row with a 200-token prompt and 50-token output.
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 2.5f);
  std::vector<float> logits(size_t(max_batch * v));
  for (float& x : logits) x = normal(rng);
  std::vector<uint32_t> seen(size_t(max_batch * words), 0);
  std::vector<int32_t> counts(size_t(max_batch * v), 0);
  for (int64_t r = 0; r < max_batch; ++r) {
    for (int k = 0; k < 200; ++k) {
      const int64_t t = int64_t(rng() % uint64_t(v));
      seen[size_t(r * words + t / 32)] |= 1u << (t % 32);
    }
    for (int k = 0; k < 50; ++k) ++counts[size_t(r * v + int64_t(rng() % uint64_t(v)))];
  }
  const size_t ws_bytes = arbor::kernels::SampleWorkspaceBytes(max_batch, v);
  float *d_logits = nullptr, *d_copy = nullptr, *d_logprob = nullptr, *d_top_lp = nullptr;
  uint32_t* d_seen = nullptr;
  int32_t *d_counts = nullptr, *d_tokens = nullptr, *d_top_ids = nullptr;
  SampleRow* d_rows = nullptr;
  void* d_ws = nullptr;
  CUDA_OR_FAIL(cudaMalloc(&d_logits, logits.size() * sizeof(float)));
  CUDA_OR_FAIL(cudaMalloc(&d_copy, logits.size() * sizeof(float)));
  CUDA_OR_FAIL(cudaMalloc(&d_seen, seen.size() * sizeof(uint32_t)));
  CUDA_OR_FAIL(cudaMalloc(&d_counts, counts.size() * sizeof(int32_t)));
  CUDA_OR_FAIL(cudaMalloc(&d_rows, size_t(max_batch) * sizeof(SampleRow)));
  CUDA_OR_FAIL(cudaMalloc(&d_ws, ws_bytes));
  CUDA_OR_FAIL(cudaMalloc(&d_tokens, size_t(max_batch) * sizeof(int32_t)));
  CUDA_OR_FAIL(cudaMalloc(&d_logprob, size_t(max_batch) * sizeof(float)));
  CUDA_OR_FAIL(cudaMalloc(&d_top_ids, size_t(max_batch) * arbor::kernels::kMaxTopLogprobs * 4));
  CUDA_OR_FAIL(cudaMalloc(&d_top_lp, size_t(max_batch) * arbor::kernels::kMaxTopLogprobs * 4));
  CUDA_OR_FAIL(cudaMemcpy(d_logits, logits.data(), logits.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OR_FAIL(cudaMemcpy(d_seen, seen.data(), seen.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OR_FAIL(cudaMemcpy(d_counts, counts.data(), counts.size() * 4, cudaMemcpyHostToDevice));

  cudaStream_t stream;
  CUDA_OR_FAIL(cudaStreamCreate(&stream));
  cudaEvent_t start, stop;
  CUDA_OR_FAIL(cudaEventCreate(&start));
  CUDA_OR_FAIL(cudaEventCreate(&stop));

  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  std::string command = "bench_sampling";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];

  nlohmann::json records = nlohmann::json::array();
  for (int64_t batch : a.batches) {
    // The floor: copy this batch's logits on the device.
    std::vector<float> copy_ms;
    for (int it = 0; it < a.iters + 10; ++it) {
      CUDA_OR_FAIL(cudaEventRecord(start, stream));
      CUDA_OR_FAIL(cudaMemcpyAsync(d_copy, d_logits, size_t(batch * v) * 4,
                                   cudaMemcpyDeviceToDevice, stream));
      CUDA_OR_FAIL(cudaEventRecord(stop, stream));
      CUDA_OR_FAIL(cudaEventSynchronize(stop));
      float ms = 0.0f;
      CUDA_OR_FAIL(cudaEventElapsedTime(&ms, start, stop));
      if (it >= 10) copy_ms.push_back(ms);
    }
    const double floor_ms = Median(copy_ms);

    for (const Knobs& knobs : AllKnobs()) {
      std::vector<SampleRow> rows(size_t(batch), knobs.row);
      for (int64_t r = 0; r < batch; ++r) {
        rows[r].penalty_slot = int32_t(r);
        rows[r].rng_key = 1234;
        rows[r].rng_stream = uint64_t(r);
      }
      arbor::kernels::SampleArgs s;
      s.logits = d_logits;
      s.logits_stride = v;
      s.rows = d_rows;
      s.num_rows = batch;
      s.vocab = v;
      s.prompt_seen = d_seen;
      s.output_counts = d_counts;
      s.num_slots = max_batch;
      s.workspace = d_ws;
      s.workspace_bytes = ws_bytes;
      s.tokens_out = d_tokens;
      s.logprob_out = d_logprob;
      s.top_ids_out = d_top_ids;
      s.top_logprobs_out = d_top_lp;
      std::vector<float> ms_all;
      for (int it = 0; it < a.iters + 10; ++it) {
        for (auto& r : rows) r.rng_counter = uint64_t(it);  // fresh draws each step
        CUDA_OR_FAIL(cudaMemcpyAsync(d_rows, rows.data(), rows.size() * sizeof(SampleRow),
                                     cudaMemcpyHostToDevice, stream));
        CUDA_OR_FAIL(cudaEventRecord(start, stream));
        CUDA_OR_FAIL(arbor::kernels::LaunchSample(s, stream));
        CUDA_OR_FAIL(cudaEventRecord(stop, stream));
        CUDA_OR_FAIL(cudaEventSynchronize(stop));
        float ms = 0.0f;
        CUDA_OR_FAIL(cudaEventElapsedTime(&ms, start, stop));
        if (it >= 10) ms_all.push_back(ms);
      }
      const double ms = Median(ms_all);
      const std::string name = "GPU sampler time per step (" + knobs.name + "; batch " +
                               std::to_string(batch) + ", vocab " + std::to_string(v) + ")";
      std::printf("%-100s %8.4f ms  (logits copy %.4f ms, ratio %.2f)\n", name.c_str(), ms,
                  floor_ms, ms / floor_ms);
      records.push_back({{"name", name},
                         {"value", ms},
                         {"unit", "ms"},
                         {"baseline", floor_ms},
                         {"ratio", ms / floor_ms},
                         {"target", nullptr},
                         {"card", card},
                         {"date", date},
                         {"command", command}});
    }
  }
  arbor::bench::AppendResults(a.results, records);
  std::printf("appended %zu records to %s (medians of %d launches)\n", records.size(),
              a.results.c_str(), a.iters);
  return 0;
}
