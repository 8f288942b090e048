#include "server/launch_args.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
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
  return engine::ParseLaunchConfig(yaml, from, args.overrides);
}

}  // namespace arbor::server
