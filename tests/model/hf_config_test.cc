// config.json parsing: both rope formats (transformers 4's rope_theta/rope_scaling and 5's
// rope_parameters), architecture traits, and refusals that name the key.
#include "engine/model/hf_config.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/model/model.h"
#include "engine/model/rope.h"
#include "kernels/cpu/cpu_backend.h"

namespace arbor::engine {
namespace {

using nlohmann::json;

json Base() {
  return json{{"architectures", {"LlamaForCausalLM"}},
              {"vocab_size", 256},
              {"hidden_size", 64},
              {"intermediate_size", 96},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"rms_norm_eps", 1e-5},
              {"hidden_act", "silu"}};
}

TEST_CASE("transformers 4 and 5 rope formats read the same", "[config]") {
  json v4 = Base();
  v4["rope_theta"] = 500000.0;
  v4["rope_scaling"] = {{"rope_type", "llama3"},
                        {"factor", 8.0},
                        {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 8192}};
  json v5 = Base();
  v5["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                           {"factor", 8.0},           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto a = ParseHfConfig(v4.dump(), "v4.json");
  auto b = ParseHfConfig(v5.dump(), "v5.json");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->rope.type == RopeType::kLlama3);
  CHECK(b->rope.type == RopeType::kLlama3);
  CHECK(a->rope.theta == b->rope.theta);
  CHECK(RopeInvFreq(a->rope, 128) == RopeInvFreq(b->rope, 128));
  // Llama 3.1's scheme keeps the highest frequency and divides the lowest by the factor.
  const auto plain = RopeInvFreq(RopeSpec{RopeType::kDefault, 500000.0}, 128);
  const auto scaled = RopeInvFreq(a->rope, 128);
  CHECK(scaled.front() == plain.front());
  CHECK(scaled.back() == Approx(plain.back() / 8.0f).epsilon(1e-6));
}

TEST_CASE("architecture traits: Qwen2 biases, Mistral window, Mixtral experts", "[config]") {
  json q = Base();
  q["architectures"] = {"Qwen2ForCausalLM"};
  auto qs = ParseHfConfig(q.dump(), "q.json");
  REQUIRE(qs.ok());
  CHECK(qs->qkv_bias);
  CHECK_FALSE(qs->o_bias);

  json m = Base();
  m["architectures"] = {"MistralForCausalLM"};
  m["sliding_window"] = 4096;
  auto ms = ParseHfConfig(m.dump(), "m.json");
  REQUIRE(ms.ok());
  CHECK(ms->sliding_window == 4096);

  json x = Base();
  x["architectures"] = {"MixtralForCausalLM"};
  x["num_local_experts"] = 8;
  x["num_experts_per_tok"] = 2;
  x["sliding_window"] = nullptr;
  auto xs = ParseHfConfig(x.dump(), "x.json");
  REQUIRE(xs.ok());
  CHECK(xs->num_experts == 8);
  CHECK(xs->sliding_window == 0);

  json l = Base();
  l["sliding_window"] = 16;  // Llama has no window: the key is not honoured
  auto ls = ParseHfConfig(l.dump(), "l.json");
  REQUIRE(ls.ok());
  CHECK(ls->sliding_window == 0);
  CHECK(ls->head_dim == 16);
}

TEST_CASE("unsupported architectures and options are refused, naming the key", "[config]") {
  struct Bad {
    std::function<void(json&)> edit;
    std::string must_mention;
  };
  const std::vector<Bad> cases = {
      {[](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; }, "unsupported architecture"},
      {[](json& j) { j.erase("architectures"); }, "architectures"},
      {[](json& j) {
         j["architectures"] = {"A", "B"};
       },
       "architectures"},
      {[](json& j) { j.erase("hidden_size"); }, "hidden_size: missing"},
      {[](json& j) { j["vocab_size"] = "256"; }, "vocab_size: expected an integer"},
      {[](json& j) { j["num_hidden_layers"] = 0; }, "num_hidden_layers"},
      {[](json& j) { j["num_key_value_heads"] = 3; }, "num_key_value_heads"},
      {[](json& j) { j["hidden_act"] = "gelu"; }, "hidden_act"},
      {[](json& j) { j["mlp_bias"] = true; }, "mlp_bias"},
      {[](json& j) {
         j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
       },
       "unsupported rope type \"yarn\""},
      {[](json& j) {
         j["rope_parameters"] = {{"rope_type", "dynamic"}};
       },
       "rope_parameters"},
      {[](json& j) {
         j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 0}};
       },
       "factor"},
      {[](json& j) { j["rms_norm_eps"] = -1; }, "rms_norm_eps"},
      {[](json& j) { j["head_dim"] = 15; }, "head_dim"},
      {[](json& j) { j["head_dim"] = 288; }, "head_dim"},
      {[](json& j) {
         j["architectures"] = {"Qwen2ForCausalLM"};
         j["use_sliding_window"] = true;
       },
       "use_sliding_window"},
      {[](json& j) { j["architectures"] = {"MixtralForCausalLM"}; }, "num_local_experts"},
      {[](json& j) {
         j["architectures"] = {"MixtralForCausalLM"};
         j["num_local_experts"] = 4;
         j["num_experts_per_tok"] = 5;
       },
       "num_experts_per_tok"},
  };
  for (const auto& b : cases) {
    json j = Base();
    b.edit(j);
    INFO(j.dump());
    auto s = ParseHfConfig(j.dump(), "config.json");
    REQUIRE_FALSE(s.ok());
    CHECK(s.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.status().message()), Catch::StartsWith("config.json"));
    CHECK_THAT(std::string(s.status().message()), Catch::Contains(b.must_mention));
  }
  CHECK_FALSE(ParseHfConfig("{not json", "c.json").ok());
  CHECK_FALSE(ParseHfConfig("[1]", "c.json").ok());
}

TEST_CASE("a checkpoint whose shapes disagree with config.json names the tensor", "[config]") {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::path(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") / "shape_mismatch";
  fs::create_directories(dir);
  fs::copy_file("tests/data/models/llama/model.safetensors", dir / "model.safetensors",
                fs::copy_options::overwrite_existing);
  std::ifstream in("tests/data/models/llama/config.json");
  json config = json::parse(in);
  config["intermediate_size"] = 128;  // the checkpoint's MLP is 96 wide
  std::ofstream(dir / "config.json") << config.dump();
  kernels::CpuBackend cpu;
  auto model = Model::Load(dir.string(), cpu);
  REQUIRE_FALSE(model.ok());
  CHECK_THAT(std::string(model.status().message()),
             Catch::Contains("model.layers.0.mlp.gate_proj.weight") &&
                 Catch::Contains("[96, 64]") && Catch::Contains("[128, 64]"));
}

TEST_CASE("generation_config.json supplies eos ids", "[config]") {
  auto spec = LoadHfConfig("tests/data/models/qwen2");
  REQUIRE(spec.ok());
  CHECK(spec->eos_token_ids == std::vector<int64_t>{2});
  CHECK(spec->bos_token_id == 1);
  CHECK(LoadHfConfig("tests/data/nonexistent").status().code() == absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace arbor::engine
