// Finding a model's chat template on disk, where Hugging Face puts it:
//   <model_dir>/chat_template.jinja            (transformers 5 writes it here; wins if present)
//   <model_dir>/tokenizer_config.json          "chat_template": a string, or a list of
//                                              {"name": ..., "template": ...} (pick by name)
//   <model_dir>/additional_chat_templates/<name>.jinja   (named templates, transformers 5)
// and the special tokens transformers passes to the template.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_LOADER_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_LOADER_H_

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat_template/chat_template.h"

namespace arbor::engine {

// Loads and parses the template called `template_name` ("default" is the model's main one).
// NotFound when the model has no such template; InvalidArgument for unreadable JSON, a
// chat_template of the wrong type, or a template that does not parse.
[[nodiscard]] absl::StatusOr<ChatTemplate> LoadChatTemplate(
    const std::string& model_dir, std::string_view template_name = "default");

// bos_token, eos_token, unk_token, sep_token, pad_token, cls_token and mask_token from
// tokenizer_config.json (or special_tokens_map.json), as strings: AddedToken objects are
// reduced to their "content". Absent files or tokens are left out, so the result can be
// merged into a render context as is.
[[nodiscard]] absl::StatusOr<nlohmann::ordered_json> LoadSpecialTokens(
    const std::string& model_dir);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_LOADER_H_
