// bench_lora: heterogeneous batched LoRA (kernels/lora.h, Backend::Lora) against the loop the
// model ran before it, on Llama-3-8B's fused qkv projection (in 4096; q 4096, k 1024, v 1024;
// bf16). Adapter a of k has rank {8, 16, 32, 64}[a % 4] (--ranks) and its weights in 2 MiB pool
// pages handed out in shuffled order, read through its page table. The loop is, per adapter and
// per target, GatherRows of its tokens, Linear by A, Linear by B and ScatterAddRows, with A and
// B contiguous. Decode (one token per sequence, token t under adapter t % k, the per-token
// schedule) at every (tokens, adapters) pair with adapters <= tokens; prefill (--prefill: chunks
// of tokens / k consecutive tokens per adapter, the schedule PickLoraSchedule gives: segments,
// whose runs of >= kLoraMmaMinRun tokens go through the tensor-core tiles of
// kernels/cuda/lora_mma.cuh), also timed under the per-token schedule for comparison.
// CUDA-event medians over --iters calls after 5 warm-ups. Appends to bench/results.json per case
// a lora.qkv record and a lora.qkv_vs_loop record with the loop's time as baseline (each naming
// the kernel path it timed), and per prefill case a lora.qkv_vs_per_token record. GPU only.
//
//   bench_lora [--tokens 1,4,16,64,256] [--adapters 1,8,64] [--prefill 1024]
//              [--ranks 8,16,32,64] [--iters 50] [--results bench/results.json]
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "kernels/cuda/cuda_backend.h"
#include "tools/bench/results.h"

namespace {

using arbor::kernels::Backend;
using arbor::kernels::DeviceBuffer;
using arbor::kernels::DType;
using arbor::kernels::Tensor;

constexpr int64_t kIn = 4096;
constexpr int64_t kOuts[3] = {4096, 1024, 1024};
constexpr int64_t kPageBytes = int64_t(2) << 20;

struct Args {
  std::vector<int64_t> tokens = {1, 4, 16, 64, 256};
  std::vector<int64_t> adapters = {1, 8, 64};
  std::vector<int64_t> prefill = {1024};
  std::vector<int64_t> ranks = {8, 16, 32, 64};
  int iters = 50;
  std::string results = "bench/results.json";
};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "bench_lora: %s\n", msg.c_str());
  return 2;
}

#define BENCH_CHECK(expr)                                                   \
  do {                                                                      \
    if (auto s_ = (expr); !s_.ok()) return Fail(std::string(s_.message())); \
  } while (0)

// Every adapter's weights twice: in shuffled pool pages behind a directory (the op's input),
// and as contiguous A and B per target (the loop's).
struct Adapters {
  DeviceBuffer pool, table, slot_pages, slot_rank, slot_scale;
  std::vector<int64_t> rank;
  std::vector<std::array<Tensor, 3>> a, b;  // contiguous copies
  std::vector<DeviceBuffer> owned;
};

absl::Status MakeAdapters(Backend& be, const std::vector<int64_t>& ranks, int64_t k,
                          Adapters* out) {
  auto& st = be.default_stream();
  std::vector<std::vector<int64_t>> dirs;  // per adapter: (A, B) offsets of matrices 0, 1, 2
  std::vector<int64_t> stream_bytes;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t r = ranks[size_t(i) % ranks.size()];
    out->rank.push_back(r);
    std::vector<int64_t> dir;
    int64_t used = 256;  // the directory, 256-byte aligned as the adapter store packs it
    for (int g = 0; g < 3; ++g) {
      for (int64_t elems : {r * kIn, kOuts[g] * r}) {
        dir.push_back(used);
        used += (elems * 2 + 255) / 256 * 256;
      }
    }
    dirs.push_back(dir);
    stream_bytes.push_back(used);
  }
  std::vector<int32_t> first(size_t(k) + 1, 0);
  for (int64_t i = 0; i < k; ++i) {
    first[size_t(i) + 1] =
        first[size_t(i)] + int32_t((stream_bytes[size_t(i)] + kPageBytes - 1) / kPageBytes);
  }
  const int32_t pages = first.back();
  std::vector<int32_t> order(static_cast<size_t>(pages));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  auto pool = be.Allocate(size_t(pages) * size_t(kPageBytes));
  if (!pool.ok()) return pool.status();
  out->pool = std::move(*pool);
  const Tensor all = arbor::kernels::View(out->pool.data(), DType::kBF16,
                                          int64_t(pages) * kPageBytes / 2 / kIn, kIn);
  if (auto s = be.RandomFill({all, 11, 1, -0.02f, 0.02f}, st); !s.ok()) return s;
  std::vector<float> scales;
  std::vector<int32_t> rank32;
  for (int64_t i = 0; i < k; ++i) {
    // The directory at the start of the adapter's first page: matrix ids 0, 1, 2 (q, k, v).
    const int32_t page = order[size_t(first[size_t(i)])];
    char* base = static_cast<char*>(out->pool.data()) + int64_t(page) * kPageBytes;
    if (auto s = be.CopyToDevice(base, dirs[size_t(i)].data(), 6 * sizeof(int64_t), st); !s.ok()) {
      return s;
    }
    scales.push_back(2.0f);
    rank32.push_back(int32_t(out->rank[size_t(i)]));
    std::array<Tensor, 3> a, b;
    for (int g = 0; g < 3; ++g) {
      for (int ab = 0; ab < 2; ++ab) {
        const int64_t rows = ab == 0 ? out->rank[size_t(i)] : kOuts[g];
        const int64_t cols = ab == 0 ? kIn : out->rank[size_t(i)];
        auto buf = be.Allocate(size_t(rows * cols) * 2);
        if (!buf.ok()) return buf.status();
        const Tensor t = arbor::kernels::View(buf->data(), DType::kBF16, rows, cols);
        out->owned.push_back(std::move(*buf));
        if (auto s = be.RandomFill({t, 12, uint64_t(i * 6 + g * 2 + ab), -0.02f, 0.02f}, st);
            !s.ok()) {
          return s;
        }
        (ab == 0 ? a : b)[size_t(g)] = t;
      }
    }
    out->a.push_back(a);
    out->b.push_back(b);
  }
  std::vector<int32_t> table;
  for (int32_t p = 0; p < pages; ++p) table.push_back(order[size_t(p)]);
  first.pop_back();
  auto up = [&](const void* data, size_t bytes, DeviceBuffer* dst) -> absl::Status {
    auto buf = be.Allocate(bytes);
    if (!buf.ok()) return buf.status();
    *dst = std::move(*buf);
    return be.CopyToDevice(dst->data(), data, bytes, st);
  };
  if (auto s = up(table.data(), table.size() * 4, &out->table); !s.ok()) return s;
  if (auto s = up(first.data(), first.size() * 4, &out->slot_pages); !s.ok()) return s;
  if (auto s = up(rank32.data(), rank32.size() * 4, &out->slot_rank); !s.ok()) return s;
  if (auto s = up(scales.data(), scales.size() * 4, &out->slot_scale); !s.ok()) return s;
  return st.Synchronize();
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) {
    if (chdir(ws) != 0) return Fail("cannot enter BUILD_WORKSPACE_DIRECTORY");
  }
  Args a;
  const std::map<std::string, std::vector<int64_t>*> lists = {{"--tokens", &a.tokens},
                                                              {"--adapters", &a.adapters},
                                                              {"--prefill", &a.prefill},
                                                              {"--ranks", &a.ranks}};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (auto it = lists.find(flag); it != lists.end()) {
      *it->second = arbor::bench::ParseIntList(value);
    } else if (flag == "--iters") {
      a.iters = std::atoi(value.c_str());
    } else if (flag == "--results") {
      a.results = value;
    } else {
      return Fail("unknown flag " + flag);
    }
  }
  if (argc % 2 == 0) return Fail(std::string("missing value for ") + argv[argc - 1]);
  if (a.adapters.empty() || a.ranks.empty() || a.iters <= 0) {
    return Fail("--adapters, --ranks and --iters must be non-empty and positive");
  }
  for (const auto* list : {&a.tokens, &a.adapters, &a.prefill}) {
    for (int64_t v : *list) {
      if (v <= 0) return Fail("token and adapter counts must be > 0");
    }
  }
  for (int64_t r : a.ranks) {
    if (r < 1 || r > arbor::kernels::kLoraMaxRank) return Fail("ranks must be in [1, 128]");
  }

  auto made = arbor::kernels::CreateCudaBackend(0);
  if (!made.ok()) return Fail(std::string(made.status().message()));
  Backend& be = **made;
  auto& st = be.default_stream();
  auto info = be.Info();
  if (!info.ok()) return Fail(std::string(info.status().message()));
  const int64_t max_k = *std::max_element(a.adapters.begin(), a.adapters.end());
  Adapters ad;
  BENCH_CHECK(MakeAdapters(be, a.ranks, max_k, &ad));
  const int64_t max_rank = *std::max_element(a.ranks.begin(), a.ranks.end());
  int64_t max_n = 1;
  for (const auto* list : {&a.tokens, &a.prefill}) {
    for (int64_t v : *list) max_n = std::max(max_n, v);
  }
  const int64_t out_cols = kOuts[0] + kOuts[1] + kOuts[2];
  std::vector<DeviceBuffer> owned;
  auto make = [&](int64_t rows, int64_t cols) -> absl::StatusOr<Tensor> {
    auto buf = be.Allocate(size_t(rows * cols) * 2);
    if (!buf.ok()) return buf.status();
    const Tensor t = arbor::kernels::View(buf->data(), DType::kBF16, rows, cols);
    owned.push_back(std::move(*buf));
    if (auto s = be.RandomFill({t, 13, uint64_t(owned.size()), -1.0f, 1.0f}, st); !s.ok()) {
      return s;
    }
    return t;
  };
  auto x = make(max_n, kIn);
  auto y = make(max_n, out_cols);
  auto gathered = make(max_n, kIn);
  auto mid = make(max_n, max_rank);
  auto lora_out = make(max_n, kOuts[0]);
  for (const auto* t : {&x, &y, &gathered, &mid, &lora_out}) {
    if (!t->ok()) return Fail(std::string(t->status().message()));
  }
  auto shrink = be.Allocate(size_t(arbor::kernels::LoraShrinkFloats(max_n, 3, max_rank)) * 4);
  auto ints = be.Allocate(size_t(3 * max_n) * 4);  // token_slot, rows, scales
  auto start = be.CreateEvent();
  auto stop = be.CreateEvent();
  if (!shrink.ok() || !ints.ok() || !start.ok() || !stop.ok()) return Fail("allocation failed");
  int32_t* token_slot = ints->as<int32_t>();
  int32_t* rows = token_slot + max_n;
  float* row_scales = reinterpret_cast<float*>(rows + max_n);

  // Median milliseconds of `call` over the iterations.
  auto time = [&](const std::function<absl::Status()>& call) -> absl::StatusOr<double> {
    std::vector<float> ms;
    for (int i = 0; i < a.iters + 5; ++i) {
      if (auto s = (*start)->Record(st); !s.ok()) return s;
      if (auto s = call(); !s.ok()) return s;
      if (auto s = (*stop)->Record(st); !s.ok()) return s;
      if (auto s = (*stop)->Synchronize(); !s.ok()) return s;
      auto elapsed = (*stop)->ElapsedMsSince(**start);
      if (!elapsed.ok()) return elapsed.status();
      if (i >= 5) ms.push_back(*elapsed);
    }
    std::sort(ms.begin(), ms.end());
    return double(ms[ms.size() / 2]);
  };

  std::string command = "bench_lora";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  const std::string date = absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone());
  std::string rank_list;
  for (int64_t r : a.ranks) rank_list += (rank_list.empty() ? "" : "/") + std::to_string(r);
  std::printf("LoRA on Llama-3-8B qkv (in %lld, out %lld/%lld/%lld), ranks %s, bf16, on %s\n",
              (long long)kIn, (long long)kOuts[0], (long long)kOuts[1], (long long)kOuts[2],
              rank_list.c_str(), info->name.c_str());
  nlohmann::json records = nlohmann::json::array();
  // One case: n tokens under k adapters, decode (interleaved) or prefill (consecutive chunks).
  auto run_case = [&](int64_t n, int64_t k, bool prefill) -> absl::Status {
    std::vector<int32_t> slot(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      slot[size_t(t)] = int32_t(prefill ? std::min(k - 1, t / ((n + k - 1) / k)) : t % k);
    }
    std::vector<std::vector<int32_t>> rows_of(static_cast<size_t>(k));
    for (int64_t t = 0; t < n; ++t) rows_of[size_t(slot[size_t(t)])].push_back(int32_t(t));
    std::vector<int32_t> grouped;
    std::vector<float> scales(static_cast<size_t>(n), 2.0f);
    for (const auto& r : rows_of) grouped.insert(grouped.end(), r.begin(), r.end());
    if (auto s = be.CopyToDevice(token_slot, slot.data(), size_t(n) * 4, st); !s.ok()) return s;
    if (auto s = be.CopyToDevice(rows, grouped.data(), size_t(n) * 4, st); !s.ok()) return s;
    if (auto s = be.CopyToDevice(row_scales, scales.data(), size_t(n) * 4, st); !s.ok()) return s;
    int64_t k_rank = 0;
    for (int64_t i = 0; i < k; ++i) k_rank = std::max(k_rank, ad.rank[size_t(i)]);
    arbor::kernels::LoraArgs args;
    args.x = arbor::kernels::Rows(*x, 0, n);
    args.y = arbor::kernels::Rows(*y, 0, n);
    args.token_slot = token_slot;
    args.w = {ad.pool.data(),
              kPageBytes,
              ad.table.as<int32_t>(),
              ad.slot_pages.as<int32_t>(),
              ad.slot_rank.as<int32_t>(),
              ad.slot_scale.as<float>(),
              k};
    args.num_targets = 3;
    for (int g = 0, col = 0; g < 3; col += int(kOuts[g]), ++g) args.targets[g] = {g, col, kOuts[g]};
    args.max_rank = k_rank;
    args.shrink = shrink->as<float>();
    args.schedule = prefill ? arbor::kernels::PickLoraSchedule(n, std::min(n, k))
                            : arbor::kernels::LoraSchedule::kPerToken;
    auto batched = time([&] { return be.Lora(args, st); });
    if (!batched.ok()) return batched.status();
    // What the batched op ran: in this bench (bf16, aligned rows, ranks multiples of 8) a
    // segment call sends runs of >= kLoraMmaMinRun tokens to the tensor-core tiles.
    const bool segments = args.schedule == arbor::kernels::LoraSchedule::kSegments;
    const bool mma = segments && (n + k - 1) / k >= arbor::kernels::kLoraMmaMinRun;
    const std::string kernel = !segments ? "per-token (BGMV)"
                               : mma     ? "segments: tensor-core tiles (SGMV, mma.sync)"
                                         : "segments: per-token for runs < 16";
    double per_token = 0;
    if (segments) {
      arbor::kernels::LoraArgs pt = args;
      pt.schedule = arbor::kernels::LoraSchedule::kPerToken;
      auto t = time([&] { return be.Lora(pt, st); });
      if (!t.ok()) return t.status();
      per_token = *t;
    }
    auto loop = time([&]() -> absl::Status {
      int64_t at = 0;
      for (int64_t i = 0; i < k; ++i) {
        const int64_t count = int64_t(rows_of[size_t(i)].size()), r = ad.rank[size_t(i)];
        if (count == 0) continue;
        for (int g = 0, col = 0; g < 3; col += int(kOuts[g]), ++g) {
          const Tensor gx = arbor::kernels::Rows(*gathered, 0, count);
          const Tensor gm = arbor::kernels::View(mid->data, DType::kBF16, count, r);
          const Tensor go = arbor::kernels::View(lora_out->data, DType::kBF16, count, kOuts[g]);
          const Tensor yg = arbor::kernels::Columns(arbor::kernels::Rows(*y, 0, n), col, kOuts[g]);
          if (auto s = be.GatherRows({args.x, rows + at, gx}, st); !s.ok()) return s;
          if (auto s = be.Linear({gx, ad.a[size_t(i)][size_t(g)], nullptr, gm}, st); !s.ok()) {
            return s;
          }
          if (auto s = be.Linear({gm, ad.b[size_t(i)][size_t(g)], nullptr, go}, st); !s.ok()) {
            return s;
          }
          if (auto s = be.ScatterAddRows({go, rows + at, row_scales + at, yg}, st); !s.ok()) {
            return s;
          }
        }
        at += count;
      }
      return absl::OkStatus();
    });
    if (!loop.ok()) return loop.status();
    const std::string shape = std::string(prefill ? "prefill" : "decode") + ", tokens " +
                              std::to_string(n) + ", adapters " + std::to_string(k) + ", ranks " +
                              rank_list + ", bf16)";
    std::printf("%-7s tokens %5lld adapters %3lld: batched %.4f ms, loop %.4f ms -> %.2fx",
                prefill ? "prefill" : "decode", (long long)n, (long long)k, *batched, *loop,
                *loop / *batched);
    if (segments) {
      std::printf("; per-token schedule %.4f ms -> %.2fx", per_token, per_token / *batched);
    }
    std::printf("  [%s]\n", kernel.c_str());
    records.push_back({{"name", "lora.qkv (" + shape},
                       {"impl", "arbor"},
                       {"kernel", kernel},
                       {"value", *batched},
                       {"unit", "ms"},
                       {"baseline", nullptr},
                       {"ratio", nullptr},
                       {"target", nullptr},
                       {"card", info->name},
                       {"date", date},
                       {"command", command}});
    records.push_back({{"name", "lora.qkv_vs_loop (" + shape +
                                    "; baseline: per adapter and target GatherRows, two Linears, "
                                    "ScatterAddRows"},
                       {"kernel", kernel},
                       {"value", *batched},
                       {"unit", "ms"},
                       {"baseline", *loop},
                       {"ratio", *batched / *loop},
                       {"target", nullptr},
                       {"card", info->name},
                       {"date", date},
                       {"command", command}});
    if (segments) {
      records.push_back({{"name", "lora.qkv_vs_per_token (" + shape +
                                      "; baseline: the same op under the per-token schedule"},
                         {"kernel", kernel},
                         {"value", *batched},
                         {"unit", "ms"},
                         {"baseline", per_token},
                         {"ratio", *batched / per_token},
                         {"target", nullptr},
                         {"card", info->name},
                         {"date", date},
                         {"command", command}});
    }
    return absl::OkStatus();
  };
  for (int64_t n : a.tokens) {
    for (int64_t k : a.adapters) {
      if (k <= n) BENCH_CHECK(run_case(n, k, false));
    }
  }
  for (int64_t n : a.prefill) {
    for (int64_t k : a.adapters) {
      if (k <= n) BENCH_CHECK(run_case(n, k, true));
    }
  }
  arbor::bench::AppendResults(a.results, records);
  std::printf("appended %zu records to %s\n", records.size(), a.results.c_str());
  return 0;
}
