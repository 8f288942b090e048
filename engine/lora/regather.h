// Reshaping PEFT adapter matrices before packing (engine/lora/adapter.cc): the per-expert
// matrices of fused 3-D expert parameters (PEFT's target_parameters), and modules padded to the
// adapter's rank or rescaled to its scale (rank_pattern, alpha_pattern). Internal to
// engine/lora.
#ifndef ARBOR_ENGINE_LORA_REGATHER_H_
#define ARBOR_ENGINE_LORA_REGATHER_H_

#include <array>
#include <cstring>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/lora/adapter.h"
#include "engine/model/hf_config.h"

namespace arbor::engine {

// A [rows, cols] matrix whose element (r, c) is src's flat element index(r, c), or zero where
// index gives -1, kept in out.regathered: in src's dtype (element copies) when `scale` is 1, else
// in F32, each element times `scale`.
template <typename Index>
inline const TensorView* Regather(PeftAdapter& out, const TensorView& src, std::string name,
                                  int64_t rows, int64_t cols, Index index, double scale = 1.0) {
  auto g = std::make_unique<PeftAdapter::Regathered>();
  const size_t in_size = StDtypeSize(src.dtype);
  const StDtype dtype = scale == 1.0 ? src.dtype : StDtype::kF32;
  const size_t size = StDtypeSize(dtype);
  g->bytes.assign(size_t(rows * cols) * size, 0);  // +0 in every dtype
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = index(r, c);
      if (i < 0) continue;
      uint8_t* dst = g->bytes.data() + size_t(r * cols + c) * size;
      if (scale == 1.0) {
        std::memcpy(dst, src.data + size_t(i) * in_size, size);
      } else {
        float x = 0;
        ConvertElements(src.data + size_t(i) * in_size, src.dtype, 1, kernels::DType::kF32, &x);
        x = float(double(x) * scale);
        std::memcpy(dst, &x, 4);
      }
    }
  }
  g->view =
      TensorView{std::move(name), dtype, {rows, cols}, g->bytes.data(), g->bytes.size(), src.file};
  out.regathered.push_back(std::move(g));
  return &out.regathered.back()->view;
}

// One module's (or fused parameter's) LoRA: its rank, and its B's factor over the adapter's
// scale (rank_pattern, alpha_pattern).
struct ModuleLora {
  int64_t rank = 0;
  double b_factor = 1.0;
};

constexpr int kFusedGateUp = 0, kFusedDown = 1;

// PEFT's name of layer l's fused expert parameter `which`: "model.layers.<l>.mlp.experts.
// gate_up_proj" (kFusedGateUp) or "...down_proj" (kFusedDown).
std::string FusedParam(int64_t layer, int which);

// PEFT's target_parameters rule: an entry names parameter `full` ("model.layers.3.mlp.experts.
// gate_up_proj") when it equals it or is a suffix of it starting at a dot.
bool ParamMatches(const std::string& full, const std::string& entry);

// Layer l's fused expert parameters that target_parameters names (wanted[kFusedGateUp],
// wanted[kFusedDown]), as PEFT 0.21 saves them on transformers 5's Mixtral (read from the files
// PEFT wrote, tests/data/moe_lora): for a parameter of expert Linear weights [E, out, in]
// (gate_up_proj [E, 2I, H], gate rows first; down_proj [E, H, I]) the wrapper holds
//   lora_A [r E, in]:  expert e's A_e [r, in] is rows e r + j (expert-major),
//   lora_B [out, r E]: expert e's B_e [out, r] is columns j E + e (expert-minor),
// and adds scale * B_e A_e to expert e's weight. gate_up's B_e rows [0, I) are the gate's and
// [I, 2I) the up's; both share A_e. PEFT adds the delta to the weight rather than as
// x A^T B^T: the same up to rounding. Two parameters of one module nest their wrappers, so one
// pair of tensors is <experts>.lora_{A,B}.weight and the other
// <experts>.base_layer.lora_{A,B}.weight (PEFT 0.21 puts the parameter named first in
// target_parameters' sorted order inside); shapes tell the two apart (A [r E, H] with B [2I, r E]
// is gate_up's, A [r E, I] with B [H, r E] down's; both at once would need I = H and 2I = H).
// Each parameter's rank and B factor are lora[kFusedGateUp] and lora[kFusedDown]; the experts'
// matrices are padded with zeros to the adapter's rank out.rank (see OpenPeftAdapter).
absl::Status TakeFusedExperts(const Checkpoint& ckpt, const ModelSpec& spec, int64_t layer,
                              const std::array<bool, 2>& wanted,
                              const std::array<ModuleLora, 2>& lora, PeftAdapter& out,
                              std::set<std::string>& used);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_LORA_REGATHER_H_
