// The sparse MLP of a mixture-of-experts decoder layer (Mixtral's), run through
// kernels::Backend: route each token to its top-k experts (softmax, renormalised), run each
// expert on the tokens routed to it, and sum the weighted outputs per token in expert order.
//
// Everything stays on the device, in launches whose shapes depend on the token count alone
// (never on the routing), so the layer never synchronises and can be captured in a CUDA graph:
//   router Linear -> TopKSoftmax -> MoePermute (pairs grouped by expert) -> GatherRows (each
//   pair's input row) -> GroupedLinear (gate_up) -> SiluMul -> GroupedLinear (down) ->
//   MoeCombine (each token's weighted pair outputs, in ascending expert order).
// engine::Model runs it for every MoE layer; tools/bench_moe times it alone.
#ifndef ARBOR_ENGINE_MODEL_MOE_LAYER_H_
#define ARBOR_ENGINE_MODEL_MOE_LAYER_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/backend.h"

namespace arbor::engine {

struct MoeLayerShape {
  int64_t hidden = 0;
  int64_t inter = 0;  // one expert's intermediate size
  int64_t num_experts = 0;
  int64_t top_k = 0;
  kernels::DType dtype = kernels::DType::kF32;  // weights and activations
};

// One layer's weights in `dtype` (engine/model/weights.h's layout).
struct MoeLayerWeights {
  const void* router = nullptr;   // [num_experts, hidden]
  const void* gate_up = nullptr;  // [num_experts, 2 inter, hidden]
  const void* down = nullptr;     // [num_experts, hidden, inter]
};

// The buffers of a pass of n tokens (in `dtype` unless said), reused by every layer.
struct MoeLayerBuffers {
  kernels::Tensor router;   // [n, num_experts]
  kernels::Tensor gate_up;  // [n * top_k, 2 inter]: one row per (token, expert) pair
  kernels::Tensor act;      // [n * top_k, inter]
  kernels::Tensor pairs;    // [n * top_k, hidden]: each pair's input row, then its expert's output
  void* scratch = nullptr;  // MoeScratchBytes(shape, n): routing and grouping arrays (int32, fp32)
};

// LoRA on the experts (kernels/lora.h's expert rows): templates of the Lora calls after the
// gate_up and the down grouped GEMMs, with the weights, token_slot (by token), targets (expert
// 0's matrix ids, gate at column 0 and up at `inter`), expert_matrix_stride, max_rank and shrink
// set; RunMoeLayer fills in x, y, row_token, expert_offsets and num_experts. A template with no
// target is skipped. On each pair row (token t routed to expert e):
//   gate_up[pair] += scale * B_e(A_e x_t)   (gate and up of expert e)
//   out_e[pair]   += scale * B_e(A_e act[pair])   (down), before the weighted combine.
struct MoeLayerLora {
  kernels::LoraArgs gate_up;
  kernels::LoraArgs down;
};

// Bytes of MoeLayerBuffers::scratch for n tokens.
size_t MoeScratchBytes(const MoeLayerShape& shape, int64_t n);

// out = the layer's output for hb, [n, hidden] each (out may not alias hb), with `lora`'s
// adapters on the experts where given. Work is queued on `stream`; nothing waits for it.
absl::Status RunMoeLayer(kernels::Backend& be, kernels::Stream& stream, const MoeLayerShape& shape,
                         const MoeLayerWeights& w, const kernels::Tensor& hb,
                         const MoeLayerBuffers& buf, const kernels::Tensor& out,
                         const MoeLayerLora* lora = nullptr);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_MOE_LAYER_H_
