// Host launchers of the CUDA kernels. Raw pointers and plain structs only (no Abseil): each
// returns the cudaError_t of its launch; kernels/cuda_status.h turns that into absl::Status.
// Linear is not here: it runs through cuBLASLt (kernels/cuda/lt_linear.h).
#ifndef ARBOR_KERNELS_CUDA_LAUNCH_H_
#define ARBOR_KERNELS_CUDA_LAUNCH_H_

#include <cuda_runtime_api.h>

#include "kernels/cce.h"
#include "kernels/lora.h"
#include "kernels/ops.h"

namespace arbor::kernels {

cudaError_t LaunchAddRmsNorm(const AddRmsNormArgs& args, cudaStream_t stream);
cudaError_t LaunchSiluMul(const SiluMulArgs& args, cudaStream_t stream);
cudaError_t LaunchEmbedding(const EmbeddingArgs& args, cudaStream_t stream);
cudaError_t LaunchRopeKvWrite(const RopeKvWriteArgs& args, cudaStream_t stream);
// The per-token kernel over every row, or, with prefill tiles that PrefillAttentionFits, the
// tensor-core kernel over the tiles (kernels/cuda/prefill_attention.cu) and the per-token one
// over decode_rows. Tiles that do not fit are ignored (every row per token).
// The decode rows' kernel: kAuto takes the tensor-core decode kernel
// (kernels/cuda/decode_attention.cu) where DecodeAttentionFits, else the per-token one
// (kernels/cuda/attention.cu); the others force one, for tools/bench_attention's comparison and
// the tests (a tensor-core one where it does not fit: cudaErrorNotSupported). Both take split-KV
// the same way and share the split merge. kTensorCoreShallow and kTensorCoreDeep are the
// tensor-core kernel with a shallower or deeper copy pipeline than kTensorCore's (the file's
// comment), for bench_attention's sweep.
enum class DecodeKernel { kAuto, kPerToken, kTensorCore, kTensorCoreShallow, kTensorCoreDeep };
constexpr DecodeKernel kDecodeKernels[] = {DecodeKernel::kPerToken, DecodeKernel::kTensorCore,
                                           DecodeKernel::kTensorCoreShallow,
                                           DecodeKernel::kTensorCoreDeep};
const char* DecodeKernelName(DecodeKernel kernel);
cudaError_t LaunchPagedAttention(const PagedAttentionArgs& args, cudaStream_t stream,
                                 DecodeKernel kernel = DecodeKernel::kAuto);
bool PrefillAttentionFits(const PagedAttentionArgs& args);
// The prefill tiles' kernel: kMmaSync is kernels/cuda/prefill_attention.cu (mma.sync, any GPU,
// dilation), kWgmma the Hopper kernel of kernels/cuda/prefill_attention_sm90.cu (wgmma, sm_90
// only, dilation 1), where PrefillAttentionSm90Fits (forced where it does not:
// cudaErrorNotSupported). kAuto takes kWgmma where it fits when PrefillAutoWgmma(), else
// kMmaSync. The others are for tools/bench_attention's comparison and the tests.
enum class PrefillKernel { kAuto, kMmaSync, kWgmma };
constexpr PrefillKernel kPrefillKernels[] = {PrefillKernel::kMmaSync, PrefillKernel::kWgmma};
// kAuto's default: wgmma on Hopper (where it fits: PrefillAttentionSm90Fits), since
// prefill_attention_test passed kWgmma on an H100 (racecheck and synccheck clean) and
// bench_attention had it 1.45x (4k) and 1.48x (16k) the mma.sync kernel's speed there
// (2026-12-08).
constexpr bool kPrefillAutoWgmma = true;
// kAuto's pick for this process: the environment's ARBOR_PREFILL_KERNEL (`wgmma`, `mma-sync`
// or `auto`), else kPrefillAutoWgmma; read once (an unknown value is reported on stderr and
// ignored).
bool PrefillAutoWgmma();
const char* PrefillKernelName(PrefillKernel kernel);
cudaError_t LaunchPrefillAttention(const PagedAttentionArgs& args, cudaStream_t stream,
                                   PrefillKernel kernel = PrefillKernel::kAuto);
// The shapes the wgmma kernel takes (PrefillAttentionFits's at head_dim 64 or 128, dilation 1,
// q rows 16-byte aligned); ...Fits adds that the current device is a Hopper (compute capability
// 9.x).
bool PrefillAttentionSm90Takes(const PagedAttentionArgs& args);
bool PrefillAttentionSm90Fits(const PagedAttentionArgs& args);
cudaError_t LaunchPrefillAttentionSm90(const PagedAttentionArgs& args, cudaStream_t stream);
// The tensor-core decode kernel takes 16-bit q, out and cache of one dtype, head_dim 64, 80, 96,
// 128 or 256 (each compiled), any GQA group; every other head_dim (up to 256) runs on the
// per-token kernel, which takes any. It runs `rows` rows (args.decode_rows[i] when set, else
// row i); splits > 0: each row's keys in runs of args.split_keys over `splits` splits, partials
// to args.split_workspace for the split merge; 0: unsplit, straight to args.out. `depth` picks
// the pipeline (kTensorCore, kTensorCoreShallow, kTensorCoreDeep).
bool DecodeAttentionFits(const PagedAttentionArgs& args);
cudaError_t LaunchDecodeAttention(const PagedAttentionArgs& args, int64_t rows, int64_t splits,
                                  cudaStream_t stream,
                                  DecodeKernel depth = DecodeKernel::kTensorCore);
// Linear of at most kSkinnyMaxRows rows over 16-bit operands that SkinnyLinearFits
// (kernels/cuda/skinny_linear.cu): the weight streamed once at near the memory bandwidth.
// Its tilings (the file's comment): kAuto takes SkinnyTilingFor's pick for the shape; the
// others are there for tools/bench_linear's sweep and the tests.
constexpr int64_t kSkinnyMaxRows = 4;
enum class SkinnyTiling { kAuto, kWarpRows, kCta2x128, kCta4x128, kCta4x256, kCta8x256 };
constexpr SkinnyTiling kSkinnyTilings[] = {SkinnyTiling::kWarpRows, SkinnyTiling::kCta2x128,
                                           SkinnyTiling::kCta4x128, SkinnyTiling::kCta4x256,
                                           SkinnyTiling::kCta8x256};
const char* SkinnyTilingName(SkinnyTiling tiling);
// y [m, n] = x [m, k] w^T: the sweep found the pick depends on k alone (skinny_linear.cu).
SkinnyTiling SkinnyTilingFor(int64_t k);
bool SkinnyLinearFits(const LinearArgs& args);
cudaError_t LaunchSkinnyLinear(const LinearArgs& args, cudaStream_t stream,
                               SkinnyTiling tiling = SkinnyTiling::kAuto);
// Linear where cuBLASLt has no algorithm for the shape (kernels/cuda/linear_fallback.cu).
cudaError_t LaunchLinearFallback(const LinearArgs& args, cudaStream_t stream);
cudaError_t LaunchTopKSoftmax(const TopKSoftmaxArgs& args, cudaStream_t stream);
cudaError_t LaunchGatherRows(const GatherRowsArgs& args, cudaStream_t stream);
cudaError_t LaunchScatterAddRows(const ScatterAddRowsArgs& args, cudaStream_t stream);
cudaError_t LaunchMoeCombine(const MoeCombineArgs& args, cudaStream_t stream);
cudaError_t LaunchMoePermute(const MoePermuteArgs& args, cudaStream_t stream);
cudaError_t LaunchGroupedLinear(const GroupedLinearArgs& args, cudaStream_t stream);
cudaError_t LaunchRandomFill(const RandomFillArgs& args, cudaStream_t stream);
cudaError_t LaunchConvert(const ConvertArgs& args, cudaStream_t stream);
// TargetLogprobs on bf16/f16 tensor cores (kernels/cuda/cce.cu) where TargetLogprobsFits; other
// dtypes and alignments on a plain fp32 kernel with the same splits and merge.
// Pass 1's tensor-core kernel: kMmaSync is cce.cu's (mma.sync, any GPU, top-k), kWgmma the
// Hopper kernel of kernels/cuda/cce_sm90.cu (wgmma + TMA, no top-k) where
// TargetLogprobsSm90Fits (forced where it does not: cudaErrorNotSupported). kAuto takes kWgmma
// where it fits when CceAutoWgmma(), else kMmaSync. The others are for tools/bench_cce's
// comparison and the tests.
enum class CceKernel { kAuto, kMmaSync, kWgmma };
constexpr CceKernel kCceKernels[] = {CceKernel::kMmaSync, CceKernel::kWgmma};
// kAuto's default: wgmma on Hopper, since cce_test passed kWgmma on an H100 (racecheck and
// memcheck clean) and bench_cce had its pass 1 4.1-5.1x the mma.sync kernel's speed there
// (2026-12-08).
constexpr bool kCceAutoWgmma = true;
// kAuto's pick for this process: the environment's ARBOR_CCE_KERNEL (`wgmma`, `mma-sync` or
// `auto`), else kCceAutoWgmma; read once (an unknown value is reported on stderr and ignored).
bool CceAutoWgmma();
const char* CceKernelName(CceKernel kernel);
bool TargetLogprobsFits(const TargetLogprobsArgs& args);
// bf16/f16 x and w that TargetLogprobsFits, top_k 0, on a Hopper (compute capability 9.x) whose
// driver gives cuTensorMapEncodeTiled.
bool TargetLogprobsSm90Fits(const TargetLogprobsArgs& args);
cudaError_t LaunchTargetLogprobs(const TargetLogprobsArgs& args, cudaStream_t stream,
                                 CceKernel kernel = CceKernel::kAuto);
// The environment variable `name` as a kernel choice for KernelChoice's callers: 1 `wgmma`, 0
// `mma-sync`, `fallback` for unset, empty or `auto` (and for anything else, reported on stderr).
bool KernelChoiceFromEnv(const char* name, bool fallback);
// Batched LoRA (kernels/lora.h), shrink then expand, per token or per tile as args.schedule says
// (kernels/cuda/lora.cu).
cudaError_t LaunchLora(const LoraArgs& args, cudaStream_t stream);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CUDA_LAUNCH_H_
