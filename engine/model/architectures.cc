#include "engine/model/architectures.h"

#include <iterator>

namespace arbor::engine {
namespace {

constexpr ArchitectureTraits kArchitectures[] = {
    // name                qkv_bias sliding qwen2   moe    mlp prefix
    {"LlamaForCausalLM", false, false, false, false, "mlp"},
    {"MistralForCausalLM", false, true, false, false, "mlp"},
    {"Qwen2ForCausalLM", true, false, true, false, "mlp"},
    {"MixtralForCausalLM", false, true, false, true, "block_sparse_moe"},
};

}  // namespace

const ArchitectureTraits* FindArchitecture(const std::string& name) {
  for (const auto& a : kArchitectures) {
    if (name == a.name) return &a;
  }
  return nullptr;
}

std::string SupportedArchitectureNames() {
  std::string out;
  for (const auto& a : kArchitectures) {
    if (!out.empty()) out += ", ";
    out += a.name;
  }
  return out;
}

}  // namespace arbor::engine
