// The engine on the CPU backend with the tiny model: batch invariance (also under preemption),
// prefix caching, cancellation, deadlines, a randomized stress test, and after every test a
// pool back to all-free.
#include "engine/engine.h"

#include <catch2/catch.hpp>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer_text_stream.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/engine/collector.h"

namespace arbor::engine {
namespace {

struct Fixture {
  kernels::CpuBackend cpu;
  std::unique_ptr<kernels::Backend> gpu;
  kernels::Backend* backend = &cpu;
  std::unique_ptr<Model> model;
  bool deterministic = false;
  Fixture() {
    auto m = Model::Load("models/tiny", cpu);
    REQUIRE(m.ok());
    model = std::move(*m);
  }
  // On the GPU, in bf16, deterministic, decode steps replaying CUDA graphs.
  struct OnGpu {};
  explicit Fixture(OnGpu) : deterministic(true) {
    auto cuda = kernels::CreateCudaBackend(0);
    REQUIRE(cuda.ok());
    gpu = std::move(*cuda);
    backend = gpu.get();
    auto m = Model::Load("models/tiny", *gpu,
                         ModelOptions{kernels::DType::kBF16, kernels::DType::kBF16});
    REQUIRE(m.ok());
    model = std::move(*m);
  }
  std::unique_ptr<Engine> NewEngine(int64_t pages, int64_t max_num_seqs = 64,
                                    int64_t batched_tokens = 512, int64_t max_model_len = 1100) {
    EngineConfig c;
    c.block_size = 16;
    c.num_pages = pages;
    c.max_num_seqs = max_num_seqs;
    c.max_num_batched_tokens = batched_tokens;
    c.max_model_len = max_model_len;
    c.deterministic = deterministic;
    c.cuda_graphs = true;
    auto e = Engine::Create(*model, *backend, nullptr, c);
    INFO(e.status().ToString());
    REQUIRE(e.ok());
    return std::move(*e);
  }
};

// Every test ends here: nothing running, and once the prefix cache is dropped every page free.
void RequireAllFree(Engine& e) {
  e.ClearPrefixCache();
  const EngineStats s = e.stats();
  CHECK(s.running == 0);
  CHECK(s.waiting == 0);
  CHECK(s.pages_kv == 0);
  CHECK(s.pages_free == s.pages_total);
}

Request Greedy(std::vector<int32_t> prompt, int max_tokens, int n = 1) {
  Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0.0f;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  r.params.n = n;
  return r;
}

std::vector<int32_t> RandomPrompt(std::mt19937_64& rng, int len) {
  std::uniform_int_distribution<int32_t> id(0, 1199);
  std::vector<int32_t> p(static_cast<size_t>(len));
  for (auto& x : p) x = id(rng);
  return p;
}

std::vector<Request> MixedRequests(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::vector<int32_t> shared = RandomPrompt(rng, 40);
  std::vector<Request> out;
  std::uniform_int_distribution<int> len(1, 90), gen(1, 24);
  for (int i = 0; i < 32; ++i) {
    std::vector<int32_t> prompt = RandomPrompt(rng, len(rng));
    if (i % 4 == 0) prompt.insert(prompt.begin(), shared.begin(), shared.end());
    out.push_back(Greedy(prompt, gen(rng), i % 5 == 0 ? 3 : 1));
  }
  return out;
}

// `observe`, if set, runs on the engine thread with every event.
std::vector<std::vector<std::vector<int32_t>>> RunAll(Engine& e, std::vector<Request> reqs,
                                                      bool one_at_a_time,
                                                      std::function<void()> observe = nullptr) {
  std::vector<std::unique_ptr<Collector>> cs;
  for (auto& r : reqs) {
    cs.push_back(std::make_unique<Collector>(r.params.n));
    r.callback = [collect = cs.back()->Callback(), observe](const StreamEvent& ev) {
      if (observe) observe();
      collect(ev);
    };
    REQUIRE(e.Submit(r).ok());
    if (one_at_a_time) cs.back()->Wait();
  }
  std::vector<std::vector<std::vector<int32_t>>> out;
  for (auto& c : cs) {
    c->Wait();
    out.push_back(c->tokens());
  }
  return out;
}

// Greedy tokens alone, in a mixed batch, and in a pool so small that sequences are preempted
// and recomputed: all the same.
void CheckBatchInvariance(Fixture& f) {
  auto alone_engine = f.NewEngine(400);
  const auto alone = RunAll(*alone_engine, MixedRequests(11), /*one_at_a_time=*/true);
  RequireAllFree(*alone_engine);

  auto batch_engine = f.NewEngine(400);
  const auto batched = RunAll(*batch_engine, MixedRequests(11), false);
  CHECK(batched == alone);
  RequireAllFree(*batch_engine);

  // A pool of 14 pages (224 tokens) for 32 requests of up to 130 + 24 tokens forces preemption.
  auto small = f.NewEngine(14, 64, 64, 200);
  // Stats are those of the previous iteration: a victim waits at least one iteration (its pages
  // went to the sequence that needed them), so the gauge shows it.
  int64_t most_preempted_waiting = 0;
  const auto squeezed = RunAll(*small, MixedRequests(11), false, [&] {
    most_preempted_waiting = std::max(most_preempted_waiting, small->stats().preempted_waiting);
  });
  CHECK(squeezed == alone);
  CHECK(small->stats().preemptions_total > 0);
  CHECK(most_preempted_waiting > 0);
  CHECK(small->stats().preempted_waiting == 0);
  RequireAllFree(*small);
}

TEST_CASE("each request yields the same greedy tokens alone and in a mixed batch", "[engine]") {
  Fixture f;
  CheckBatchInvariance(f);
}

TEST_CASE("deterministic mode on the GPU: the same greedy tokens alone, batched and preempted",
          "[engine][gpu]") {
  Fixture f{Fixture::OnGpu{}};
  CheckBatchInvariance(f);
  // Decode steps replayed graphs (captured at start-up).
  CHECK(f.model->graph_launches() > 0);
  CHECK(f.gpu->Health().ok());
}

TEST_CASE("n > 1 forks share the prompt; greedy siblings agree", "[engine]") {
  Fixture f;
  auto e = f.NewEngine(100);
  Collector c(4);
  Request r = Greedy({5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}, 12, 4);
  r.callback = c.Callback();
  REQUIRE(e->Submit(r).ok());
  c.Wait();
  const auto t = c.tokens();
  for (int i = 1; i < 4; ++i) CHECK(t[size_t(i)] == t[0]);
  CHECK(t[0].size() == 12);
  CHECK(c.metrics().generated_tokens == 48);
  RequireAllFree(*e);
}

TEST_CASE("a shared 1,000-token prefix is prefilled once", "[engine]") {
  Fixture f;
  auto e = f.NewEngine(200);
  std::mt19937_64 rng(3);
  const std::vector<int32_t> prefix = RandomPrompt(rng, 1000);
  std::vector<int32_t> a = prefix, b = prefix;
  for (int32_t x : RandomPrompt(rng, 7)) a.push_back(x);
  for (int32_t x : RandomPrompt(rng, 9)) b.push_back(x);
  RunAll(*e, {Greedy(a, 4)}, true);
  const int64_t before = e->stats().prefill_tokens_computed_total;
  CHECK(before == 1007);
  Collector c(1);
  Request rb = Greedy(b, 4);
  rb.callback = c.Callback();
  REQUIRE(e->Submit(rb).ok());
  c.Wait();
  const int64_t computed = e->stats().prefill_tokens_computed_total - before;
  // Full blocks of the shared prefix (992 tokens at block size 16) come from the cache; only
  // the rest of the prompt runs through the model.
  CHECK(computed == 1009 - 992);
  CHECK(c.metrics().cached_prompt_tokens == 992);
  CHECK(e->stats().prefix_hit_tokens >= 992);
  // Another adapter (cache salt) never shares those blocks.
  Collector c2(1);
  Request rc = Greedy(b, 4);
  rc.cache_salt = 7;
  rc.callback = c2.Callback();
  REQUIRE(e->Submit(rc).ok());
  c2.Wait();
  CHECK(c2.metrics().cached_prompt_tokens == 0);
  RequireAllFree(*e);
}

TEST_CASE("cancellation mid-prefill and mid-decode frees every page", "[engine]") {
  Fixture f;
  // 64-token chunks: a 1,000-token prompt takes 16 iterations to prefill.
  auto e = f.NewEngine(200, 64, 64);
  std::mt19937_64 rng(5);
  Collector prefilling(1), decoding(1);
  Request long_prompt = Greedy(RandomPrompt(rng, 1000), 50);
  long_prompt.callback = prefilling.Callback();
  auto h1 = e->Submit(long_prompt);
  REQUIRE(h1.ok());
  e->Cancel(*h1);
  prefilling.Wait();
  CHECK(prefilling.finish()[0] == FinishReason::kAbort);

  std::mutex mu;
  std::condition_variable cv;
  int seen = 0;
  Request decode = Greedy(RandomPrompt(rng, 10), 1000 - 10);
  decode.callback = [&](const StreamEvent& ev) {
    decoding.Callback()(ev);
    std::lock_guard<std::mutex> lock(mu);
    seen += int(ev.token_ids.size());
    cv.notify_all();
  };
  auto h2 = e->Submit(decode);
  REQUIRE(h2.ok());
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return seen >= 5; });
  }
  e->Cancel(*h2);
  decoding.Wait();
  CHECK(decoding.finish()[0] == FinishReason::kAbort);
  CHECK(decoding.tokens()[0].size() < 990);
  RequireAllFree(*e);
}

TEST_CASE("a request not started before its deadline is aborted", "[engine]") {
  Fixture f;
  auto e = f.NewEngine(200);
  Collector c(1);
  Request r = Greedy({1, 2, 3}, 4);
  r.deadline = absl::Now() - absl::Seconds(1);
  r.callback = c.Callback();
  REQUIRE(e->Submit(r).ok());
  c.Wait();
  CHECK(c.finish()[0] == FinishReason::kAbort);
  CHECK(c.tokens()[0].empty());
  RequireAllFree(*e);
}

TEST_CASE("bad requests are refused at submit, naming the field", "[engine]") {
  Fixture f;
  auto e = f.NewEngine(200, /*max_num_seqs=*/8);
  auto submit = [&](Request r) {
    r.callback = [](const StreamEvent&) {};
    return e->Submit(r).status();
  };
  CHECK_THAT(std::string(submit(Greedy({}, 4)).message()), Catch::Contains("prompt"));
  CHECK_THAT(std::string(submit(Greedy({1, 1206}, 4)).message()), Catch::Contains("1206"));
  CHECK_THAT(std::string(submit(Greedy({1, -3}, 4)).message()), Catch::Contains("-3"));
  // prompt + max_tokens over the context names both numbers; context - 1 + 1 is accepted.
  const auto over = submit(Greedy(std::vector<int32_t>(1000, 1), 101));
  CHECK_THAT(std::string(over.message()), Catch::Contains("1000") && Catch::Contains("101"));
  CHECK(submit(Greedy(std::vector<int32_t>(1099, 1), 1)).ok());
  Request bad_temp = Greedy({1}, 4);
  bad_temp.params.temperature = -1;
  CHECK_THAT(std::string(submit(bad_temp).message()), Catch::Contains("temperature"));
  Request stops = Greedy({1}, 4);
  stops.params.stop = {"x"};
  CHECK_THAT(std::string(submit(stops).message()), Catch::Contains("stop"));
  Request too_wide = Greedy({1}, 4);  // max_num_seqs is 8 here
  too_wide.params.n = 9;
  too_wide.params.temperature = 1;
  CHECK_THAT(std::string(submit(too_wide).message()),
             Catch::Contains("n: 9") && Catch::Contains("max_num_seqs"));
  Request no_callback = Greedy({1}, 4);
  CHECK_FALSE(e->Submit(no_callback).ok());
  // Let the accepted request finish before checking the pool.
  Collector c(1);
  Request ok = Greedy({1, 2}, 2);
  ok.callback = c.Callback();
  REQUIRE(e->Submit(ok).ok());
  c.Wait();
  RequireAllFree(*e);
}

void CheckSeededInvariance(Fixture& f) {
  auto make = [](uint64_t seed) {
    Request r;
    r.prompt = {10, 20, 30, 40};
    r.params.temperature = 0.9f;
    r.params.top_p = 0.95f;
    r.params.seed = seed;
    r.params.max_tokens = 20;
    r.params.ignore_eos = true;
    return r;
  };
  auto e = f.NewEngine(200);
  const auto alone = RunAll(*e, {make(42)}, true);
  std::vector<Request> crowd = MixedRequests(9);
  crowd.insert(crowd.begin() + 5, make(42));
  const auto together = RunAll(*e, crowd, false);
  CHECK(together[5] == alone[0]);
  RequireAllFree(*e);
}

TEST_CASE("seeded sampling gives the same tokens whatever else is in the batch", "[engine]") {
  Fixture f;
  CheckSeededInvariance(f);
}

TEST_CASE("deterministic mode on the GPU: seeded tokens do not depend on the batch",
          "[engine][gpu]") {
  Fixture f{Fixture::OnGpu{}};
  CheckSeededInvariance(f);
  CHECK(f.gpu->Health().ok());
}

TEST_CASE("stress: thousands of requests, random cancellations, a tiny pool", "[engine]") {
  Fixture f;
  auto e = f.NewEngine(24, 32, 128, 300);
  std::mt19937_64 rng(99);
  std::uniform_int_distribution<int> len(1, 120), gen(1, 40), coin(0, 9);
  std::vector<std::unique_ptr<Collector>> cs;
  std::vector<Engine::Handle> handles;
  const std::vector<int32_t> shared = RandomPrompt(rng, 48);
  for (int i = 0; i < 2000; ++i) {
    std::vector<int32_t> prompt = RandomPrompt(rng, len(rng));
    if (coin(rng) < 3) prompt.insert(prompt.begin(), shared.begin(), shared.end());
    Request r;
    r.prompt = prompt;
    r.params.temperature = coin(rng) < 5 ? 0.0f : 1.0f;
    r.params.max_tokens = gen(rng);
    r.params.n = coin(rng) == 0 ? 2 : 1;
    r.params.ignore_eos = coin(rng) < 5;
    r.priority = coin(rng) < 2 ? 1 : 0;
    cs.push_back(std::make_unique<Collector>(r.params.n));
    r.callback = cs.back()->Callback();
    auto h = e->Submit(r);
    REQUIRE(h.ok());
    handles.push_back(*h);
    if (coin(rng) < 2) e->Cancel(handles[std::uniform_int_distribution<size_t>(0, i)(rng)]);
  }
  int finished = 0, aborted = 0;
  for (auto& c : cs) {
    c->Wait();
    for (const auto& f : c->finish()) {
      REQUIRE(f.has_value());
      (*f == FinishReason::kAbort ? aborted : finished)++;
    }
  }
  CHECK(finished > 0);
  CHECK(aborted > 0);
  const EngineStats s = e->stats();
  CHECK(s.requests_finished + s.requests_aborted == 2000);
  RequireAllFree(*e);
}

TEST_CASE("streamed text equals the decoded tokens; stop strings end it without leaking",
          "[engine]") {
  Fixture f;
  auto tok = Tokenizer::FromFile("models/tiny/tokenizer.json");
  REQUIRE(tok.ok());
  TokenizerTextStreams streams(**tok);
  EngineConfig c;
  c.num_pages = 200;
  c.max_model_len = 1100;
  auto e = Engine::Create(*f.model, f.cpu, &streams, c);
  REQUIRE(e.ok());
  auto prompt = (*tok)->Encode("In the beginning God created the heaven and the earth.", true);
  REQUIRE(prompt.ok());

  std::mutex mu;
  std::string text;
  std::vector<int32_t> ids;
  std::optional<FinishReason> finish;
  std::string detail;
  std::condition_variable cv;
  auto run = [&](Request r) {
    text.clear();
    ids.clear();
    finish.reset();
    r.callback = [&](const StreamEvent& ev) {
      std::lock_guard<std::mutex> lock(mu);
      text += ev.text;
      ids.insert(ids.end(), ev.token_ids.begin(), ev.token_ids.end());
      if (ev.finish) {
        finish = ev.finish;
        detail = ev.finish_detail;
        cv.notify_all();
      }
    };
    REQUIRE((*e)->Submit(r).ok());
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finish.has_value(); });
  };
  Request r = Greedy(*prompt, 40);
  run(r);
  CHECK(finish == FinishReason::kLength);
  auto whole = (*tok)->Decode(ids, true);
  REQUIRE(whole.ok());
  CHECK(text == *whole);
  REQUIRE(text.size() > 6);

  // A stop string taken from the middle of that text: generation stops there, the text ends
  // right before it, and not one byte of it is sent.
  const std::string full = text;
  const std::string stop = full.substr(full.size() / 2, 3);
  Request r2 = Greedy(*prompt, 40);
  r2.params.stop = {stop};
  run(r2);
  CHECK(finish == FinishReason::kStop);
  CHECK(detail == stop);
  CHECK(text == full.substr(0, full.find(stop)));
  RequireAllFree(**e);
}

}  // namespace
}  // namespace arbor::engine
