// bench_attention: paged attention (Backend::PagedAttention, kernels/ops.h) on the CUDA backend
// at Llama-3-8B's attention shape: GQA with 32 query heads over 8 KV heads, head_dim 128, bf16 q
// and bf16 KV cache in pages of 16 tokens (one layer's pages: PagedKv num_layers 1, layer 0),
// q and K/V seeded U(-1, 1) on the device. Times are CUDA-event medians over --iters calls after
// 5 warm-ups. Appends to bench/results.json (BENCHMARKS.md):
//
//  - decode, 32 sequences of `context` tokens, one new token each at position context - 1: the
//    K and V bytes the step must read over its time, as a fraction of the best device bandwidth
//    measured in the same process (tools/bench/bandwidth.h): attention.decode_4k.bw_fraction
//    (target >= 0.8), attention.decode_32k.bw_fraction, through the backend (its pick of decode
//    kernel: kernels/cuda/launch.h DecodeKernel kAuto).
//  - the decode kernels side by side (printed, not recorded): the per-token kernel and the
//    tensor-core kernel at each pipeline depth (kernels/cuda/launch.h kDecodeKernels) forced in
//    turn at batch 32 for each --decode context and at batch 1 for each --decode-b1 context
//    (128, 4096), each with the split-KV the model would use for that many rows
//    (kernels/attention_plan.h AttentionSplitKeys).
//  - decode at the tensor-core kernel's other head dims (--head-dims: 80, 96, 256), batch 32 at
//    --head-dim-context (4096), GQA 32/8, bf16, on a pool of that head dim: every decode kernel
//    forced in turn, as above, and recorded: attention.decode_4k_hd<d>.bw_fraction (the
//    tensor-core kernel's default depth over the best device bandwidth) and
//    attention.decode_4k_hd<d>.vs_per_token (its time against the per-token kernel's, the
//    path those head dims took before).
//  - prefill, one causal sequence of S new tokens whose K/V are already in the pages, cut into
//    prefill tiles by kernels/attention_plan.h: TFLOP/s (attention.prefill_4k.tflops, impl
//    "arbor"), and, when --peer (default: the results file) holds tools/bench/attention_sdpa.py's
//    records of that name on the same card, the ratio to torch SDPA's faster backend:
//    attention.prefill_4k.vs_sdpa (target >= 0.8), attention.prefill_16k.vs_sdpa. Run the peer
//    first (tools/bench/gpu_suite.sh does). GPU only. The records time the backend, so its
//    pick of prefill kernel (kernels/cuda/launch.h PrefillKernel kAuto); before them the
//    prefill kernels side by side (printed, not recorded): mma.sync and, on Hopper, wgmma, each
//    forced, with the largest difference of the wgmma output from the mma.sync one.
//
//  - causal neighborhood decode: at --window-context (32768, when in --decode), the same batch
//    with a window of w keys (--windows, 32k down to 256) and dilation d (--dilations 1,4):
//    the full context's time over the windowed one, attention.window4k_ctx32k.speedup_vs_full
//    (target >= 5; a 4k window reads 1/8 of the keys) and attention.window<w>_d<d>_ctx<c>.
//
//   bench_attention [--decode 4096,32768] [--decode-b1 128,4096] [--prefill 4096,16384]
//                   [--iters 20] [--window-context 32768] [--windows 32768,...,256]
//                   [--dilations 1,4] [--head-dims 80,96,256] [--head-dim-context 4096]
//                   [--results bench/results.json] [--peer FILE]
//
// An empty list (--prefill '') skips that part.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "kernels/attention_plan.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/launch.h"
#include "tools/bench/bandwidth.h"
#include "tools/bench/results.h"

namespace {

using arbor::kernels::Backend;
using arbor::kernels::DecodeKernel;
using arbor::kernels::DeviceBuffer;
using arbor::kernels::DType;
using arbor::kernels::PagedAttentionArgs;
using arbor::kernels::Stream;
using arbor::kernels::Tensor;

constexpr int64_t kQHeads = 32;
constexpr int64_t kKvHeads = 8;
constexpr int64_t kHeadDim = 128;
constexpr int64_t kKvDim = kKvHeads * kHeadDim;  // 1024
constexpr int64_t kBlock = 16;                   // tokens per page
constexpr int64_t kDecodeSeqs = 32;              // the decode batch
constexpr int kWarmup = 5;
// The torch peer's records of one prefill length, one per SDPA backend (attention_sdpa.py).
const char* const kPeerImpls[] = {"torch-flash", "torch-cudnn"};

struct Args {
  std::vector<int64_t> decode = {4096, 32768};   // context per sequence
  std::vector<int64_t> decode_b1 = {128, 4096};  // batch-1 contexts of the kernel comparison
  std::vector<int64_t> prefill = {4096, 16384};  // tokens of the one sequence
  // Causal neighborhood (sliding-window) decode at the decode context `window_context` (when it
  // is in --decode): each window (keys of the query's dilation group) and dilation against the
  // full context's time.
  int64_t window_context = 32768;
  std::vector<int64_t> windows = {32768, 16384, 8192, 4096, 2048, 1024, 512, 256};
  std::vector<int64_t> dilations = {1, 4};
  // Decode at other head dims than kHeadDim (batch kDecodeSeqs, this context).
  std::vector<int64_t> head_dims = {80, 96, 256};
  int64_t head_dim_context = 4096;
  int iters = 20;
  std::string results = "bench/results.json";
  std::string peer;  // "": the results file
};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "bench_attention: %s\n", msg.c_str());
  return 1;
}

// "4k" for 4096, "32k" for 32768; the plain count when not a multiple of 1024. Must match
// label() in tools/bench/attention_sdpa.py.
std::string Label(int64_t n) {
  return n % 1024 == 0 ? std::to_string(n / 1024) + "k" : std::to_string(n);
}

int64_t Pages(int64_t tokens) { return (tokens + kBlock - 1) / kBlock; }

// Causal attention FLOPs of one sequence of s tokens: per query head, Q·K^T and P·V over the
// s * s / 2 visible (query, key) pairs, 2 * head_dim FLOPs each. attention_sdpa.py counts the same.
double PrefillFlops(int64_t s) {
  return 4.0 * double(s) * double(s) / 2.0 * double(kQHeads) * double(kHeadDim);
}

// Int32 values on the device; at least one element, so that an empty list is still a valid
// pointer. `host` must live until `st` has run the copy.
absl::StatusOr<DeviceBuffer> Upload(Backend& be, Stream& st, const std::vector<int32_t>& host) {
  auto buf = be.Allocate(std::max<size_t>(1, host.size()) * sizeof(int32_t));
  if (!buf.ok()) return buf.status();
  if (!host.empty()) {
    if (auto s = be.CopyToDevice(buf->data(), host.data(), host.size() * sizeof(int32_t), st);
        !s.ok()) {
      return s;
    }
  }
  return buf;
}

// Median milliseconds of `iters` calls of `op` on `st` after kWarmup, each between two events.
absl::StatusOr<double> MedianMs(Backend& be, Stream& st, int iters,
                                const std::function<absl::Status()>& op) {
  auto start = be.CreateEvent();
  if (!start.ok()) return start.status();
  auto stop = be.CreateEvent();
  if (!stop.ok()) return stop.status();
  std::vector<float> ms;
  for (int i = 0; i < iters + kWarmup; ++i) {
    if (auto s = (*start)->Record(st); !s.ok()) return s;
    if (auto s = op(); !s.ok()) return s;
    if (auto s = (*stop)->Record(st); !s.ok()) return s;
    if (auto s = (*stop)->Synchronize(); !s.ok()) return s;
    auto elapsed = (*stop)->ElapsedMsSince(**start);
    if (!elapsed.ok()) return elapsed.status();
    if (i >= kWarmup) ms.push_back(*elapsed);
  }
  std::sort(ms.begin(), ms.end());
  return double(ms[ms.size() / 2]);
}

// A case's device buffers, bf16: `pages` pages of K/V rows of kv_dim ([pages * 2 * kBlock,
// kv_dim] rows; PagedKv num_layers 1), q and out [q_rows, kQHeads * head_dim]; q and the pages
// seeded U(-1, 1) (Philox `seed`).
struct Buffers {
  DeviceBuffer pool, q, out;
  Tensor q_all, out_all;
  size_t pool_bytes = 0;
  arbor::kernels::PagedKv kv;
};

absl::StatusOr<Buffers> MakeBuffers(Backend& be, Stream& st, uint64_t seed, int64_t pages,
                                    int64_t q_rows, int64_t head_dim) {
  const int64_t kv_dim = kKvHeads * head_dim;
  Buffers b;
  b.pool_bytes = size_t(pages * 2 * kBlock * kv_dim) * 2;
  const size_t q_bytes = size_t(q_rows * kQHeads * head_dim) * 2;
  auto pool = be.Allocate(b.pool_bytes);
  if (!pool.ok()) {
    return absl::ResourceExhaustedError("cannot allocate " + std::to_string(b.pool_bytes >> 20) +
                                        " MiB of KV pages: " + std::string(pool.status().message()));
  }
  auto q = be.Allocate(q_bytes);
  auto out = be.Allocate(q_bytes);
  if (!q.ok() || !out.ok()) return absl::ResourceExhaustedError("cannot allocate q and out");
  b.pool = std::move(*pool);
  b.q = std::move(*q);
  b.out = std::move(*out);
  b.q_all = arbor::kernels::View(b.q.data(), DType::kBF16, q_rows, kQHeads * head_dim);
  b.out_all = arbor::kernels::View(b.out.data(), DType::kBF16, q_rows, kQHeads * head_dim);
  const Tensor pool_rows =
      arbor::kernels::View(b.pool.data(), DType::kBF16, pages * 2 * kBlock, kv_dim);
  if (auto s = be.RandomFill({b.q_all, seed, 1, -1.0f, 1.0f}, st); !s.ok()) return s;
  if (auto s = be.RandomFill({pool_rows, seed, 2, -1.0f, 1.0f}, st); !s.ok()) return s;
  b.kv = {b.pool.data(), DType::kBF16, kBlock, 1, kv_dim, 0};
  return b;
}

absl::Status CudaOk(cudaError_t e) {
  return e == cudaSuccess ? absl::OkStatus() : absl::InternalError(cudaGetErrorString(e));
}

// A decode batch of `seqs` sequences of `context` tokens on the shared pool (sequence i on pages
// [i * blocks, (i + 1) * blocks)), one new token each at position context - 1, with the split-KV
// the model gives that many decode rows (engine/model/model.cc); `args` points at the buffers.
// With copies > 1 the table holds copies * seqs sequences and Copy(j) is the same batch over
// sequences [j * seqs, (j + 1) * seqs): a small batch cycled through copies reads its K/V from
// memory, not from the L2 the previous call left it in (as a model's step does, each layer's
// pages once).
struct DecodeBatch {
  PagedAttentionArgs args;
  int64_t seqs = 0, copies = 1;
  DeviceBuffer table, token_seq, positions, split;
  PagedAttentionArgs Copy(int64_t j) const {
    PagedAttentionArgs a = args;
    a.token_seq += (j % copies) * seqs;
    a.q_positions += (j % copies) * seqs;
    return a;
  }
};

absl::StatusOr<DecodeBatch> MakeDecodeBatch(Backend& be, Stream& st, const PagedAttentionArgs& base,
                                            const Tensor& q_all, const Tensor& out_all,
                                            int64_t seqs, int64_t context, int64_t copies = 1) {
  const int64_t blocks = Pages(context);
  std::vector<int32_t> table(size_t(copies * seqs * blocks));  // [copies * seqs, blocks]
  for (size_t j = 0; j < table.size(); ++j) table[j] = int32_t(j);
  std::vector<int32_t> token_seq(static_cast<size_t>(copies * seqs));
  const std::vector<int32_t> positions(static_cast<size_t>(copies * seqs), int32_t(context - 1));
  for (int64_t i = 0; i < copies * seqs; ++i) token_seq[size_t(i)] = int32_t(i);
  DecodeBatch b;
  b.seqs = seqs;
  b.copies = copies;
  auto d_table = Upload(be, st, table);
  auto d_seq = Upload(be, st, token_seq);
  auto d_pos = Upload(be, st, positions);
  if (!d_table.ok() || !d_seq.ok() || !d_pos.ok()) return absl::InternalError("upload failed");
  if (auto s = st.Synchronize(); !s.ok()) return s;
  b.table = std::move(*d_table);
  b.token_seq = std::move(*d_seq);
  b.positions = std::move(*d_pos);
  PagedAttentionArgs& args = b.args;
  args = base;
  args.q = arbor::kernels::Rows(q_all, 0, seqs);
  args.out = arbor::kernels::Rows(out_all, 0, seqs);
  args.block_tables = b.table.as<int32_t>();
  args.token_seq = b.token_seq.as<int32_t>();
  args.q_positions = b.positions.as<int32_t>();
  args.num_seqs = copies * seqs;
  args.max_blocks = blocks;
  args.max_context = blocks * kBlock;
  args.split_keys = arbor::kernels::AttentionSplitKeys(args.max_context, seqs);
  args.split_workspace_floats =
      arbor::kernels::AttentionSplitFloats(seqs, base.num_q_heads, base.head_dim, args.max_context);
  auto d_split = be.Allocate(size_t(args.split_workspace_floats) * sizeof(float));
  if (!d_split.ok()) return d_split.status();
  b.split = std::move(*d_split);
  args.split_workspace = b.split.as<float>();
  return b;
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
    if (k == "--decode") {
      a.decode = arbor::bench::ParseIntList(v);
    } else if (k == "--decode-b1") {
      a.decode_b1 = arbor::bench::ParseIntList(v);
    } else if (k == "--prefill") {
      a.prefill = arbor::bench::ParseIntList(v);
    } else if (k == "--iters") {
      a.iters = std::atoi(v.c_str());
    } else if (k == "--window-context") {
      a.window_context = std::atoll(v.c_str());
    } else if (k == "--windows") {
      a.windows = arbor::bench::ParseIntList(v);
    } else if (k == "--dilations") {
      a.dilations = arbor::bench::ParseIntList(v);
    } else if (k == "--head-dims") {
      a.head_dims = arbor::bench::ParseIntList(v);
    } else if (k == "--head-dim-context") {
      a.head_dim_context = std::atoll(v.c_str());
    } else if (k == "--results") {
      a.results = v;
    } else if (k == "--peer") {
      a.peer = v;
    } else {
      return Fail("unknown flag " + k);
    }
  }
  if (a.iters <= 0) return Fail("--iters must be > 0");
  for (int64_t w : a.windows) {
    if (w <= 0) return Fail("--windows must be > 0");
  }
  for (int64_t d : a.dilations) {
    if (d <= 0) return Fail("--dilations must be > 0");
  }
  for (int64_t d : a.head_dims) {
    if (d <= 0 || d > 256) return Fail("--head-dims must be in [1, 256]");
  }
  if (a.head_dim_context <= 0 || a.head_dim_context > (int64_t(1) << 24)) {
    return Fail("--head-dim-context must be in [1, 2^24]");
  }
  if (a.decode.empty() && a.decode_b1.empty() && a.prefill.empty() && a.head_dims.empty()) {
    return Fail("nothing to run");
  }
  for (const auto* list : {&a.decode, &a.decode_b1, &a.prefill}) {
    for (int64_t n : *list) {
      // Positions and page ids are int32 on the device.
      if (n <= 0 || n > (int64_t(1) << 24)) return Fail("token counts must be in [1, 2^24]");
    }
  }
  if (a.peer.empty()) a.peer = a.results;

  auto made = arbor::kernels::CreateCudaBackend(0);
  if (!made.ok()) return Fail(std::string(made.status().message()));
  Backend& be = **made;
  // Deterministic mode runs every row through the per-token kernel and ignores the tiles.
  be.SetDeterministic(false);
  Stream& st = be.default_stream();
  auto info = be.Info();
  if (!info.ok()) return Fail(std::string(info.status().message()));
  // Tokens per prefill tile for this shape (GQA groups of 4); 0: the tensor-core kernel does
  // not take it, and a prefill figure would time something else.
  const int64_t tile_tokens =
      arbor::kernels::PrefillTileTokens(DType::kBF16, DType::kBF16, kHeadDim, kQHeads / kKvHeads);
  if (!a.prefill.empty() && tile_tokens <= 0) {
    return Fail("PrefillTileTokens gives no tiles for bf16, head_dim 128, 4 q heads per kv head");
  }
  // The bandwidth floor, before the pages take their share of the device.
  arbor::bench::Bandwidth bw;
  const char* bw_err = nullptr;
  if (!arbor::bench::MeasureBandwidth(size_t(2) << 30, 20, &bw, &bw_err)) return Fail(bw_err);

  // One pool for every case: decode's sequences each own a run of pages from page 0 on, and
  // prefill's one sequence takes pages from 0 too. Page layout (PagedKv, num_layers 1):
  // [K, V][kBlock tokens][kKvDim], bf16.
  int64_t pages = 1, q_rows = 1;  // at least one of each (--head-dims alone uses neither)
  for (int64_t c : a.decode) {
    pages = std::max(pages, kDecodeSeqs * Pages(c));
    q_rows = std::max(q_rows, kDecodeSeqs);
  }
  for (int64_t c : a.decode_b1) {
    pages = std::max(pages, Pages(c));
    q_rows = std::max<int64_t>(q_rows, 1);
  }
  for (int64_t s : a.prefill) {
    pages = std::max(pages, Pages(s));
    q_rows = std::max(q_rows, s);
  }
  auto buffers = MakeBuffers(be, st, 1, pages, q_rows, kHeadDim);
  if (!buffers.ok()) return Fail(std::string(buffers.status().message()));
  const Tensor& q_all = buffers->q_all;
  const Tensor& out_all = buffers->out_all;
  const size_t pool_bytes = buffers->pool_bytes;
  const arbor::kernels::PagedKv kv = buffers->kv;
  // The args every case shares; each fills in its batch.
  PagedAttentionArgs base;
  base.kv = kv;
  base.num_q_heads = kQHeads;
  base.num_kv_heads = kKvHeads;
  base.head_dim = kHeadDim;
  base.scale = 1.0f / std::sqrt(float(kHeadDim));

  std::printf(
      "paged attention: %lld q / %lld kv heads, head_dim %lld, bf16 q and KV, %lld-token pages "
      "(%.2f GB of pages) on %s\n",
      (long long)kQHeads, (long long)kKvHeads, (long long)kHeadDim, (long long)kBlock,
      double(pool_bytes) / 1e9, info->name.c_str());
  std::printf("bandwidth: copy %.2f TB/s, read-only stream %.2f TB/s\n", bw.copy_bytes_per_s / 1e12,
              bw.stream_bytes_per_s / 1e12);

  std::string command = "bench_attention";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  const std::string date = absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone());
  nlohmann::json records = nlohmann::json::array();
  // One line per part for the end of the log: "decode K/V bandwidth fraction -> 4k 0.853 ...".
  std::string decode_summary = "decode K/V bandwidth fraction ->";
  std::string prefill_summary = "prefill vs SDPA (peer time / ours) ->";
  std::string kernels_summary =
      "decode kernels, bandwidth fraction per-token -> tensor-core (its pick):";

  // The decode kernels side by side: each forced through the launcher on the backend's stream,
  // at batch 32 for the --decode contexts and batch 1 for the --decode-b1 ones.
  const auto stream = static_cast<cudaStream_t>(st.native());
  std::vector<std::pair<int64_t, int64_t>> comparisons;  // (batch, context)
  for (const int64_t c : a.decode) comparisons.emplace_back(kDecodeSeqs, c);
  for (const int64_t c : a.decode_b1) comparisons.emplace_back(1, c);
  if (!comparisons.empty()) std::printf("decode kernels (median of %d calls):\n", a.iters);
  for (const auto& [seqs, c] : comparisons) {
    const double bytes = double(seqs) * double(c) * double(kKvDim) * 2.0 * 2.0;
    // Enough copies of a small batch that a call finds none of its K/V in L2 (50 MB on an
    // H100): 256 MB worth, as many as the pool holds.
    const int64_t copies = std::max<int64_t>(
        1, std::min<int64_t>(pages / (seqs * Pages(c)), int64_t((256e6 + bytes - 1) / bytes)));
    auto batch = MakeDecodeBatch(be, st, base, q_all, out_all, seqs, c, copies);
    if (!batch.ok()) return Fail(std::string(batch.status().message()));
    const PagedAttentionArgs& args = batch->args;
    const int64_t splits = (args.max_context + args.split_keys - 1) / args.split_keys;
    std::printf("  batch %lld x %lld (split-KV: %lld keys a split, %lld splits; cycling %lld "
                "copies of the batch's pages):\n",
                (long long)seqs, (long long)c, (long long)args.split_keys, (long long)splits,
                (long long)copies);
    double times[2] = {0, 0};  // per-token, tensor-core (the default depth)
    for (const DecodeKernel kernel : arbor::kernels::kDecodeKernels) {
      int64_t call = 0;
      auto ms = MedianMs(be, st, a.iters, [&] {
        return CudaOk(arbor::kernels::LaunchPagedAttention(batch->Copy(call++), stream, kernel));
      });
      if (!ms.ok()) return Fail(std::string(ms.status().message()));
      if (kernel == DecodeKernel::kPerToken) times[0] = *ms;
      if (kernel == DecodeKernel::kTensorCore) times[1] = *ms;
      std::printf("    %-20s %8.4f ms  %.3f of bandwidth\n",
                  arbor::kernels::DecodeKernelName(kernel), *ms, bytes / (*ms * 1e-3) / bw.best());
    }
    std::printf("    tensor-core over per-token: %.2fx faster\n", times[0] / times[1]);
    char item[128];
    std::snprintf(item, sizeof(item), " b%lld %s %.3f -> %.3f (%.4f -> %.4f ms)", (long long)seqs,
                  Label(c).c_str(), bytes / (times[0] * 1e-3) / bw.best(),
                  bytes / (times[1] * 1e-3) / bw.best(), times[0], times[1]);
    kernels_summary += item;
  }

  // Decode at the other head dims: a pool, q and out of that head dim each (kKvHeads heads of hd
  // dims a K/V row), every kernel forced in turn on the same batch.
  std::string head_dims_summary =
      "decode at other head dims, bandwidth fraction per-token -> tensor-core:";
  for (const int64_t hd : a.head_dims) {
    const int64_t c = a.head_dim_context, kv_dim = kKvHeads * hd;
    auto hd_buffers = MakeBuffers(be, st, 3, kDecodeSeqs * Pages(c), kDecodeSeqs, hd);
    if (!hd_buffers.ok()) return Fail(std::string(hd_buffers.status().message()));
    PagedAttentionArgs hd_base = base;
    hd_base.kv = hd_buffers->kv;
    hd_base.head_dim = hd;
    hd_base.scale = 1.0f / std::sqrt(float(hd));
    auto batch =
        MakeDecodeBatch(be, st, hd_base, hd_buffers->q_all, hd_buffers->out_all, kDecodeSeqs, c);
    if (!batch.ok()) return Fail(std::string(batch.status().message()));
    const double bytes = double(kDecodeSeqs) * double(c) * double(kv_dim) * 2.0 * 2.0;
    std::printf("decode %lld x %lld at head_dim %lld (%.2f GB of K/V, median of %d calls):\n",
                (long long)kDecodeSeqs, (long long)c, (long long)hd, bytes / 1e9, a.iters);
    double times[2] = {0, 0};  // per-token, tensor-core (the default depth)
    for (const DecodeKernel kernel : arbor::kernels::kDecodeKernels) {
      const char* kname = arbor::kernels::DecodeKernelName(kernel);
      if (kernel != DecodeKernel::kPerToken && !arbor::kernels::DecodeAttentionFits(batch->args)) {
        std::printf("  %-20s does not take head_dim %lld\n", kname, (long long)hd);
        continue;
      }
      auto ms = MedianMs(be, st, a.iters, [&] {
        return CudaOk(arbor::kernels::LaunchPagedAttention(batch->args, stream, kernel));
      });
      if (!ms.ok()) return Fail(std::string(ms.status().message()));
      if (kernel == DecodeKernel::kPerToken) times[0] = *ms;
      if (kernel == DecodeKernel::kTensorCore) times[1] = *ms;
      std::printf("  %-20s %8.4f ms  %.3f of bandwidth\n", kname, *ms,
                  bytes / (*ms * 1e-3) / bw.best());
    }
    char item[128];
    std::snprintf(item, sizeof(item), " hd%lld %.3f -> %.3f", (long long)hd,
                  bytes / (times[0] * 1e-3) / bw.best(),
                  times[1] > 0 ? bytes / (times[1] * 1e-3) / bw.best() : 0.0);
    head_dims_summary += item;
    if (times[1] <= 0) continue;  // no tensor-core figure to record
    std::printf("  tensor-core over per-token: %.2fx faster\n", times[0] / times[1]);
    const std::string name = "attention.decode_" + Label(c) + "_hd" + std::to_string(hd);
    const std::string what = " (decode, " + std::to_string(kDecodeSeqs) + " sequences, GQA " +
                             std::to_string(kQHeads) + "/" + std::to_string(kKvHeads) +
                             ", head_dim " + std::to_string(hd) + ", bf16; ";
    const double bytes_per_s = bytes / (times[1] * 1e-3);
    records.push_back({{"name", name + ".bw_fraction"},
                       {"value", bytes_per_s / 1e12},
                       {"unit", "TB/s"},
                       {"baseline", bw.best() / 1e12},
                       {"ratio", bytes_per_s / bw.best()},
                       {"target", nullptr},
                       {"card", info->name},
                       {"date", date},
                       {"command", command + what +
                                       "tensor-core decode kernel; K/V bytes read / time, "
                                       "baseline: best of copy and read-only streaming "
                                       "bandwidth)"}});
    records.push_back({{"name", name + ".vs_per_token"},
                       {"value", times[1]},
                       {"unit", "ms"},
                       {"baseline", times[0]},
                       {"ratio", times[0] / times[1]},
                       {"target", nullptr},
                       {"card", info->name},
                       {"date", date},
                       {"command", command + what +
                                       "tensor-core decode kernel's time, baseline: the "
                                       "per-token kernel's)"}});
  }

  for (const int64_t c : a.decode) {
    // Sequence i owns pages [i * blocks, (i + 1) * blocks); its one new token sits at c - 1.
    const int64_t blocks = Pages(c);
    std::vector<int32_t> table(size_t(kDecodeSeqs * blocks));  // [kDecodeSeqs, blocks]
    for (size_t j = 0; j < table.size(); ++j) table[j] = int32_t(j);
    std::vector<int32_t> token_seq(kDecodeSeqs), positions(kDecodeSeqs, int32_t(c - 1));
    for (int64_t i = 0; i < kDecodeSeqs; ++i) token_seq[size_t(i)] = int32_t(i);
    auto d_table = Upload(be, st, table);
    auto d_seq = Upload(be, st, token_seq);
    auto d_pos = Upload(be, st, positions);
    if (!d_table.ok() || !d_seq.ok() || !d_pos.ok()) return Fail("cannot upload the batch");
    if (auto s = st.Synchronize(); !s.ok()) return Fail(std::string(s.message()));
    PagedAttentionArgs args = base;
    args.q = arbor::kernels::Rows(q_all, 0, kDecodeSeqs);
    args.out = arbor::kernels::Rows(out_all, 0, kDecodeSeqs);
    args.block_tables = d_table->as<int32_t>();
    args.token_seq = d_seq->as<int32_t>();
    args.q_positions = d_pos->as<int32_t>();
    args.num_seqs = kDecodeSeqs;
    args.max_blocks = blocks;
    // Split-KV as the model offers it (engine/model/model.cc): runs of AttentionSplitKeys keys
    // over a workspace for the batch's rows.
    args.max_context = blocks * kBlock;
    args.split_keys = arbor::kernels::AttentionSplitKeys(args.max_context);
    args.split_workspace_floats = arbor::kernels::AttentionSplitFloats(
        kDecodeSeqs, kQHeads, kHeadDim, args.max_context);
    auto d_split = be.Allocate(size_t(args.split_workspace_floats) * sizeof(float));
    if (!d_split.ok()) return Fail(std::string(d_split.status().message()));
    args.split_workspace = d_split->as<float>();
    auto ms = MedianMs(be, st, a.iters, [&] { return be.PagedAttention(args, st); });
    if (!ms.ok()) return Fail(std::string(ms.status().message()));
    // Every sequence reads K and V of its c positions, every KV head, once.
    const double bytes = double(kDecodeSeqs) * double(c) * double(kKvDim) * 2.0 * 2.0;
    const double bytes_per_s = bytes / (*ms * 1e-3);
    const double fraction = bytes_per_s / bw.best();
    const bool has_target = c == 4096;
    // The kernel the backend's pick (kAuto) runs for these args.
    const char* kernel = arbor::kernels::DecodeAttentionFits(args) ? "tensor-core" : "per-token";
    std::printf(
        "decode %lld x %lld (%s kernel): median %.3f ms, %.2f GB of K/V -> %.2f TB/s, %.3f of "
        "%.2f TB/s\n",
        (long long)kDecodeSeqs, (long long)c, kernel, *ms, bytes / 1e9, bytes_per_s / 1e12,
        fraction, bw.best() / 1e12);
    char item[96];
    std::snprintf(item, sizeof(item), " %s %.3f%s", Label(c).c_str(), fraction,
                  has_target ? " (target >= 0.8)" : "");
    decode_summary += item;
    records.push_back({{"name", "attention.decode_" + Label(c) + ".bw_fraction"},
                       {"value", bytes_per_s / 1e12},
                       {"unit", "TB/s"},
                       {"baseline", bw.best() / 1e12},
                       {"ratio", fraction},
                       {"target", has_target ? nlohmann::json(">= 0.8") : nlohmann::json()},
                       {"card", info->name},
                       {"date", date},
                       {"command", command + " (" + kernel +
                                       " decode kernel; K/V bytes read / time, baseline: best of "
                                       "copy and read-only streaming bandwidth)"}});
    if (c != a.window_context) continue;
    // The same batch with a causal window of w keys of the query's dilation group (the last
    // (w - 1) * d + 1 positions, every d-th): the time should follow the keys read, not c.
    for (const int64_t d : a.dilations) {
      for (const int64_t w : a.windows) {
        PagedAttentionArgs windowed = args;
        windowed.sliding_window = w;
        windowed.dilation = d;
        auto wms = MedianMs(be, st, a.iters, [&] { return be.PagedAttention(windowed, st); });
        if (!wms.ok()) return Fail(std::string(wms.status().message()));
        const double speedup = *ms / *wms;
        const int64_t keys = std::min(w, (c - 1) / d + 1);
        std::printf("decode %lld x %lld, window %lld, dilation %lld (%lld keys): median %.3f ms, "
                    "%.2fx the full context\n",
                    (long long)kDecodeSeqs, (long long)c, (long long)w, (long long)d,
                    (long long)keys, *wms, speedup);
        const bool named = w == 4096 && d == 1 && c == 32768;
        records.push_back(
            {{"name", named ? std::string("attention.window4k_ctx32k.speedup_vs_full")
                            : "attention.window" + Label(w) + "_d" + std::to_string(d) + "_ctx" +
                                  Label(c) + ".speedup_vs_full"},
             {"value", *wms},
             {"unit", "ms"},
             {"baseline", *ms},
             {"ratio", speedup},
             {"target", named ? nlohmann::json(">= 5") : nlohmann::json()},
             {"card", info->name},
             {"date", date},
             {"command", command + " (decode, " + std::to_string(kDecodeSeqs) +
                             " sequences: full causal time over the windowed time)"}});
      }
    }
  }

  for (const int64_t s : a.prefill) {
    const arbor::kernels::AttentionPlan plan =
        arbor::kernels::PlanAttention({arbor::kernels::RowRun{0, int32_t(s)}}, tile_tokens);
    // The one run must come back as tiles covering rows [0, s) in order, and no decode rows.
    int64_t covered = 0;
    for (int64_t t = 0; t < plan.num_tiles(); ++t) {
      if (plan.prefill_tiles[size_t(2 * t)] != covered) break;
      covered += plan.prefill_tiles[size_t(2 * t + 1)];
    }
    if (covered != s || !plan.decode_rows.empty()) {
      return Fail("PlanAttention did not tile all " + std::to_string(s) + " rows");
    }
    // One sequence on pages [0, blocks); row r is the token at position r.
    const int64_t blocks = Pages(s);
    std::vector<int32_t> table(static_cast<size_t>(blocks));  // [1, blocks]
    for (size_t j = 0; j < table.size(); ++j) table[j] = int32_t(j);
    std::vector<int32_t> token_seq(size_t(s), 0), positions(static_cast<size_t>(s));
    for (int64_t r = 0; r < s; ++r) positions[size_t(r)] = int32_t(r);
    auto d_table = Upload(be, st, table);
    auto d_seq = Upload(be, st, token_seq);
    auto d_pos = Upload(be, st, positions);
    auto d_tiles = Upload(be, st, plan.prefill_tiles);
    auto d_decode_rows = Upload(be, st, plan.decode_rows);
    if (!d_table.ok() || !d_seq.ok() || !d_pos.ok() || !d_tiles.ok() || !d_decode_rows.ok()) {
      return Fail("cannot upload the sequence");
    }
    if (auto e = st.Synchronize(); !e.ok()) return Fail(std::string(e.message()));
    PagedAttentionArgs args = base;
    args.q = arbor::kernels::Rows(q_all, 0, s);
    args.out = arbor::kernels::Rows(out_all, 0, s);
    args.block_tables = d_table->as<int32_t>();
    args.token_seq = d_seq->as<int32_t>();
    args.q_positions = d_pos->as<int32_t>();
    args.num_seqs = 1;
    args.max_blocks = blocks;
    args.prefill_tiles = d_tiles->as<int32_t>();
    args.num_prefill_tiles = plan.num_tiles();
    args.decode_rows = d_decode_rows->as<int32_t>();
    args.num_decode_rows = int64_t(plan.decode_rows.size());
    // The prefill kernels side by side (printed, not recorded): each forced through the launcher
    // (the batch has no decode rows, so that is the whole step), with the largest difference of
    // an output element from the mma.sync kernel's (a sanity check; prefill_attention_test is
    // the parity test). A kernel that does not take the shape (wgmma off Hopper) is skipped.
    {
      const size_t out_bytes = size_t(s) * size_t(args.out.stride) * 2;
      std::vector<uint16_t> first(out_bytes / 2), got(out_bytes / 2);
      double times[2] = {0, 0};
      std::printf("prefill %lld tokens, kernels (median of %d calls):\n", (long long)s, a.iters);
      for (const arbor::kernels::PrefillKernel kernel : arbor::kernels::kPrefillKernels) {
        const char* kname = arbor::kernels::PrefillKernelName(kernel);
        if (kernel == arbor::kernels::PrefillKernel::kWgmma &&
            !arbor::kernels::PrefillAttentionSm90Fits(args)) {
          std::printf("  %-10s does not take this shape on this device\n", kname);
          continue;
        }
        auto kms = MedianMs(be, st, a.iters, [&] {
          return CudaOk(arbor::kernels::LaunchPrefillAttention(args, stream, kernel));
        });
        if (!kms.ok()) return Fail(std::string(kms.status().message()));
        if (!st.Synchronize().ok() ||
            cudaMemcpy(got.data(), args.out.data, out_bytes, cudaMemcpyDeviceToHost) !=
                cudaSuccess) {
          return Fail("cannot download the prefill output");
        }
        const bool mma = kernel == arbor::kernels::PrefillKernel::kMmaSync;
        if (mma) first = got;
        double diff = 0;
        int64_t nans = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          const float x = arbor::kernels::LoadAsFloat(got.data(), DType::kBF16, int64_t(i));
          const float y = arbor::kernels::LoadAsFloat(first.data(), DType::kBF16, int64_t(i));
          nans += std::isnan(x);
          diff = std::max(diff, double(std::fabs(x - y)));
        }
        times[mma ? 0 : 1] = *kms;
        std::printf("  %-10s %8.4f ms  %6.1f TFLOP/s  max |out - mma-sync's| %.3g, %lld NaN\n",
                    kname, *kms, PrefillFlops(s) / (*kms * 1e-3) / 1e12, diff, (long long)nans);
      }
      if (times[0] > 0 && times[1] > 0) {
        std::printf("  wgmma over mma-sync: %.2fx faster\n", times[0] / times[1]);
      }
    }
    auto ms = MedianMs(be, st, a.iters, [&] { return be.PagedAttention(args, st); });
    if (!ms.ok()) return Fail(std::string(ms.status().message()));
    const double tflops = PrefillFlops(s) / (*ms * 1e-3) / 1e12;
    const std::string name = "attention.prefill_" + Label(s) + ".tflops";
    std::printf("prefill %lld tokens (%lld tiles): median %.3f ms -> %.1f TFLOP/s", (long long)s,
                (long long)plan.num_tiles(), *ms, tflops);
    records.push_back({{"name", name},
                       {"impl", "arbor"},
                       {"value", tflops},
                       {"unit", "TFLOP/s"},
                       {"baseline", nullptr},
                       {"ratio", nullptr},
                       {"target", nullptr},
                       {"card", info->name},
                       {"date", date},
                       {"command", command}});
    // The faster of the peer's backends on this card.
    nlohmann::json best = nullptr;
    for (const char* impl : kPeerImpls) {
      const nlohmann::json peer = arbor::bench::FindRecord(a.peer, name, impl, info->name);
      if (peer.is_null()) continue;
      std::printf("; %s %.1f TFLOP/s", impl, peer["value"].get<double>());
      if (best.is_null() || peer["value"].get<double>() > best["value"].get<double>()) best = peer;
    }
    const bool has_target = s == 4096;
    if (best.is_null()) {
      std::printf("; no SDPA peer record in %s\n", a.peer.c_str());
      prefill_summary += " " + Label(s) + " no peer record";
      continue;
    }
    // Same FLOPs on both sides, so TFLOP/s over TFLOP/s is the peer's time over ours.
    const double peer_tflops = best["value"].get<double>();
    const double ratio = tflops / peer_tflops;
    const std::string peer_impl = best.value("impl", "?");
    std::printf(" -> %.3f against %s\n", ratio, peer_impl.c_str());
    char item[96];
    std::snprintf(item, sizeof(item), " %s %.3f against %s%s", Label(s).c_str(), ratio,
                  peer_impl.c_str(), has_target ? " (target >= 0.8)" : "");
    prefill_summary += item;
    records.push_back(
        {{"name", "attention.prefill_" + Label(s) + ".vs_sdpa"},
         {"value", tflops},
         {"unit", "TFLOP/s"},
         {"baseline", peer_tflops},
         {"ratio", ratio},
         {"target", has_target ? nlohmann::json(">= 0.8") : nlohmann::json()},
         {"card", info->name},
         {"date", date},
         {"command", command + " (baseline: " + peer_impl + ", " + best.value("command", "?") +
                         ", " + best.value("date", "?") + ")"}});
  }
  // The figures last, where tools/bench/gpu_suite.sh's tail of the log shows them.
  if (!comparisons.empty()) std::printf("%s\n", kernels_summary.c_str());
  if (!a.head_dims.empty()) std::printf("%s\n", head_dims_summary.c_str());
  if (!a.decode.empty()) std::printf("%s\n", decode_summary.c_str());
  if (!a.prefill.empty()) std::printf("%s\n", prefill_summary.c_str());
  arbor::bench::AppendResults(a.results, records);
  std::printf("appended %zu records to %s\n", records.size(), a.results.c_str());
  return 0;
}
