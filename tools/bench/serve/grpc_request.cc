#include "tools/bench/serve/grpc_request.h"

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>

namespace arbor::bench {

using nlohmann::json;

absl::StatusOr<GrpcRequest> GrpcRequestFromBody(const std::string& body) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::InvalidArgumentError("request body is not a JSON object");
  const std::string model = j.value("model", "");
  arbor::v1::SamplingOptions sampling;
  if (const auto it = j.find("max_tokens"); it != j.end() && it->is_number_integer()) {
    sampling.set_max_tokens(it->get<int32_t>());
  }
  if (const auto it = j.find("temperature"); it != j.end() && it->is_number()) {
    sampling.set_temperature(it->get<float>());
  }
  if (const auto it = j.find("ignore_eos"); it != j.end() && it->is_boolean()) {
    sampling.set_ignore_eos(it->get<bool>());
  }

  GrpcRequest out;
  if (const auto messages = j.find("messages"); messages != j.end()) {
    if (!messages->is_array()) return absl::InvalidArgumentError("`messages` is not a list");
    out.chat = true;
    out.chat_request.set_model(model);
    for (const json& m : *messages) {
      if (!m.is_object() || !m.value("content", json()).is_string()) {
        return absl::InvalidArgumentError("a message without string `content`");
      }
      auto* msg = out.chat_request.add_messages();
      msg->set_role(m.value("role", "user"));
      msg->set_content(m["content"].get<std::string>());
    }
    *out.chat_request.mutable_sampling() = std::move(sampling);
    return out;
  }
  const auto prompt = j.find("prompt");
  if (prompt == j.end()) return absl::InvalidArgumentError("request body without `prompt`");
  out.completion.set_model(model);
  if (prompt->is_string()) {
    out.completion.set_text(prompt->get<std::string>());
  } else if (prompt->is_array()) {
    auto* ids = out.completion.mutable_token_ids()->mutable_ids();
    ids->Reserve(int(prompt->size()));
    for (const json& id : *prompt) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return absl::InvalidArgumentError("a prompt token id is not an int32: " + id.dump());
      }
      ids->Add(id.get<int32_t>());
    }
  } else {
    return absl::InvalidArgumentError("`prompt` is neither text nor a list of token ids");
  }
  *out.completion.mutable_sampling() = std::move(sampling);
  return out;
}

}  // namespace arbor::bench
