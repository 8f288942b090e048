// Prompt log-probs (Request::prompt_logprobs, score_only) on the CPU backend: for the six tiny
// fixture models, the log-softmax of transformers' logits at every prompt position
// (tests/data/models/*/reference.json), whether the request runs alone, beside generating
// requests, in chunks of a few tokens, or after its prompt was cached;
// a preempted scoring request streams each position once; cancellation and bad values; and
// after every test a pool back to all-free.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/engine.h"
#include "engine/model/hf_config.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/engine/collector.h"

namespace arbor::engine {
namespace {

const char* kModels[] = {
    "llama", "llama-linear-mqa-hd24", "llama-tied-llama3rope", "mistral-swa", "qwen2", "mixtral"};

struct EngineOptions {
  int64_t pages = 200;
  int64_t block_size = 4;
  int64_t batched_tokens = 512;
  int64_t max_model_len = 64;
};

std::unique_ptr<Engine> NewEngine(Model& model, kernels::Backend& be, const EngineOptions& o) {
  EngineConfig c;
  c.block_size = o.block_size;
  c.num_pages = o.pages;
  c.max_num_batched_tokens = o.batched_tokens;
  c.max_model_len = o.max_model_len;
  auto e = Engine::Create(model, be, nullptr, c);
  INFO(e.status().ToString());
  REQUIRE(e.ok());
  return std::move(*e);
}

// Every test ends here: nothing running, and once the prefix cache is dropped every page free.
void RequireAllFree(Engine& e) {
  e.ClearPrefixCache();
  const EngineStats s = e.stats();
  CHECK(s.running == 0);
  CHECK(s.waiting == 0);
  CHECK(s.pages_kv == 0);
  CHECK(s.pages_free == s.pages_total);
}

Request Score(std::vector<int32_t> prompt, int32_t k) {
  Request r;
  r.prompt = std::move(prompt);
  r.prompt_logprobs = k;
  r.score_only = true;
  return r;
}

Request Greedy(std::vector<int32_t> prompt, int32_t max_tokens, int32_t n = 1) {
  Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0.0f;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  r.params.n = n;
  return r;
}

std::vector<int32_t> RandomPrompt(std::mt19937_64& rng, int len, int32_t vocab) {
  std::uniform_int_distribution<int32_t> id(0, vocab - 1);
  std::vector<int32_t> p(static_cast<size_t>(len));
  for (auto& x : p) x = id(rng);
  return p;
}

// Submits `r` with `c` as its callback.
Engine::Handle Submit(Engine& e, Request r, Collector& c) {
  r.callback = c.Callback();
  auto h = e.Submit(std::move(r));
  INFO(h.status().ToString());
  REQUIRE(h.ok());
  return *h;
}

struct RefPrompt {
  std::vector<int32_t> ids;
  std::vector<std::vector<double>> logits;  // [len, vocab], transformers' fp32
  std::vector<int32_t> greedy;
};

std::vector<RefPrompt> Reference(const std::string& name) {
  std::ifstream in("tests/data/models/" + name + "/reference.json");
  REQUIRE(in);
  const auto ref = nlohmann::json::parse(in);
  std::vector<RefPrompt> out;
  for (const auto& p : ref["prompts"]) {
    out.push_back({p["ids"].get<std::vector<int32_t>>(),
                   p["logits"].get<std::vector<std::vector<double>>>(),
                   p["greedy"].get<std::vector<int32_t>>()});
  }
  return out;
}

std::vector<double> LogSoftmax(const std::vector<double>& x) {
  const double max = *std::max_element(x.begin(), x.end());
  double sum = 0;
  for (double v : x) sum += std::exp(v - max);
  const double lse = max + std::log(sum);
  std::vector<double> out;
  for (double v : x) out.push_back(v - lse);
  return out;
}

// `got` against the log-softmax of the reference logits: one entry per position 1..len-1 in
// order, each log-prob within 2e-4 of the row's largest |logit| (model_parity_test holds the
// logits to 1e-4 of that scale; a log-prob is a logit minus a log-sum-exp, two such errors),
// its rank (1 + the more likely ids, within that tolerance), and k alternatives in descending
// order, each with its reference log-prob and ranked right within that tolerance.
void CheckAgainstReference(const std::vector<PromptLogprob>& got, const RefPrompt& ref, int32_t k) {
  const size_t len = ref.ids.size();
  REQUIRE(got.size() == len - 1);
  int bad = 0;
  double worst = 0;
  for (size_t i = 1; i < len; ++i) {
    const PromptLogprob& e = got[i - 1];
    REQUIRE(e.position == int64_t(i));
    REQUIRE(e.token == ref.ids[i]);
    const std::vector<double>& row = ref.logits[i - 1];
    const std::vector<double> want = LogSoftmax(row);
    double scale = 1;
    for (double v : row) scale = std::max(scale, std::fabs(v));
    const double tol = 2e-4 * scale;
    auto off = [&](double g, double w) {
      const double err = std::fabs(g - w);
      worst = std::max(worst, err / scale);
      if (!(err <= tol)) ++bad;  // NaN counts as bad
    };
    off(e.logprob, want[size_t(e.token)]);
    // The rank: 1 + the ids more likely than the token, give or take those within tol of it.
    int64_t above = 0, near = 0;
    for (size_t v = 0; v < want.size(); ++v) {
      const double d = want[v] - want[size_t(e.token)];
      if (v == size_t(e.token)) continue;
      above += d > 0;
      near += d != 0 && std::fabs(d) <= tol;
    }
    if (std::llabs(int64_t(e.rank) - (1 + above)) > near) ++bad;
    std::vector<double> sorted = want;
    std::sort(sorted.begin(), sorted.end(), std::greater<double>());
    REQUIRE(e.top.size() == std::min(size_t(k), want.size()));
    for (size_t j = 0; j < e.top.size(); ++j) {
      const TokenLogprob& t = e.top[j];
      REQUIRE(t.token >= 0);
      REQUIRE(size_t(t.token) < want.size());
      off(t.logprob, want[size_t(t.token)]);
      // Rank j holds a token as likely as the reference's j-th, within the tolerance.
      if (!(sorted[j] - want[size_t(t.token)] <= tol)) ++bad;
      if (j > 0) CHECK(e.top[j - 1].logprob >= t.logprob);
    }
  }
  INFO("worst error / row scale " << worst);
  CHECK(bad == 0);
}

// Positions 1..len-1, each once and ascending.
void CheckPositions(const std::vector<PromptLogprob>& got, size_t len) {
  REQUIRE(got.size() == len - 1);
  for (size_t i = 0; i < got.size(); ++i) REQUIRE(got[i].position == int64_t(i + 1));
}

constexpr int32_t kTopK = 5;

// Alone, and the same option on a generating request: prompt log-probs, then transformers'
// greedy tokens.
void CheckAlone(Model& model, kernels::Backend& be, const std::vector<RefPrompt>& ref) {
  auto e = NewEngine(model, be, {});
  for (const RefPrompt& p : ref) {
    INFO("alone: prompt of " << p.ids.size() << " tokens");
    Collector scored;
    Submit(*e, Score(p.ids, kTopK), scored);
    scored.Wait();
    CHECK(scored.finish()[0] == FinishReason::kLength);
    CHECK(scored.tokens()[0].empty());
    CHECK(scored.metrics().generated_tokens == 0);
    CHECK(scored.metrics().prompt_tokens == int64_t(p.ids.size()));
    CheckAgainstReference(scored.entries(), p, kTopK);

    Collector generating;
    Request r = Greedy(p.ids, int32_t(p.greedy.size()));
    r.prompt_logprobs = kTopK;
    Submit(*e, r, generating);
    generating.Wait();
    CHECK(generating.tokens()[0] == p.greedy);
    CheckAgainstReference(generating.entries(), p, kTopK);
  }
  RequireAllFree(*e);
}

// Interleaved with generating requests, and one generating n = 2 that scores its prompt (the
// log-probs come once, on index 0).
void CheckBatched(Model& model, kernels::Backend& be, const std::vector<RefPrompt>& ref) {
  INFO("batched");
  auto e = NewEngine(model, be, {});
  const int32_t vocab = int32_t(model.spec().vocab_size);
  std::mt19937_64 rng(17);
  std::vector<std::unique_ptr<Collector>> others, scored;
  for (size_t i = 0; i < 6; ++i) {
    others.push_back(std::make_unique<Collector>());
    Submit(*e, Greedy(RandomPrompt(rng, 3 + int(i) * 5, vocab), 12), *others.back());
    if (i < ref.size()) {
      scored.push_back(std::make_unique<Collector>());
      Submit(*e, Score(ref[i].ids, kTopK), *scored.back());
    }
  }
  Collector forked(2);
  Request r = Greedy(ref[1].ids, 4, 2);
  r.prompt_logprobs = 0;
  Submit(*e, r, forked);
  for (size_t i = 0; i < ref.size(); ++i) {
    INFO("prompt of " << ref[i].ids.size() << " tokens");
    scored[i]->Wait();
    CheckAgainstReference(scored[i]->entries(), ref[i], kTopK);
  }
  forked.Wait();
  CheckAgainstReference(forked.entries(), ref[1], 0);
  CHECK(forked.prompt_logprobs_off_index0() == 0);
  CHECK(forked.tokens()[0] == forked.tokens()[1]);
  for (auto& c : others) c->Wait();
  RequireAllFree(*e);
}

// Chunked prefill: 3 tokens an iteration. Scored rows need no logits (the fused LM head), so
// nothing caps them below the token budget: every event but the last carries 3 positions, the
// chunk's last row scoring the next chunk's first token.
void CheckChunked(Model& model, kernels::Backend& be, const std::vector<RefPrompt>& ref) {
  EngineOptions o;
  o.batched_tokens = 3;
  auto e = NewEngine(model, be, o);
  for (const RefPrompt& p : ref) {
    INFO("chunked: prompt of " << p.ids.size() << " tokens");
    Collector c;
    Submit(*e, Score(p.ids, kTopK), c);
    c.Wait();
    CheckAgainstReference(c.entries(), p, kTopK);
    const std::vector<size_t> sizes = c.event_sizes();
    REQUIRE(!sizes.empty());
    CHECK(sizes.size() == (p.ids.size() - 1 + 2) / 3);
    for (size_t i = 0; i + 1 < sizes.size(); ++i) CHECK(sizes[i] == 3);
  }
  RequireAllFree(*e);
}

// The prompt cached by an earlier request is not read: every position is still scored.
void CheckAfterCached(Model& model, kernels::Backend& be, const std::vector<RefPrompt>& ref) {
  INFO("after caching");
  auto e = NewEngine(model, be, {});
  const RefPrompt& p = ref[2];  // 17 tokens: 4 full blocks of 4
  REQUIRE(p.ids.size() == 17);
  Collector first;
  Submit(*e, Greedy(p.ids, 2), first);
  first.Wait();
  Collector scored;
  Submit(*e, Score(p.ids, kTopK), scored);
  scored.Wait();
  CHECK(scored.metrics().cached_prompt_tokens == 0);
  CheckAgainstReference(scored.entries(), p, kTopK);
  // The cache did hold the prompt: a generating request takes it from there.
  Collector again;
  Submit(*e, Greedy(p.ids, 2), again);
  again.Wait();
  CHECK(again.metrics().cached_prompt_tokens == 16);
  RequireAllFree(*e);
}

TEST_CASE("prompt log-probs match transformers' log-softmax for every architecture",
          "[engine][prompt_logprobs]") {
  kernels::CpuBackend cpu;
  for (const char* name : kModels) {
    INFO("model " << name);
    auto model = Model::Load(std::string("tests/data/models/") + name, cpu);
    REQUIRE(model.ok());
    const std::vector<RefPrompt> ref = Reference(name);
    REQUIRE(ref.size() == 3);
    CheckAlone(**model, cpu, ref);
    CheckBatched(**model, cpu, ref);
    CheckChunked(**model, cpu, ref);
    CheckAfterCached(**model, cpu, ref);
  }
}

TEST_CASE("a preempted scoring request recomputes its prompt but streams each position once",
          "[engine][prompt_logprobs]") {
  kernels::CpuBackend cpu;
  auto model = Model::Load("tests/data/models/llama", cpu);
  REQUIRE(model.ok());
  std::mt19937_64 rng(23);
  const std::vector<int32_t> gen_prompt = RandomPrompt(rng, 6, 256);
  const std::vector<int32_t> scored_prompt = RandomPrompt(rng, 40, 256);

  auto roomy = NewEngine(**model, cpu, {});
  Collector alone;
  Submit(*roomy, Score(scored_prompt, 3), alone);
  alone.Wait();
  RequireAllFree(*roomy);

  // 16 pages of 4 tokens. The generating request (older) grows to 64 tokens, all 16 pages; the
  // scoring one (40 tokens, 10 pages), admitted next and fed one token an iteration, is the
  // newest when the older needs a page: it is preempted mid-prompt and recomputed from token 0
  // once the older finishes, its computed blocks sitting in the prefix cache meanwhile.
  EngineOptions o;
  o.pages = 16;
  o.batched_tokens = 2;
  auto e = NewEngine(**model, cpu, o);
  Collector generating, scored;
  Submit(*e, Greedy(gen_prompt, 58), generating);
  Submit(*e, Score(scored_prompt, 3), scored);
  scored.Wait();
  generating.Wait();
  CHECK(e->stats().preemptions_total > 0);
  CHECK(scored.metrics().preemptions > 0);
  CHECK(scored.finish()[0] == FinishReason::kLength);
  const std::vector<PromptLogprob> got = scored.entries(), want = alone.entries();
  CheckPositions(got, scored_prompt.size());
  REQUIRE(want.size() == got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("position " << got[i].position);
    CHECK(got[i].token == want[i].token);
    CHECK(got[i].logprob == Approx(want[i].logprob).margin(1e-4));
    REQUIRE(got[i].top.size() == 3);
    for (size_t j = 0; j < 3; ++j) {
      CHECK(got[i].top[j].logprob == Approx(want[i].top[j].logprob).margin(1e-4));
    }
  }
  RequireAllFree(*e);
}

TEST_CASE("cancelling a request mid-score frees every page", "[engine][prompt_logprobs]") {
  kernels::CpuBackend cpu;
  auto model = Model::Load("models/tiny", cpu);
  REQUIRE(model.ok());
  EngineOptions o;
  o.block_size = 16;
  o.batched_tokens = 8;  // a 1,000-token prompt takes 125 iterations
  o.max_model_len = 1100;
  auto e = NewEngine(**model, cpu, o);
  std::mt19937_64 rng(5);
  Collector c;
  const Engine::Handle h = Submit(*e, Score(RandomPrompt(rng, 1000, 1206), 3), c);
  c.WaitForEntries(1);
  e->Cancel(h);
  c.Wait();
  CHECK(c.finish()[0] == FinishReason::kAbort);
  const std::vector<PromptLogprob> got = c.entries();
  CHECK(got.size() < 999);
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i].position == int64_t(i + 1));
  RequireAllFree(*e);
}

TEST_CASE("bad prompt_logprobs and score-only values are refused, naming the field",
          "[engine][prompt_logprobs]") {
  kernels::CpuBackend cpu;
  // A 10-token vocabulary: prompt_logprobs may not exceed it even under the cap of 20.
  auto spec = LoadHfConfig("tests/data/models/llama");
  REQUIRE(spec.ok());
  spec->vocab_size = 10;
  auto model = Model::Dummy(*spec, 3, cpu);
  REQUIRE(model.ok());
  EngineOptions o;
  o.max_model_len = 32;
  auto e = NewEngine(**model, cpu, o);
  auto refusal = [&](Request r) {
    r.callback = [](const StreamEvent&) {};
    const absl::Status s = e->Submit(std::move(r)).status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  CHECK_THAT(refusal(Score({1, 2}, -2)), Catch::StartsWith("prompt_logprobs"));
  CHECK_THAT(refusal(Score({1, 2}, 21)), Catch::StartsWith("prompt_logprobs"));
  CHECK_THAT(refusal(Score({1, 2}, 11)), Catch::StartsWith("prompt_logprobs") &&
                                             Catch::Contains("11") && Catch::Contains("10"));
  Request generating = Greedy({1, 2}, 2);
  generating.prompt_logprobs = 21;
  CHECK_THAT(refusal(generating), Catch::StartsWith("prompt_logprobs"));
  Request two = Score({1, 2}, 1);
  two.params.n = 2;
  CHECK_THAT(refusal(two), Catch::StartsWith("n "));
  // The context check counts no new tokens for a score-only request.
  CHECK_THAT(refusal(Score(std::vector<int32_t>(33, 1), 0)),
             Catch::Contains("33") && Catch::Contains("(0)") && Catch::Contains("32"));
  CHECK_THAT(refusal(Greedy(std::vector<int32_t>(32, 1), 1)), Catch::Contains("32"));

  // The largest accepted values: every token of the vocabulary as an alternative, a prompt of
  // the whole context.
  Collector whole;
  Submit(*e, Score(std::vector<int32_t>(32, 4), 10), whole);
  whole.Wait();
  const std::vector<PromptLogprob> got = whole.entries();
  CheckPositions(got, 32);
  double mass = 0;
  for (const TokenLogprob& t : got.back().top) mass += std::exp(double(t.logprob));
  CHECK(got.back().top.size() == 10);
  CHECK(mass == Approx(1.0).margin(1e-5));
  // A one-token prompt has nothing to score; it still finishes.
  Collector one;
  Submit(*e, Score({7}, 2), one);
  one.Wait();
  CHECK(one.entries().empty());
  CHECK(one.finish()[0] == FinishReason::kLength);

  // SubmitAll: all or none. A bad request is named by its index and nothing is queued; good
  // ones are taken together and scored in one pass.
  std::vector<Request> batch;
  batch.push_back(Score({1, 2, 3}, 1));
  batch.push_back(Score({1, 2}, 21));
  for (Request& r : batch) r.callback = [](const StreamEvent&) {};
  const int64_t before = e->stats().iterations;
  const absl::Status bad = e->SubmitAll(std::move(batch)).status();
  CHECK(bad.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(bad.message()), Catch::StartsWith("requests[1]: prompt_logprobs"));
  std::vector<Collector> collectors(3);
  std::vector<Request> good;
  for (int i = 0; i < 3; ++i) {
    good.push_back(Score({1, 2, 3, int32_t(4 + i)}, 2));
    good.back().callback = collectors[size_t(i)].Callback();
  }
  auto handles = e->SubmitAll(std::move(good));
  REQUIRE(handles.ok());
  CHECK(handles->size() == 3);
  for (int i = 0; i < 3; ++i) {
    collectors[size_t(i)].Wait();
    const std::vector<PromptLogprob> got = collectors[size_t(i)].entries();
    CheckPositions(got, 4);
    CHECK(got.back().token == 4 + i);
  }
  e->ClearPrefixCache();  // on the engine thread, after its last iteration
  CHECK(e->stats().iterations - before == 1);
  RequireAllFree(*e);
}

}  // namespace
}  // namespace arbor::engine
