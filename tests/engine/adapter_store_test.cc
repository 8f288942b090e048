// S-LoRA's two tiers on the CPU backend with the llama fixture and its PEFT adapters: host copies
// under lora.host_bytes (LRU, reread from disk and checked against the registration's SHA-256),
// pool residency (idle adapters evicted LRU, held and pinned ones never), and the engine serving
// an oversubscribed pool: every request completes with the tokens it gets alone, a corrupted
// adapter fails its own requests only, 1,000 register/unregister cycles with traffic leave host
// memory and the pool where they were.
#include "engine/lora/adapter_store.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/time/clock.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/engine/collector.h"

namespace arbor::engine {
namespace {

namespace fs = std::filesystem;

// A scratch adapter root holding copies of the fixture adapters, so tests may break them.
std::string ScratchRoot(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const fs::path root = fs::path(tmp ? tmp : "/tmp") / name;
  fs::remove_all(root);
  fs::create_directories(root);
  for (const char* dir : {"llama-lora-all", "llama-lora-qv"}) {
    fs::copy(fs::path("tests/data/adapters") / dir, root / dir);
  }
  return root.string();
}

// Flips one byte of the tensor data (the file's last bytes) of an adapter's weights.
void CorruptWeights(const fs::path& dir) {
  const fs::path file = dir / "adapter_model.safetensors";
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-7, std::ios::end);
  char c = 0;
  f.read(&c, 1);
  f.seekp(-7, std::ios::end);
  c = char(c ^ 0x40);
  f.write(&c, 1);
}

struct Env {
  kernels::CpuBackend cpu;
  std::unique_ptr<Model> model;
  std::unique_ptr<memory::UnifiedPool> pool;
  std::unique_ptr<AdapterStore> store;
  Env(const std::string& root, int64_t pages, int64_t host_bytes) {
    auto m = Model::Load("tests/data/models/llama", cpu);
    REQUIRE(m.ok());
    model = std::move(*m);
    auto p = memory::UnifiedPool::Create(cpu, model->KvPageBytes(16), pages);
    REQUIRE(p.ok());
    pool = std::move(*p);
    AdapterStoreOptions o;
    o.root = root;
    o.max_rank = 16;
    o.host_bytes = host_bytes;
    store = std::make_unique<AdapterStore>(*pool, cpu, model->spec(), o);
  }
  std::shared_ptr<const LoraAdapter> Find(const std::string& name) {
    auto a = store->Find(name);
    REQUIRE(a != nullptr);
    return a;
  }
  // The last position's logits of `prompt` under `name`, paging it in for the call.
  std::vector<float> Logits(const std::string& name, const std::vector<int32_t>& prompt) {
    auto adapter = Find(name);
    auto hold = store->Acquire(*adapter);
    INFO(hold.status().ToString());
    REQUIRE(hold.ok());
    REQUIRE(store->FenceForUse(*adapter).ok());
    auto seq = model->NewSequence(64);
    REQUIRE(seq.ok());
    auto logits = model->Forward(prompt, *seq, false, adapter.get());
    REQUIRE(logits.ok());
    return *logits;
  }
  // Host bytes in use equal the copies held: a failed load leaves no reservation behind.
  bool HostAccounted() {
    int64_t bytes = 0;
    for (const AdapterInfo& i : store->List()) bytes += i.host_resident ? i.host_bytes : 0;
    return bytes == store->stats().host_bytes_used;
  }
  AdapterInfo Info(const std::string& name) {
    for (const AdapterInfo& i : store->List()) {
      if (i.name == name) return i;
    }
    FAIL("no adapter " << name);
    return {};
  }
};

int64_t PackedBytes(const std::string& dir) {
  Env probe("tests/data/adapters", 64, kDefaultLoraHostBytes);
  auto info = probe.store->Register("probe", dir);
  REQUIRE(info.ok());
  return info->host_bytes;
}

const std::vector<int32_t> kPrompt = {3, 1, 4, 1, 5, 9, 2, 6};

TEST_CASE("host copies stay under lora.host_bytes and come back from disk byte for byte",
          "[lora]") {
  const std::string root = ScratchRoot("host_budget");
  const int64_t all_bytes = PackedBytes("llama-lora-all");
  const int64_t qv_bytes = PackedBytes("llama-lora-qv");
  REQUIRE(qv_bytes < all_bytes);
  std::vector<float> want_all, want_qv;
  {
    Env big(root, 64, kDefaultLoraHostBytes);
    REQUIRE(big.store->Register("all", "llama-lora-all").ok());
    REQUIRE(big.store->Register("qv", "llama-lora-qv").ok());
    want_all = big.Logits("all", kPrompt);
    want_qv = big.Logits("qv", kPrompt);
    CHECK(big.store->stats().disk_loads == 0);
  }
  // Room for one `all` copy: registering `qv` drops it, and paging `all` in drops `qv`.
  Env env(root, 64, all_bytes);
  auto a = env.store->Register("all", "llama-lora-all");
  REQUIRE(a.ok());
  CHECK(a->host_resident);
  CHECK_FALSE(a->gpu_resident);  // registration costs host memory only
  CHECK(env.pool->pages_of(memory::PageKind::kAdapter) == 0);
  REQUIRE(env.store->Register("qv", "llama-lora-qv").ok());
  CHECK_FALSE(env.Info("all").host_resident);
  CHECK(env.Info("qv").host_resident);
  CHECK(env.store->stats().host_evictions == 1);
  CHECK(env.store->stats().host_bytes_used == qv_bytes);

  CHECK(env.Logits("all", kPrompt) == want_all);  // reread from disk, same bytes
  AdapterStoreStats s = env.store->stats();
  CHECK(s.disk_loads == 1);
  CHECK(s.host_evictions == 2);
  CHECK(s.host_bytes_used == all_bytes);
  CHECK(s.host_bytes_used <= all_bytes);
  // Resident in the pool, `all` no longer needs its host copy; `qv` comes back from disk.
  CHECK(env.Logits("qv", kPrompt) == want_qv);
  CHECK(env.Logits("all", kPrompt) == want_all);  // still resident: no reload
  s = env.store->stats();
  CHECK(s.disk_loads == 2);
  CHECK(s.copies == 2);
  CHECK(s.host_bytes_used <= all_bytes);
  CHECK(s.registered == 2);
  CHECK(s.gpu_resident == 2);
}

TEST_CASE("a reload that does not match the registration fails naming the file, leaking nothing",
          "[lora]") {
  const std::string root = ScratchRoot("reload_checks");
  const int64_t all_bytes = PackedBytes("llama-lora-all");
  Env env(root, 64, all_bytes);
  REQUIRE(env.store->Register("all", "llama-lora-all").ok());
  const std::vector<float> want = env.Logits("all", kPrompt);
  // Drop both tiers of `all`: its pages by eviction, its host copy by registering `qv`.
  REQUIRE(env.store->EvictOneIdle());
  REQUIRE(env.store->Register("qv", "llama-lora-qv").ok());
  REQUIRE_FALSE(env.Info("all").host_resident);
  REQUIRE_FALSE(env.Info("all").gpu_resident);
  const fs::path dir = fs::path(root) / "llama-lora-all";
  const fs::path weights = dir / "adapter_model.safetensors";
  const std::string saved = [&] {
    std::ifstream in(weights, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  auto restore = [&] { std::ofstream(weights, std::ios::binary | std::ios::trunc) << saved; };
  const int64_t host_before = env.store->stats().host_bytes_used;
  auto acquire = [&] { return env.store->Acquire(*env.Find("all")).status(); };
  const std::string kWeights = "llama-lora-all/adapter_model.safetensors";

  CorruptWeights(dir);
  absl::Status st = acquire();
  CHECK(st.code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(st.message()), Catch::Contains(kWeights));
  CHECK_THAT(std::string(st.message()), Catch::Contains("SHA-256"));
  CHECK(env.pool->pages_of(memory::PageKind::kAdapter) == 0);
  // Room for the reload was made (qv's copy dropped) before it failed; nothing is reserved.
  CHECK(env.HostAccounted());
  CHECK(env.store->stats().host_bytes_used <= host_before);

  // Truncated: the safetensors reader refuses it, naming the file.
  std::ofstream(weights, std::ios::binary | std::ios::trunc) << saved.substr(0, saved.size() / 2);
  st = acquire();
  CHECK_FALSE(st.ok());
  CHECK_THAT(std::string(st.message()), Catch::Contains(kWeights));
  CHECK(env.pool->pages_of(memory::PageKind::kAdapter) == 0);

  // Gone.
  fs::remove(weights);
  st = acquire();
  CHECK(st.code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(st.message()), Catch::Contains(kWeights));

  // lora_alpha changed: the config is named.
  restore();
  {
    std::ifstream in(dir / "adapter_config.json");
    auto c = nlohmann::json::parse(in);
    c["lora_alpha"] = 16;
    std::ofstream(dir / "adapter_config.json") << c.dump();
  }
  st = acquire();
  CHECK(st.code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(st.message()), Catch::Contains("adapter_config.json"));
  CHECK(env.pool->pages_of(memory::PageKind::kAdapter) == 0);
  CHECK(env.HostAccounted());
  CHECK(env.store->stats().disk_loads == 0);

  // Put back as registered: it loads and gives the same logits.
  fs::copy_file("tests/data/adapters/llama-lora-all/adapter_config.json",
                dir / "adapter_config.json", fs::copy_options::overwrite_existing);
  CHECK(env.Logits("all", kPrompt) == want);
  CHECK(env.store->stats().disk_loads == 1);
}

TEST_CASE("with background_reload the disk is read off the caller's thread", "[lora]") {
  const std::string root = ScratchRoot("background");
  const int64_t all_bytes = PackedBytes("llama-lora-all");
  std::vector<float> want;
  {
    Env plain(root, 64, kDefaultLoraHostBytes);
    REQUIRE(plain.store->Register("all", "llama-lora-all").ok());
    want = plain.Logits("all", kPrompt);
  }
  Env env(root, 64, all_bytes);
  AdapterStoreOptions o;
  o.root = root;
  o.max_rank = 16;
  o.host_bytes = all_bytes;
  o.background_reload = true;
  env.store = std::make_unique<AdapterStore>(*env.pool, env.cpu, env.model->spec(), o);
  REQUIRE(env.store->Register("all", "llama-lora-all").ok());
  REQUIRE(env.store->Register("qv", "llama-lora-qv").ok());  // drops all's host copy
  auto adapter = env.Find("all");
  auto first = env.store->Acquire(*adapter);
  CHECK(first.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(first.status().message()), Catch::Contains("being read from disk"));
  // The caller (the scheduler) tries again at its next iteration; here, until the loader is done.
  absl::StatusOr<AdapterHold> hold = first.status();
  for (int i = 0; i < 5000 && absl::IsResourceExhausted(hold.status()); ++i) {
    absl::SleepFor(absl::Milliseconds(1));
    hold = env.store->Acquire(*adapter);
  }
  REQUIRE(hold.ok());
  CHECK(env.store->stats().disk_loads == 1);
  hold->Reset();
  CHECK(env.Logits("all", kPrompt) == want);
  CHECK(env.HostAccounted());
}

TEST_CASE("registration refuses what can never fit, and pinning what does not fit now", "[lora]") {
  const std::string root = ScratchRoot("refusals");
  const int64_t all_bytes = PackedBytes("llama-lora-all");
  {
    Env env(root, 64, all_bytes - 1);
    auto st = env.store->Register("all", "llama-lora-all").status();
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(st.message()), Catch::Contains("lora.host_bytes"));
    CHECK(env.store->stats().host_bytes_used == 0);
  }
  Env probe(root, 64, kDefaultLoraHostBytes);
  auto info = probe.store->Register("all", "llama-lora-all");
  REQUIRE(info.ok());
  const int64_t pages = info->pages;
  REQUIRE(pages >= 2);
  {
    Env env(root, pages - 1, kDefaultLoraHostBytes);
    auto st = env.store->Register("all", "llama-lora-all").status();
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(st.message()), Catch::Contains("pool pages"));
  }
  {
    Env env(root, pages + 1, kDefaultLoraHostBytes);
    REQUIRE(env.store->Register("p", "llama-lora-all", /*pin=*/true).ok());
    CHECK(env.pool->pages_of(memory::PageKind::kAdapter) == pages);
    auto st = env.store->Register("q", "llama-lora-all", /*pin=*/true).status();
    CHECK(st.code() == absl::StatusCode::kResourceExhausted);
    CHECK_THAT(std::string(st.message()), Catch::Contains("pin"));
    CHECK(env.store->Find("q") == nullptr);
    CHECK(env.pool->pages_of(memory::PageKind::kAdapter) == pages);
    CHECK(env.store->stats().host_bytes_used == info->host_bytes);
  }
}

TEST_CASE("idle adapters are evicted least recently used first; held and pinned ones never",
          "[lora]") {
  const std::string root = ScratchRoot("residency");
  Env probe(root, 64, kDefaultLoraHostBytes);
  const int64_t pages = probe.store->Register("x", "llama-lora-all")->pages;
  Env env(root, 3 * pages, kDefaultLoraHostBytes);
  for (const char* name : {"a", "b", "c", "d"}) {
    REQUIRE(env.store->Register(name, "llama-lora-all").ok());
  }
  REQUIRE(env.store->Register("pinned", "llama-lora-all", /*pin=*/true).ok());
  auto a = env.store->Acquire(*env.Find("a"));
  REQUIRE(a.ok());
  {
    auto b = env.store->Acquire(*env.Find("b"));
    REQUIRE(b.ok());
  }  // b idle now
  // Full: c takes b's pages (the only idle ones).
  auto c = env.store->Acquire(*env.Find("c"));
  REQUIRE(c.ok());
  CHECK_FALSE(env.store->Resident(*env.Find("b")));
  CHECK(env.store->stats().gpu_evictions == 1);
  // Everything held or pinned: d must wait, and nothing is evicted for it.
  auto d = env.store->Acquire(*env.Find("d"));
  CHECK(d.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(env.store->stats().gpu_evictions == 1);
  CHECK_FALSE(env.store->EvictOneIdle());
  // Released in the order c, a: a is the most recently used and is evicted last.
  c->Reset();
  a->Reset();
  REQUIRE(env.store->EvictOneIdle());
  CHECK_FALSE(env.store->Resident(*env.Find("c")));
  CHECK(env.store->Resident(*env.Find("a")));
  REQUIRE(env.store->EvictOneIdle());
  CHECK_FALSE(env.store->EvictOneIdle());  // only the pinned one is left
  CHECK(env.store->Resident(*env.Find("pinned")));
  CHECK(env.pool->pages_of(memory::PageKind::kAdapter) == pages);
  const AdapterStoreStats s = env.store->stats();
  CHECK(s.copies == s.gpu_evictions + s.gpu_resident);
  // Unregistering the pinned adapter returns its pages.
  REQUIRE(env.store->Unregister("pinned").ok());
  CHECK(env.pool->free_pages() == env.pool->num_pages());
}

// --- The engine over the store. ---

struct Served {
  std::unique_ptr<Engine> engine;
  Env env;
  Served(const std::string& root, int64_t pages, int64_t host_bytes, int64_t max_num_seqs = 8)
      : env(root, 1, host_bytes) {
    EngineConfig c;
    c.block_size = 16;
    c.num_pages = pages;
    c.max_num_seqs = max_num_seqs;
    c.max_num_batched_tokens = 256;
    c.max_model_len = 256;
    auto e = Engine::Create(*env.model, env.cpu, nullptr, c);
    INFO(e.status().ToString());
    REQUIRE(e.ok());
    engine = std::move(*e);
    AdapterStoreOptions o;
    o.root = root;
    o.max_rank = 16;
    o.host_bytes = host_bytes;
    o.background_reload = true;  // as the server runs it
    env.store = std::make_unique<AdapterStore>(engine->pool(), env.cpu, env.model->spec(), o);
    engine->SetAdapterStore(env.store.get());
  }
  ~Served() { engine->Shutdown(); }
};

Request Greedy(std::vector<int32_t> prompt, int max_tokens,
               std::shared_ptr<const LoraAdapter> adapter) {
  Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0.0f;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  r.adapter = std::move(adapter);
  return r;
}

std::vector<int32_t> RandomPrompt(std::mt19937_64& rng, int64_t len) {
  std::vector<int32_t> p(static_cast<size_t>(len));
  for (auto& t : p) t = int32_t(rng() % 256);
  return p;
}

// Nothing running, and with the prefix cache dropped no KV page held.
void RequireNoKv(Engine& e) {
  e.ClearPrefixCache();
  const EngineStats s = e.stats();
  CHECK(s.running == 0);
  CHECK(s.waiting == 0);
  CHECK(s.pages_kv == 0);
  CHECK(s.pages_free + s.pages_adapter == s.pages_total);
}

TEST_CASE("an oversubscribed pool serves every request, each with the tokens it gets alone",
          "[lora][engine]") {
  const std::string root = ScratchRoot("oversubscribed");
  Env probe(root, 64, kDefaultLoraHostBytes);
  const int64_t adapter_pages = probe.store->Register("x", "llama-lora-all")->pages;
  const int64_t all_bytes = probe.Info("x").host_bytes;
  // 12 adapters (36+ pages) and up to 8 sequences of up to 5 KV pages in a pool of 30 pages; the
  // host holds 4 adapter copies.
  const int64_t pool_pages = 30;
  REQUIRE(12 * adapter_pages + 8 * 4 > pool_pages);
  Served s(root, pool_pages, 4 * all_bytes);
  std::vector<std::string> names;
  for (int i = 0; i < 12; ++i) {
    names.push_back("ad" + std::to_string(i));
    REQUIRE(s.env.store->Register(names.back(), i % 3 ? "llama-lora-all" : "llama-lora-qv").ok());
  }
  REQUIRE(s.env.store->Register("pinned", "llama-lora-qv", /*pin=*/true).ok());
  names.push_back("pinned");
  std::mt19937_64 rng(7);
  struct Job {
    std::vector<int32_t> prompt;
    int max_tokens;
    std::string adapter;  // "" for the base model
  };
  std::vector<Job> jobs;
  for (int i = 0; i < 60; ++i) {
    const std::string adapter = i % 7 == 0 ? "" : names[size_t(rng() % names.size())];
    jobs.push_back({RandomPrompt(rng, 10 + int64_t(rng() % 50)), 4 + int(rng() % 16), adapter});
  }
  auto request = [&](const Job& j) {
    return Greedy(j.prompt, j.max_tokens, j.adapter.empty() ? nullptr : s.env.Find(j.adapter));
  };
  std::vector<std::vector<int32_t>> alone;
  for (const Job& j : jobs) {
    Collector c(1);
    Request r = request(j);
    r.callback = c.Callback();
    REQUIRE(s.engine->Submit(std::move(r)).ok());
    c.Wait();
    REQUIRE(c.finish()[0] == FinishReason::kLength);
    alone.push_back(c.tokens()[0]);
  }
  const AdapterStoreStats before = s.env.store->stats();
  std::vector<std::unique_ptr<Collector>> collectors;
  for (const Job& j : jobs) {
    collectors.push_back(std::make_unique<Collector>(1));
    Request r = request(j);
    r.callback = collectors.back()->Callback();
    REQUIRE(s.engine->Submit(std::move(r)).ok());
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    INFO("request " << i << " adapter " << jobs[i].adapter);
    collectors[i]->Wait();
    CHECK(collectors[i]->finish()[0] == FinishReason::kLength);
    CHECK(collectors[i]->tokens()[0] == alone[i]);
  }
  const AdapterStoreStats after = s.env.store->stats();
  CHECK(after.gpu_evictions > before.gpu_evictions);  // the pool really was oversubscribed
  CHECK(after.disk_loads > 0);                        // and so was the host budget
  CHECK(after.copies == after.gpu_evictions + after.gpu_resident);
  CHECK(after.host_bytes_used <= 4 * all_bytes);
  CHECK(s.env.HostAccounted());
  CHECK(s.env.Info("pinned").gpu_resident);
  RequireNoKv(*s.engine);
  // Unregistered and idle, every adapter gives its pages back: the pool is all free.
  for (const std::string& n : names) REQUIRE(s.env.store->Unregister(n).ok());
  CHECK(s.engine->stats().pages_free == pool_pages);
  CHECK(s.env.store->stats().host_bytes_used == 0);
}

TEST_CASE("adapters of queued requests are prefetched, and their admissions hit",
          "[lora][engine]") {
  const std::string root = ScratchRoot("prefetch");
  // One sequence at a time: the other requests queue while the first runs, and their adapters
  // are paged in ahead of their admission.
  Served s(root, 64, kDefaultLoraHostBytes, /*max_num_seqs=*/1);
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < 4; ++i) {
    const std::string name = "p" + std::to_string(i);
    REQUIRE(s.env.store->Register(name, "llama-lora-qv").ok());
  }
  for (int i = 0; i < 4; ++i) {
    cs.push_back(std::make_unique<Collector>(1));
    Request r = Greedy({9, 8, 7, 6, 5, 4, 3, 2, 1}, 24, s.env.Find("p" + std::to_string(i)));
    r.callback = cs.back()->Callback();
    REQUIRE(s.engine->Submit(std::move(r)).ok());
  }
  int64_t waited = 0;
  for (auto& c : cs) {
    c->Wait();
    CHECK(c->finish()[0] == FinishReason::kLength);
    CHECK(c->metrics().adapter);
    waited += c->metrics().adapter_wait > absl::ZeroDuration() ? 1 : 0;
  }
  const AdapterStoreStats st = s.env.store->stats();
  CHECK(st.prefetch_hits + st.prefetch_misses == 4);
  CHECK(st.prefetch_hits >= 2);
  CHECK(st.copies == 4);
  CHECK(st.gpu_evictions == 0);
  CHECK(waited >= st.prefetch_misses);  // a page-in at admission is time waited
  RequireNoKv(*s.engine);
}

TEST_CASE("n > 1 under an adapter: every sibling holds it and gets the same greedy tokens",
          "[lora][engine]") {
  const std::string root = ScratchRoot("forks");
  Served s(root, 40, kDefaultLoraHostBytes);
  REQUIRE(s.env.store->Register("a", "llama-lora-all").ok());
  Collector one(1), three(3);
  Request r1 = Greedy({4, 8, 15, 16, 23, 42}, 12, s.env.Find("a"));
  r1.callback = one.Callback();
  REQUIRE(s.engine->Submit(std::move(r1)).ok());
  one.Wait();
  Request r3 = Greedy({4, 8, 15, 16, 23, 42}, 12, s.env.Find("a"));
  r3.params.n = 3;
  r3.callback = three.Callback();
  REQUIRE(s.engine->Submit(std::move(r3)).ok());
  three.Wait();
  for (int i = 0; i < 3; ++i) {
    CHECK(three.finish()[size_t(i)] == FinishReason::kLength);
    CHECK(three.tokens()[size_t(i)] == one.tokens()[0]);
  }
  RequireNoKv(*s.engine);
  REQUIRE(s.env.store->Unregister("a").ok());
  CHECK(s.engine->stats().pages_free == 40);
}

TEST_CASE("preempted sequences give their adapter back and finish with the tokens they get alone",
          "[lora][engine]") {
  const std::string root = ScratchRoot("preempt");
  // 16 pages: four sequences growing to 8 KV pages each, under two adapters, cannot all run.
  Served s(root, 16, kDefaultLoraHostBytes, 4);
  REQUIRE(s.env.store->Register("a", "llama-lora-qv").ok());
  REQUIRE(s.env.store->Register("b", "llama-lora-all").ok());
  std::mt19937_64 rng(3);
  std::vector<Request> requests;
  for (int i = 0; i < 4; ++i) {
    requests.push_back(Greedy(RandomPrompt(rng, 20), 100, s.env.Find(i % 2 ? "b" : "a")));
  }
  std::vector<std::vector<int32_t>> alone;
  for (const Request& r : requests) {
    Collector c(1);
    Request copy = r;
    copy.callback = c.Callback();
    REQUIRE(s.engine->Submit(std::move(copy)).ok());
    c.Wait();
    alone.push_back(c.tokens()[0]);
  }
  const int64_t preempted_before = s.engine->stats().preemptions_total;
  std::vector<std::unique_ptr<Collector>> cs;
  for (const Request& r : requests) {
    cs.push_back(std::make_unique<Collector>(1));
    Request copy = r;
    copy.callback = cs.back()->Callback();
    REQUIRE(s.engine->Submit(std::move(copy)).ok());
  }
  for (size_t i = 0; i < cs.size(); ++i) {
    cs[i]->Wait();
    CHECK(cs[i]->finish()[0] == FinishReason::kLength);
    CHECK(cs[i]->tokens()[0] == alone[i]);
  }
  CHECK(s.engine->stats().preemptions_total > preempted_before);
  const AdapterStoreStats st = s.env.store->stats();
  CHECK(st.copies == st.gpu_evictions + st.gpu_resident);
  RequireNoKv(*s.engine);
  requests.clear();  // they hold the adapters too
  REQUIRE(s.env.store->Unregister("a").ok());
  REQUIRE(s.env.store->Unregister("b").ok());
  CHECK(s.engine->stats().pages_free == 16);
}

TEST_CASE("a corrupted adapter fails its own requests with the file named; the rest run",
          "[lora][engine]") {
  const std::string root = ScratchRoot("engine_corrupt");
  Env probe(root, 64, kDefaultLoraHostBytes);
  const int64_t all_bytes = probe.store->Register("x", "llama-lora-all")->host_bytes;
  Served s(root, 40, all_bytes);
  REQUIRE(s.env.store->Register("bad", "llama-lora-all").ok());
  REQUIRE(s.env.store->Register("good", "llama-lora-qv").ok());  // drops bad's host copy
  REQUIRE_FALSE(s.env.Info("bad").host_resident);
  CorruptWeights(fs::path(root) / "llama-lora-all");
  std::mutex mu;
  std::string detail;
  Collector bad(1), good(1);
  Request rb = Greedy({1, 2, 3, 4, 5}, 4, s.env.Find("bad"));
  auto bad_cb = bad.Callback();
  rb.callback = [&](const StreamEvent& ev) {
    if (ev.finish) {
      std::lock_guard<std::mutex> lock(mu);
      detail = ev.finish_detail;
    }
    bad_cb(ev);
  };
  Request rg = Greedy({1, 2, 3, 4, 5}, 4, s.env.Find("good"));
  rg.callback = good.Callback();
  REQUIRE(s.engine->Submit(std::move(rb)).ok());
  REQUIRE(s.engine->Submit(std::move(rg)).ok());
  bad.Wait();
  good.Wait();
  CHECK(bad.finish()[0] == FinishReason::kAbort);
  CHECK(bad.tokens()[0].empty());
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK_THAT(detail, Catch::Contains("adapter_model.safetensors"));
    CHECK_THAT(detail, Catch::Contains("bad"));
  }
  CHECK(good.finish()[0] == FinishReason::kLength);
  CHECK(good.tokens()[0].size() == 4);
  RequireNoKv(*s.engine);
  CHECK_FALSE(s.env.Info("bad").gpu_resident);
  REQUIRE(s.env.store->Unregister("bad").ok());
  REQUIRE(s.env.store->Unregister("good").ok());
  CHECK(s.engine->stats().pages_free == 40);
}

TEST_CASE("1,000 register/unregister cycles with traffic leave host memory and the pool flat",
          "[lora][engine]") {
  const std::string root = ScratchRoot("cycles");
  Env probe(root, 64, kDefaultLoraHostBytes);
  const int64_t all_bytes = probe.store->Register("x", "llama-lora-all")->host_bytes;
  Served s(root, 24, 2 * all_bytes, 4);
  REQUIRE(s.env.store->Register("keep", "llama-lora-qv").ok());
  std::mt19937_64 rng(11);
  int64_t host_after_first = -1;
  for (int i = 0; i < 1000; ++i) {
    const std::string name = "cycle" + std::to_string(i % 3);
    REQUIRE(s.env.store->Register(name, i % 2 ? "llama-lora-all" : "llama-lora-qv").ok());
    std::vector<std::unique_ptr<Collector>> cs;
    for (const char* use : {"keep", "cycle", ""}) {
      const std::string adapter = std::string(use) == "cycle" ? name : use;
      cs.push_back(std::make_unique<Collector>(1));
      Request r = Greedy(RandomPrompt(rng, 5 + int64_t(rng() % 20)), 2,
                         adapter.empty() ? nullptr : s.env.Find(adapter));
      r.callback = cs.back()->Callback();
      REQUIRE(s.engine->Submit(std::move(r)).ok());
    }
    // Unregistered while its request may still run: it finishes on the same weights.
    REQUIRE(s.env.store->Unregister(name).ok());
    for (auto& c : cs) {
      c->Wait();
      REQUIRE(c->finish()[0] == FinishReason::kLength);
    }
    if (i == 0) host_after_first = s.env.store->stats().host_bytes_used;
    if (i % 100 == 99) {
      RequireNoKv(*s.engine);
      const AdapterStoreStats st = s.env.store->stats();
      CHECK(st.registered == 1);
      CHECK(st.host_bytes_used <= 2 * all_bytes);
      CHECK(s.env.HostAccounted());
      CHECK(s.engine->stats().pages_adapter <= s.env.store->PagesOf(*s.env.Find("keep")));
    }
  }
  CHECK(host_after_first >= 0);
  REQUIRE(s.env.store->Unregister("keep").ok());
  RequireNoKv(*s.engine);
  CHECK(s.engine->stats().pages_free == 24);
  CHECK(s.env.store->stats().host_bytes_used == 0);
  CHECK(s.env.store->stats().gpu_resident == 0);
  CHECK(s.env.store->stats().host_resident == 0);
}

}  // namespace
}  // namespace arbor::engine
