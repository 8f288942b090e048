// Generation.Score over gRPC against the real ServerApp on loopback: text and token-id prompts,
// top_logprobs, PEFT's and transformers' log-softmax through an adapter and the base model,
// the error codes it shares with Complete, and the pool all free afterwards.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/time/clock.h"
#include "configs/embedded_default.h"
#include "engine/launch_config.h"
#include "proto/arbor.grpc.pb.h"
#include "server/app.h"
#include "tests/server/start_app.h"

namespace arbor::server {
namespace {

using testing::StartApp;
using testing::StartTinyApp;

std::unique_ptr<ServerApp> StartTiny(std::vector<std::string> extra = {}) {
  return StartTinyApp(std::move(extra));
}

// The llama fixture (no tokenizer) with its PEFT adapters registrable under the admin key.
std::unique_ptr<ServerApp> StartLlama(const std::string& pool_bytes) {
  return StartApp("",
                  {"model.path=tests/data/models/llama", "server.admin_key=root",
                   "server.adapter_root=tests/data/adapters", "engine.pool_bytes=" + pool_bytes});
}

// Registers tests/data/adapters/<path> as `name`, pinned (resident in the pool from now on);
// returns its pool pages.
int64_t Register(ServerApp& app, const std::string& name, const std::string& path) {
  auto admin = arbor::v1::Admin::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(app.grpc_port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer root");
  arbor::v1::RegisterAdapterRequest req;
  req.set_name(name);
  req.set_path(path);
  req.set_pin(true);
  arbor::v1::AdapterInfo info;
  const grpc::Status st = admin->RegisterAdapter(&ctx, req, &info);
  INFO(st.error_message());
  REQUIRE(st.ok());
  return info.pages();
}

std::unique_ptr<arbor::v1::Generation::Stub> Stub(ServerApp& app) {
  return arbor::v1::Generation::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(app.grpc_port()), grpc::InsecureChannelCredentials()));
}

struct Scored {
  grpc::Status status;
  arbor::v1::ScoreResponse response;
};

Scored CallScore(arbor::v1::Generation::Stub& gen, const arbor::v1::ScoreRequest& req,
                 const std::string& api_key = "") {
  grpc::ClientContext ctx;
  if (!api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + api_key);
  Scored out;
  out.status = gen.Score(&ctx, req, &out.response);
  return out;
}

arbor::v1::ScoreRequest ScoreIds(const std::string& model, const std::vector<int32_t>& ids,
                                 int32_t top) {
  arbor::v1::ScoreRequest req;
  req.set_model(model);
  for (int32_t id : ids) req.add_prompt_token_ids(id);
  req.set_top_logprobs(top);
  return req;
}

// The shape every Score reply has: one entry per prompt token, the first without a log-prob,
// `top` alternatives in descending order, and the total the sum of the log-probs.
void CheckShape(const arbor::v1::ScoreResponse& res, const std::vector<int32_t>& ids, int32_t top) {
  REQUIRE(res.prompt_logprobs_size() == int(ids.size()));
  CHECK(res.prompt_tokens() == int64_t(ids.size()));
  double total = 0;
  for (int i = 0; i < res.prompt_logprobs_size(); ++i) {
    INFO("position " << i);
    const arbor::v1::ScoredToken& t = res.prompt_logprobs(i);
    CHECK(t.token_id() == ids[size_t(i)]);
    if (i == 0) {
      CHECK_FALSE(t.has_logprob());
      CHECK(t.rank() == 0);
      CHECK(t.top_logprobs_size() == 0);
      continue;
    }
    CHECK(t.has_logprob());
    CHECK(t.logprob() <= 0.0f);
    CHECK(t.rank() >= 1);
    REQUIRE(t.top_logprobs_size() == top);
    // Listed at j among the alternatives: rank j + 1 (no two of them tie in these models).
    for (int j = 0; j < top; ++j) {
      if (t.top_logprobs(j).token_id() == t.token_id()) CHECK(t.rank() == j + 1);
    }
    for (int j = 1; j < top; ++j) {
      CHECK(t.top_logprobs(j - 1).logprob() >= t.top_logprobs(j).logprob());
    }
    // The token is among the alternatives exactly when it is at least as likely as the last.
    if (top > 0 && t.logprob() > t.top_logprobs(top - 1).logprob()) {
      const bool listed = std::any_of(t.top_logprobs().begin(), t.top_logprobs().end(),
                                      [&](const auto& a) { return a.token_id() == t.token_id(); });
      CHECK(listed);
    }
    total += double(t.logprob());
  }
  CHECK(res.total_logprob() == Approx(total).margin(1e-6));
}

// The engine frees pages within an iteration of a request's end: wait for nothing running, with
// the prefix cache dropped, and expect every KV page back in the pool. Stats are refreshed at the
// end of an engine iteration, after its events went out, so a client can finish before they show
// it; ClearPrefixCache runs on the engine thread and refreshes them, so each look is current.
void RequireAllFree(ServerApp& app) {
  engine::Engine& e = *app.context().engine;
  engine::EngineStats s;
  for (int i = 0; i < 500; ++i) {
    e.ClearPrefixCache();
    s = e.stats();
    if (s.running == 0 && s.waiting == 0 && s.pages_kv == 0) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  CHECK(s.running == 0);
  CHECK(s.waiting == 0);
  CHECK(s.pages_kv == 0);
  CHECK(s.pages_free + s.pages_adapter == s.pages_total);
}

TEST_CASE("Score: text and token-id prompts, top_logprobs, and the refusals", "[server][score]") {
  auto app = StartTiny();
  auto gen = Stub(*app);

  // The text is tokenized as Complete does: with the tokenizer's special tokens by default.
  auto tokenize = [&](bool special) {
    arbor::v1::TokenizeRequest req;
    req.set_model("tiny");
    req.set_text("In the beginning God created");
    req.set_add_special_tokens(special);
    arbor::v1::TokenizeResponse res;
    grpc::ClientContext ctx;
    REQUIRE(gen->Tokenize(&ctx, req, &res).ok());
    return std::vector<int32_t>(res.ids().begin(), res.ids().end());
  };
  const std::vector<int32_t> ids = tokenize(true), plain = tokenize(false);
  REQUIRE(ids.size() > plain.size());

  arbor::v1::ScoreRequest text;
  text.set_model("tiny");
  text.set_prompt("In the beginning God created");
  text.set_top_logprobs(3);
  const Scored by_text = CallScore(*gen, text);
  INFO(by_text.status.error_message());
  REQUIRE(by_text.status.ok());
  CHECK(by_text.response.model() == "tiny");
  CheckShape(by_text.response, ids, 3);
  for (const auto& t : by_text.response.prompt_logprobs()) CHECK_FALSE(t.token().empty());

  // The same ids sent as ids: the same log-probs.
  const Scored by_ids = CallScore(*gen, ScoreIds("tiny", ids, 3));
  REQUIRE(by_ids.status.ok());
  CheckShape(by_ids.response, ids, 3);
  for (size_t i = 1; i < ids.size(); ++i) {
    const auto& a = by_text.response.prompt_logprobs(int(i));
    const auto& b = by_ids.response.prompt_logprobs(int(i));
    CHECK(b.logprob() == Approx(a.logprob()).margin(1e-5));
    for (int j = 0; j < 3; ++j) {
      CHECK(b.top_logprobs(j).token_id() == a.top_logprobs(j).token_id());
      CHECK(b.top_logprobs(j).token() == a.top_logprobs(j).token());
    }
  }

  // Without special tokens; with no alternatives.
  text.set_add_special_tokens(false);
  text.set_top_logprobs(0);
  const Scored no_bos = CallScore(*gen, text);
  REQUIRE(no_bos.status.ok());
  CheckShape(no_bos.response, plain, 0);

  // Refusals, each naming what is wrong; the server keeps serving.
  auto refused = [&](const arbor::v1::ScoreRequest& req, grpc::StatusCode code,
                     const std::string& mention) {
    const Scored r = CallScore(*gen, req);
    CHECK(r.status.error_code() == code);
    CHECK_THAT(r.status.error_message(), Catch::Contains(mention));
  };
  arbor::v1::ScoreRequest both = ScoreIds("tiny", ids, 1);
  both.set_prompt("x");
  refused(both, grpc::StatusCode::INVALID_ARGUMENT, "not both");
  refused(ScoreIds("tiny", {}, 1), grpc::StatusCode::INVALID_ARGUMENT, "prompt");
  refused(ScoreIds("tiny", ids, 21), grpc::StatusCode::INVALID_ARGUMENT, "top_logprobs");
  refused(ScoreIds("tiny", ids, -1), grpc::StatusCode::INVALID_ARGUMENT, "top_logprobs");
  refused(ScoreIds("nope", ids, 1), grpc::StatusCode::NOT_FOUND,
          "The model `nope` does not exist.");
  refused(ScoreIds("tiny", {1, 5000}, 1), grpc::StatusCode::INVALID_ARGUMENT, "5000");
  // Longer than the context: the prompt and the context length named.
  const int64_t max_len = app->context().max_model_len;
  const std::vector<int32_t> too_long(size_t(max_len + 1), 7);
  refused(ScoreIds("tiny", too_long, 0), grpc::StatusCode::INVALID_ARGUMENT,
          std::to_string(max_len + 1) + " tokens");
  refused(ScoreIds("tiny", too_long, 0), grpc::StatusCode::INVALID_ARGUMENT,
          "context length " + std::to_string(max_len));
  // A prompt of exactly the context length is scored: nothing is generated after it.
  const Scored whole =
      CallScore(*gen, ScoreIds("tiny", std::vector<int32_t>(size_t(max_len), 9), 1));
  INFO(whole.status.error_message());
  CHECK(whole.status.ok());

  // Counted like other requests: finished with reason "length", no first token observed.
  httplib::Client http("127.0.0.1", app->http_port());
  auto metrics = http.Get("/metrics");
  REQUIRE(metrics);
  CHECK_THAT(metrics->body,
             Catch::Contains("arbor:request_success_total{finished_reason=\"length\"} 4"));
  CHECK_THAT(metrics->body, Catch::Contains("arbor:time_to_first_token_seconds_count 0"));
  CHECK_THAT(metrics->body, Catch::Contains("arbor:request_rejected_total{code=\"400\"} 7"));
  CHECK_THAT(metrics->body, Catch::Contains("arbor:request_rejected_total{code=\"404\"} 1"));
  RequireAllFree(*app);
}

std::vector<double> LogSoftmax(const std::vector<double>& x) {
  const double max = *std::max_element(x.begin(), x.end());
  double sum = 0;
  for (double v : x) sum += std::exp(v - max);
  std::vector<double> out;
  for (double v : x) out.push_back(v - max - std::log(sum));
  return out;
}

// Every prompt of `reference_json` (ids and the reference's fp32 logits at every position)
// scored through `model`: each log-prob and alternative within 2e-4 of the row's largest
// |logit| of the log-softmax of the reference logits (the engine's prompt log-probs test holds
// the same bound).
void CheckReference(arbor::v1::Generation::Stub& gen, const std::string& model,
                    const std::string& reference_json) {
  INFO("model " << model << " against " << reference_json);
  std::ifstream in(reference_json);
  REQUIRE(in);
  const auto ref = nlohmann::json::parse(in);
  for (const auto& p : ref["prompts"]) {
    const auto ids = p["ids"].get<std::vector<int32_t>>();
    const auto logits = p["logits"].get<std::vector<std::vector<double>>>();
    const Scored r = CallScore(gen, ScoreIds(model, ids, 4));
    INFO(r.status.error_message());
    REQUIRE(r.status.ok());
    CheckShape(r.response, ids, 4);
    int bad = 0;
    for (size_t i = 1; i < ids.size(); ++i) {
      const std::vector<double> want = LogSoftmax(logits[i - 1]);
      double scale = 1;
      for (double v : logits[i - 1]) scale = std::max(scale, std::fabs(v));
      const auto& t = r.response.prompt_logprobs(int(i));
      if (!(std::fabs(t.logprob() - want[size_t(ids[i])]) <= 2e-4 * scale)) ++bad;
      for (const auto& a : t.top_logprobs()) {
        if (!(std::fabs(a.logprob() - want[size_t(a.token_id())]) <= 2e-4 * scale)) ++bad;
      }
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("Score through an adapter matches PEFT, and the base model transformers",
          "[server][score]") {
  auto app = StartLlama("16777216");
  auto gen = Stub(*app);
  Register(*app, "all", "llama-lora-all");
  CheckReference(*gen, "all", "tests/data/adapters/llama-lora-all/reference.json");
  CheckReference(*gen, "arbor", "tests/data/models/llama/reference.json");  // the default name
  // This model has no tokenizer: text prompts are refused, naming the field to use.
  arbor::v1::ScoreRequest text;
  text.set_model("all");
  text.set_prompt("hello");
  const Scored r = CallScore(*gen, text);
  CHECK(r.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(r.status.error_message(), Catch::Contains("prompt_token_ids"));
  CHECK(CallScore(*gen, ScoreIds("qv", {1, 2}, 0)).status.error_code() ==
        grpc::StatusCode::NOT_FOUND);
  RequireAllFree(*app);
}

TEST_CASE("Score: API key, readiness and the concurrency limit, as Complete", "[server][score]") {
  auto app = StartTiny({"server.api_key=sekret", "server.max_concurrent_requests=1"});
  auto gen = Stub(*app);
  const arbor::v1::ScoreRequest req = ScoreIds("tiny", {1, 2, 3}, 1);
  CHECK(CallScore(*gen, req).status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(CallScore(*gen, req, "nope").status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(CallScore(*gen, req, "sekret").status.ok());

  // One generation stream in flight takes the only slot.
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer sekret");
    arbor::v1::CompletionRequest creq;
    creq.set_model("tiny");
    creq.set_text("x");
    creq.mutable_sampling()->set_max_tokens(2000);
    creq.mutable_sampling()->set_ignore_eos(true);
    auto reader = gen->Complete(&ctx, creq);
    arbor::v1::CompletionChunk chunk;
    REQUIRE(reader->Read(&chunk));
    const Scored busy = CallScore(*gen, req, "sekret");
    CHECK(busy.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    CHECK_THAT(busy.status.error_message(), Catch::Contains("max_concurrent_requests"));
    ctx.TryCancel();
    while (reader->Read(&chunk)) {
    }
    CHECK(reader->Finish().error_code() == grpc::StatusCode::CANCELLED);
  }
  RequireAllFree(*app);
  app->context().state.set_phase(Phase::kDraining);
  CHECK(CallScore(*gen, req, "sekret").status.error_code() == grpc::StatusCode::UNAVAILABLE);
}

TEST_CASE("Score: a deadline or a cancel aborts the request and frees its pages",
          "[server][score]") {
  // 34 pages of 16 tokens (8 KiB each for this model); an adapter takes some of them, so a
  // 512-token Score (32 pages) waits for pages for as long as its call lasts.
  auto app = StartLlama(std::to_string(34 * 8192));
  const int64_t adapter_pages = Register(*app, "all", "llama-lora-all");
  REQUIRE(app->context().engine->stats().pages_total == 34);
  REQUIRE(adapter_pages >= 3);
  auto gen = Stub(*app);

  // Waits until the engine holds `n` waiting requests: 1 once the Score is queued, 0 once the
  // engine has aborted it.
  auto wait_queued = [&](int64_t n) {
    for (int i = 0; i < 1000 && app->context().engine->stats().waiting != n; ++i) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    return app->context().engine->stats().waiting == n;
  };
  const arbor::v1::ScoreRequest req = ScoreIds("arbor", std::vector<int32_t>(512, 5), 2);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    arbor::v1::ScoreResponse res;
    grpc::Status st;
    std::thread call([&] { st = gen->Score(&ctx, req, &res); });
    const bool queued = wait_queued(1);
    call.join();
    CHECK(queued);
    CHECK(st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
    CHECK(wait_queued(0));
  }
  {
    grpc::ClientContext ctx;
    arbor::v1::ScoreResponse res;
    grpc::Status st;
    std::thread call([&] { st = gen->Score(&ctx, req, &res); });
    const bool queued = wait_queued(1);
    ctx.TryCancel();
    call.join();
    CHECK(queued);
    CHECK(st.error_code() == grpc::StatusCode::CANCELLED);
    CHECK(wait_queued(0));
  }
  const engine::EngineStats s = app->context().engine->stats();
  CHECK(s.requests_aborted == 2);
  CHECK(s.requests_finished == 0);
  CHECK(s.pages_adapter == adapter_pages);
  RequireAllFree(*app);
}

struct ScoredBatch {
  grpc::Status status;
  arbor::v1::ScoreBatchResponse response;
};

ScoredBatch CallScoreBatch(arbor::v1::Generation::Stub& gen,
                           const arbor::v1::ScoreBatchRequest& req) {
  grpc::ClientContext ctx;
  ScoredBatch out;
  out.status = gen.ScoreBatch(&ctx, req, &out.response);
  return out;
}

arbor::v1::ScoreBatchRequest BatchOfIds(const std::string& model,
                                        const std::vector<std::vector<int32_t>>& prompts,
                                        int32_t top) {
  arbor::v1::ScoreBatchRequest req;
  req.set_model(model);
  req.set_top_logprobs(top);
  for (const auto& ids : prompts) {
    auto* p = req.add_prompts()->mutable_token_ids();
    for (int32_t id : ids) p->add_ids(id);
  }
  return req;
}

// A ScoreBatch result against the same prompt's own Score: the same tokens, log-probs, ranks
// and alternatives.
void CheckSameAsScore(const arbor::v1::ScoreResponse& got, const arbor::v1::ScoreResponse& want) {
  CHECK(got.model() == want.model());
  CHECK(got.prompt_tokens() == want.prompt_tokens());
  CHECK(got.total_logprob() == Approx(want.total_logprob()).margin(1e-4));
  REQUIRE(got.prompt_logprobs_size() == want.prompt_logprobs_size());
  for (int i = 0; i < got.prompt_logprobs_size(); ++i) {
    INFO("position " << i);
    const auto& a = got.prompt_logprobs(i);
    const auto& b = want.prompt_logprobs(i);
    CHECK(a.token_id() == b.token_id());
    CHECK(a.token() == b.token());
    CHECK(a.has_logprob() == b.has_logprob());
    CHECK(a.logprob() == Approx(b.logprob()).margin(1e-5));
    CHECK(a.rank() == b.rank());
    REQUIRE(a.top_logprobs_size() == b.top_logprobs_size());
    for (int j = 0; j < a.top_logprobs_size(); ++j) {
      CHECK(a.top_logprobs(j).token_id() == b.top_logprobs(j).token_id());
      CHECK(a.top_logprobs(j).logprob() == Approx(b.top_logprobs(j).logprob()).margin(1e-5));
    }
  }
}

// The engine's forward passes so far, read on its thread after its last iteration.
int64_t Iterations(ServerApp& app) {
  app.context().engine->ClearPrefixCache();
  return app.context().engine->stats().iterations;
}

TEST_CASE("ScoreBatch: many prompts in one call, in one forward pass, as Score scores each",
          "[server][score]") {
  auto app = StartTiny();
  auto gen = Stub(*app);
  arbor::v1::ScoreBatchRequest req;
  req.set_model("tiny");
  req.set_top_logprobs(3);
  const std::vector<std::string> texts = {"In the beginning God created", "the heaven",
                                          "and the earth. And the earth was without form"};
  for (const std::string& t : texts) req.add_prompts()->set_text(t);
  const std::vector<int32_t> ids = {1, 40, 41, 42, 43, 44, 45};
  for (int32_t id : ids) req.mutable_prompts(1)->mutable_token_ids()->add_ids(id);  // ids now
  // Each prompt alone first, for the reference.
  std::vector<arbor::v1::ScoreResponse> alone;
  for (int i = 0; i < req.prompts_size(); ++i) {
    arbor::v1::ScoreRequest one;
    one.set_model("tiny");
    one.set_top_logprobs(3);
    if (req.prompts(i).has_token_ids()) {
      for (int32_t id : ids) one.add_prompt_token_ids(id);
    } else {
      one.set_prompt(req.prompts(i).text());
    }
    const Scored s = CallScore(*gen, one);
    REQUIRE(s.status.ok());
    alone.push_back(s.response);
  }
  const int64_t before = Iterations(*app);
  const ScoredBatch batch = CallScoreBatch(*gen, req);
  INFO(batch.status.error_message());
  REQUIRE(batch.status.ok());
  // Submitted together: one pass scored every prompt.
  CHECK(Iterations(*app) - before == 1);
  CHECK(batch.response.model() == "tiny");
  REQUIRE(batch.response.results_size() == 3);
  int64_t tokens = 0;
  for (int i = 0; i < 3; ++i) {
    INFO("prompt " << i);
    CheckSameAsScore(batch.response.results(i), alone[size_t(i)]);
    tokens += batch.response.results(i).prompt_tokens();
  }
  CHECK(batch.response.prompt_tokens() == tokens);
  CHECK(batch.response.results(1).prompt_tokens() == int64_t(ids.size()));

  // Refusals name the prompt and the field; nothing runs.
  auto refused = [&](const arbor::v1::ScoreBatchRequest& bad, grpc::StatusCode code,
                     const std::vector<std::string>& mentions) {
    const int64_t at = Iterations(*app);
    const ScoredBatch r = CallScoreBatch(*gen, bad);
    CHECK(r.status.error_code() == code);
    for (const std::string& m : mentions) CHECK_THAT(r.status.error_message(), Catch::Contains(m));
    CHECK(Iterations(*app) == at);
  };
  refused(BatchOfIds("tiny", {}, 1), grpc::StatusCode::INVALID_ARGUMENT, {"prompts", "at least"});
  refused(BatchOfIds("nope", {ids}, 1), grpc::StatusCode::NOT_FOUND, {"nope"});
  refused(BatchOfIds("tiny", {ids}, 21), grpc::StatusCode::INVALID_ARGUMENT, {"top_logprobs"});
  refused(BatchOfIds("tiny", {ids, {1, 5000}}, 1), grpc::StatusCode::INVALID_ARGUMENT,
          {"prompts[1]", "5000"});
  const int64_t max_len = app->context().max_model_len;
  refused(BatchOfIds("tiny", {std::vector<int32_t>(size_t(max_len + 1), 7), ids}, 0),
          grpc::StatusCode::INVALID_ARGUMENT, {"prompts[0]", "context length"});
  arbor::v1::ScoreBatchRequest unset = BatchOfIds("tiny", {ids}, 0);
  unset.add_prompts();
  refused(unset, grpc::StatusCode::INVALID_ARGUMENT, {"prompts[1]", "text or token_ids"});
  arbor::v1::ScoreBatchRequest empty_text = BatchOfIds("tiny", {ids}, 0);
  empty_text.add_prompts()->set_text("");
  refused(empty_text, grpc::StatusCode::INVALID_ARGUMENT, {"prompts[1]"});
  refused(BatchOfIds("tiny", std::vector<std::vector<int32_t>>(1025, ids), 0),
          grpc::StatusCode::INVALID_ARGUMENT, {"at most 1024"});
  RequireAllFree(*app);
}

TEST_CASE("ScoreBatch under an adapter: every prompt through it, as Score", "[server][score]") {
  auto app = StartLlama("16777216");
  auto gen = Stub(*app);
  Register(*app, "all", "llama-lora-all");
  std::ifstream in("tests/data/adapters/llama-lora-all/reference.json");
  REQUIRE(in);
  const auto ref = nlohmann::json::parse(in);
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : ref["prompts"]) {
    prompts.push_back(p["ids"].get<std::vector<int32_t>>());
  }
  REQUIRE(prompts.size() >= 2);
  const ScoredBatch batch = CallScoreBatch(*gen, BatchOfIds("all", prompts, 4));
  INFO(batch.status.error_message());
  REQUIRE(batch.status.ok());
  REQUIRE(batch.response.results_size() == int(prompts.size()));
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("prompt " << i);
    const Scored alone = CallScore(*gen, ScoreIds("all", prompts[i], 4));
    REQUIRE(alone.status.ok());
    CheckShape(batch.response.results(int(i)), prompts[i], 4);
    CheckSameAsScore(batch.response.results(int(i)), alone.response);
  }
  // The base model's scores differ: the adapter was applied.
  const ScoredBatch base = CallScoreBatch(*gen, BatchOfIds("arbor", prompts, 0));
  REQUIRE(base.status.ok());
  CHECK(base.response.results(0).total_logprob() != batch.response.results(0).total_logprob());
  RequireAllFree(*app);
}

// The SSE body's JSON chunks, in order (keys as sent).
std::vector<nlohmann::ordered_json> SseChunks(const std::string& body) {
  std::vector<nlohmann::ordered_json> chunks;
  size_t at = 0;
  while ((at = body.find("data: {", at)) != std::string::npos) {
    const size_t end = body.find("\n\n", at);
    chunks.push_back(nlohmann::ordered_json::parse(body.substr(at + 6, end - at - 6)));
    at = end;
  }
  return chunks;
}

// OpenAI's legacy echo on /v1/completions: the prompt leads the text, and with logprobs its
// tokens lead the logprobs, the first with nulls; the prompt's log-probs are the Score RPC's.
TEST_CASE("HTTP completions echo: prompt log-probs as Score's, JSON and stream",
          "[server][score]") {
  auto app = StartTiny();
  const std::vector<int32_t> ids = {1, 40, 41, 42, 43, 44, 45};
  const Scored scored = CallScore(*Stub(*app), ScoreIds("tiny", ids, 2));
  REQUIRE(scored.status.ok());
  httplib::Client http("127.0.0.1", app->http_port());
  nlohmann::json body = {{"model", "tiny"},  {"prompt", ids}, {"max_tokens", 3},
                         {"temperature", 0}, {"echo", true},  {"logprobs", 2}};
  auto res = http.Post("/v1/completions", body.dump(), "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const auto j = nlohmann::json::parse(res->body);
  const auto& choice = j["choices"][0];
  const auto& lp = choice["logprobs"];
  REQUIRE(lp["tokens"].size() == ids.size() + 3);
  CHECK(lp["token_logprobs"][0].is_null());
  CHECK(lp["top_logprobs"][0].is_null());
  for (size_t i = 1; i < ids.size(); ++i) {
    INFO("prompt position " << i);
    const auto& want = scored.response.prompt_logprobs(int(i));
    CHECK(lp["token_logprobs"][i].get<double>() == Approx(want.logprob()).margin(1e-5));
    CHECK(lp["top_logprobs"][i].size() <= 2);
  }
  const std::string text = choice["text"];
  const std::string prompt_text = *app->context().tokenizer->Decode(ids, false);
  CHECK(text.rfind(prompt_text, 0) == 0);  // the prompt leads
  CHECK(j["usage"]["prompt_tokens"] == ids.size());
  CHECK(j["usage"]["completion_tokens"] == 3);
  // The same generation without echo: the generated part is unchanged.
  body["echo"] = false;
  auto plain = http.Post("/v1/completions", body.dump(), "application/json");
  REQUIRE(plain);
  CHECK(prompt_text + nlohmann::json::parse(plain->body)["choices"][0]["text"].get<std::string>() ==
        text);

  // Streamed: one chunk echoes the prompt (text and log-probs) before the first token.
  body["echo"] = true;
  body["stream"] = true;
  auto streamed = http.Post("/v1/completions", body.dump(), "application/json");
  REQUIRE(streamed);
  REQUIRE(streamed->status == 200);
  const auto chunks = SseChunks(streamed->body);
  REQUIRE(chunks.size() >= 2);
  const auto& first = chunks[0]["choices"][0];
  CHECK(first["text"] == prompt_text);
  REQUIRE(first["logprobs"]["token_logprobs"].size() == ids.size());
  CHECK(first["logprobs"]["token_logprobs"][0].is_null());
  CHECK(first["logprobs"]["token_logprobs"][ids.size() - 1].get<double>() ==
        Approx(scored.response.prompt_logprobs(int(ids.size()) - 1).logprob()).margin(1e-5));
  std::string joined;
  for (const auto& c : chunks) joined += c["choices"][0]["text"].get<std::string>();
  CHECK(joined == text);
  RequireAllFree(*app);
}

// vLLM's prompt_logprobs of `ids` (as text: the body as sent) against Score's: one entry per
// token, null first; each dict the prompt token first (key order kept), its log-prob Score's
// and its rank 1 + the alternatives above it, then Score's top `k` not already listed with
// ranks 1..k.
void CheckPromptLogprobs(const std::string& text, const std::vector<int32_t>& ids,
                         const arbor::v1::ScoreResponse& scored, int k) {
  const auto j = nlohmann::ordered_json::parse(text);
  REQUIRE(j.is_array());
  REQUIRE(j.size() == ids.size());
  CHECK(j[0].is_null());
  for (size_t i = 1; i < ids.size(); ++i) {
    INFO("position " << i);
    const auto& entry = j[i];
    REQUIRE(entry.is_object());
    const auto& want = scored.prompt_logprobs(int(i));
    const std::string key = std::to_string(ids[i]);
    REQUIRE(entry.begin().key() == key);  // the prompt token leads
    const auto& self = entry[key];
    CHECK(self["logprob"].get<double>() == Approx(want.logprob()).margin(1e-5));
    CHECK(self["decoded_token"] == want.token());
    int above = 0;  // Score's alternatives strictly more likely than the token
    for (const auto& a : want.top_logprobs()) above += a.logprob() > want.logprob();
    if (above < want.top_logprobs_size()) {
      CHECK(self["rank"] == 1 + above);  // inside the listed alternatives: exact
    } else {
      CHECK(self["rank"].get<int>() > above);
    }
    size_t listed = 1;
    for (int r = 0; r < k; ++r) {
      const auto& alt = want.top_logprobs(r);
      const std::string id = std::to_string(alt.token_id());
      REQUIRE(entry.contains(id));
      if (id == key) continue;
      ++listed;
      CHECK(entry[id]["rank"] == r + 1);
      CHECK(entry[id]["logprob"].get<double>() == Approx(alt.logprob()).margin(1e-5));
      CHECK(entry[id]["decoded_token"] == alt.token());
    }
    CHECK(entry.size() == listed);
  }
}

// vLLM's prompt_logprobs on /v1/completions (on each choice) and /v1/chat/completions (beside the
// choices): the values of Score, with n > 1, with echo, and streamed (in each choice's first
// chunk; vLLM itself refuses prompt_logprobs > 0 with stream).
TEST_CASE("HTTP prompt_logprobs: completions and chat, JSON and stream", "[server][score]") {
  auto app = StartTiny();
  auto gen = Stub(*app);
  httplib::Client http("127.0.0.1", app->http_port());
  auto post = [&](const std::string& path, const nlohmann::json& body) {
    auto res = http.Post(path.c_str(), body.dump(), "application/json");
    REQUIRE(res);
    INFO(res->body);
    REQUIRE(res->status == 200);
    return res->body;
  };
  const std::vector<int32_t> ids = {1, 40, 41, 42, 43, 44, 45};
  const Scored score = CallScore(*gen, ScoreIds("tiny", ids, 5));
  REQUIRE(score.status.ok());
  const arbor::v1::ScoreResponse& scored = score.response;

  // n = 2: both choices carry the prompt's log-probs; the generation is unchanged.
  nlohmann::json body = {{"model", "tiny"},  {"prompt", ids}, {"max_tokens", 3},
                         {"temperature", 0}, {"n", 2},        {"prompt_logprobs", 2}};
  const auto j = nlohmann::ordered_json::parse(post("/v1/completions", body));
  REQUIRE(j["choices"].size() == 2);
  for (const auto& c : j["choices"]) {
    CheckPromptLogprobs(c["prompt_logprobs"].dump(), ids, scored, 2);
  }
  CHECK(j["choices"][0]["text"] == j["choices"][1]["text"]);
  CHECK(j["choices"][0].find("logprobs") != j["choices"][0].end());
  CHECK(j["choices"][0]["logprobs"].is_null());
  // 0: the prompt token alone.
  body["prompt_logprobs"] = 0;
  body["n"] = 1;
  const auto zero = nlohmann::ordered_json::parse(post("/v1/completions", body));
  CheckPromptLogprobs(zero["choices"][0]["prompt_logprobs"].dump(), ids, scored, 0);
  // Not asked: no field.
  body.erase("prompt_logprobs");
  const auto none = nlohmann::json::parse(post("/v1/completions", body));
  CHECK_FALSE(none["choices"][0].contains("prompt_logprobs"));

  // With echo and logprobs 1: echo shows one alternative per prompt token, prompt_logprobs 4.
  body = {{"model", "tiny"}, {"prompt", ids}, {"max_tokens", 0},
          {"echo", true},    {"logprobs", 1}, {"prompt_logprobs", 4}};
  const auto echoed = nlohmann::ordered_json::parse(post("/v1/completions", body));
  const auto& ec = echoed["choices"][0];
  CheckPromptLogprobs(ec["prompt_logprobs"].dump(), ids, scored, 4);
  REQUIRE(ec["logprobs"]["top_logprobs"].size() == ids.size());
  for (size_t i = 1; i < ids.size(); ++i) CHECK(ec["logprobs"]["top_logprobs"][i].size() == 1);
  CHECK(ec["finish_reason"] == "length");

  // Streamed, n = 2: each choice's first chunk carries them (the echo chunk when echoing), no
  // other chunk does.
  for (const bool echo : {false, true}) {
    INFO("echo " << echo);
    body = {{"model", "tiny"}, {"prompt", ids},  {"max_tokens", 3}, {"temperature", 0},
            {"n", 2},          {"stream", true}, {"echo", echo},    {"prompt_logprobs", 3}};
    const auto chunks = SseChunks(post("/v1/completions", body));
    std::vector<int> seen(2, 0), with(2, 0);
    for (const auto& c : chunks) {
      if (c["choices"].empty()) continue;
      const auto& choice = c["choices"][0];
      const int index = choice["index"];
      if (choice.contains("prompt_logprobs")) {
        CHECK(seen[size_t(index)] == 0);
        ++with[size_t(index)];
        CheckPromptLogprobs(choice["prompt_logprobs"].dump(), ids, scored, 3);
      }
      ++seen[size_t(index)];
    }
    CHECK(with == std::vector<int>{1, 1});
  }

  // Chat: once, beside the choices (vLLM's ChatCompletionResponse.prompt_logprobs).
  const nlohmann::json messages = {{{"role", "user"}, {"content", "In the beginning"}}};
  nlohmann::json chat = {{"model", "tiny"}, {"messages", messages},
                         {"max_tokens", 2}, {"temperature", 0},
                         {"n", 2},          {"prompt_logprobs", 2}};
  const auto cj = nlohmann::ordered_json::parse(post("/v1/chat/completions", chat));
  const auto& plp = cj["prompt_logprobs"];
  REQUIRE(plp.is_array());
  REQUIRE(plp.size() == cj["usage"]["prompt_tokens"].get<size_t>());
  CHECK(plp[0].is_null());
  std::vector<int32_t> chat_ids;  // the templated prompt, read back from the entries' keys
  chat_ids.push_back(-1);
  for (size_t i = 1; i < plp.size(); ++i) {
    REQUIRE(plp[i].is_object());
    chat_ids.push_back(std::stoi(plp[i].begin().key()));
    CHECK(plp[i].size() >= 2);
    CHECK(plp[i].size() <= 3);
  }
  for (const auto& c : cj["choices"]) CHECK_FALSE(c.contains("prompt_logprobs"));
  chat["stream"] = true;
  int chunks_with = 0;
  for (const auto& c : SseChunks(post("/v1/chat/completions", chat))) {
    if (!c.contains("prompt_logprobs")) continue;
    ++chunks_with;
    CHECK(c["prompt_logprobs"] == plp);
  }
  CHECK(chunks_with == 1);
  RequireAllFree(*app);
}

TEST_CASE("HTTP prompt_logprobs: bad values are 400s naming the field", "[server][score]") {
  auto app = StartTiny();
  httplib::Client http("127.0.0.1", app->http_port());
  const nlohmann::json messages = {{{"role", "user"}, {"content", "hi"}}};
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    for (const nlohmann::json& bad :
         {nlohmann::json("2"), nlohmann::json(2.5), nlohmann::json(true), nlohmann::json(-1),
          nlohmann::json(-3), nlohmann::json(21), nlohmann::json::array({1})}) {
      INFO(path << " prompt_logprobs " << bad.dump());
      nlohmann::json body = {{"model", "tiny"}, {"prompt_logprobs", bad}, {"max_tokens", 2}};
      if (std::string(path) == "/v1/completions") {
        body["prompt"] = "hello";
      } else {
        body["messages"] = messages;
      }
      auto res = http.Post(path, body.dump(), "application/json");
      REQUIRE(res);
      CHECK(res->status == 400);
      const auto err = nlohmann::json::parse(res->body)["error"];
      CHECK(err["param"] == "prompt_logprobs");
      CHECK_THAT(err["message"].get<std::string>(), Catch::Contains("prompt_logprobs"));
      if (bad == nlohmann::json(-1)) {
        CHECK_THAT(err["message"].get<std::string>(), Catch::Contains("whole vocabulary"));
      }
    }
  }
  RequireAllFree(*app);
}

}  // namespace
}  // namespace arbor::server
