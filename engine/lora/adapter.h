// LoRA adapters (PEFT format) for the served model: reading and checking a PEFT directory, and
// the adapter as the forward pass uses it — per layer and target module, device pointers to
// A [rank, in] and B [out, rank] (in the model's dtype) inside unified-pool pages, and the
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

// Device pointers of one (layer, target), in the model's dtype; both null when the adapter
// does not touch it.
struct LoraMatrix {
  const void* a = nullptr;  // [rank, in_features]
  const void* b = nullptr;  // [out_features, rank]
};

struct LoraAdapter {
  uint64_t id = 0;  // unique per registration: the prefix-cache salt of its requests
  std::string name;
  int64_t rank = 0;
  float scale = 1.0f;  // lora_alpha / r (lora_alpha / sqrt(r) with use_rslora)
  std::vector<std::array<LoraMatrix, kNumLoraTargets>> layers;
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
