#include "server/launch_args.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "configs/embedded_default.h"

namespace arbor::server {

absl::StatusOr<bool> TakeLaunchArg(const std::vector<std::string>& args, size_t* i,
                                   LaunchArgs* out) {
  static const std::pair<const char*, const char*> kShortcuts[] = {
      {"--host", "server.host"},           {"--port", "server.http_port"},
      {"--grpc-port", "server.grpc_port"}, {"--device", "device"},
      {"--log-level", "log_level"},
  };
  const std::string& arg = args[*i];
  if (arg == "--lora-modules") {
    const size_t first = *i + 1;
    while (*i + 1 < args.size() && args[*i + 1].rfind("--", 0) != 0) {
      out->lora_modules.push_back(args[++*i]);
    }
    if (*i + 1 == first) return absl::InvalidArgumentError(arg + " needs name=path values");
    return true;
  }
  const char* key = nullptr;
  if (arg != "--config" && arg != "--set") {
    for (const auto& [flag, k] : kShortcuts) {
      if (arg == flag) key = k;
    }
    if (key == nullptr) return false;
  }
  if (*i + 1 >= args.size()) return absl::InvalidArgumentError(arg + " needs a value");
  const std::string& value = args[++*i];
  if (arg == "--config") {
    out->config_path = value;
  } else if (arg == "--set") {
    out->overrides.push_back(value);
  } else {
    out->overrides.push_back(absl::StrCat(key, "=", value));
  }
  return true;
}

absl::StatusOr<engine::LaunchConfig> LoadLaunchConfig(const LaunchArgs& args, std::string* source) {
  std::string yaml = configs::kEmbeddedDefaultYaml;
  std::string from = "embedded configs/tiny.yaml";
  if (!args.config_path.empty()) {
    std::ifstream in(args.config_path);
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat("--config: cannot read ", args.config_path, ": ", std::strerror(errno)));
    }
    std::stringstream ss;
    ss << in.rdbuf();
    yaml = ss.str();
    from = args.config_path;
  }
  if (source != nullptr) *source = from;
  ASSIGN_OR_RETURN(engine::LaunchConfig config,
                   engine::ParseLaunchConfig(yaml, from, args.overrides));
  for (const std::string& m : args.lora_modules) {
    ASSIGN_OR_RETURN(engine::StartupAdapter a, engine::ParseLoraModule(m));
    config.lora.adapters.push_back(std::move(a));
  }
  if (auto s = engine::CheckStartupAdapters(config); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--lora-modules: ", s.message()));
  }
  return config;
}

}  // namespace arbor::server
