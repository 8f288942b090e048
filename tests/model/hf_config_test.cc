// config.json parsing: both rope formats (transformers 4's rope_theta/rope_scaling and 5's
// rope_parameters), architecture traits, per-layer windows, and refusals that name the key.
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
  CHECK(ms->layer_windows == std::vector<int64_t>{4096, 4096});
  CHECK(KvFreeWindow(*ms) == 4096);

  json x = Base();
  x["architectures"] = {"MixtralForCausalLM"};
  x["num_local_experts"] = 8;
  x["num_experts_per_tok"] = 2;
  x["sliding_window"] = nullptr;
  auto xs = ParseHfConfig(x.dump(), "x.json");
  REQUIRE(xs.ok());
  CHECK(xs->num_experts == 8);
  CHECK(xs->layer_windows == std::vector<int64_t>{0, 0});

  json l = Base();
  l["sliding_window"] = 16;  // Llama has no window: the key is not honoured
  auto ls = ParseHfConfig(l.dump(), "l.json");
  REQUIRE(ls.ok());
  CHECK(ls->layer_windows == std::vector<int64_t>{0, 0});
  CHECK(ls->head_dim == 16);
}

TEST_CASE("Qwen2 per-layer windows follow transformers' Qwen2Config", "[config]") {
  auto windows = [](const std::function<void(json&)>& edit) {
    json j = Base();
    j["architectures"] = {"Qwen2ForCausalLM"};
    j["num_hidden_layers"] = 6;
    edit(j);
    auto s = ParseHfConfig(j.dump(), "q.json");
    INFO(j.dump() << " -> " << s.status().ToString());
    REQUIRE(s.ok());
    REQUIRE(int64_t(s->layer_windows.size()) == s->num_layers);
    return s->layer_windows;
  };
  using W = std::vector<int64_t>;
  // Layer i slides when use_sliding_window is true and i >= max_window_layers.
  CHECK(windows([](json& j) {
          j["use_sliding_window"] = true;
          j["sliding_window"] = 32;
          j["max_window_layers"] = 4;
        }) == W{0, 0, 0, 0, 32, 32});
  CHECK(windows([](json& j) {
          j["use_sliding_window"] = true;
          j["sliding_window"] = 32;
          j["max_window_layers"] = 0;
        }) == W{32, 32, 32, 32, 32, 32});
  // Without use_sliding_window there is no window, whatever the other keys say.
  CHECK(windows([](json& j) {
          j["sliding_window"] = 32;
          j["max_window_layers"] = 0;
        }) == W(6, 0));
  // Qwen2Config's defaults: a window of 4096 from layer 28 on (none of these 6 layers); a null
  // window is none.
  CHECK(windows([](json& j) { j["use_sliding_window"] = true; }) == W(6, 0));
  CHECK(windows([](json& j) {
          j["use_sliding_window"] = true;
          j["max_window_layers"] = 3;
        }) == W{0, 0, 0, 4096, 4096, 4096});
  CHECK(windows([](json& j) {
          j["use_sliding_window"] = true;
          j["sliding_window"] = nullptr;
          j["max_window_layers"] = 0;
        }) == W(6, 0));
  // layer_types, when present, wins over max_window_layers.
  CHECK(windows([](json& j) {
          j["use_sliding_window"] = true;
          j["sliding_window"] = 16;
          j["max_window_layers"] = 0;
          j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention",
                              "full_attention",    "full_attention", "sliding_attention"};
        }) == W{16, 0, 16, 0, 0, 16});
  CHECK(windows([](json& j) {
          j["use_sliding_window"] = true;
          j["sliding_window"] = 16;
          j["max_window_layers"] = 6;
          j["layer_types"] = std::vector<std::string>(6, "sliding_attention");
        }) == W(6, 16));
  CHECK(windows([](json& j) {
          j["layer_types"] = std::vector<std::string>(6, "full_attention");
        }) == W(6, 0));
  // Mistral slides on every layer and ignores layer_types, as transformers' MistralConfig does.
  json m = Base();
  m["architectures"] = {"MistralForCausalLM"};
  m["sliding_window"] = 8;
  m["layer_types"] = {"full_attention", "full_attention"};
  auto ms = ParseHfConfig(m.dump(), "m.json");
  REQUIRE(ms.ok());
  CHECK(ms->layer_windows == W{8, 8});
  // The tiny Qwen2 fixture (transformers 5 wrote layer_types) attends fully on every layer.
  auto fixture = LoadHfConfig("tests/data/models/qwen2");
  REQUIRE(fixture.ok());
  CHECK(fixture->layer_windows == W{0, 0});
}

TEST_CASE("KV pages are freed by the largest window, never while a layer attends fully",
          "[config]") {
  ModelSpec s;
  s.layer_windows = {8, 32, 16};
  CHECK(KvFreeWindow(s) == 32);
  s.layer_windows = {8, 0, 16};
  CHECK(KvFreeWindow(s) == 0);
  s.layer_windows = {0, 0};
  CHECK(KvFreeWindow(s) == 0);
  s.layer_windows = {};
  CHECK(KvFreeWindow(s) == 0);
}

// No transformers golden exists for a windowed Qwen2 (the fixtures are made where torch is; none
// slides), so this checks the plumbing against the attention op's definition instead: each
// layer's window reaches that layer's attention. The tiny Qwen2 under a window of 3 on layer 0
// only, on layer 1 only, and on neither: positions 0-2 see every key either way (the same bits),
// and from position 3 on each placement changes the logits.
TEST_CASE("each layer's window reaches its attention op", "[config]") {
  namespace fs = std::filesystem;
  const fs::path tmp = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  std::ifstream in("tests/data/models/qwen2/config.json");
  const json base = json::parse(in);
  auto logits = [&](const std::string& name, const std::vector<std::string>& types) {
    const fs::path dir = tmp / name;
    fs::create_directories(dir);
    fs::copy_file("tests/data/models/qwen2/model.safetensors", dir / "model.safetensors",
                  fs::copy_options::overwrite_existing);
    json config = base;
    config["use_sliding_window"] = true;
    config["sliding_window"] = 3;
    config["layer_types"] = types;
    std::ofstream(dir / "config.json") << config.dump();
    kernels::CpuBackend cpu;
    auto model = Model::Load(dir.string(), cpu);
    INFO(model.status().ToString());
    REQUIRE(model.ok());
    CHECK((*model)->spec().layer_windows ==
          std::vector<int64_t>{types[0] == "full_attention" ? 0 : 3,
                               types[1] == "full_attention" ? 0 : 3});
    auto kv = (*model)->NewSequence(16);
    REQUIRE(kv.ok());
    const std::vector<int32_t> ids = {5, 17, 99, 3, 42, 200, 8, 61};
    auto out = (*model)->Forward(ids, *kv, /*all_positions=*/true);
    REQUIRE(out.ok());
    return *out;
  };
  const std::vector<float> first = logits("window_first", {"sliding_attention", "full_attention"});
  const std::vector<float> second =
      logits("window_second", {"full_attention", "sliding_attention"});
  const std::vector<float> none = logits("window_none", {"full_attention", "full_attention"});
  const size_t vocab = first.size() / 8;
  auto row = [&](const std::vector<float>& v, size_t t) {
    return std::vector<float>(v.begin() + long(t * vocab), v.begin() + long((t + 1) * vocab));
  };
  for (size_t t = 0; t < 8; ++t) {
    INFO("position " << t);
    if (t < 3) {
      CHECK(row(first, t) == row(none, t));
      CHECK(row(second, t) == row(none, t));
    } else {
      CHECK(row(first, t) != row(none, t));
      CHECK(row(second, t) != row(none, t));
      CHECK(row(first, t) != row(second, t));
    }
  }
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
         j["layer_types"] = {"full_attention"};  // two layers
       },
       "layer_types: expected a list of 2 layer types"},
      {[](json& j) {
         j["architectures"] = {"Qwen2ForCausalLM"};
         j["layer_types"] = "full_attention";
       },
       "layer_types: expected a list of 2"},
      {[](json& j) {
         j["architectures"] = {"Qwen2ForCausalLM"};
         j["use_sliding_window"] = true;
         j["layer_types"] = {"full_attention", "chunked_attention"};
       },
       "layer_types: layer 1: unknown layer type \"chunked_attention\""},
      {[](json& j) {
         j["architectures"] = {"Qwen2ForCausalLM"};
         j["layer_types"] = {"sliding_attention", 7};
       },
       "layer_types: layer 0 is sliding_attention but there is no window"},
      {[](json& j) {
         j["architectures"] = {"Qwen2ForCausalLM"};
         j["use_sliding_window"] = true;
         j["sliding_window"] = 0;
       },
       "sliding_window: expected a value in [1"},
      {[](json& j) {
         j["architectures"] = {"Qwen2ForCausalLM"};
         j["use_sliding_window"] = "yes";
       },
       "use_sliding_window: expected true or false"},
      {[](json& j) {
         j["architectures"] = {"Qwen2ForCausalLM"};
         j["use_sliding_window"] = true;
         j["max_window_layers"] = -1;
       },
       "max_window_layers"},
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
