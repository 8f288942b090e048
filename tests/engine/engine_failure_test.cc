// A device that fails mid-run (robustness case 17): the engine aborts every request, refuses new
// ones, reports the failure through Health(), and hands every page back.
#include <catch2/catch.hpp>
#include <condition_variable>
#include <mutex>

#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/faulty_backend.h"

namespace arbor::engine {
namespace {

struct Outcome {
  std::mutex mu;
  std::condition_variable cv;
  int64_t tokens = 0;
  std::optional<FinishReason> finish;
  std::string detail;

  StreamCallback Callback() {
    return [this](const StreamEvent& ev) {
      std::lock_guard<std::mutex> lock(mu);
      tokens += int64_t(ev.token_ids.size());
      if (ev.finish) {
        finish = ev.finish;
        detail = ev.finish_detail;
      }
      cv.notify_all();
    };
  }
  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(30), pred);
  }
};

// The tiny model and an engine on a FaultyBackend over the CPU backend.
struct Rig {
  testing::FaultyBackend device{std::make_unique<kernels::CpuBackend>()};
  std::unique_ptr<Model> model;
  std::unique_ptr<Engine> engine;
  explicit Rig(int64_t pages) {
    auto m = Model::Load("models/tiny", device);
    REQUIRE(m.ok());
    model = std::move(*m);
    EngineConfig c;
    c.num_pages = pages;
    c.max_model_len = 1100;
    auto e = Engine::Create(*model, device, nullptr, c);
    INFO(e.status().ToString());
    REQUIRE(e.ok());
    engine = std::move(*e);
  }
};

Request LongRequest(Outcome& out, int32_t first_token) {
  Request r;
  r.prompt = {first_token, 5, 6, 7, 8};
  r.params.max_tokens = 1000;
  r.params.ignore_eos = true;
  r.params.temperature = 0;
  r.callback = out.Callback();
  return r;
}

TEST_CASE("a device failure mid-decode aborts everything, sticks, and frees every page",
          "[engine]") {
  Rig rig(256);
  testing::FaultyBackend& device = rig.device;
  Engine& e = *rig.engine;
  REQUIRE(e.Health().ok());

  Outcome running, queued_behind;
  REQUIRE(e.Submit(LongRequest(running, 1)).ok());
  REQUIRE(running.WaitFor([&] { return running.tokens >= 5; }));
  REQUIRE(e.Submit(LongRequest(queued_behind, 2)).ok());
  device.Fail(absl::InternalError("injected: an illegal memory access was encountered"));

  REQUIRE(running.WaitFor([&] { return running.finish.has_value(); }));
  REQUIRE(queued_behind.WaitFor([&] { return queued_behind.finish.has_value(); }));
  CHECK(*running.finish == FinishReason::kAbort);
  CHECK(*queued_behind.finish == FinishReason::kAbort);
  CHECK(running.tokens < 1000);
  CHECK_THAT(running.detail, Catch::Contains("engine failure"));
  CHECK_THAT(running.detail, Catch::Contains("illegal memory access"));

  // Sticky: Health() says why, and new requests are refused rather than queued forever.
  const absl::Status health = e.Health();
  CHECK_FALSE(health.ok());
  CHECK_THAT(std::string(health.message()), Catch::Contains("illegal memory access"));
  Outcome late;
  const auto refused = e.Submit(LongRequest(late, 3));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == absl::StatusCode::kUnavailable);

  // Every KV page is back (the prefix cache may keep full blocks: drop it first).
  e.ClearPrefixCache();
  const EngineStats s = e.stats();
  CHECK(s.pages_kv == 0);
  CHECK(s.pages_free == s.pages_total);
  CHECK(s.running == 0);
  CHECK(s.waiting == 0);
}

TEST_CASE("a healthy engine reports ok after many steps on the same wrapper", "[engine]") {
  // The control: the wrapper itself changes nothing until told to fail.
  Rig rig(96);
  Outcome out;
  Request r = LongRequest(out, 1);
  r.params.max_tokens = 20;
  REQUIRE(rig.engine->Submit(std::move(r)).ok());
  REQUIRE(out.WaitFor([&] { return out.finish.has_value(); }));
  CHECK(*out.finish == FinishReason::kLength);
  CHECK(out.tokens == 20);
  CHECK(rig.engine->Health().ok());
  CHECK(rig.device.ops() > 0);
}

TEST_CASE("a failed copy-on-write aborts its request only, and its pages come back", "[engine]") {
  Rig rig(96);
  Engine& e = *rig.engine;
  // n = 2 over a 5-token prompt: the forks share the prompt's partial last block, so the first
  // decode step copies it for one of them. That copy fails.
  rig.device.FailCopiesOnDevice(true);
  Outcome forked, alone;
  Request r = LongRequest(forked, 1);
  r.params.n = 2;
  r.params.max_tokens = 20;
  std::vector<FinishReason> finishes;
  std::string detail;
  std::mutex mu;
  std::condition_variable cv;
  r.callback = [&](const StreamEvent& ev) {
    if (!ev.finish) return;
    std::lock_guard<std::mutex> lock(mu);
    finishes.push_back(*ev.finish);
    detail = ev.finish_detail;
    cv.notify_all();
  };
  REQUIRE(e.Submit(std::move(r)).ok());
  Request other = LongRequest(alone, 3);
  other.params.max_tokens = 20;
  REQUIRE(e.Submit(std::move(other)).ok());
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return finishes.size() == 2; }));
  }
  CHECK(finishes == std::vector<FinishReason>{FinishReason::kAbort, FinishReason::kAbort});
  CHECK_THAT(detail, Catch::Contains("copy-on-write"));
  // The other request needs no copy: it runs to its end, and the engine stays healthy.
  REQUIRE(alone.WaitFor([&] { return alone.finish.has_value(); }));
  CHECK(*alone.finish == FinishReason::kLength);
  CHECK(alone.tokens == 20);
  CHECK(e.Health().ok());
  rig.device.FailCopiesOnDevice(false);
  e.ClearPrefixCache();
  const EngineStats s = e.stats();
  CHECK(s.pages_kv == 0);
  CHECK(s.pages_free == s.pages_total);
}

TEST_CASE("after start-up, serving allocates no device memory", "[engine]") {
  Rig rig(256);
  Engine& e = *rig.engine;
  const int64_t at_start = rig.device.allocations();
  // The largest shapes the limits allow: a prompt chunked at max_num_batched_tokens... (the
  // rig's context is 1,100 tokens), n = 3 forks with penalties and log-probs, a scored prompt,
  // and a stop at max_tokens.
  Outcome long_prompt, forked, scored;
  Request a = LongRequest(long_prompt, 1);
  a.prompt.assign(1000, 9);
  a.params.max_tokens = 50;
  Request b = LongRequest(forked, 2);
  b.params.n = 3;
  b.params.max_tokens = 30;
  b.params.temperature = 0.8f;
  b.params.seed = 5;
  b.params.repetition_penalty = 1.2f;
  b.params.presence_penalty = 0.5f;
  b.params.logprobs = 5;
  Request c = LongRequest(scored, 3);
  c.prompt.assign(300, 4);
  c.prompt_logprobs = 3;
  c.params.max_tokens = 10;
  REQUIRE(e.Submit(std::move(a)).ok());
  REQUIRE(e.Submit(std::move(b)).ok());
  REQUIRE(e.Submit(std::move(c)).ok());
  REQUIRE(long_prompt.WaitFor([&] { return long_prompt.finish.has_value(); }));
  REQUIRE(scored.WaitFor([&] { return scored.finish.has_value(); }));
  REQUIRE(forked.WaitFor([&] { return forked.tokens == 90; }));
  CHECK(*long_prompt.finish == FinishReason::kLength);
  CHECK(rig.device.allocations() == at_start);
}

}  // namespace
}  // namespace arbor::engine
