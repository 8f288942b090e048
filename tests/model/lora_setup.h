// Test-only: a model on a backend, a unified pool of its KV pages and an AdapterStore over it,
// as the LoRA tests set them up (tests/model/lora_test.cc, moe_lora_test.cc, peft_targets_test.cc).
#ifndef ARBOR_TESTS_MODEL_LORA_SETUP_H_
#define ARBOR_TESTS_MODEL_LORA_SETUP_H_

#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "engine/lora/adapter_store.h"
#include "engine/model/model.h"
#include "memory/unified_pool.h"

namespace arbor::testing {

struct LoraSetup {
  std::unique_ptr<engine::Model> model;
  std::unique_ptr<memory::UnifiedPool> pool;
  std::unique_ptr<engine::AdapterStore> store;
  // `model_dir` loaded on `be`; `pages` pool pages of `page_tokens` KV tokens each; adapters
  // resolve under `root` (empty: registration disabled), ranks up to `max_rank`.
  LoraSetup(kernels::Backend& be, const std::string& model_dir, const std::string& root,
            int64_t page_tokens, int64_t pages, int64_t max_rank = 16,
            engine::ModelOptions model_options = {}) {
    auto m = engine::Model::Load(model_dir, be, model_options);
    REQUIRE(m.ok());
    model = std::move(*m);
    auto p = memory::UnifiedPool::Create(be, model->KvPageBytes(page_tokens), pages);
    REQUIRE(p.ok());
    pool = std::move(*p);
    engine::AdapterStoreOptions options;
    options.root = root;
    options.max_rank = max_rank;
    options.dtype = model->dtype();
    store = std::make_unique<engine::AdapterStore>(*pool, be, model->spec(), options);
  }
  // Adapter `dir` registered as `name`, pinned (in pool pages) and ready to run.
  std::shared_ptr<const engine::LoraAdapter> Ready(const std::string& name,
                                                   const std::string& dir) {
    auto info = store->Register(name, dir, /*pin=*/true);
    INFO(name << ": " << info.status().ToString());
    REQUIRE(info.ok());
    auto adapter = store->Find(name);
    REQUIRE(adapter != nullptr);
    REQUIRE(store->FenceForUse(*adapter).ok());
    return adapter;
  }
};

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_MODEL_LORA_SETUP_H_
