// LoRA adapters against PEFT on the same weights: logits within 1e-4 relative and identical
// greedy tokens for every fixture adapter, with the adapter's weights living in unified-pool
// pages (8 KiB ones, and 512-byte ones that every matrix spans); a batch mixing the base model and
// two adapters gives each sequence what it gets alone; and every refusal of AdapterStore::Register.
// [gpu] repeats the parity on CUDA.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/lora/adapter_store.h"
#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/model/lora_setup.h"

namespace arbor::engine {
namespace {

namespace fs = std::filesystem;
const char* kRoot = "tests/data/adapters";

// The llama fixture with pages of `page_tokens` KV tokens (16: 8 KiB, which the adapters'
// matrices straddle now and then; 1: 512 bytes, which every matrix spans).
struct Setup : testing::LoraSetup {
  explicit Setup(kernels::Backend& be, const std::string& root = kRoot, int64_t page_tokens = 16,
                 int64_t pages = 64)
      : LoraSetup(be, "tests/data/models/llama", root, page_tokens, pages) {}
};

int32_t Argmax(const float* row, int64_t n) {
  return int32_t(std::max_element(row, row + n) - row);
}

void CheckAdapter(kernels::Backend& be, const std::string& name, int64_t page_tokens = 16,
                  int64_t pages = 64) {
  INFO("adapter " << name << ", pages of " << page_tokens << " tokens");
  Setup s(be, kRoot, page_tokens, pages);
  auto info = s.store->Register(name, name);
  INFO(info.status().ToString());
  REQUIRE(info.ok());
  // Registration costs host memory only; the adapter is paged in when held.
  CHECK(s.pool->pages_of(memory::PageKind::kAdapter) == 0);
  auto adapter = s.store->Find(name);
  REQUIRE(adapter != nullptr);
  auto hold = s.store->Acquire(*adapter);
  REQUIRE(hold.ok());
  CHECK(s.pool->pages_of(memory::PageKind::kAdapter) == info->pages);
  REQUIRE(s.store->FenceForUse(*adapter).ok());
  std::ifstream in(std::string(kRoot) + "/" + name + "/reference.json");
  const auto ref = nlohmann::json::parse(in);
  const int64_t vocab = s.model->spec().vocab_size;
  for (const auto& prompt : ref["prompts"]) {
    const auto ids = prompt["ids"].get<std::vector<int32_t>>();
    auto seq = s.model->NewSequence(32);
    REQUIRE(seq.ok());
    auto logits = s.model->Forward(ids, *seq, true, adapter.get());
    REQUIRE(logits.ok());
    size_t bad = 0;
    double worst = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      const auto want_row = prompt["logits"][t].get<std::vector<double>>();
      double ss = 0;
      for (double w : want_row) ss += w * w;
      const double rms = std::sqrt(ss / double(vocab));
      for (int64_t c = 0; c < vocab; ++c) {
        const double want = want_row[size_t(c)];
        const double err = std::fabs((*logits)[t * size_t(vocab) + size_t(c)] - want) /
                           std::max(std::fabs(want), rms);
        if (!(err <= 1e-4)) ++bad;
        worst = std::max(worst, err);
      }
    }
    INFO("worst relative error " << worst);
    CHECK(bad == 0);
    std::vector<int32_t> greedy;
    int32_t next = Argmax(logits->data() + (ids.size() - 1) * size_t(vocab), vocab);
    const auto want = prompt["greedy"].get<std::vector<int32_t>>();
    for (size_t i = 0; i < want.size(); ++i) {
      greedy.push_back(next);
      if (i + 1 == want.size()) break;
      auto step = s.model->Forward({&next, 1}, *seq, false, adapter.get());
      REQUIRE(step.ok());
      next = Argmax(step->data(), vocab);
    }
    CHECK(greedy == want);
  }
  // The adapter really changes the model: the base model's logits are far from PEFT's.
  auto seq = s.model->NewSequence(32);
  const auto ids = ref["prompts"][1]["ids"].get<std::vector<int32_t>>();
  auto base = s.model->Forward(ids, *seq, true);
  REQUIRE(base.ok());
  double diff = 0;
  const auto want_row = ref["prompts"][1]["logits"][ids.size() - 1].get<std::vector<double>>();
  for (int64_t c = 0; c < vocab; ++c) {
    diff = std::max(diff, std::fabs((*base)[(ids.size() - 1) * size_t(vocab) + size_t(c)] -
                                    want_row[size_t(c)]));
  }
  CHECK(diff > 1e-2);
  // Unregister: the pages come back once the last holder lets go.
  REQUIRE(s.store->Unregister(name).ok());
  hold->Reset();                                                       // idle now, still resident
  CHECK(s.pool->pages_of(memory::PageKind::kAdapter) == info->pages);  // `adapter` still held
  adapter.reset();
  CHECK(s.pool->pages_of(memory::PageKind::kAdapter) == 0);
  CHECK(s.store->stats().host_bytes_used == 0);
}

TEST_CASE("LoRA on the CPU matches PEFT", "[lora]") {
  kernels::CpuBackend cpu;
  for (const char* name : {"llama-lora-all", "llama-lora-qv"}) {
    CheckAdapter(cpu, name);
    CheckAdapter(cpu, name, 1, 1024);
  }
}

TEST_CASE("LoRA on CUDA matches PEFT", "[lora][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  for (const char* name : {"llama-lora-all", "llama-lora-qv"}) {
    CheckAdapter(**cuda, name);
    CheckAdapter(**cuda, name, 1, 1024);
  }
}

TEST_CASE("a batch mixing the base model and two adapters equals each alone", "[lora]") {
  kernels::CpuBackend cpu;
  Setup s(cpu);
  REQUIRE(s.store->Register("all", "llama-lora-all").ok());
  REQUIRE(s.store->Register("qv", "llama-lora-qv", /*pin=*/true).ok());
  auto hold = s.store->Acquire(*s.store->Find("all"));
  REQUIRE(hold.ok());
  REQUIRE(s.store->FenceForUse(*s.store->Find("all")).ok());
  REQUIRE(s.store->FenceForUse(*s.store->Find("qv")).ok());
  const std::vector<const LoraAdapter*> adapters = {
      nullptr, s.store->Find("all").get(), s.store->Find("qv").get(), s.store->Find("all").get()};
  const std::vector<std::vector<int32_t>> prompts = {
      {5, 9, 13, 17}, {3, 1, 4, 1, 5, 9, 2}, {7, 7, 8}, {100, 200, 30, 40, 50}};
  const int64_t vocab = s.model->spec().vocab_size;
  auto kv = cpu.Allocate(16 * s.model->KvPageBytes(4));
  REQUIRE(kv.ok());
  std::vector<std::vector<int32_t>> tables = {{0, 1}, {2, 3}, {4, 5}, {6, 7}};
  std::vector<std::vector<float>> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    SequenceChunk c{prompts[i], 0, tables[i], SequenceChunk::Logits::kLast, adapters[i]};
    auto l = s.model->Forward({&c, 1}, KvCacheView{kv->as<float>(), 4});
    REQUIRE(l.ok());
    alone.push_back(*l);
  }
  std::vector<SequenceChunk> batch;
  for (size_t i = 0; i < prompts.size(); ++i) {
    batch.push_back({prompts[i], 0, tables[i], SequenceChunk::Logits::kLast, adapters[i]});
  }
  auto together = s.model->Forward(batch, KvCacheView{kv->as<float>(), 4});
  REQUIRE(together.ok());
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (int64_t c = 0; c < vocab; ++c) {
      const float want = alone[i][size_t(c)];
      REQUIRE(std::fabs((*together)[i * size_t(vocab) + size_t(c)] - want) <=
              1e-5f * std::max(1.0f, std::fabs(want)));
    }
  }
}

// Copies an adapter into a scratch root, lets `edit` break it, and registers it.
absl::Status RegisterEdited(const std::string& tmp_root,
                            const std::function<void(const fs::path&)>& edit) {
  const fs::path dir = fs::path(tmp_root) / "edited";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"}) {
    fs::copy_file(fs::path(kRoot) / "llama-lora-all" / f, dir / f);
  }
  edit(dir);
  kernels::CpuBackend cpu;
  Setup s(cpu, tmp_root);
  return s.store->Register("edited", "edited").status();
}

void EditConfig(const fs::path& dir, const std::function<void(nlohmann::json&)>& f) {
  std::ifstream in(dir / "adapter_config.json");
  auto c = nlohmann::json::parse(in);
  f(c);
  std::ofstream(dir / "adapter_config.json") << c.dump();
}

TEST_CASE("AdapterStore refuses bad paths and bad adapters with the right code", "[lora]") {
  kernels::CpuBackend cpu;
  Setup s(cpu);
  using absl::StatusCode;
  CHECK(s.store->Register("x", "../models/llama").status().code() == StatusCode::kPermissionDenied);
  CHECK(s.store->Register("x", "/etc").status().code() == StatusCode::kPermissionDenied);
  CHECK(s.store->Register("x", "http://example.com/a").status().code() ==
        StatusCode::kPermissionDenied);
  CHECK(s.store->Register("x", "nope").status().code() == StatusCode::kNotFound);
  CHECK(s.store->Register("bad/name", "llama-lora-all").status().code() ==
        StatusCode::kInvalidArgument);
  REQUIRE(s.store->Register("a", "llama-lora-all").ok());
  CHECK(s.store->Register("a", "llama-lora-qv").status().code() == StatusCode::kAlreadyExists);
  CHECK(s.store->Unregister("zzz").code() == StatusCode::kNotFound);
  {
    Setup disabled(cpu, "");
    CHECK(disabled.store->Register("a", "llama-lora-all").status().code() ==
          StatusCode::kPermissionDenied);
  }

  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string root = std::string(tmp ? tmp : "/tmp") + "/lora_root";
  fs::create_directories(root);
  // A symlink inside the root that points out of it.
  fs::remove(fs::path(root) / "escape");
  fs::create_directory_symlink(fs::absolute("tests/data/models"), fs::path(root) / "escape");
  {
    Setup rooted(cpu, root);
    CHECK(rooted.store->Register("x", "escape").status().code() == StatusCode::kPermissionDenied);
  }
  struct Bad {
    const char* what;
    std::function<void(const fs::path&)> edit;
  };
  const std::vector<Bad> cases = {
      {"adapter_config.json",
       [](const fs::path& d) { std::ofstream(d / "adapter_config.json") << "{"; }},
      {"r:", [](const fs::path& d) { EditConfig(d, [](auto& c) { c["r"] = 64; }); }},
      // lm_head is no module Arbor adapts: accepted in the list as PEFT accepts names that match
      // nothing, but the file's other modules are then not selected.
      {"is not one of them",
       [](const fs::path& d) {
         EditConfig(d, [](auto& c) { c["target_modules"] = {"q_proj", "lm_head"}; });
       }},
      {"selects no module Arbor adapts (\"lm_head\" name none",
       [](const fs::path& d) {
         EditConfig(d, [](auto& c) { c["target_modules"] = {"lm_head"}; });
       }},
      {"use_dora", [](const fs::path& d) { EditConfig(d, [](auto& c) { c["use_dora"] = true; }); }},
      {"peft_type",
       [](const fs::path& d) { EditConfig(d, [](auto& c) { c["peft_type"] = "IA3"; }); }},
      {"has shape", [](const fs::path& d) { EditConfig(d, [](auto& c) { c["r"] = 2; }); }},
      {"pickle",
       [](const fs::path& d) {
         fs::remove(d / "adapter_model.safetensors");
         std::ofstream(d / "adapter_model.bin") << "not really a pickle";
       }},
      {"the config selects 8",
       [](const fs::path& d) {
         EditConfig(d, [](auto& c) { c["target_modules"] = {"q_proj", "k_proj"}; });
       }},
      {"alora_invocation_tokens",
       [](const fs::path& d) {
         EditConfig(d, [](auto& c) { c["alora_invocation_tokens"] = {5, 6}; });
       }},
      {"lora_bias",
       [](const fs::path& d) { EditConfig(d, [](auto& c) { c["lora_bias"] = true; }); }},
      {"layer_replication",
       [](const fs::path& d) {
         EditConfig(d, [](auto& c) { c["layer_replication"] = {{0, 2}, {1, 2}}; });
       }},
      {"only MoE models' fused expert parameters",
       [](const fs::path& d) {
         EditConfig(d, [](auto& c) { c["target_parameters"] = {"mlp.gate_proj.weight"}; });
       }},
  };
  for (const auto& b : cases) {
    INFO(b.what);
    const absl::Status st = RegisterEdited(root, b.edit);
    CHECK(st.code() == StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(st.message()), Catch::Contains(b.what));
  }
}

TEST_CASE("1,000 register/unregister cycles leave the pool where it was", "[lora]") {
  kernels::CpuBackend cpu;
  Setup s(cpu);
  const int64_t free_before = s.pool->free_pages();
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(s.store->Register("a", i % 2 ? "llama-lora-all" : "llama-lora-qv").ok());
    REQUIRE(s.store->Unregister("a").ok());
  }
  CHECK(s.pool->free_pages() == free_before);
  CHECK(s.store->List().empty());
}

}  // namespace
}  // namespace arbor::engine
