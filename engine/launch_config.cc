#include "engine/launch_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "kernels/lora.h"

namespace arbor::engine {
namespace {

// One known key: how to read it into the config. Errors name the key, not the file; the caller
// prefixes the source.
using Setter =
    std::function<absl::Status(const YAML::Node&, const std::string& key, LaunchConfig&)>;

absl::StatusOr<std::string> ReadString(const YAML::Node& n, const std::string& key) {
  if (!n.IsScalar()) return absl::InvalidArgumentError(absl::StrCat(key, ": expected a string"));
  return n.Scalar();
}

absl::StatusOr<int64_t> ReadInt(const YAML::Node& n, const std::string& key, int64_t lo,
                                int64_t hi) {
  int64_t v = 0;
  if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v) || v < lo || v > hi) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected an integer in [", lo, ", ", hi,
                                                   "], got '", n.IsScalar() ? n.Scalar() : "?",
                                                   "'"));
  }
  return v;
}

absl::StatusOr<double> ReadDouble(const YAML::Node& n, const std::string& key, double lo,
                                  double hi) {
  double v = 0;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v) || v < lo ||
      v > hi) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected a number in [", lo, ", ", hi,
                                                   "], got '", n.IsScalar() ? n.Scalar() : "?",
                                                   "'"));
  }
  return v;
}

absl::StatusOr<std::string> ReadEnum(const YAML::Node& n, const std::string& key,
                                     const std::set<std::string>& allowed) {
  ASSIGN_OR_RETURN(std::string v, ReadString(n, key));
  if (allowed.count(v) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, ": expected one of ", absl::StrJoin(allowed, ", "), "; got '", v, "'"));
  }
  return v;
}

// CORS origins: a list of "scheme://host[:port]" (no path; what browsers send as Origin), or
// the single entry "*".
absl::StatusOr<std::vector<std::string>> ReadOrigins(const YAML::Node& n, const std::string& key) {
  const std::string want = " (a list such as [\"https://app.example\"] or [\"*\"])";
  if (!n.IsSequence()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected a list", want));
  }
  std::vector<std::string> out;
  for (const auto& item : n) {
    if (!item.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(key, ": expected a list of strings", want));
    }
    const std::string& o = item.Scalar();
    const size_t sep = o.find("://");
    const bool origin = sep != std::string::npos && sep > 0 && sep + 3 < o.size() &&
                        o.find_first_of("/?# ", sep + 3) == std::string::npos;
    if (o != "*" && !origin) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, ": '", o, "' is not an origin: scheme://host[:port], no path", want));
    }
    out.push_back(o);
  }
  if (out.size() > 1 && std::find(out.begin(), out.end(), "*") != out.end()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": \"*\" must be the only entry"));
  }
  return out;
}

// One entry of lora.adapters: "name=path", or a map of name, path and pin (and vLLM's
// base_model_name, ignored).
absl::StatusOr<StartupAdapter> ReadAdapter(const YAML::Node& n, const std::string& key) {
  StartupAdapter a;
  if (n.IsScalar()) {
    const std::string& text = n.Scalar();
    const size_t eq = text.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, ": '", text, "' is not name=path nor {name, path}"));
    }
    a.name = text.substr(0, eq);
    a.path = text.substr(eq + 1);
  } else if (n.IsMap()) {
    for (const auto& kv : n) {
      const std::string field = kv.first.as<std::string>();
      const std::string at = absl::StrCat(key, ".", field);
      if (field == "name") {
        ASSIGN_OR_RETURN(a.name, ReadString(kv.second, at));
      } else if (field == "path") {
        ASSIGN_OR_RETURN(a.path, ReadString(kv.second, at));
      } else if (field == "pin") {
        bool pin = false;
        if (!kv.second.IsScalar() || !YAML::convert<bool>::decode(kv.second, pin)) {
          return absl::InvalidArgumentError(absl::StrCat(at, ": expected true or false"));
        }
        a.pin = pin;
      } else if (field != "base_model_name") {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ": unknown key (expected name, path, pin)"));
      }
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected name=path or {name, path}"));
  }
  if (a.name.empty()) return absl::InvalidArgumentError(absl::StrCat(key, ": name is empty"));
  if (a.path.empty()) return absl::InvalidArgumentError(absl::StrCat(key, ": path is empty"));
  return a;
}

absl::StatusOr<bool> ReadBool(const YAML::Node& n, const std::string& key) {
  bool v = false;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected true or false"));
  }
  return v;
}

const std::map<std::string, Setter>& Schema() {
  static const auto* schema = new std::map<std::string, Setter>{
      {"model.served_model_name",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.model.served_model_name, ReadString(n, k));
         if (c.model.served_model_name.empty()) {
           return absl::InvalidArgumentError(absl::StrCat(k, ": must not be empty"));
         }
         return absl::OkStatus();
       }},
      {"model.path",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.model.path, ReadString(n, k));
         return absl::OkStatus();
       }},
      {"model.load_format",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.model.load_format, ReadEnum(n, k, {"auto", "dummy"}));
         return absl::OkStatus();
       }},
      {"model.dummy_seed",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.model.dummy_seed, ReadInt(n, k, 0, int64_t{1} << 62));
         return absl::OkStatus();
       }},
      {"model.dtype",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.model.dtype,
                          ReadEnum(n, k, {"auto", "bfloat16", "float16", "float32"}));
         return absl::OkStatus();
       }},
      {"model.max_model_len",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.model.max_model_len, ReadInt(n, k, 0, int64_t{1} << 31));
         return absl::OkStatus();
       }},
      {"device",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.device, ReadEnum(n, k, {"auto", "cpu", "cuda"}));
         return absl::OkStatus();
       }},
      {"log_level",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.log_level,
                          ReadEnum(n, k, {"trace", "debug", "info", "warn", "error", "off"}));
         return absl::OkStatus();
       }},
      {"engine.block_size",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.engine.block_size, ReadInt(n, k, 1, 1024));
         return absl::OkStatus();
       }},
      {"engine.max_num_seqs",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.engine.max_num_seqs, ReadInt(n, k, 1, 65536));
         return absl::OkStatus();
       }},
      {"engine.max_num_batched_tokens",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.engine.max_num_batched_tokens, ReadInt(n, k, 1, 1 << 24));
         return absl::OkStatus();
       }},
      {"engine.pool_bytes",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.engine.pool_bytes, ReadInt(n, k, 0, int64_t{1} << 50));
         return absl::OkStatus();
       }},
      {"engine.pool_fraction",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.engine.pool_fraction, ReadDouble(n, k, 0.01, 0.99));
         return absl::OkStatus();
       }},
      {"engine.enable_prefix_caching",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.engine.enable_prefix_caching, ReadBool(n, k));
         return absl::OkStatus();
       }},
      {"engine.kv_cache_dtype",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.engine.kv_cache_dtype,
                          ReadEnum(n, k, {"auto", "bfloat16", "float16", "float32"}));
         return absl::OkStatus();
       }},
      {"engine.max_lora_rank",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         // The batched LoRA op's largest rank: a higher one would register, then fail every
         // forward pass that used it (and with it the engine).
         ASSIGN_OR_RETURN(c.engine.max_lora_rank, ReadInt(n, k, 1, kernels::kLoraMaxRank));
         return absl::OkStatus();
       }},
      {"engine.cuda_graphs",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.engine.cuda_graphs, ReadBool(n, k));
         return absl::OkStatus();
       }},
      {"engine.deterministic",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.engine.deterministic, ReadBool(n, k));
         return absl::OkStatus();
       }},
      {"lora.host_bytes",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.lora.host_bytes, ReadInt(n, k, 1, int64_t{1} << 50));
         return absl::OkStatus();
       }},
      {"lora.adapters",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         if (!n.IsSequence()) {
           return absl::InvalidArgumentError(
               absl::StrCat(k, ": expected a list of {name, path} or name=path"));
         }
         c.lora.adapters.clear();
         for (size_t i = 0; i < n.size(); ++i) {
           ASSIGN_OR_RETURN(StartupAdapter a, ReadAdapter(n[i], absl::StrCat(k, "[", i, "]")));
           c.lora.adapters.push_back(std::move(a));
         }
         return absl::OkStatus();
       }},
      {"server.admin_key",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.admin_key, ReadString(n, k));
         return absl::OkStatus();
       }},
      {"server.adapter_root",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.adapter_root, ReadString(n, k));
         return absl::OkStatus();
       }},
      {"server.api_key",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.api_key, ReadString(n, k));
         return absl::OkStatus();
       }},
      {"server.max_concurrent_requests",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.max_concurrent_requests, ReadInt(n, k, 0, 1 << 20));
         return absl::OkStatus();
       }},
      {"server.host",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.host, ReadString(n, k));
         return absl::OkStatus();
       }},
      {"server.http_port",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.http_port, ReadInt(n, k, 0, 65535));
         return absl::OkStatus();
       }},
      {"server.grpc_port",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.grpc_port, ReadInt(n, k, 0, 65535));
         return absl::OkStatus();
       }},
      {"server.drain_timeout_s",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.drain_timeout_s, ReadDouble(n, k, 0.0, 3600.0));
         return absl::OkStatus();
       }},
      {"server.request_timeout_s",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.request_timeout_s, ReadDouble(n, k, 0.0, 86400.0));
         return absl::OkStatus();
       }},
      {"server.read_timeout_s",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.read_timeout_s, ReadDouble(n, k, 0.1, 3600.0));
         return absl::OkStatus();
       }},
      {"server.header_timeout_s",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.header_timeout_s, ReadDouble(n, k, 0.1, 3600.0));
         return absl::OkStatus();
       }},
      {"server.idle_timeout_s",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.idle_timeout_s, ReadDouble(n, k, 0.1, 86400.0));
         return absl::OkStatus();
       }},
      {"server.max_connections",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.max_connections, ReadInt(n, k, 1, 1 << 20));
         return absl::OkStatus();
       }},
      {"server.cors_allowed_origins",
       [](const YAML::Node& n, const std::string& k, LaunchConfig& c) -> absl::Status {
         ASSIGN_OR_RETURN(c.server.cors_allowed_origins, ReadOrigins(n, k));
         return absl::OkStatus();
       }},
  };
  return *schema;
}

// Walks the document: maps recurse, leaves must be known keys.
absl::Status Apply(const YAML::Node& node, const std::string& prefix, LaunchConfig& config) {
  if (!node.IsMap()) {
    return absl::InvalidArgumentError(
        prefix.empty() ? "the document must be a mapping of keys"
                       : absl::StrCat(prefix, ": unknown key (expected a value, not a section)"));
  }
  for (const auto& kv : node) {
    const std::string name = kv.first.as<std::string>();
    const std::string key = prefix.empty() ? name : absl::StrCat(prefix, ".", name);
    const auto it = Schema().find(key);
    if (it != Schema().end()) {
      RETURN_IF_ERROR(it->second(kv.second, key, config));
      continue;
    }
    bool is_section = false;
    for (const auto& [known, setter] : Schema()) {
      if (known.rfind(key + ".", 0) == 0) is_section = true;
    }
    if (!is_section) return absl::InvalidArgumentError(absl::StrCat(key, ": unknown key"));
    if (kv.second.IsNull()) continue;  // an empty section keeps its defaults
    RETURN_IF_ERROR(Apply(kv.second, key, config));
  }
  return absl::OkStatus();
}

absl::Status ApplyOverride(YAML::Node root, const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("override '", text, "': expected dotted.key=value"));
  }
  const std::string key = text.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": cannot read value: ", e.what()));
  }
  if (!Schema().count(key)) return absl::InvalidArgumentError(absl::StrCat(key, ": unknown key"));
  const std::vector<std::string> parts = absl::StrSplit(key, '.');
  std::vector<YAML::Node> path = {root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node child = path.back()[parts[i]];
    if (!child.IsMap()) {
      child = YAML::Node(YAML::NodeType::Map);
      path.back()[parts[i]] = child;
    }
    path.push_back(child);
  }
  path.back()[parts.back()] = value.IsNull() ? YAML::Node("") : value;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LaunchConfig> ParseLaunchConfig(const std::string& yaml_text,
                                               const std::string& source,
                                               const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid YAML: ", e.what()));
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  for (const auto& o : overrides) {
    if (auto s = ApplyOverride(root, o); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("command line: ", s.message()));
    }
  }
  LaunchConfig config;
  try {
    if (auto s = Apply(root, "", config); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
  if (auto s = CheckStartupAdapters(config); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  }
  return config;
}

absl::StatusOr<StartupAdapter> ParseLoraModule(const std::string& text) {
  YAML::Node n(text);  // "name=path", verbatim (a path may hold ": ")
  if (!text.empty() && text[0] == '{') {
    try {
      n = YAML::Load(text);  // JSON is YAML
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("--lora-modules '", text, "': ", e.what()));
    }
  }
  return ReadAdapter(n, absl::StrCat("--lora-modules '", text, "'"));
}

absl::Status CheckStartupAdapters(const LaunchConfig& c) {
  std::set<std::string> names;
  for (size_t i = 0; i < c.lora.adapters.size(); ++i) {
    const StartupAdapter& a = c.lora.adapters[i];
    const std::string at = absl::StrCat("lora.adapters[", i, "] (", a.name, ")");
    if (!names.insert(a.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": the name is used twice"));
    }
    if (a.name == c.model.served_model_name) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": that is the base model's name"));
    }
    if (c.server.adapter_root.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ": set server.adapter_root, the directory adapters resolve under"));
    }
  }
  return absl::OkStatus();
}

std::string LaunchConfigToYaml(const LaunchConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "path" << YAML::Value << c.model.path;
  out << YAML::Key << "load_format" << YAML::Value << c.model.load_format;
  out << YAML::Key << "dummy_seed" << YAML::Value << c.model.dummy_seed;
  out << YAML::Key << "dtype" << YAML::Value << c.model.dtype;
  out << YAML::Key << "max_model_len" << YAML::Value << c.model.max_model_len;
  out << YAML::Key << "served_model_name" << YAML::Value << c.model.served_model_name;
  out << YAML::EndMap;
  out << YAML::Key << "device" << YAML::Value << c.device;
  out << YAML::Key << "log_level" << YAML::Value << c.log_level;
  out << YAML::Key << "engine" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "block_size" << YAML::Value << c.engine.block_size;
  out << YAML::Key << "max_num_seqs" << YAML::Value << c.engine.max_num_seqs;
  out << YAML::Key << "max_num_batched_tokens" << YAML::Value << c.engine.max_num_batched_tokens;
  out << YAML::Key << "pool_bytes" << YAML::Value << c.engine.pool_bytes;
  out << YAML::Key << "pool_fraction" << YAML::Value << c.engine.pool_fraction;
  out << YAML::Key << "enable_prefix_caching" << YAML::Value << c.engine.enable_prefix_caching;
  out << YAML::Key << "kv_cache_dtype" << YAML::Value << c.engine.kv_cache_dtype;
  out << YAML::Key << "max_lora_rank" << YAML::Value << c.engine.max_lora_rank;
  out << YAML::Key << "cuda_graphs" << YAML::Value << c.engine.cuda_graphs;
  out << YAML::Key << "deterministic" << YAML::Value << c.engine.deterministic;
  out << YAML::EndMap;
  out << YAML::Key << "lora" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "host_bytes" << YAML::Value << c.lora.host_bytes;
  out << YAML::Key << "adapters" << YAML::Value << YAML::BeginSeq;
  for (const StartupAdapter& a : c.lora.adapters) {
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << a.name << YAML::Key
        << "path" << YAML::Value << a.path << YAML::Key << "pin" << YAML::Value << a.pin
        << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::EndMap;
  out << YAML::Key << "server" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "host" << YAML::Value << c.server.host;
  out << YAML::Key << "http_port" << YAML::Value << c.server.http_port;
  out << YAML::Key << "grpc_port" << YAML::Value << c.server.grpc_port;
  out << YAML::Key << "drain_timeout_s" << YAML::Value << c.server.drain_timeout_s;
  out << YAML::Key << "request_timeout_s" << YAML::Value << c.server.request_timeout_s;
  out << YAML::Key << "read_timeout_s" << YAML::Value << c.server.read_timeout_s;
  out << YAML::Key << "header_timeout_s" << YAML::Value << c.server.header_timeout_s;
  out << YAML::Key << "idle_timeout_s" << YAML::Value << c.server.idle_timeout_s;
  out << YAML::Key << "max_connections" << YAML::Value << c.server.max_connections;
  out << YAML::Key << "cors_allowed_origins" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& o : c.server.cors_allowed_origins) out << o;
  out << YAML::EndSeq;
  // The key itself is never logged or returned: only whether one is set.
  out << YAML::Key << "api_key" << YAML::Value << (c.server.api_key.empty() ? "" : "<set>");
  out << YAML::Key << "max_concurrent_requests" << YAML::Value << c.server.max_concurrent_requests;
  out << YAML::Key << "admin_key" << YAML::Value << (c.server.admin_key.empty() ? "" : "<set>");
  out << YAML::Key << "adapter_root" << YAML::Value << c.server.adapter_root;
  out << YAML::EndMap;
  out << YAML::EndMap;
  return out.c_str();
}

}  // namespace arbor::engine
