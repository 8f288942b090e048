#include "engine/model/model_factory.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat_template/loader.h"

namespace arbor::engine {

namespace {

kernels::DType Named(const std::string& name) {
  if (name == "bfloat16") return kernels::DType::kBF16;
  if (name == "float16") return kernels::DType::kF16;
  return kernels::DType::kF32;
}

}  // namespace

ModelOptions ResolveDtypes(const std::string& dtype, const std::string& kv_cache_dtype,
                           kernels::DeviceKind device, const std::string& torch_dtype) {
  ModelOptions o;
  if (dtype != "auto") {
    o.dtype = Named(dtype);
  } else if (device == kernels::DeviceKind::kCpu) {
    o.dtype = kernels::DType::kF32;
  } else {
    o.dtype = torch_dtype == "float16" ? kernels::DType::kF16 : kernels::DType::kBF16;
  }
  o.kv_dtype = kv_cache_dtype == "auto" ? o.dtype : Named(kv_cache_dtype);
  return o;
}

absl::StatusOr<LoadedModel> LoadModelFromConfig(const ModelSection& section,
                                                kernels::Backend& backend,
                                                const std::string& kv_cache_dtype) {
  if (section.path.empty()) {
    return absl::InvalidArgumentError("model.path: required (a Hugging Face model directory)");
  }
  struct stat st {};
  if (stat(section.path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(
        absl::StrCat("model.path: \"", section.path, "\" is not a directory"));
  }
  LoadedModel out;
  spdlog::info("loading model from {} (load_format {})", section.path, section.load_format);
  {
    ASSIGN_OR_RETURN(const ModelSpec spec, LoadHfConfig(section.path));
    const ModelOptions options =
        ResolveDtypes(section.dtype, kv_cache_dtype, backend.kind(), spec.torch_dtype);
    spdlog::info("dtype {} (model.dtype {}, checkpoint {}), KV cache {}",
                 kernels::DTypeName(options.dtype), section.dtype, spec.torch_dtype,
                 kernels::DTypeName(options.kv_dtype));
    if (section.load_format == "dummy") {
      ASSIGN_OR_RETURN(out.model,
                       Model::Dummy(spec, uint64_t(section.dummy_seed), backend, options));
    } else {
      ASSIGN_OR_RETURN(out.model, Model::Load(section.path, backend, options));
    }
  }
  const ModelSpec& spec = out.model->spec();
  out.max_model_len =
      section.max_model_len > 0 ? section.max_model_len : spec.max_position_embeddings;
  if (out.max_model_len > spec.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.max_model_len: ", section.max_model_len, " exceeds the model's ",
                     "max_position_embeddings ", spec.max_position_embeddings));
  }
  const std::string tok_path = section.path + "/tokenizer.json";
  if (stat(tok_path.c_str(), &st) == 0) {
    ASSIGN_OR_RETURN(out.tokenizer, Tokenizer::FromFile(tok_path));
    if (out.tokenizer->vocab_size() > spec.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(tok_path, ": the tokenizer's vocabulary (", out.tokenizer->vocab_size(),
                       " ids) is larger than the model's vocab_size ", spec.vocab_size));
    }
  } else {
    spdlog::warn("{} not found: only token-id prompts will be served", tok_path);
  }
  auto tmpl = LoadChatTemplate(section.path);
  if (tmpl.ok()) {
    out.chat_template = std::move(*tmpl);
  } else if (tmpl.status().code() != absl::StatusCode::kNotFound) {
    return tmpl.status();
  }
  ASSIGN_OR_RETURN(nlohmann::ordered_json special, LoadSpecialTokens(section.path));
  if (special.contains("bos_token")) out.bos_token = special["bos_token"].get<std::string>();
  if (special.contains("eos_token")) out.eos_token = special["eos_token"].get<std::string>();
  spdlog::info("model: {} ({} layers, hidden {}, {} heads / {} kv heads, vocab {}{}), context {}",
               spec.architecture, spec.num_layers, spec.hidden_size, spec.num_heads,
               spec.num_kv_heads, spec.vocab_size,
               spec.num_experts > 0
                   ? absl::StrCat(", ", spec.num_experts, " experts top-", spec.num_experts_per_tok)
                   : std::string(),
               out.max_model_len);
  return out;
}

}  // namespace arbor::engine
