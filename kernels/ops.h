// Argument structs of the ops every backend implements. Both backends take the same struct, so a
// reference and a kernel cannot disagree on a constant by accident. Pointers are device pointers
// of the backend that runs the op; every tensor is contiguous, row-major, fp32 unless a dtype
// field says otherwise. Plain structs: usable from .cu files.
#ifndef ARBOR_KERNELS_OPS_H_
#define ARBOR_KERNELS_OPS_H_

#include <cstdint>

#include "kernels/dtype.h"

namespace arbor::kernels {

// y = x / sqrt(mean(x^2) + eps) * weight, row by row.
struct RmsNormArgs {
  const float* x;       // [rows, cols]
  const float* weight;  // [cols]
  float* y;             // [rows, cols]; may alias x
  int64_t rows;
  int64_t cols;
  float eps;
};

// out = silu(gate) * up: the SwiGLU activation of a LLaMA MLP.
struct SiluMulArgs {
  const float* gate;  // [n]
  const float* up;    // [n]
  float* out;         // [n]; may alias gate or up
  int64_t n;
};

// y = alpha * x + y (residual adds, scaled accumulation).
struct AxpyArgs {
  const float* x;  // [n]
  float* y;        // [n]
  int64_t n;
  float alpha;
};

// C = A * B^T + beta * C with A [m, k] and B [n, k]: the layout of a linear layer whose weight
// is stored [out_features, in_features] as in Hugging Face checkpoints.
struct GemmArgs {
  const float* a;  // [m, k]
  const float* b;  // [n, k]
  float* c;        // [m, n]
  int64_t m;
  int64_t n;
  int64_t k;
  float beta;  // 0 overwrites C (C may then hold garbage, even NaN)
};

// out[t] = table[ids[t]]: token embeddings. Ids must lie in [0, vocab) (checked by the caller:
// the CPU reference asserts nothing, the CUDA kernel writes zeros for an out-of-range id).
struct EmbeddingArgs {
  const int32_t* ids;  // [num_tokens]
  const float* table;  // [vocab, hidden]
  float* out;          // [num_tokens, hidden]
  int64_t num_tokens;
  int64_t vocab;
  int64_t hidden;
};

// x[r, :] += bias: the q/k/v (and o) biases of Qwen2 and of Llama with attention_bias.
struct BiasAddArgs {
  float* x;           // [rows, cols]
  const float* bias;  // [cols]
  int64_t rows;
  int64_t cols;
};

// Rotary position embedding in place, Hugging Face's rotate_half layout: dimension i pairs with
// i + head_dim/2. inv_freq already carries any scaling (linear, llama3), computed on the host.
struct RopeArgs {
  float* q;                  // [num_tokens, num_q_heads, head_dim]
  float* k;                  // [num_tokens, num_kv_heads, head_dim]
  const int32_t* positions;  // [num_tokens]
  const float* inv_freq;     // [head_dim / 2]
  int64_t num_tokens;
  int64_t num_q_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
};

// Paged KV cache: the unified pool's pages (memory/unified_pool.h). A page is one KV block of
// `block_size` tokens for every layer; element offset inside a page:
//   ((layer * 2 + {0: K, 1: V}) * block_size + token_in_block) * kv_dim + head * head_dim + d.
struct PagedKv {
  float* pages;        // the pool's base
  int64_t block_size;  // tokens per page
  int64_t num_layers;
  int64_t kv_dim;  // num_kv_heads * head_dim
  int64_t layer;   // the layer this op reads or writes
};

// Writes new tokens' keys and values into their slots: slot = page * block_size + offset.
struct KvWriteArgs {
  const float* k;        // [num_tokens, kv_dim]
  const float* v;        // [num_tokens, kv_dim]
  const int32_t* slots;  // [num_tokens]
  PagedKv kv;
  int64_t num_tokens;
};

// Causal attention of a batch's new tokens over their sequences' paged keys/values,
// grouped-query: q head h reads kv head h / (num_q_heads / num_kv_heads). Token t belongs to
// sequence token_seq[t] and sits at absolute position p = q_positions[t]; it attends to that
// sequence's positions j with j <= p and, when sliding_window > 0, j > p - sliding_window
// (Mistral's window, Hugging Face's mask). Position j lives in page
// block_tables[seq * max_blocks + j / block_size] (entries before the window may be -1).
struct PagedAttentionArgs {
  const float* q;  // [num_tokens, num_q_heads, head_dim]
  float* out;      // [num_tokens, num_q_heads, head_dim]
  PagedKv kv;
  const int32_t* block_tables;  // [num_seqs, max_blocks]
  const int32_t* token_seq;     // [num_tokens]
  const int32_t* q_positions;   // [num_tokens]
  int64_t num_tokens;
  int64_t num_seqs;
  int64_t max_blocks;
  int64_t num_q_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
  int64_t sliding_window;  // 0: no window
  float scale;             // usually 1/sqrt(head_dim)
};

// MoE routing: softmax over each token's expert logits, keep the top k (ties: lower expert id
// first), optionally renormalise the kept weights to sum to 1 (Mixtral does).
struct TopKSoftmaxArgs {
  const float* logits;  // [num_tokens, num_experts]
  float* weights;       // [num_tokens, k]
  int32_t* experts;     // [num_tokens, k]
  int64_t num_tokens;
  int64_t num_experts;
  int64_t k;
  bool renormalize;
};

// dst[i, :] = src[index[i], :]: gathers the tokens routed to one expert.
struct GatherRowsArgs {
  const float* src;      // [src_rows, cols]
  const int32_t* index;  // [num_rows], each in [0, src_rows)
  float* dst;            // [num_rows, cols]
  int64_t num_rows;
  int64_t src_rows;
  int64_t cols;
};

// dst[index[i], :] += scale[i] * src[i, :]: adds an expert's weighted output back to its tokens.
// Rows of `index` may repeat (the CUDA kernel adds atomically).
struct ScatterAddRowsArgs {
  const float* src;      // [num_rows, cols]
  const int32_t* index;  // [num_rows], each in [0, dst_rows)
  const float* scale;    // [num_rows]
  float* dst;            // [dst_rows, cols]
  int64_t num_rows;
  int64_t dst_rows;
  int64_t cols;
};

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_OPS_H_
