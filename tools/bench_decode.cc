// bench_decode: decode time per step of a dummy-weight model (a Llama-3-8B-shaped bf16 one by
// default) through engine::Model, against the memory-bandwidth floor measured in the same run:
// the bytes a decode step must read (every weight but the embedding table, of which it reads
// one row per sequence, plus at batch > 1 the K/V the sequences attend to) over the better of a
// copy kernel and a read-only streaming kernel. At batch 1 it appends
// decode.b1_8b.ratio_to_floor to bench/results.json (BENCHMARKS.md); at batch N, decode.bN.
//
//   bench_decode [--config tools/bench/llama3-8b] [--prompt 128] [--steps 64] [--dtype bfloat16]
//                [--batch 1] [--results bench/results.json] [--profile eager|graph]
//
// --profile brackets the fifth timed step of that kind with cudaProfilerStart/Stop, for
// `ncu --profile-from-start off` (tools/bench/profile_decode.sh).
#include <cuda_profiler_api.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "engine/model/hf_config.h"
#include "engine/model/model.h"
#include "engine/model/model_factory.h"
#include "engine/runner/device_sampler.h"
#include "kernels/cuda/cuda_backend.h"
#include "tools/bench/bandwidth.h"
#include "tools/bench/results.h"

namespace {

struct Args {
  std::string config = "tools/bench/llama3-8b";
  int prompt = 128;
  int steps = 64;
  int batch = 1;  // sequences decoding together, each with its own prompt of `prompt` tokens
  std::string dtype = "bfloat16";
  std::string results = "bench/results.json";
  std::string profile;  // eager | graph: one step bracketed for ncu --profile-from-start off
};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "bench_decode: %s\n", msg.c_str());
  return 2;
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
    if (k == "--config") {
      a.config = v;
    } else if (k == "--prompt") {
      a.prompt = std::atoi(v.c_str());
    } else if (k == "--batch") {
      a.batch = std::atoi(v.c_str());
    } else if (k == "--steps") {
      a.steps = std::atoi(v.c_str());
    } else if (k == "--dtype") {
      a.dtype = v;
    } else if (k == "--results") {
      a.results = v;
    } else if (k == "--profile" && (v == "eager" || v == "graph")) {
      a.profile = v;
    } else {
      return Fail("unknown flag " + k);
    }
  }
  if (a.prompt <= 0 || a.steps <= 0 || a.batch <= 0) return Fail("sizes must be > 0");
  spdlog::set_level(spdlog::level::warn);
  auto backend = arbor::kernels::CreateCudaBackend(0);
  if (!backend.ok()) return Fail(std::string(backend.status().message()));
  auto info = (*backend)->Info();
  if (!info.ok()) return Fail(std::string(info.status().message()));
  auto spec = arbor::engine::LoadHfConfig(a.config);
  if (!spec.ok()) return Fail(std::string(spec.status().message()));
  const arbor::engine::ModelOptions options = arbor::engine::ResolveDtypes(
      a.dtype, "auto", arbor::kernels::DeviceKind::kCuda, spec->torch_dtype);
  const absl::Time t0 = absl::Now();
  auto model = arbor::engine::Model::Dummy(*spec, 1, **backend, options);
  if (!model.ok()) return Fail(std::string(model.status().message()));
  std::printf("model %s: %.2f GB of %s weights made on the device in %.2f s\n", a.config.c_str(),
              double((*model)->weight_bytes()) / 1e9, arbor::kernels::DTypeName(options.dtype),
              absl::ToDoubleSeconds(absl::Now() - t0));

  // Room for the prompt and two timed runs (eager, then replaying the decode graph) in every
  // sequence; the sequences take consecutive blocks of one page buffer (one KV cache view).
  const int64_t capacity = a.prompt + 2 * (a.steps + 4) + 8;
  const int64_t block_size = 16;
  const int64_t blocks_per_seq = (capacity + block_size - 1) / block_size;
  auto pages = (*backend)->Allocate(size_t(blocks_per_seq * a.batch) *
                                    (*model)->KvPageBytes(block_size));
  if (!pages.ok()) return Fail(std::string(pages.status().message()));
  const arbor::engine::KvCacheView kv{pages->data(), block_size};
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(a.batch));
  for (int64_t i = 0; i < a.batch; ++i) {
    for (int64_t b = 0; b < blocks_per_seq; ++b) {
      tables[size_t(i)].push_back(int32_t(i * blocks_per_seq + b));
    }
  }
  std::vector<int64_t> lengths(static_cast<size_t>(a.batch), 0);
  arbor::engine::ForwardLimits limits;
  limits.max_tokens = std::max(a.prompt, a.batch);
  limits.max_seqs = a.batch;
  limits.max_blocks = blocks_per_seq;
  limits.max_logit_rows = a.batch;
  if (auto s = (*model)->Reserve(limits); !s.ok()) return Fail(std::string(s.message()));
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int32_t> id(0, int32_t(spec->vocab_size - 1));
  std::vector<int32_t> prompt(static_cast<size_t>(a.prompt));
  for (auto& t : prompt) t = id(rng);
  // A step as the engine runs it: the forward pass with its logits left on the device, then the
  // device sampler (greedy), whose token copy is the step's one synchronisation.
  auto sampler =
      arbor::engine::DeviceSampler::Create(**backend, spec->vocab_size, a.batch, capacity, {});
  if (!sampler.ok()) return Fail(std::string(sampler.status().message()));
  arbor::engine::SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<arbor::engine::SequenceRng> sampler_rngs(static_cast<size_t>(a.batch),
                                                       arbor::engine::SequenceRng(uint64_t{0}));
  std::vector<std::vector<int32_t>> outputs(static_cast<size_t>(a.batch));
  // Runs `ids[i]` after sequence first + i's cached tokens, for ids.size() sequences; returns
  // each one's sampled token.
  auto step = [&](int64_t first,
                  const std::vector<absl::Span<const int32_t>>& ids) -> absl::StatusOr<
                                                                      std::vector<int32_t>> {
    std::vector<arbor::engine::SequenceChunk> chunks;
    std::vector<arbor::engine::SampleInput> inputs;
    std::vector<int32_t> rows;
    for (size_t i = 0; i < ids.size(); ++i) {
      const size_t q = size_t(first) + i;
      chunks.push_back({ids[i], lengths[q], tables[q],
                        arbor::engine::SequenceChunk::Logits::kLast, nullptr});
      inputs.push_back({q, &greedy, prompt, outputs[q], &sampler_rngs[q]});
      rows.push_back(int32_t(i));
    }
    auto logits = (*model)->ForwardOnDevice(chunks, kv);
    if (!logits.ok()) return logits.status();
    for (size_t i = 0; i < ids.size(); ++i) lengths[size_t(first) + i] += int64_t(ids[i].size());
    auto sampled = (*sampler)->Sample(*logits, rows, inputs, (*backend)->default_stream());
    if (!sampled.ok()) return sampled.status();
    std::vector<int32_t> tokens;
    for (size_t i = 0; i < ids.size(); ++i) {
      outputs[size_t(first) + i].push_back((*sampled)[i].token);
      tokens.push_back((*sampled)[i].token);
    }
    return tokens;
  };
  // Prefill one sequence at a time (the timed steps are the decode steps).
  std::vector<int32_t> next;
  for (int64_t i = 0; i < a.batch; ++i) {
    auto first = step(i, {absl::Span<const int32_t>(prompt)});
    if (!first.ok()) return Fail(std::string(first.status().message()));
    next.push_back((*first)[0]);
  }
  auto decode = [&]() -> absl::Status {
    std::vector<absl::Span<const int32_t>> ids;
    for (const int32_t& t : next) ids.emplace_back(&t, 1);
    auto tokens = step(0, ids);
    if (!tokens.ok()) return tokens.status();
    next = *tokens;
    return absl::OkStatus();
  };
  // Warm-up steps (first uses of each GEMM shape pick their cuBLASLt algorithm), then timed
  // steps: wall time per token, which is what a client sees. The median.
  auto time_steps = [&](std::vector<double>* ms, bool profile) -> absl::Status {
    for (int i = 0; i < a.steps + 4; ++i) {
      const absl::Time s = absl::Now();
      if (profile && i == 8) cudaProfilerStart();
      const absl::Status st = decode();
      if (profile && i == 8) cudaProfilerStop();
      if (!st.ok()) return st;
      if (i >= 4) ms->push_back(absl::ToDoubleMilliseconds(absl::Now() - s));
    }
    std::sort(ms->begin(), ms->end());
    return absl::OkStatus();
  };
  std::vector<double> eager_ms, ms;
  if (auto s = time_steps(&eager_ms, a.profile == "eager"); !s.ok())
    return Fail(std::string(s.message()));
  // Then as the engine runs decode steps by default (engine.cuda_graphs): replaying a graph.
  auto graphs = (*model)->CaptureDecodeGraphs(kv, a.batch);
  if (!graphs.ok()) return Fail(std::string(graphs.status().message()));
  if (auto s = time_steps(&ms, a.profile == "graph"); !s.ok())
    return Fail(std::string(s.message()));
  if ((*model)->graph_launches() < a.steps) return Fail("the decode steps did not replay a graph");
  const double median_ms = ms[ms.size() / 2];
  const double eager_median_ms = eager_ms[eager_ms.size() / 2];

  arbor::bench::Bandwidth bw;
  const char* err = nullptr;
  if (!arbor::bench::MeasureBandwidth(size_t(2) << 30, 20, &bw, &err)) return Fail(err);
  const size_t elem = arbor::kernels::DTypeSize(options.dtype);
  // Weights (one embedding row per sequence) and, per sequence, the K/V of its context at the
  // middle of the timed graph steps.
  const double context = double(a.prompt) + 1.0 + 1.5 * double(a.steps + 4);
  const double kv_bytes = double(a.batch) * context *
                          double((*model)->KvPageBytes(block_size)) / double(block_size);
  const double read_bytes =
      double((*model)->weight_bytes()) -
      double(spec->vocab_size - a.batch) * double(spec->hidden_size) * double(elem) +
      (a.batch > 1 ? kv_bytes : 0.0);
  const double floor_ms = read_bytes / bw.best() * 1e3;
  std::printf("bandwidth: copy %.2f TB/s, read-only stream %.2f TB/s\n", bw.copy_bytes_per_s / 1e12,
              bw.stream_bytes_per_s / 1e12);
  std::printf(
      "decode batch %d, prompt %d: median %.3f ms/step over %d steps (min %.3f, max %.3f) with "
      "the decode graph; %.3f ms/step eager\n",
      a.batch, a.prompt, median_ms, a.steps, ms.front(), ms.back(), eager_median_ms);
  std::printf("floor: %.2f GB read per step / %.2f TB/s = %.3f ms -> ratio %.3f%s\n",
              read_bytes / 1e9, bw.best() / 1e12, floor_ms, median_ms / floor_ms,
              a.batch == 1 ? " (target <= 1.2)" : "");

  std::string command = "bench_decode";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  const std::string date = absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone());
  const std::string b = std::to_string(a.batch);
  nlohmann::json records = nlohmann::json::array();
  records.push_back(
      {{"name", (a.batch == 1 ? std::string("decode.b1_8b.ratio_to_floor") : "decode.b" + b) +
                    " (batch " + b + ", prompt " + std::to_string(a.prompt) + ", " +
                    arbor::kernels::DTypeName(options.dtype) + ", " + a.config +
                    ", engine::Model::ForwardOnDevice replaying the decode CUDA graph + "
                    "DeviceSampler (greedy) per step; floor = "
                    "weight bytes read per step" +
                    (a.batch > 1 ? " + the sequences' K/V" : "") +
                    " / best of copy and read-only streaming bandwidth)"},
       {"value", median_ms},
       {"unit", a.batch == 1 ? "ms/token" : "ms/step"},
       {"baseline", floor_ms},
       {"ratio", median_ms / floor_ms},
       {"target", a.batch == 1 ? nlohmann::json("<= 1.2") : nlohmann::json(nullptr)},
       {"card", info->name},
       {"date", date},
       {"command", command}});
  records.push_back(
      {{"name", "decode.b" + b + (a.batch == 1 ? "_8b" : "") +
                    ".graph_vs_eager (ms/step replaying the decode CUDA graph, "
                    "over the same steps launched eagerly; batch " +
                    b + ", " + a.config + ")"},
       {"value", median_ms},
       {"unit", a.batch == 1 ? "ms/token" : "ms/step"},
       {"baseline", eager_median_ms},
       {"ratio", median_ms / eager_median_ms},
       {"target", nullptr},
       {"card", info->name},
       {"date", date},
       {"command", command}});
  records.push_back({{"name", "device bandwidth, read-only streaming (2 GiB buffer)"},
                     {"value", bw.stream_bytes_per_s / 1e12},
                     {"unit", "TB/s"},
                     {"baseline", bw.copy_bytes_per_s / 1e12},
                     {"ratio", bw.stream_bytes_per_s / bw.copy_bytes_per_s},
                     {"target", nullptr},
                     {"card", info->name},
                     {"date", date},
                     {"command", command + " (baseline: copy kernel, bytes read + written)"}});
  arbor::bench::AppendResults(a.results, records);
  std::printf("appended %zu records to %s\n", records.size(), a.results.c_str());
  return 0;
}
