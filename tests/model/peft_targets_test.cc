// Which modules an adapter config adapts, by PEFT's rule (engine/lora/peft_targets.h): the
// selector on PEFT's documented cases (regex, exact and suffix names, exclude_modules,
// layers_to_transform with and without layers_pattern, all-linear), and end to end: one adapter
// (tests/data/adapters/llama-lora-all's layer-1 q_proj and v_proj) described by five config forms
// registers under each and gives bit-identical logits, which differ from the base model's; a file
// holding more or fewer modules than its config selects is refused naming the tensor.
#include "engine/lora/peft_targets.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/lora/adapter_store.h"
#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/checkpoint/safetensors_writer.h"
#include "tests/model/lora_setup.h"

namespace arbor::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<std::string> kModules = {
    "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
    "model.layers.0.mlp.down_proj",    "model.layers.1.self_attn.q_proj",
    "model.layers.1.self_attn.v_proj", "model.layers.1.mlp.down_proj",
    "model.layers.12.self_attn.q_proj"};

PeftModuleSelector Select(const json& config) {
  auto s = PeftModuleSelector::FromConfig(config, false);
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  return *s;
}

std::vector<std::string> Selected(const json& config) {
  const PeftModuleSelector s = Select(config);
  std::vector<std::string> out;
  for (const std::string& m : kModules) {
    if (s.Selects(m)) out.push_back(m);
  }
  return out;
}

TEST_CASE("PeftModuleSelector follows PEFT's check_target_module_exists", "[lora]") {
  SECTION("a list matches exact names and dotted suffixes") {
    CHECK(Selected({{"target_modules", {"q_proj"}}}) ==
          std::vector<std::string>{"model.layers.0.self_attn.q_proj",
                                   "model.layers.1.self_attn.q_proj",
                                   "model.layers.12.self_attn.q_proj"});
    CHECK(Selected({{"target_modules", {"1.self_attn.q_proj", "model.layers.0.mlp.down_proj"}}}) ==
          std::vector<std::string>{"model.layers.0.mlp.down_proj",
                                   "model.layers.1.self_attn.q_proj"});
    // Entries that name nothing are accepted (PEFT's rule) and reported: "_proj" is no dotted
    // suffix of any name, c_attn another architecture's module.
    CHECK(Selected({{"target_modules", {"_proj", "c_attn"}}}).empty());
    CHECK(Select({{"target_modules", {"_proj", "q_proj", "c_attn"}}}).Unmatched(kModules) ==
          std::vector<std::string>{"_proj", "c_attn"});
  }
  SECTION("a regex string is matched against the whole name") {
    CHECK(Selected({{"target_modules", R"(.*\.layers\.1\.self_attn\.(q|v)_proj)"}}) ==
          std::vector<std::string>{"model.layers.1.self_attn.q_proj",
                                   "model.layers.1.self_attn.v_proj"});
    CHECK(Selected({{"target_modules", "q_proj"}}).empty());  // not a full match
  }
  SECTION("exclude_modules wins") {
    CHECK(Selected({{"target_modules", {"q_proj", "v_proj"}}, {"exclude_modules", {"v_proj"}}}) ==
          std::vector<std::string>{"model.layers.0.self_attn.q_proj",
                                   "model.layers.1.self_attn.q_proj",
                                   "model.layers.12.self_attn.q_proj"});
    CHECK(Selected(
              {{"target_modules", "all-linear"}, {"exclude_modules", R"(.*\.layers\.[01]\..*)"}}) ==
          std::vector<std::string>{"model.layers.12.self_attn.q_proj"});
  }
  SECTION("layers_to_transform reads the layer index with layers_pattern") {
    CHECK(Selected({{"target_modules", {"q_proj"}},
                    {"layers_to_transform", {1, 12}},
                    {"layers_pattern", "layers"}}) ==
          std::vector<std::string>{"model.layers.1.self_attn.q_proj",
                                   "model.layers.12.self_attn.q_proj"});
    CHECK(Selected({{"target_modules", {"down_proj"}}, {"layers_to_transform", 0}}) ==
          std::vector<std::string>{"model.layers.0.mlp.down_proj"});
    // A pattern that is not in the names reads no index: nothing is selected.
    CHECK(Selected({{"target_modules", {"q_proj"}},
                    {"layers_to_transform", {0, 1}},
                    {"layers_pattern", {"h", "blocks"}}})
              .empty());
    // With a regex target_modules PEFT ignores layers_to_transform.
    CHECK(Selected({{"target_modules", R"(.*q_proj)"}, {"layers_to_transform", {0}}}).size() == 3);
  }
  SECTION("malformed fields are refused by name") {
    for (const json& c :
         {json{{"target_modules", "(unclosed"}}, json{{"target_modules", {"q_proj", 3}}},
          json{{"target_modules", {"q_proj"}}, {"layers_to_transform", "1"}},
          json{{"target_modules", {"q_proj"}}, {"layers_to_transform", {1.5}}},
          json{{"target_modules", {"q_proj"}}, {"exclude_modules", 7}}, json::object()}) {
      INFO(c.dump());
      const auto s = PeftModuleSelector::FromConfig(c, false);
      CHECK(s.status().code() == absl::StatusCode::kInvalidArgument);
    }
    CHECK(absl::StrContains(
        PeftModuleSelector::FromConfig({{"target_modules", "(unclosed"}}, false).status().message(),
        "target_modules: \"(unclosed\" is not a regular expression"));
  }
}

TEST_CASE("PeftPattern follows PEFT's get_pattern_key: the first key in file order wins",
          "[lora]") {
  auto pattern = [](const std::string& text) {
    auto p = PeftPattern::FromConfig(text, "rank_pattern");
    INFO(p.status().ToString());
    REQUIRE(p.ok());
    return *p;
  };
  const PeftPattern layer_first =
      pattern(R"({"rank_pattern": {"layers.1.self_attn.q_proj": 8, "q_proj": 2}})");
  CHECK(layer_first.Lookup("model.layers.1.self_attn.q_proj", 4) == 8);
  CHECK(layer_first.Lookup("model.layers.0.self_attn.q_proj", 4) == 2);
  CHECK(layer_first.Lookup("model.layers.0.self_attn.v_proj", 4) == 4);
  const PeftPattern short_first =
      pattern(R"({"rank_pattern": {"q_proj": 2, "layers.1.self_attn.q_proj": 8}})");
  CHECK(short_first.Lookup("model.layers.1.self_attn.q_proj", 4) == 2);
  // Keys are regexes matched at a dot boundary up to the end of the name.
  const PeftPattern regex = pattern(R"({"rank_pattern": {"self_attn\\.(q|v)_proj": 16}})");
  CHECK(regex.Lookup("model.layers.3.self_attn.v_proj", 4) == 16);
  CHECK(regex.Lookup("model.layers.3.self_attn.k_proj", 4) == 4);
  CHECK(pattern(R"({"rank_pattern": {"_proj": 16}})").Lookup("model.layers.3.mlp.up_proj", 4) ==
        4);  // "_proj" must start after a dot
  CHECK(pattern(R"({"rank_pattern": null})").empty());
  CHECK(!PeftPattern::FromConfig(R"({"rank_pattern": {"q_proj": "8"}})", "rank_pattern").ok());
  CHECK(!PeftPattern::FromConfig(R"({"rank_pattern": [8]})", "rank_pattern").ok());
  CHECK(!PeftPattern::FromConfig(R"({"rank_pattern": {"(q": 8}})", "rank_pattern").ok());
}

// A tensor of the fixture as fp32 values [rows, cols], to edit before writing.
struct Matrix {
  int64_t rows, cols;
  std::vector<float> v;
};

// tests/data/adapters/llama-lora-all with `config` edited, only the tensors `keep` names, and
// those `edit` changes (given each tensor's name and values; the file holds them as F32).
fs::path WriteVariant(const fs::path& root, const std::string& name,
                      const std::function<void(json&)>& config,
                      const std::function<bool(const std::string&)>& keep,
                      const std::function<void(const std::string&, Matrix&)>& edit = {}) {
  const fs::path src = "tests/data/adapters/llama-lora-all";
  const fs::path dir = root / name;
  fs::create_directories(dir);
  std::ifstream in(src / "adapter_config.json");
  json c = json::parse(in);
  config(c);
  std::ofstream(dir / "adapter_config.json") << c.dump(2);
  auto ckpt = Checkpoint::OpenFile((src / "adapter_model.safetensors").string());
  REQUIRE(ckpt.ok());
  std::vector<testing::StTensor> tensors;
  for (const std::string& n : (*ckpt)->names()) {
    if (!keep(n)) continue;
    const TensorView* v = (*ckpt)->Find(n);
    REQUIRE(v->dtype == StDtype::kF32);
    Matrix m{v->shape[0], v->shape[1], std::vector<float>(size_t(v->numel()))};
    std::memcpy(m.v.data(), v->data, v->nbytes);
    if (edit) edit(n, m);
    tensors.push_back({n, "F32", {m.rows, m.cols}, testing::Bytes(m.v)});
  }
  REQUIRE(testing::WriteFile((dir / "adapter_model.safetensors").string(),
                             testing::MakeSafetensors(tensors)));
  return dir;
}

// The llama fixture on the CPU with an adapter store over `root` (64 pages of 16 tokens).
struct CpuBackendHolder {
  kernels::CpuBackend cpu;  // a base, so that it is built before LoraSetup uses it
};
struct Llama : CpuBackendHolder, testing::LoraSetup {
  explicit Llama(const fs::path& root)
      : LoraSetup(cpu, "tests/data/models/llama", root.string(), 16, 64) {}
};

bool Layer1QV(const std::string& n) {
  return absl::StrContains(n, ".layers.1.self_attn.q_proj.") ||
         absl::StrContains(n, ".layers.1.self_attn.v_proj.");
}

TEST_CASE("every config form of one adapter gives the same logits", "[lora]") {
  const fs::path root = testing::FreshDir("peft_targets");
  const std::vector<std::pair<std::string, std::function<void(json&)>>> forms = {
      {"list-layers",
       [](json& c) {
         c["target_modules"] = {"q_proj", "v_proj"};
         c["layers_to_transform"] = {1};
         c["layers_pattern"] = "layers";
       }},
      {"regex", [](json& c) { c["target_modules"] = R"(model\.layers\.1\.self_attn\.[qv]_proj)"; }},
      {"suffixes",
       [](json& c) {
         c["target_modules"] = {"1.self_attn.q_proj", "1.self_attn.v_proj"};
       }},
      {"exclude",
       [](json& c) { c["exclude_modules"] = R"(.*\.layers\.0\..*|.*(k|o|gate|up|down)_proj)"; }},
      {"all-linear-exclude",
       [](json& c) {
         c["target_modules"] = "all-linear";
         c["exclude_modules"] = {
             "0.self_attn.q_proj", "0.self_attn.v_proj", "k_proj", "o_proj", "gate_proj", "up_proj",
             "down_proj"};
       }},
  };
  for (const auto& [name, edit] : forms) WriteVariant(root, name, edit, Layer1QV);

  Llama llama(root);
  const std::vector<int32_t> ids = {1, 17, 42, 99, 7, 3};
  auto run = [&](const LoraAdapter* a) {
    auto seq = llama.model->NewSequence(16);
    REQUIRE(seq.ok());
    auto l = llama.model->Forward(ids, *seq, false, a);
    REQUIRE(l.ok());
    return *l;
  };
  const std::vector<float> base = run(nullptr);
  std::vector<float> first;
  for (const auto& [name, edit] : forms) {
    INFO(name);
    auto a = llama.Ready(name, name);
    // Layer 1's q and v alone are adapted.
    for (size_t l = 0; l < a->targets.size(); ++l) {
      for (int t = 0; t < kNumLoraTargets; ++t) {
        CHECK(a->targets[l][size_t(t)] == (l == 1 && (t == kLoraQ || t == kLoraV)));
      }
    }
    const std::vector<float> got = run(a.get());
    if (first.empty()) {
      first = got;
      double moved = 0;
      for (size_t i = 0; i < got.size(); ++i)
        moved = std::max(moved, double(std::fabs(got[i] - base[i])));
      CHECK(moved > 1e-3);
    } else {
      CHECK(got == first);  // bit for bit: the same matrices, packed the same way
    }
  }
}

TEST_CASE("a file that holds other modules than its config selects is refused", "[lora]") {
  const fs::path root = testing::FreshDir("peft_targets_bad");
  auto layers1 = [](json& c) {
    c["target_modules"] = {"q_proj", "v_proj"};
    c["layers_to_transform"] = {1};
  };
  // Every layer's tensors, the config selecting layer 1's q and v: layer 0's are unexplained.
  WriteVariant(root, "extra", layers1, [](const std::string& n) {
    return absl::StrContains(n, "q_proj") || absl::StrContains(n, "v_proj");
  });
  // Layer 1's q alone: v is selected and missing.
  WriteVariant(root, "missing", layers1, [](const std::string& n) {
    return absl::StrContains(n, ".layers.1.self_attn.q_proj.");
  });
  Llama llama(root);
  AdapterStore& store = *llama.store;
  const absl::Status extra = store.Register("extra", "extra").status();
  INFO(extra.ToString());
  CHECK(extra.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(
      extra.message(),
      "\"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\" is not one"));
  const absl::Status missing = store.Register("missing", "missing").status();
  INFO(missing.ToString());
  CHECK(missing.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(missing.message(),
                          "missing tensor \"base_model.model.model.layers.1.self_attn.v_proj."));
  CHECK(llama.pool->free_pages() == 64);
}

// llama-lora-all's q_proj and v_proj with v cut to rank 2 (its first two rows of A and columns
// of B), under rank_pattern {"v_proj": 2}: v's scale is lora_alpha / 2 = 4, q's 8 / 4 = 2.
// PEFT's meaning of that is the rank-4 adapter whose v has A's rows 2, 3 and B's columns 2, 3
// zero and B doubled (scale 4 over the adapter's 2), which a plain config describes: both give
// the same bits. With alpha_pattern {"v_proj": 4} v's scale is 2 as well and B stays as it is.
TEST_CASE("rank_pattern and alpha_pattern equal the zero-padded, rescaled plain adapter",
          "[lora]") {
  const fs::path root = testing::FreshDir("peft_patterns");
  auto qv = [](const std::string& n) {
    return absl::StrContains(n, ".q_proj.") || absl::StrContains(n, ".v_proj.");
  };
  auto qv_config = [](json& c) { c["target_modules"] = {"q_proj", "v_proj"}; };
  // v cut to rank 2; `padded`: kept at rank 4 with the cut rows/columns zero and B times b_times.
  auto cut_v = [](bool padded, float b_times) {
    return [=](const std::string& n, Matrix& m) {
      if (!absl::StrContains(n, ".v_proj.")) return;
      const bool a = absl::StrContains(n, "lora_A");
      // Cut: A [2, in], B [out, 2]; padded: the shapes as they are, the cut part zero.
      const int64_t rows = padded || !a ? m.rows : 2, cols = padded || a ? m.cols : 2;
      Matrix out{rows, cols, std::vector<float>(size_t(rows * cols), 0.0f)};
      for (int64_t i = 0; i < (a ? 2 : m.rows); ++i) {
        for (int64_t j = 0; j < (a ? m.cols : 2); ++j) {
          out.v[size_t(i * out.cols + j)] = m.v[size_t(i * m.cols + j)] * (a ? 1.0f : b_times);
        }
      }
      m = out;
    };
  };
  WriteVariant(
      root, "rank-pattern",
      [&](json& c) {
        qv_config(c);
        c["rank_pattern"] = {{"v_proj", 2}};
      },
      qv, cut_v(false, 1));
  WriteVariant(root, "padded-doubled", qv_config, qv, cut_v(true, 2));
  WriteVariant(
      root, "rank-alpha-pattern",
      [&](json& c) {
        qv_config(c);
        c["rank_pattern"] = {{"v_proj", 2}};
        c["alpha_pattern"] = {{"v_proj", 4}};
      },
      qv, cut_v(false, 1));
  WriteVariant(root, "padded", qv_config, qv, cut_v(true, 1));

  Llama llama(root);
  const std::vector<int32_t> ids = {1, 17, 42, 99, 7, 3};
  auto logits = [&](const std::string& name) {
    auto a = llama.Ready(name, name);
    CHECK(a->rank == 4);
    CHECK(a->scale == 2.0f);
    auto seq = llama.model->NewSequence(16);
    REQUIRE(seq.ok());
    auto l = llama.model->Forward(ids, *seq, false, a.get());
    REQUIRE(l.ok());
    return *l;
  };
  const std::vector<float> doubled = logits("padded-doubled"), plain = logits("padded");
  CHECK(doubled != plain);  // the doubling shows
  CHECK(logits("rank-pattern") == doubled);
  CHECK(logits("rank-alpha-pattern") == plain);
}

TEST_CASE("a rank_pattern rank above engine.max_lora_rank is refused naming the module", "[lora]") {
  const fs::path root = testing::FreshDir("peft_patterns_bad");
  WriteVariant(
      root, "big",
      [](json& c) {
        c["rank_pattern"] = {{"layers.1.mlp.down_proj", 32}};
      },
      [](const std::string&) { return true; });
  Llama llama(root);
  const absl::Status st = llama.store->Register("big", "big").status();
  INFO(st.ToString());
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(st.message(), "\"model.layers.1.mlp.down_proj\" has rank 32"));
  CHECK(absl::StrContains(st.message(), "engine.max_lora_rank"));
}

}  // namespace
}  // namespace arbor::engine
