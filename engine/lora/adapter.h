// LoRA adapters (PEFT format) for the served model: opening and checking a PEFT directory, packing
// it into the stream the kernels read, and the adapter as the forward pass uses it — its packed
// stream of A [rank, in] and B [out, rank] matrices (in the model's dtype) in unified-pool pages,
// read through its page table, and the scale alpha / rank.
#ifndef ARBOR_ENGINE_LORA_ADAPTER_H_
#define ARBOR_ENGINE_LORA_ADAPTER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/model/hf_config.h"
#include "kernels/dtype.h"

namespace arbor::engine {

enum LoraTarget : int { kLoraQ, kLoraK, kLoraV, kLoraO, kLoraGate, kLoraUp, kLoraDown };
inline constexpr int kNumLoraTargets = 7;
const char* LoraTargetName(int target);  // "q_proj", ...

// The id of (layer, target) in an adapter's directory (kernels/lora.h).
constexpr int64_t LoraMatrixId(int64_t layer, int target) {
  return layer * kNumLoraTargets + target;
}

// MoE models: each expert's gate (w1), up (w3) and down (w2) get ids of their own, after every
// layer's dense ids (so a dense model's ids, and its directory, are unchanged):
//   num_layers * kNumLoraTargets + (layer * num_experts + expert) * kNumLoraExpertTargets
//   + (target - kLoraGate)
// Expert e's id of a target is expert 0's plus e * kNumLoraExpertTargets (kernels/lora.h's
// expert_matrix_stride).
inline constexpr int kNumLoraExpertTargets = 3;  // gate, up, down
constexpr int64_t LoraExpertMatrixId(int64_t num_layers, int64_t num_experts, int64_t layer,
                                     int64_t expert, int target) {
  return num_layers * kNumLoraTargets + (layer * num_experts + expert) * kNumLoraExpertTargets +
         (target - kLoraGate);
}
// Directory entries of an adapter of the model.
constexpr int64_t LoraNumMatrixIds(int64_t num_layers, int64_t num_experts) {
  return num_layers * (kNumLoraTargets + num_experts * kNumLoraExpertTargets);
}

// The adapter as the forward pass reads it (kernels/lora.h): one packed byte stream, a directory
// of the stream offsets of A [rank, in] and B [out, rank] by LoraMatrixId, then the matrices in
// the model's dtype, lying in unified-pool pages while the adapter is resident.
struct LoraAdapter {
  uint64_t id = 0;  // unique per registration: the prefix-cache salt of its requests
  std::string name;
  int64_t rank = 0;
  float scale = 1.0f;  // lora_alpha / r (lora_alpha / sqrt(r) with use_rslora)
  // [layer][target]: adapted (on MoE models gate, up and down mean: of at least one expert).
  std::vector<std::array<bool, kNumLoraTargets>> targets;
  int64_t num_experts = 0;  // the model's (0: dense); expert matrix ids use it
  // Where the stream is (set by AdapterStore on the engine thread): the pool's first page, its
  // page size, and the adapter's pages in stream order; no pages while not resident.
  const void* pool = nullptr;
  int64_t page_bytes = 0;
  std::vector<int32_t> pages;
};

// A PEFT adapter opened and checked against the base model: its rank and scale, and its matrices
// as views into the memory-mapped adapter_model.safetensors, in the file's dtype (F32, F16 or
// BF16). Nothing is copied until PackLora writes them into the host copy, but for matrices that
// must be reshaped first (`regathered`): fused expert parameters, and, with rank_pattern or
// alpha_pattern, modules below the adapter's rank (the largest of its modules': the others are
// padded with zeros) or of another scale than the adapter's (the most common one: the others'
// B is multiplied by their scale over it).
struct PeftAdapter {
  std::string weights_path;  // <dir>/adapter_model.safetensors
  int64_t rank = 0;          // the largest module rank
  float scale = 1.0f;        // the most common module scale
  // [layer][target] -> A [rank, in] and B [out, rank], views into `file`; null when not targeted.
  std::vector<std::array<std::array<const TensorView*, 2>, kNumLoraTargets>> layers;
  // MoE models: [layer][expert][target - kLoraGate] -> A and B of that expert's gate (w1), up
  // (w3) or down (w2); null when not targeted. Empty on dense models.
  using ExpertViews = std::array<std::array<const TensorView*, 2>, kNumLoraExpertTargets>;
  std::vector<std::vector<ExpertViews>> experts;
  int64_t num_experts = 0;           // the model's
  std::unique_ptr<Checkpoint> file;  // the mapping the views point into
  // Expert matrices that PEFT stores fused (target_parameters on transformers 5's 3-D
  // mlp.experts.gate_up_proj / down_proj), regathered per expert into A [rank, in] and
  // B [out, rank] in the file's dtype (element copies, no rounding); `experts` points into them.
  struct Regathered {
    TensorView view;  // data points into `bytes`
    std::vector<uint8_t> bytes;
  };
  std::vector<std::unique_ptr<Regathered>> regathered;
};

// Opens <dir>/adapter_config.json and <dir>/adapter_model.safetensors (mapped, not read). Refused
// with InvalidArgument naming the file and key or tensor: non-JSON config, peft_type other than
// LORA, DoRA, bias training, modules_to_save, variants that change the computation (lora_bias,
// aLoRA, trainable tokens, layer replication, Arrow, QALoRA), a module's rank (r, or
// rank_pattern's) above `max_rank`, non-finite lora_alpha, malformed rank/alpha patterns, target
// modules PEFT's rule (engine/lora/peft_targets.h) cannot read or that name no module Arbor adapts
// (dense MLP names on MoE models), a selected module's tensors missing, of the wrong shape or of a
// dtype other than F32, F16 and BF16, tensors the config does not select (an expert index out of
// range among them), target_parameters other than MoE models' fused expert parameters
// (mlp.experts.gate_up_proj and down_proj, as transformers 5 holds Mixtral's experts) or matching
// none of them; a malformed safetensors file (truncated, corrupt header) as Checkpoint::OpenFile
// reports it. Pickle weights (adapter_model.bin, *.pt) are refused outright. Weights are not
// checked for NaN or infinity (PEFT does not either).
absl::StatusOr<PeftAdapter> OpenPeftAdapter(const std::string& dir, const ModelSpec& spec,
                                            int64_t max_rank);

// Where one matrix lies in an adapter's packed stream (and in its host copy).
struct LoraPlacement {
  int32_t layer;
  int32_t target;
  int32_t ab;      // 0: A [rank, in], 1: B [out, rank]
  int64_t offset;  // bytes into the stream
  size_t elems;
  int32_t expert = -1;  // MoE: the expert of a gate/up/down matrix (-1: a dense target)
};

// The packed stream of an adapter (LoraAdapter): the directory, then every matrix 256-byte
// aligned, densely, in (layer, target, A then B) order, then (MoE) the experts' in (layer,
// expert, target, A then B) order; a matrix may span pages (the kernels read it through the
// adapter's page table).
struct LoraPackLayout {
  std::vector<LoraPlacement> plan;
  int64_t num_layers = 0;  // directory entries: LoraNumMatrixIds(num_layers, num_experts)
  int64_t num_experts = 0;
  int64_t num_pages = 0;
  size_t packed_bytes = 0;  // the stream: whole pages, the last one cut to what it holds
};

LoraPackLayout PlanLoraPack(const PeftAdapter& adapter, size_t page_bytes, kernels::DType dtype);

// Writes every byte of dst[0, layout.packed_bytes) (fresh memory need not be cleared first): the
// directory (the stream offsets of A and B by LoraMatrixId and LoraExpertMatrixId, -1 where not
// adapted), then each
// planned matrix converted element by element from the file's dtype straight to `dtype` (bits as
// the file's value read as fp32, then rounded as PEFT casts it: kernels/dtype.h), with zero
// padding, so the bytes, and their digest, depend on the weights alone. False when `adapter`
// lacks a planned matrix or has it in another size (the adapter on disk is not the registered
// one); dst is then partly written.
bool PackLora(const PeftAdapter& adapter, const LoraPackLayout& layout, kernels::DType dtype,
              uint8_t* dst);

// The `n` elements of `src` (F32, F16 or BF16 little-endian, unaligned) as `n` elements of
// `dtype` (kF32, kF16 or kBF16) in dst: the bits ReadAsF32 then kernels::StoreFloats give, in one
// pass.
void ConvertElements(const uint8_t* src, StDtype src_dtype, size_t n, kernels::DType dtype,
                     void* dst);

// in/out features of a target for the model (gate, up and down: one expert's on MoE models).
std::pair<int64_t, int64_t> LoraTargetShape(const ModelSpec& spec, int target);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_LORA_ADAPTER_H_
