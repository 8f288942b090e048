// bench_lora_register: how fast AdapterStore::Register reads PEFT adapters, on the CPU backend
// (the host side of registration: read, check, pack into the host copy, SHA-256). Writes
// --dirs PEFT adapters of Llama-3-8B's shapes (hidden 4096, 32 heads, 8 KV heads, head_dim 128)
// with --layers layers, rank --rank on q_proj and v_proj, weights in --file-dtype, under --root;
// then, for each thread count of --threads, a fresh store (model dtype --dtype, host budget
// large enough that nothing is evicted) registers --names names (name i on directory
// i % --dirs) split over that many threads, and prints the wall time and MB/s of adapter file
// registered. The files are read once before timing, so they come from the page cache, as in
// tools/bench/lora_suite.sh where 2,000 names share 8 directories.
//
//   bench_lora_register [--layers 8] [--rank 64] [--dirs 4] [--names 48] [--threads 1,4]
//                       [--file-dtype bf16|f16|f32] [--dtype bf16|f16|f32]
//                       [--root /tmp/arbor_lora_register_bench]
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "engine/lora/adapter_store.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/dtype.h"
#include "memory/unified_pool.h"

namespace {

namespace fs = std::filesystem;
using arbor::engine::AdapterStore;
using arbor::engine::AdapterStoreOptions;
using arbor::engine::ModelSpec;
using arbor::kernels::DType;

struct Flags {
  int64_t layers = 8;
  int64_t rank = 64;
  int dirs = 4;
  int names = 48;
  std::vector<int> threads = {1, 4};
  std::string file_dtype = "bf16";
  std::string dtype = "bf16";
  std::string root = "/tmp/arbor_lora_register_bench";
};

DType ParseDType(const std::string& s) {
  if (s == "f32") return DType::kF32;
  if (s == "f16") return DType::kF16;
  if (s == "bf16") return DType::kBF16;
  std::fprintf(stderr, "unknown dtype %s (bf16, f16, f32)\n", s.c_str());
  std::exit(2);
}

const char* StName(DType t) { return t == DType::kF32 ? "F32" : t == DType::kF16 ? "F16" : "BF16"; }

ModelSpec Llama3Shape(int64_t layers) {
  ModelSpec s;
  s.architecture = "LlamaForCausalLM";
  s.vocab_size = 128256;
  s.hidden_size = 4096;
  s.intermediate_size = 14336;
  s.num_layers = layers;
  s.num_heads = 32;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.max_position_embeddings = 8192;
  s.layer_windows.assign(size_t(layers), 0);
  s.torch_dtype = "bfloat16";
  return s;
}

// A PEFT directory: adapter_config.json and adapter_model.safetensors (random N(0, 0.02)
// weights in `file_dtype`). Returns the weights file's size.
size_t WriteAdapter(const fs::path& dir, const ModelSpec& s, int64_t rank, DType file_dtype,
                    uint32_t seed) {
  fs::create_directories(dir);
  std::ofstream(dir / "adapter_config.json")
      << "{\"peft_type\": \"LORA\", \"r\": " << rank << ", \"lora_alpha\": " << 2 * rank
      << ", \"target_modules\": [\"q_proj\", \"v_proj\"], \"bias\": \"none\"}";
  struct T {
    std::string name;
    int64_t rows, cols;
  };
  std::vector<T> tensors;
  const int64_t q = s.num_heads * s.head_dim, kv = s.num_kv_heads * s.head_dim;
  for (int64_t l = 0; l < s.num_layers; ++l) {
    for (const auto& [target, out] :
         {std::pair<const char*, int64_t>{"q_proj", q}, {"v_proj", kv}}) {
      const std::string p =
          absl::StrCat("base_model.model.model.layers.", l, ".self_attn.", target, ".");
      tensors.push_back({p + "lora_A.weight", rank, s.hidden_size});
      tensors.push_back({p + "lora_B.weight", out, rank});
    }
  }
  const size_t elem = arbor::kernels::DTypeSize(file_dtype);
  std::string header = "{";
  size_t offset = 0;
  for (const T& t : tensors) {
    const size_t bytes = size_t(t.rows * t.cols) * elem;
    absl::StrAppend(&header, header.size() > 1 ? ", " : "", "\"", t.name, "\": {\"dtype\": \"",
                    StName(file_dtype), "\", \"shape\": [", t.rows, ", ", t.cols,
                    "], \"data_offsets\": [", offset, ", ", offset + bytes, "]}");
    offset += bytes;
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  std::string data(offset, '\0');
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (size_t i = 0; i < offset / elem; ++i) {
    arbor::kernels::StoreFromFloat(data.data(), file_dtype, int64_t(i), normal(rng));
  }
  std::ofstream out(dir / "adapter_model.safetensors", std::ios::binary | std::ios::trunc);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(char((n >> (8 * i)) & 0xff));
  out << header << data;
  return 8 + header.size() + data.size();
}

// CPU seconds (user + system) of the whole process so far: on a shared machine the wall time
// also counts other processes' turns.
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

std::vector<int> ParseInts(const std::string& s) {
  std::vector<int> out;
  for (absl::string_view p : absl::StrSplit(s, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(p, &v) || v < 1) {
      std::fprintf(stderr, "bad list %s\n", s.c_str());
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--layers")
      f.layers = std::atoll(v.c_str());
    else if (k == "--rank")
      f.rank = std::atoll(v.c_str());
    else if (k == "--dirs")
      f.dirs = std::atoi(v.c_str());
    else if (k == "--names")
      f.names = std::atoi(v.c_str());
    else if (k == "--threads")
      f.threads = ParseInts(v);
    else if (k == "--file-dtype")
      f.file_dtype = v;
    else if (k == "--dtype")
      f.dtype = v;
    else if (k == "--root")
      f.root = v;
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  const ModelSpec spec = Llama3Shape(f.layers);
  fs::remove_all(f.root);
  std::vector<size_t> file_bytes;
  for (int d = 0; d < f.dirs; ++d) {
    file_bytes.push_back(WriteAdapter(fs::path(f.root) / absl::StrCat("a", d), spec, f.rank,
                                      ParseDType(f.file_dtype), uint32_t(d + 1)));
  }
  arbor::kernels::CpuBackend cpu;
  auto pool = arbor::memory::UnifiedPool::Create(cpu, size_t(2) << 20, 64);
  if (!pool.ok()) {
    std::fprintf(stderr, "%s\n", pool.status().ToString().c_str());
    return 1;
  }
  AdapterStoreOptions o;
  o.root = f.root;
  o.max_rank = f.rank;
  o.dtype = ParseDType(f.dtype);
  o.host_bytes = int64_t(1) << 40;  // nothing is evicted
  std::printf("adapters: %lld layers, rank %lld on q/v, %.1f MB of %s file each; model %s\n",
              (long long)f.layers, (long long)f.rank, double(file_bytes[0]) / 1e6,
              f.file_dtype.c_str(), f.dtype.c_str());
  // Warm the page cache (and the allocator) with one untimed round.
  for (int round = -1; round < int(f.threads.size()); ++round) {
    const int threads = round < 0 ? 1 : f.threads[size_t(round)];
    const int names = round < 0 ? f.dirs : f.names;
    AdapterStore store(**pool, cpu, spec, o);
    std::atomic<int> next{0}, failed{0};
    const absl::Time start = absl::Now();
    const double cpu_start = CpuSeconds();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (int i = next++; i < names; i = next++) {
          auto info = store.Register(absl::StrCat("n", i), absl::StrCat("a", i % f.dirs));
          if (!info.ok()) {
            std::fprintf(stderr, "%s\n", info.status().ToString().c_str());
            ++failed;
          }
        }
      });
    }
    for (auto& w : workers) w.join();
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    const double cpu = CpuSeconds() - cpu_start;
    if (failed > 0) return 1;
    if (round < 0) continue;
    double mb = 0;
    for (int i = 0; i < names; ++i) mb += double(file_bytes[size_t(i % f.dirs)]) / 1e6;
    std::printf(
        "threads %d: %d names, %.0f MB in %.3f s: %.0f MB/s (%.1f ms per name); %.3f CPU s, %.0f "
        "MB per CPU s\n",
        threads, names, mb, secs, mb / secs, secs * 1e3 / names, cpu, mb / cpu);
  }
  return 0;
}
