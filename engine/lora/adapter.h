// LoRA adapters (PEFT format) for the served model: reading and checking a PEFT directory, and
// the adapter as the forward pass uses it — its packed stream of A [rank, in] and B [out, rank]
// matrices (in the model's dtype) in unified-pool pages, read through its page table, and the
// scale alpha / rank.
#ifndef ARBOR_ENGINE_LORA_ADAPTER_H_
#define ARBOR_ENGINE_LORA_ADAPTER_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/hf_config.h"

namespace arbor::engine {

enum LoraTarget : int { kLoraQ, kLoraK, kLoraV, kLoraO, kLoraGate, kLoraUp, kLoraDown };
inline constexpr int kNumLoraTargets = 7;
const char* LoraTargetName(int target);  // "q_proj", ...

// The id of (layer, target) in an adapter's directory (kernels/lora.h).
constexpr int64_t LoraMatrixId(int64_t layer, int target) {
  return layer * kNumLoraTargets + target;
}

// The adapter as the forward pass reads it (kernels/lora.h): one packed byte stream, a directory
// of the stream offsets of A [rank, in] and B [out, rank] by LoraMatrixId, then the matrices in
// the model's dtype, lying in unified-pool pages while the adapter is resident.
struct LoraAdapter {
  uint64_t id = 0;  // unique per registration: the prefix-cache salt of its requests
  std::string name;
  int64_t rank = 0;
  float scale = 1.0f;  // lora_alpha / r (lora_alpha / sqrt(r) with use_rslora)
  std::vector<std::array<bool, kNumLoraTargets>> targets;  // [layer][target]: adapted
  // Where the stream is (set by AdapterStore on the engine thread): the pool's first page, its
  // page size, and the adapter's pages in stream order; no pages while not resident.
  const void* pool = nullptr;
  int64_t page_bytes = 0;
  std::vector<int32_t> pages;
};

// A PEFT adapter read from disk and checked against the base model, fp32 on the host.
struct HostLora {
  int64_t rank = 0;
  float scale = 1.0f;
  // [layer][target] -> A then B, row-major; empty when not targeted.
  std::vector<std::array<std::pair<std::vector<float>, std::vector<float>>, kNumLoraTargets>>
      layers;
};

// Reads <dir>/adapter_config.json and <dir>/adapter_model.safetensors. Refused with
// InvalidArgument naming the file and key or tensor: non-JSON config, peft_type other than LORA,
// DoRA, bias training, modules_to_save, layers_to_transform, rank/alpha patterns, rank above
// `max_rank`, unknown target modules (MLP targets on MoE models), tensors missing or of the
// wrong shape. Pickle weights (adapter_model.bin, *.pt) are refused outright.
absl::StatusOr<HostLora> ReadPeftAdapter(const std::string& dir, const ModelSpec& spec,
                                         int64_t max_rank);

// in/out features of a target for the model.
std::pair<int64_t, int64_t> LoraTargetShape(const ModelSpec& spec, int target);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_LORA_ADAPTER_H_
