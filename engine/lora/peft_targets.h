// Which modules of the model a PEFT LoRA config adapts, by PEFT's own rule
// (peft/tuners/tuners_utils.py, check_target_module_exists), so that Arbor reads the adapters
// PEFT writes for any of the config forms users send:
//   exclude_modules      a regex (fully matched) or a list (exact name or dotted suffix): never
//                        adapted;
//   target_modules       a regex string, fully matched against the module name; "all-linear";
//                        or a list of names, each matching a module by exact name or dotted
//                        suffix ("q_proj", "self_attn.q_proj", "experts.3.w1");
//   layers_to_transform  (list form only) an int or a list of ints: the module's layer index,
//                        read with layers_pattern ("layers": `.*\.layers\.(\d+)\.` from the
//                        start of the name; none: `.*\.[^.]*\.(\d+)\.`), must be among them.
// Module names are PEFT's, relative to the causal LM: "model.layers.3.self_attn.q_proj",
// "model.layers.3.block_sparse_moe.experts.5.w1"; an adapter file holds "base_model.model." +
// name + ".lora_A.weight" for each module the config adapts, and nothing else.
// Regexes are read as ECMAScript (std::regex), which agrees with Python's `re` on the patterns
// configs use (alternation, classes, \d, groups, anchors); one it cannot read is refused by name.
#ifndef ARBOR_ENGINE_LORA_PEFT_TARGETS_H_
#define ARBOR_ENGINE_LORA_PEFT_TARGETS_H_

#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::engine {

class PeftModuleSelector {
 public:
  // Reads target_modules, exclude_modules, layers_to_transform and layers_pattern of `config`
  // (an adapter_config.json object). Refused by name: a malformed field, a regex std::regex
  // cannot read, target_modules absent or empty unless `allow_none` (the adapter adapts
  // parameters instead). A list entry that names no module of the model is accepted, as PEFT
  // accepts it (configs shared between architectures list both's names).
  static absl::StatusOr<PeftModuleSelector> FromConfig(const nlohmann::json& config,
                                                       bool allow_none);

  // Whether the config adapts module `name`.
  bool Selects(const std::string& name) const;

  // The list entries of target_modules that name none of `modules` (for error messages).
  std::vector<std::string> Unmatched(const std::vector<std::string>& modules) const;

 private:
  struct Names {  // a regex or a list of exact names / dotted suffixes
    std::optional<std::regex> regex;
    std::vector<std::string> list;
    bool Matches(const std::string& name) const;
  };
  bool all_ = false;  // "all-linear"
  Names targets_, exclude_;
  std::optional<std::vector<int64_t>> layers_;  // layers_to_transform
  std::vector<std::regex> layer_patterns_;      // layer index readers, first match wins
};

// Per-module ranks and alphas (rank_pattern, alpha_pattern), by PEFT's rule
// (peft/utils/other.py, get_pattern_key): the first key p, in the file's order, such that the
// module name matches `(.*\.)?(p)$` from its start decides; no key: the config's r / lora_alpha.
class PeftPattern {
 public:
  // `field` of the config text `config_text` (read again with its keys in file order); an empty
  // pattern when absent, null or {}. Refused by name: not an object, a value that is not a
  // number, a key std::regex cannot read.
  static absl::StatusOr<PeftPattern> FromConfig(const std::string& config_text, const char* field);
  // The value for module `name`, or `fallback`.
  double Lookup(const std::string& name, double fallback) const;
  bool empty() const { return keys_.empty(); }

 private:
  std::vector<std::pair<std::regex, double>> keys_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_LORA_PEFT_TARGETS_H_
