// The launch-config options that `arbor serve` and `arbor eval` share: --config FILE,
// --set KEY=VALUE, the shortcuts (--host, --port, --grpc-port, --device, --log-level) and
// --lora-modules NAME=PATH... (one or more values, up to the next option).
#ifndef ARBOR_SERVER_LAUNCH_ARGS_H_
#define ARBOR_SERVER_LAUNCH_ARGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/launch_config.h"

namespace arbor::server {

struct LaunchArgs {
  std::string config_path;             // empty: the embedded configs/tiny.yaml
  std::vector<std::string> overrides;  // "dotted.key=value", applied in order
  // --lora-modules name=path ... (vLLM's flag; or its JSON form): added to lora.adapters.
  std::vector<std::string> lora_modules;
};

// When args[*i] is one of the options above, takes it and its value (or values: --lora-modules)
// (advancing *i past the last) and returns true; false leaves *i alone. A missing value is
// InvalidArgument.
absl::StatusOr<bool> TakeLaunchArg(const std::vector<std::string>& args, size_t* i,
                                   LaunchArgs* out);

// The config file (or the embedded default) with the overrides applied; `source` (may be null)
// gets what it was read from. Errors name the file or the key.
absl::StatusOr<engine::LaunchConfig> LoadLaunchConfig(const LaunchArgs& args,
                                                      std::string* source = nullptr);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_LAUNCH_ARGS_H_
