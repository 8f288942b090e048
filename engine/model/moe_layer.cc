#include "engine/model/moe_layer.h"

#include "common/status_macros.h"

namespace arbor::engine {

using kernels::Tensor;

// The scratch, in order: TopKSoftmax's weights (fp32) and experts (int32) [n, k]; MoePermute's
// expert_offsets [E + 1], permuted_tokens [n * k], combine_rows [n, k] (int32) and
// combine_weights [n, k] (fp32). Every element is 4 bytes.
size_t MoeScratchBytes(const MoeLayerShape& shape, int64_t n) {
  return size_t(shape.num_experts + 1 + 5 * n * shape.top_k) * 4;
}

absl::Status RunMoeLayer(kernels::Backend& be, kernels::Stream& st, const MoeLayerShape& s,
                         const MoeLayerWeights& w, const Tensor& hb, const MoeLayerBuffers& buf,
                         const Tensor& out, const MoeLayerLora* lora) {
  const int64_t n = hb.rows, pairs = n * s.top_k;
  if (buf.scratch == nullptr || buf.router.rows < n || buf.pairs.rows < pairs ||
      buf.gate_up.rows < pairs || buf.act.rows < pairs) {
    return absl::InvalidArgumentError("RunMoeLayer: buffers smaller than the pass");
  }
  float* weights = static_cast<float*>(buf.scratch);
  int32_t* chosen = reinterpret_cast<int32_t*>(weights + pairs);
  kernels::MoePermuteArgs permute;
  permute.experts = chosen;
  permute.weights = weights;
  permute.num_tokens = n;
  permute.k = s.top_k;
  permute.num_experts = s.num_experts;
  permute.expert_offsets = chosen + pairs;
  permute.permuted_tokens = permute.expert_offsets + s.num_experts + 1;
  permute.combine_rows = permute.permuted_tokens + pairs;
  permute.combine_weights = reinterpret_cast<float*>(permute.combine_rows + pairs);

  const Tensor router = kernels::Rows(buf.router, 0, n);
  const Tensor gate_up = kernels::Rows(buf.gate_up, 0, pairs);
  const Tensor act = kernels::Rows(buf.act, 0, pairs);
  const Tensor rows = kernels::Rows(buf.pairs, 0, pairs);
  RETURN_IF_ERROR(be.Linear(
      {hb, kernels::View(w.router, s.dtype, s.num_experts, s.hidden), nullptr, router}, st));
  RETURN_IF_ERROR(be.TopKSoftmax({router, weights, chosen, s.top_k, true}, st));
  RETURN_IF_ERROR(be.MoePermute(permute, st));
  RETURN_IF_ERROR(be.GatherRows({hb, permute.permuted_tokens, rows}, st));
  RETURN_IF_ERROR(be.GroupedLinear(
      {rows, kernels::View(w.gate_up, s.dtype, s.num_experts * 2 * s.inter, s.hidden),
       permute.expert_offsets, s.num_experts, gate_up},
      st));
  // The experts' adapters on the pair rows, each row under its token's slot and its expert's A/B.
  auto apply_lora = [&](const kernels::LoraArgs& tmpl, const Tensor& x,
                        const Tensor& y) -> absl::Status {
    if (lora == nullptr || tmpl.num_targets == 0) return absl::OkStatus();
    kernels::LoraArgs args = tmpl;
    args.x = x;
    args.y = y;
    args.row_token = permute.permuted_tokens;
    args.expert_offsets = permute.expert_offsets;
    args.num_experts = s.num_experts;
    return be.Lora(args, st);
  };
  RETURN_IF_ERROR(apply_lora(lora != nullptr ? lora->gate_up : kernels::LoraArgs{}, rows, gate_up));
  RETURN_IF_ERROR(be.SiluMul({gate_up, act}, st));
  // The pairs' input rows are read: their buffer takes the experts' outputs.
  RETURN_IF_ERROR(
      be.GroupedLinear({act, kernels::View(w.down, s.dtype, s.num_experts * s.hidden, s.inter),
                        permute.expert_offsets, s.num_experts, rows},
                       st));
  RETURN_IF_ERROR(apply_lora(lora != nullptr ? lora->down : kernels::LoraArgs{}, act, rows));
  return be.MoeCombine({rows, permute.combine_rows, permute.combine_weights, out, s.top_k}, st);
}

}  // namespace arbor::engine
