#include "engine/chat_template/loader.h"

#include <array>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace arbor::engine {
namespace {

// Bounds on what is read: tokenizer configs carry added-token tables, templates are small.
constexpr std::streamoff kMaxConfigBytes = std::streamoff{64} << 20;
constexpr std::streamoff kMaxTemplateBytes = std::streamoff{4} << 20;

// The file's contents, nullopt if it does not exist.
absl::StatusOr<std::optional<std::string>> ReadIfExists(const std::string& path,
                                                        std::streamoff max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::optional<std::string>();
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be read"));
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", size, " bytes is over the limit of ", max_bytes));
  }
  in.seekg(0, std::ios::beg);
  std::string text(static_cast<size_t>(size), '\0');
  if (size > 0 && !in.read(text.data(), size)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be read"));
  }
  return std::optional<std::string>(std::move(text));
}

absl::StatusOr<std::optional<nlohmann::ordered_json>> ReadJsonIfExists(const std::string& path) {
  ASSIGN_OR_RETURN(std::optional<std::string> text, ReadIfExists(path, kMaxConfigBytes));
  if (!text) return std::optional<nlohmann::ordered_json>();
  nlohmann::ordered_json json =
      nlohmann::ordered_json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object"));
  }
  return std::optional<nlohmann::ordered_json>(std::move(json));
}

bool SafeTemplateName(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<ChatTemplate> LoadChatTemplate(const std::string& model_dir,
                                              std::string_view template_name) {
  if (!SafeTemplateName(template_name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid chat template name '", std::string(template_name), "'"));
  }
  const bool is_default = template_name == "default";
  const std::string jinja_path = is_default ? absl::StrCat(model_dir, "/chat_template.jinja")
                                            : absl::StrCat(model_dir, "/additional_chat_templates/",
                                                           std::string(template_name), ".jinja");
  ASSIGN_OR_RETURN(std::optional<std::string> source, ReadIfExists(jinja_path, kMaxTemplateBytes));
  if (source) return ChatTemplate::Parse(*source, jinja_path);

  const std::string config_path = absl::StrCat(model_dir, "/tokenizer_config.json");
  ASSIGN_OR_RETURN(std::optional<nlohmann::ordered_json> config, ReadJsonIfExists(config_path));
  if (!config || !config->contains("chat_template") || (*config)["chat_template"].is_null()) {
    return absl::NotFoundError(absl::StrCat(model_dir, " has no chat template (neither ",
                                            jinja_path, " nor a chat_template in ", config_path,
                                            ")"));
  }
  const nlohmann::ordered_json& ct = (*config)["chat_template"];
  if (ct.is_string()) {
    if (!is_default) {
      return absl::NotFoundError(absl::StrCat(config_path, " has no chat template named '",
                                              std::string(template_name), "'"));
    }
    return ChatTemplate::Parse(ct.get<std::string>(), absl::StrCat(config_path, "[chat_template]"));
  }
  if (!ct.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": chat_template must be a string or a list of templates"));
  }
  for (const auto& entry : ct) {
    if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
        !entry["name"].is_string() || !entry["template"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(config_path, ": each chat_template entry needs a string name and template"));
    }
    if (entry["name"].get<std::string>() == template_name) {
      return ChatTemplate::Parse(
          entry["template"].get<std::string>(),
          absl::StrCat(config_path, "[chat_template:", std::string(template_name), "]"));
    }
  }
  return absl::NotFoundError(
      absl::StrCat(config_path, " has no chat template named '", std::string(template_name), "'"));
}

absl::StatusOr<nlohmann::ordered_json> LoadSpecialTokens(const std::string& model_dir) {
  static constexpr std::array<const char*, 7> kNames = {
      "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"};
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const char* file : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const std::string path = absl::StrCat(model_dir, "/", file);
    ASSIGN_OR_RETURN(std::optional<nlohmann::ordered_json> json, ReadJsonIfExists(path));
    if (!json) continue;
    for (const char* name : kNames) {
      if (out.contains(name) || !json->contains(name)) continue;
      const auto& token = (*json)[name];
      if (token.is_string()) {
        out[name] = token;
      } else if (token.is_object() && token.contains("content") && token["content"].is_string()) {
        out[name] = token["content"];
      } else if (!token.is_null()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": ", name, " must be a string or an object with \"content\""));
      }
    }
  }
  return out;
}

}  // namespace arbor::engine
