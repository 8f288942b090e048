// Argument structs of the ops every backend implements. Both backends take the same struct, so a
// reference and a kernel cannot disagree on a constant by accident. Pointers are device pointers
// of the backend that runs the op. Tensors are typed views (kernels/tensor.h): activations,
// weights and the KV cache are f32, bf16 or f16 (an op's tensors share one dtype unless a field
// says otherwise); math is in fp32.
//
// Rounding. Where transformers computes a step in a 16-bit dtype, it rounds that step's result;
// each op states where it rounds, and the CPU reference and the CUDA kernel round at the same
// points (kernels/dtype.h RoundTo), so CPU-vs-GPU parity in bf16 is a matter of accumulation
// order, not of different arithmetic. In f32 every rounding is the identity.
//
// Plain structs: usable from .cu files.
#ifndef ARBOR_KERNELS_OPS_H_
#define ARBOR_KERNELS_OPS_H_

#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/tensor.h"

namespace arbor::kernels {

// The residual add and RMSNorm of a decoder layer, fused: when `delta` is given,
// x = round(x + delta) (x is the residual stream, updated in place); then
// y = round(round(x * rsqrt(mean(x^2) + eps)) * weight), row by row, with the mean over the
// rounded x in fp32 (LlamaRMSNorm's arithmetic). weight [cols] in x's dtype. y must not
// alias x or delta.
struct AddRmsNormArgs {
  Tensor x;      // [rows, cols]
  Tensor delta;  // [rows, cols], or empty (data null): a plain RMSNorm of x
  const void* weight = nullptr;
  Tensor y;  // [rows, cols]
  float eps = 1e-6f;
};

// SwiGLU on a fused gate_up projection: out = round(round(silu(gate)) * up) with
// gate = in[:, :inter] and up = in[:, inter:] (silu and the product each rounded, as torch).
struct SiluMulArgs {
  Tensor gate_up;  // [n, 2 * inter]
  Tensor out;      // [n, inter]; may not alias gate_up
};

// out[t] = table[ids[t]]: token embeddings. Ids must lie in [0, table.rows) (checked by the
// caller: the CPU reference and the CUDA kernel write zeros for an out-of-range id).
struct EmbeddingArgs {
  const int32_t* ids = nullptr;  // [out.rows]
  Tensor table;                  // [vocab, hidden]
  Tensor out;                    // [num_tokens, hidden], table's dtype
};

// Paged KV cache: the unified pool's pages (memory/unified_pool.h). A page is one KV block of
// `block_size` tokens for every layer; element offset inside a page:
//   ((layer * 2 + {0: K, 1: V}) * block_size + token_in_block) * kv_dim + head * head_dim + d.
// Elements are of `dtype` (engine.kv_cache_dtype). fp8 KV will add per-layer scales here: the
// page layout stays, one scale per (layer, K/V) in a small table beside the pool.
struct PagedKv {
  void* pages = nullptr;  // the pool's base
  DType dtype = DType::kF32;
  int64_t block_size = 16;  // tokens per page
  int64_t num_layers = 0;
  int64_t kv_dim = 0;  // num_kv_heads * head_dim
  int64_t layer = 0;   // the layer this op reads or writes
};

// Rotary position embedding of the q and k parts of a fused qkv projection, in place, then the
// keys and values written to their KV slots (slot = page * block_size + offset).
// qkv [n, (num_q_heads + 2 * num_kv_heads) * head_dim]: q heads, then k heads, then v heads.
// Hugging Face's rotate_half layout: dimension i pairs with i + head_dim/2. inv_freq carries any
// scaling (linear, llama3), computed on the host; cos/sin are fp32 of the fp32 angle
// position * inv_freq[i], times attention_factor, rounded to qkv's dtype, and
// x'[i] = round(round(x[i] cos) - round(x[i + half] sin)) (and the mirror), as torch in bf16.
// The KV pages may have another dtype than qkv: values are rounded into it. A token whose slot
// is negative is rotated but not cached (the padding rows of a CUDA-graph decode batch).
struct RopeKvWriteArgs {
  Tensor qkv;
  const int32_t* positions = nullptr;  // [n]
  const float* inv_freq = nullptr;     // [head_dim / 2]
  float attention_factor = 1.0f;
  const int32_t* slots = nullptr;  // [n]
  PagedKv kv;
  int64_t num_q_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// y = x W^T (+ bias) (+ y when accumulate): a linear layer whose weight is stored
// [out_features, in_features] as in Hugging Face checkpoints. x [m, k] and w [n, k] share a
// dtype; y [m, n] has that dtype or f32 (the LM head writes fp32 logits); bias [n] has w's dtype
// or is null. fp32 accumulation, then one rounding of acc + bias (+ y) to y's dtype, as
// torch.addmm and cuBLAS with beta = 1 do. With accumulate false, y may hold garbage (NaN).
//
// Epilogue kSiluMul (a SwiGLU MLP's fused gate_up projection): w is [gate; up], [2 * inter, k],
// y is [m, inter] in x's dtype, and y = SiluMul(round(x W^T)) exactly as a Linear into
// `scratch` followed by SiluMul (SiluMulArgs) computes it: gate and up each rounded, silu
// rounded, the product rounded. No bias, no accumulate. `scratch` [m, 2 * inter] (x's dtype)
// is always given; a backend that has no fused kernel for the shape runs the two ops through it,
// one that has (CUDA's few-row Linear) never touches it, so the [m, 2 * inter] activation is
// neither written nor read back.
//
// Epilogue kRopeKvWrite (the attention's fused qkv projection): y is the qkv buffer and then
// gets RopeKvWrite(rope) applied, rope.qkv == y: exactly Linear followed by RopeKvWrite, the
// projection's values rounded to y's dtype first. Bias allowed (Qwen2), no accumulate. A backend
// with a fused kernel (CUDA's few-row Linear) rotates and caches from registers; the others
// run the two ops.
enum class LinearEpilogue { kNone, kSiluMul, kRopeKvWrite };

struct LinearArgs {
  Tensor x;
  Tensor w;
  const void* bias = nullptr;
  Tensor y;
  bool accumulate = false;
  LinearEpilogue epilogue = LinearEpilogue::kNone;
  Tensor scratch = {};  // kSiluMul: [m, 2 * inter]
  RopeKvWriteArgs rope = {};  // kRopeKvWrite
};

// Causal attention of a batch's new tokens over their sequences' paged keys/values,
// grouped-query: q head h reads kv head h / (num_q_heads / num_kv_heads). Token t belongs to
// sequence token_seq[t] and sits at absolute position p = q_positions[t]; it attends to that
// sequence's positions j = p - i * dilation for i = 0, 1, 2, ... with j >= 0 and, when
// sliding_window = w > 0, only i < w (causal neighborhood attention, neighborhood-attention.md):
// a dilation d splits the positions into d groups (p mod d) and a token sees only keys of its own
// group; the window counts those keys, so it spans (w - 1) * d + 1 positions. With dilation 1
// this is j <= p and j > p - w (Mistral's window, Hugging Face's mask); sliding_window 0 is full
// causal attention within the group. AttentionKeys below gives the keys. Position j lives in page
// block_tables[seq * max_blocks + j / block_size] (entries before the window may be -1).
// Softmax and the weighted sum in fp32; out rounded once. A token at a negative position sees no
// key and its output is 0 (the padding rows of a CUDA-graph decode batch).
//
// Prefill tiles (optional; kernels/attention_plan.h builds them): runs of query rows that the
// CUDA backend gives to its tensor-core kernel, which rounds the probabilities to q's 16-bit
// dtype before P·V (as FlashAttention does). Each tile is one sequence's rows at consecutive
// positions; every other row is listed in decode_rows. Backends without that kernel, and the
// CUDA backend in deterministic mode (a row's bits must not depend on how its prompt was
// chunked), run every row through the per-token kernel and ignore the tiles.
struct PagedAttentionArgs {
  Tensor q;    // [num_tokens, num_q_heads * head_dim] (a column slice of qkv)
  Tensor out;  // [num_tokens, num_q_heads * head_dim], q's dtype
  PagedKv kv;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks]
  const int32_t* token_seq = nullptr;     // [num_tokens]
  const int32_t* q_positions = nullptr;   // [num_tokens]
  int64_t num_seqs = 0;
  int64_t max_blocks = 0;
  int64_t num_q_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t sliding_window = 0;              // keys of the query's dilation group; 0: no window
  int64_t dilation = 1;                    // >= 1: every dilation-th position (1: every position)
  float scale = 1.0f;                      // usually 1/sqrt(head_dim)
  const int32_t* prefill_tiles = nullptr;  // [num_prefill_tiles, 2]: first row, row count
  int64_t num_prefill_tiles = 0;
  // Read only when num_prefill_tiles > 0 (else every row is a decode row).
  const int32_t* decode_rows = nullptr;  // [num_decode_rows]
  int64_t num_decode_rows = 0;
  // Split-KV for decode rows (optional, CUDA outside deterministic mode): each decode row's
  // keys are cut into runs of split_keys (a multiple of 128), each run's partial softmax (max,
  // sum, unnormalised P·V per query head) written to split_workspace [decode rows, num_q_heads,
  // splits, head_dim + 2] and merged in run order; splits = ceil(max_context / split_keys).
  // Used only where that fits split_workspace_floats (kernels/attention_plan.h sizes it); null:
  // no split.
  float* split_workspace = nullptr;
  int64_t split_workspace_floats = 0;
  int64_t split_keys = 0;
  int64_t max_context = 0;  // keys a row may see at most (the block tables' width in tokens)
};

// The keys a query at position `pos` attends to (PagedAttentionArgs): `count` positions
// first, first + dilation, ..., pos (key i at first + i * dilation, ascending). A negative
// position (a padding row) sees none. Shared by the CPU reference and the CUDA kernels, so the
// two cannot disagree on a window's edge.
struct AttentionKeyRange {
  int64_t first = 0;
  int64_t count = 0;
};
ARBOR_HD AttentionKeyRange AttentionKeys(int64_t pos, int64_t window, int64_t dilation) {
  if (pos < 0) return {0, 0};
  int64_t count = pos / dilation + 1;  // every position of pos's group up to pos
  if (window > 0 && window < count) count = window;
  return {pos - (count - 1) * dilation, count};
}

// The most experts a token may pick (TopKSoftmax's and MoePermute's k): the kernels keep a
// token's picks in registers.
constexpr int64_t kMaxTopK = 16;

// MoE routing: softmax (fp32) over each token's expert logits, keep the top k (ties: lower
// expert id first), optionally renormalise the kept weights to sum to 1 (Mixtral does).
struct TopKSoftmaxArgs {
  Tensor logits;               // [num_tokens, num_experts], any float dtype
  float* weights = nullptr;    // [num_tokens, k]
  int32_t* experts = nullptr;  // [num_tokens, k]
  int64_t k = 0;               // <= kMaxTopK
  bool renormalize = true;
};

// dst[i, :] = src[index[i], :]: gathers rows (the tokens of one adapter or one expert).
struct GatherRowsArgs {
  Tensor src;                      // [src_rows, cols]
  const int32_t* index = nullptr;  // [dst.rows], each in [0, src.rows)
  Tensor dst;                      // [count, cols], src's dtype
};

// dst[index[i], :] = round(dst[index[i], :] + round(scale[i] * src[i, :])): adds a LoRA
// product back to its tokens, as PEFT's `result + lora_B(lora_A(x)) * scaling`. Indexes must
// not repeat (each token once per adapter), so no two rows race.
struct ScatterAddRowsArgs {
  Tensor src;                      // [count, cols]
  const int32_t* index = nullptr;  // [src.rows], each in [0, dst.rows), distinct
  const float* scale = nullptr;    // [src.rows]
  Tensor dst;                      // [dst_rows, cols], src's dtype
};

// The un-permute and weighting of a mixture of experts: out[t] = sum over t's k experts, in
// ascending expert order, of round(w * expert_out[row]), each add rounded, starting from 0
// (transformers' index_add_ of each expert's weighted output in expert order), with the routing
// weight w rounded to out's dtype first. rows[t * k + j] and weights[t * k + j] are token t's
// j-th expert in ascending expert order.
struct MoeCombineArgs {
  Tensor expert_out;               // [total, hidden]: every (token, expert) pair's output row
  const int32_t* rows = nullptr;   // [num_tokens, k]
  const float* weights = nullptr;  // [num_tokens, k]
  Tensor out;                      // [num_tokens, hidden]
  int64_t k = 0;
};

// The most experts MoePermute and GroupedLinear take: the CUDA kernels keep per-expert counts
// and offsets in shared memory (DeepSeek-V3 has 256 routed experts, Mixtral 8).
constexpr int64_t kMaxExperts = 256;

// Groups a batch's (token, expert) pairs by expert on the device, so that the experts run as
// one grouped GEMM whose launch shape depends on num_tokens only, not on the routing. Pair
// p = t * k + j is token t's j-th choice of TopKSoftmax. Every pair gets a row of the grouped
// buffers: expert e owns rows [expert_offsets[e], expert_offsets[e + 1]), in pair order within
// an expert (token order, as each token picks an expert at most once). For the combine, token
// t's pairs in ascending expert order (ties: lower j first): their rows and routing weights.
// Deterministic: the outputs depend on `experts` alone, not on the order threads run in.
// Experts must lie in [0, num_experts) (TopKSoftmax's do); the kernels skip any other id
// without writing out of bounds, and the outputs are then unspecified.
struct MoePermuteArgs {
  const int32_t* experts = nullptr;  // [num_tokens, k]
  const float* weights = nullptr;    // [num_tokens, k]
  int64_t num_tokens = 0;
  int64_t k = 0;                       // <= kMaxTopK
  int64_t num_experts = 0;             // <= kMaxExperts
  int32_t* expert_offsets = nullptr;   // [num_experts + 1]: exclusive prefix sum of counts
  int32_t* permuted_tokens = nullptr;  // [num_tokens * k]: the token of each grouped row
  int32_t* combine_rows = nullptr;     // [num_tokens, k]: token t's pair rows, experts ascending
  float* combine_weights = nullptr;    // [num_tokens, k]: their routing weights (MoeCombine's)
};

// The experts of a mixture, as one grouped GEMM: y[r, :] = x[r, :] W[e]^T for every row r in
// [offsets[e], offsets[e + 1]), with W[e] = rows [e * out, (e + 1) * out) of `w` (the stacked
// [num_experts, out, in] weights as one [num_experts * out, in] view). The offsets are read
// on the device (MoePermute writes them), so the launch shape does not depend on the routing.
// fp32 accumulation, one rounding to y's dtype (Linear's arithmetic, without bias). Offsets
// must be non-decreasing from 0 with offsets[num_experts] <= x.rows; rows past it are not
// written. x, w and y share one dtype.
struct GroupedLinearArgs {
  Tensor x;                          // [total, in]: rows grouped by expert
  Tensor w;                          // [num_experts * out, in]
  const int32_t* offsets = nullptr;  // [num_experts + 1], device memory
  int64_t num_experts = 0;           // <= kMaxExperts
  Tensor y;                          // [total, out]
};

// Seeded uniform values in [lo, hi) rounded to out's dtype (kernels/philox.h): dummy weights,
// the same on every backend for the same seed and stream.
struct RandomFillArgs {
  Tensor out;
  uint64_t seed = 0;
  uint64_t stream = 0;  // one per tensor
  float lo = -1.0f;
  float hi = 1.0f;
};

// dst = round(src) into dst's dtype, element by element (same shape).
struct ConvertArgs {
  Tensor src;
  Tensor dst;
};

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_OPS_H_
