// Starts the real ServerApp on loopback ports picked by the OS and talks to it over HTTP
// (cpp-httplib's client) and gRPC (the generated stub).
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/time/clock.h"
#include "configs/embedded_default.h"
#include "engine/launch_config.h"
#include "proto/arbor.grpc.pb.h"
#include "server/app.h"

namespace arbor::server {
namespace {

std::unique_ptr<ServerApp> StartOnFreePorts() {
  auto config = engine::ParseLaunchConfig(
      configs::kEmbeddedDefaultYaml, "embedded",
      {"server.http_port=0", "server.grpc_port=0", "device=cpu", "log_level=warn",
       "model.path=tests/data/models/llama", "model.served_model_name=tiny"});
  REQUIRE(config.ok());
  auto app = ServerApp::Start(*config);
  REQUIRE(app.ok());
  return std::move(*app);
}

TEST_CASE("HTTP: /health, /v1/models and OpenAI-shaped errors", "[server]") {
  auto app = StartOnFreePorts();
  httplib::Client http("127.0.0.1", app->http_port());

  auto health = http.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(nlohmann::json::parse(health->body)["status"] == "ok");

  auto models = http.Get("/v1/models");
  REQUIRE(models);
  CHECK(models->status == 200);
  const auto body = nlohmann::json::parse(models->body);
  CHECK(body["object"] == "list");
  REQUIRE(body["data"].size() == 1);
  CHECK(body["data"][0]["id"] == "tiny");
  CHECK(body["data"][0]["object"] == "model");
  CHECK(body["data"][0]["max_model_len"] == 512);

  auto missing = http.Get("/v1/nothing-here");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  const auto err = nlohmann::json::parse(missing->body);
  CHECK(err["error"]["code"] == 404);
  CHECK(err["error"]["type"] == "not_found_error");
  CHECK(err["error"]["message"].get<std::string>().find("/v1/nothing-here") != std::string::npos);
}

TEST_CASE("HTTP: a body over the limit gets 413 with an error body", "[server]") {
  auto app = StartOnFreePorts();
  httplib::Client http("127.0.0.1", app->http_port());
  const std::string big(9 << 20, 'x');
  auto res = http.Post("/v1/models", big, "application/json");
  REQUIRE(res);
  CHECK(res->status == 413);
  // The server keeps serving.
  auto health = http.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
}

TEST_CASE("gRPC: Health, ServerInfo and ListModels", "[server]") {
  auto app = StartOnFreePorts();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(app->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto admin = arbor::v1::Admin::NewStub(channel);
  auto generation = arbor::v1::Generation::NewStub(channel);

  {
    grpc::ClientContext ctx;
    arbor::v1::HealthResponse res;
    REQUIRE(admin->Health(&ctx, {}, &res).ok());
    CHECK(res.status() == arbor::v1::HealthResponse::SERVING);
  }
  {
    grpc::ClientContext ctx;
    arbor::v1::ServerInfoResponse res;
    REQUIRE(admin->ServerInfo(&ctx, {}, &res).ok());
    CHECK(res.backend() == "cpu");
    CHECK(res.served_model_name() == "tiny");
    CHECK(res.effective_config_yaml().find("grpc_port: 0") != std::string::npos);
    CHECK(res.model_architecture() == "LlamaForCausalLM");
    CHECK(res.max_model_len() == 512);
  }
  {
    grpc::ClientContext ctx;
    arbor::v1::ListModelsResponse res;
    REQUIRE(generation->ListModels(&ctx, {}, &res).ok());
    REQUIRE(res.data_size() == 1);
    CHECK(res.data(0).id() == "tiny");
  }
}

TEST_CASE("health turns 503 once shutdown begins", "[server]") {
  auto app = StartOnFreePorts();
  app->context().state.set_phase(Phase::kDraining);
  httplib::Client http("127.0.0.1", app->http_port());
  auto health = http.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 503);
  CHECK(nlohmann::json::parse(health->body)["error"]["code"] == 503);
}

TEST_CASE("a port already in use is a clear start-up error", "[server]") {
  auto first = StartOnFreePorts();
  auto config = engine::ParseLaunchConfig("", "test",
                                          {"server.http_port=" + std::to_string(first->http_port()),
                                           "device=cpu", "model.path=tests/data/models/llama"});
  REQUIRE(config.ok());
  auto second = ServerApp::Start(*config);
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(second.status().message()).find("http: cannot listen") != std::string::npos);

  auto grpc_clash = engine::ParseLaunchConfig(
      "", "test",
      {"server.http_port=0", "server.grpc_port=" + std::to_string(first->grpc_port()), "device=cpu",
       "model.path=tests/data/models/llama"});
  REQUIRE(grpc_clash.ok());
  auto third = ServerApp::Start(*grpc_clash);
  REQUIRE_FALSE(third.ok());
  CHECK(std::string(third.status().message()).find("grpc: cannot listen") != std::string::npos);
}

TEST_CASE("model errors stop start-up with the key or file named", "[server]") {
  struct Bad {
    std::vector<std::string> overrides;
    std::string must_mention;
  };
  const std::vector<Bad> cases = {
      {{"model.path="}, "model.path: required"},
      {{"model.path=/nonexistent/model"}, "/nonexistent/model"},
      {{"model.path=tests/data"}, "config.json"},
      {{"model.path=tests/data/models/llama", "model.max_model_len=100000"}, "model.max_model_len"},
  };
  for (const auto& b : cases) {
    std::vector<std::string> overrides = {"server.http_port=0", "server.grpc_port=0", "device=cpu",
                                          "log_level=off"};
    overrides.insert(overrides.end(), b.overrides.begin(), b.overrides.end());
    auto config = engine::ParseLaunchConfig("", "test", overrides);
    REQUIRE(config.ok());
    auto app = ServerApp::Start(*config);
    REQUIRE_FALSE(app.ok());
    CHECK_THAT(std::string(app.status().message()), Catch::Contains(b.must_mention));
  }
}

TEST_CASE("load_format dummy serves the config's shapes", "[server]") {
  auto config = engine::ParseLaunchConfig(
      "", "test",
      {"server.http_port=0", "server.grpc_port=0", "device=cpu", "log_level=off",
       "model.path=tests/data/models/mixtral", "model.load_format=dummy"});
  REQUIRE(config.ok());
  auto app = ServerApp::Start(*config);
  REQUIRE(app.ok());
  CHECK((*app)->context().model_architecture == "MixtralForCausalLM");
}

std::unique_ptr<ServerApp> StartTiny(std::vector<std::string> extra = {}) {
  std::vector<std::string> overrides = {"server.http_port=0", "server.grpc_port=0", "device=cpu",
                                        "log_level=warn", "engine.pool_bytes=16777216"};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  auto config = engine::ParseLaunchConfig(configs::kEmbeddedDefaultYaml, "embedded", overrides);
  REQUIRE(config.ok());
  auto app = ServerApp::Start(*config);
  INFO(app.status().ToString());
  REQUIRE(app.ok());
  return std::move(*app);
}

TEST_CASE("HTTP completions and chat on the tiny model", "[server]") {
  auto app = StartTiny();
  httplib::Client http("127.0.0.1", app->http_port());
  auto res = http.Post("/v1/completions",
                       R"({"model": "tiny", "prompt": "In the beginning", "max_tokens": 5,
                           "temperature": 0, "ignore_eos": true, "logprobs": 2})",
                       "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  auto body = nlohmann::json::parse(res->body);
  CHECK(body["object"] == "text_completion");
  CHECK(body["choices"][0]["finish_reason"] == "length");
  CHECK(body["usage"]["completion_tokens"] == 5);
  CHECK(body["choices"][0]["logprobs"]["token_logprobs"].size() == 5);
  CHECK(body["choices"][0]["logprobs"]["top_logprobs"][0].size() <= 2);

  auto chat = http.Post("/v1/chat/completions",
                        R"({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}],
                            "max_tokens": 4, "n": 2, "seed": 3})",
                        "application/json");
  REQUIRE(chat);
  REQUIRE(chat->status == 200);
  auto cb = nlohmann::json::parse(chat->body);
  CHECK(cb["object"] == "chat.completion");
  CHECK(cb["choices"].size() == 2);
  CHECK(cb["choices"][1]["message"]["role"] == "assistant");

  auto stream = http.Post("/v1/completions",
                          R"({"model": "tiny", "prompt": "x", "max_tokens": 3, "stream": true,
                              "stream_options": {"include_usage": true}})",
                          "application/json");
  REQUIRE(stream);
  CHECK(stream->status == 200);
  CHECK(stream->body.find("data: [DONE]\n\n") != std::string::npos);
  CHECK(stream->body.find("\"usage\"") != std::string::npos);

  // Validation errors name the field; the server keeps serving.
  auto bad = http.Post("/v1/completions", R"({"model": "tiny", "prompt": "x", "top_p": 5})",
                       "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  CHECK(nlohmann::json::parse(bad->body)["error"]["param"] == "top_p");
  auto missing =
      http.Post("/v1/completions", R"({"model": "nope", "prompt": "x"})", "application/json");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(nlohmann::json::parse(missing->body)["error"]["message"] ==
        "The model `nope` does not exist.");
}

TEST_CASE("a client gone mid-stream is cancelled and its pages freed", "[server]") {
  auto app = StartTiny();
  {
    httplib::Client http("127.0.0.1", app->http_port());
    int chunks = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = R"({"model": "tiny", "prompt": "x", "max_tokens": 2000, "stream": true,
                   "ignore_eos": true})";
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      return ++chunks < 3;  // hang up after a few chunks
    };
    auto res = http.send(req);
    CHECK(chunks == 3);
  }
  // The engine frees the pages within an iteration of noticing; poll its stats.
  engine::EngineStats s;
  for (int i = 0; i < 500; ++i) {
    s = app->context().engine->stats();
    if (s.running == 0 && s.pages_kv == s.pages_cached_evictable) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  CHECK(s.running == 0);
  CHECK(s.pages_kv == s.pages_cached_evictable);
  CHECK(s.requests_aborted == 1);
  httplib::Client http("127.0.0.1", app->http_port());
  auto metrics = http.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find("arbor:client_disconnects_total 1") != std::string::npos);
}

TEST_CASE("API keys and the concurrency limit", "[server]") {
  auto app = StartTiny({"server.api_key=sekret", "server.max_concurrent_requests=1"});
  httplib::Client http("127.0.0.1", app->http_port());
  const std::string body = R"({"model": "tiny", "prompt": "x", "max_tokens": 2})";
  auto none = http.Post("/v1/completions", body, "application/json");
  REQUIRE(none);
  CHECK(none->status == 401);
  httplib::Headers wrong = {{"Authorization", "Bearer nope"}};
  auto bad = http.Post("/v1/completions", wrong, body, "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 401);
  httplib::Headers right = {{"Authorization", "Bearer sekret"}};
  auto ok = http.Post("/v1/completions", right, body, "application/json");
  REQUIRE(ok);
  CHECK(ok->status == 200);
  // /health stays open for load balancers.
  auto health = http.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
}

TEST_CASE("gRPC: Complete and ChatComplete stream, Tokenize/Detokenize round-trip", "[server]") {
  auto app = StartTiny();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(app->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto gen = arbor::v1::Generation::NewStub(channel);

  arbor::v1::TokenizeRequest treq;
  treq.set_model("tiny");
  treq.set_text("In the beginning");
  treq.set_add_special_tokens(true);
  arbor::v1::TokenizeResponse tres;
  {
    grpc::ClientContext ctx;
    REQUIRE(gen->Tokenize(&ctx, treq, &tres).ok());
  }
  REQUIRE(tres.ids_size() > 1);
  arbor::v1::DetokenizeRequest dreq;
  dreq.set_model("tiny");
  dreq.mutable_ids()->CopyFrom(tres.ids());
  dreq.set_skip_special_tokens(true);
  arbor::v1::DetokenizeResponse dres;
  {
    grpc::ClientContext ctx;
    REQUIRE(gen->Detokenize(&ctx, dreq, &dres).ok());
  }
  CHECK(dres.text() == "In the beginning");

  arbor::v1::CompletionRequest creq;
  creq.set_model("tiny");
  creq.mutable_token_ids()->mutable_ids()->CopyFrom(tres.ids());
  creq.mutable_sampling()->set_max_tokens(6);
  creq.mutable_sampling()->set_temperature(0);
  creq.mutable_sampling()->set_ignore_eos(true);
  creq.mutable_sampling()->set_logprobs(2);
  {
    grpc::ClientContext ctx;
    auto reader = gen->Complete(&ctx, creq);
    arbor::v1::CompletionChunk chunk;
    int tokens = 0;
    std::string finish;
    int64_t usage_completion = -1;
    while (reader->Read(&chunk)) {
      for (const auto& c : chunk.choices()) {
        tokens += c.token_ids_size();
        CHECK(c.logprobs_size() == c.token_ids_size());
        if (!c.finish_reason().empty()) finish = c.finish_reason();
      }
      if (chunk.has_usage()) usage_completion = chunk.usage().completion_tokens();
    }
    REQUIRE(reader->Finish().ok());
    CHECK(tokens == 6);
    CHECK(finish == "length");
    CHECK(usage_completion == 6);
  }
  arbor::v1::ChatRequest chat;
  chat.set_model("tiny");
  auto* m = chat.add_messages();
  m->set_role("user");
  m->set_content("Hi");
  chat.mutable_sampling()->set_max_tokens(3);
  {
    grpc::ClientContext ctx;
    auto reader = gen->ChatComplete(&ctx, chat);
    arbor::v1::CompletionChunk chunk;
    int n = 0;
    while (reader->Read(&chunk)) ++n;
    CHECK(reader->Finish().ok());
    CHECK(n >= 2);
  }
  // The same field checks as HTTP: a bad temperature names the field.
  creq.mutable_sampling()->set_temperature(-1);
  {
    grpc::ClientContext ctx;
    auto reader = gen->Complete(&ctx, creq);
    arbor::v1::CompletionChunk chunk;
    while (reader->Read(&chunk)) {
    }
    const grpc::Status st = reader->Finish();
    CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(st.error_message().find("temperature") != std::string::npos);
  }
  creq.set_model("nope");
  {
    grpc::ClientContext ctx;
    auto reader = gen->Complete(&ctx, creq);
    arbor::v1::CompletionChunk chunk;
    while (reader->Read(&chunk)) {
    }
    CHECK(reader->Finish().error_code() == grpc::StatusCode::NOT_FOUND);
  }
}

// 2,000 tokens of the tiny model: long enough to be cut short by a cancel or a deadline.
arbor::v1::CompletionRequest LongCompletion() {
  arbor::v1::CompletionRequest creq;
  creq.set_model("tiny");
  creq.set_text("x");
  creq.mutable_sampling()->set_max_tokens(2000);
  creq.mutable_sampling()->set_ignore_eos(true);
  return creq;
}

TEST_CASE("gRPC: a deadline or a cancel aborts the request and frees its pages", "[server]") {
  auto app = StartTiny();
  auto gen = arbor::v1::Generation::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(app->grpc_port()), grpc::InsecureChannelCredentials()));
  const arbor::v1::CompletionRequest creq = LongCompletion();
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(50));
    auto reader = gen->Complete(&ctx, creq);
    arbor::v1::CompletionChunk chunk;
    while (reader->Read(&chunk)) {
    }
    CHECK(reader->Finish().error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  {
    grpc::ClientContext ctx;
    auto reader = gen->Complete(&ctx, creq);
    arbor::v1::CompletionChunk chunk;
    REQUIRE(reader->Read(&chunk));
    ctx.TryCancel();
    while (reader->Read(&chunk)) {
    }
    CHECK(reader->Finish().error_code() == grpc::StatusCode::CANCELLED);
  }
  engine::EngineStats s;
  for (int i = 0; i < 500; ++i) {
    s = app->context().engine->stats();
    if (s.running == 0 && s.requests_aborted == 2) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  CHECK(s.running == 0);
  CHECK(s.requests_aborted == 2);
  CHECK(s.pages_kv == s.pages_cached_evictable);
}

TEST_CASE("gRPC: server.request_timeout_s ends a long generation with DEADLINE_EXCEEDED",
          "[server]") {
  auto app = StartTiny({"server.request_timeout_s=0.3"});
  auto gen = arbor::v1::Generation::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(app->grpc_port()), grpc::InsecureChannelCredentials()));
  const arbor::v1::CompletionRequest creq = LongCompletion();
  grpc::ClientContext ctx;  // no client deadline: the server's own limit ends it
  const absl::Time t0 = absl::Now();
  auto reader = gen->Complete(&ctx, creq);
  arbor::v1::CompletionChunk chunk;
  int64_t tokens = 0;
  while (reader->Read(&chunk)) {
    for (const auto& c : chunk.choices()) tokens += c.token_ids_size();
  }
  const grpc::Status st = reader->Finish();
  CHECK(st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK_THAT(st.error_message(), Catch::Contains("server.request_timeout_s"));
  CHECK(tokens < 2000);
  CHECK(absl::Now() - t0 < absl::Seconds(5));
  // Counted as a timeout and as an abort; every page back.
  httplib::Client http("127.0.0.1", app->http_port());
  auto m = http.Get("/metrics");
  REQUIRE(m);
  CHECK(m->body.find("arbor:request_timeouts_total 1\n") != std::string::npos);
  CHECK(m->body.find("arbor:request_success_total{finished_reason=\"abort\"} 1\n") !=
        std::string::npos);
  // The abort went out before the engine refreshed its stats: look until they show it.
  engine::EngineStats s;
  for (int i = 0; i < 500; ++i) {
    app->context().engine->ClearPrefixCache();  // runs on the engine thread: fresh stats
    s = app->context().engine->stats();
    if (s.running == 0 && s.pages_kv == 0) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  CHECK(s.running == 0);
  CHECK(s.pages_kv == 0);
}

TEST_CASE("gRPC: every RPC but Health needs the API key when one is set", "[server]") {
  auto app = StartTiny({"server.api_key=sekret"});
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(app->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto gen = arbor::v1::Generation::NewStub(channel);
  auto admin = arbor::v1::Admin::NewStub(channel);
  {
    grpc::ClientContext ctx;
    arbor::v1::ListModelsResponse res;
    CHECK(gen->ListModels(&ctx, {}, &res).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    arbor::v1::ServerInfoResponse res;
    CHECK(admin->ServerInfo(&ctx, {}, &res).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer sekret");
    arbor::v1::ListModelsResponse res;
    CHECK(gen->ListModels(&ctx, {}, &res).ok());
  }
  {
    grpc::ClientContext ctx;
    arbor::v1::HealthResponse res;
    CHECK(admin->Health(&ctx, {}, &res).ok());
  }
}

TEST_CASE("adapters: admin REST and gRPC, serving an adapter by name as PEFT does", "[server]") {
  auto config = engine::ParseLaunchConfig(
      "", "test",
      {"server.http_port=0", "server.grpc_port=0", "device=cpu", "log_level=warn",
       "model.path=tests/data/models/llama", "engine.pool_bytes=4194304", "server.admin_key=root",
       "server.adapter_root=tests/data/adapters"});
  REQUIRE(config.ok());
  auto started = ServerApp::Start(*config);
  REQUIRE(started.ok());
  auto& app = *started;
  httplib::Client http("127.0.0.1", app->http_port());
  const httplib::Headers admin = {{"Authorization", "Bearer root"}};
  auto post = [&](const std::string& body, const httplib::Headers& h) {
    auto res = http.Post("/v1/adapters", h, body, "application/json");
    REQUIRE(res);
    return res->status;
  };
  CHECK(post(R"({"name": "all", "path": "llama-lora-all"})", {}) == 401);
  CHECK(post(R"({"name": "all", "path": "llama-lora-all"})", {{"Authorization", "Bearer no"}}) ==
        401);
  CHECK(post(R"({"name": "x", "path": "../models/llama"})", admin) == 403);
  CHECK(post(R"({"name": "x", "path": "/etc"})", admin) == 403);
  CHECK(post(R"({"name": "x", "path": "missing"})", admin) == 404);
  CHECK(post(R"({"name": "x"})", admin) == 400);
  CHECK(post(R"({"name": "all", "path": "llama-lora-all"})", admin) == 200);
  CHECK(post(R"({"name": "all", "path": "llama-lora-qv"})", admin) == 409);
  auto models = http.Get("/v1/models");
  REQUIRE(models);
  CHECK(models->body.find("\"all\"") != std::string::npos);

  // Greedy tokens through the server with the adapter equal PEFT's.
  std::ifstream in("tests/data/adapters/llama-lora-all/reference.json");
  const auto ref = nlohmann::json::parse(in);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(app->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto gen = arbor::v1::Generation::NewStub(channel);
  auto greedy = [&](const std::string& model, const nlohmann::json& reference) {
    arbor::v1::CompletionRequest req;
    req.set_model(model);
    for (int32_t id : reference["prompts"][1]["ids"]) req.mutable_token_ids()->add_ids(id);
    req.mutable_sampling()->set_max_tokens(8);
    req.mutable_sampling()->set_temperature(0);
    req.mutable_sampling()->set_ignore_eos(true);
    grpc::ClientContext ctx;
    auto reader = gen->Complete(&ctx, req);
    arbor::v1::CompletionChunk chunk;
    std::vector<int32_t> ids;
    while (reader->Read(&chunk)) {
      for (const auto& c : chunk.choices())
        ids.insert(ids.end(), c.token_ids().begin(), c.token_ids().end());
    }
    CHECK(reader->Finish().error_code() == grpc::StatusCode::OK);
    return ids;
  };
  CHECK(greedy("all", ref) == ref["prompts"][1]["greedy"].get<std::vector<int32_t>>());
  CHECK(greedy("arbor", ref) != greedy("all", ref));  // "arbor": the default served name

  auto admin_stub = arbor::v1::Admin::NewStub(channel);
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer root");
    arbor::v1::ListAdaptersResponse res;
    REQUIRE(admin_stub->ListAdapters(&ctx, {}, &res).ok());
    REQUIRE(res.adapters_size() == 1);
    CHECK(res.adapters(0).rank() == 4);
  }
  {
    grpc::ClientContext ctx;
    arbor::v1::RegisterAdapterRequest req;
    req.set_name("qv");
    req.set_path("llama-lora-qv");
    arbor::v1::AdapterInfo info;
    CHECK(admin_stub->RegisterAdapter(&ctx, req, &info).error_code() ==
          grpc::StatusCode::UNAUTHENTICATED);  // no admin key in the call
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer root");
    arbor::v1::RegisterAdapterRequest req;
    req.set_name("qv");
    req.set_path("llama-lora-qv");
    arbor::v1::AdapterInfo info;
    REQUIRE(admin_stub->RegisterAdapter(&ctx, req, &info).ok());
    CHECK(info.rank() == 8);
    CHECK(info.pages() > 0);
  }
  auto adapter_gauges = [&](int resident) {
    auto m = http.Get("/metrics");
    REQUIRE(m);
    const std::string r = "arbor:lora_adapters_resident " + std::to_string(resident) + "\n";
    return std::make_pair(m->body.find("arbor:lora_adapters_loaded 2\n") != std::string::npos,
                          m->body.find(r) != std::string::npos);
  };
  // "all" and "qv" registered; only "all", which served requests, is in pool pages.
  CHECK(adapter_gauges(1) == std::make_pair(true, true));
  std::ifstream qv_in("tests/data/adapters/llama-lora-qv/reference.json");
  const auto qv_ref = nlohmann::json::parse(qv_in);
  CHECK(greedy("qv", qv_ref) == qv_ref["prompts"][1]["greedy"].get<std::vector<int32_t>>());
  CHECK(adapter_gauges(2) == std::make_pair(true, true));
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer root");
    arbor::v1::UnregisterAdapterRequest req;
    req.set_name("qv");
    arbor::v1::UnregisterAdapterResponse res;
    REQUIRE(admin_stub->UnregisterAdapter(&ctx, req, &res).ok());
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer root");
    arbor::v1::UnregisterAdapterRequest req;
    req.set_name("qv");
    arbor::v1::UnregisterAdapterResponse res;
    CHECK(admin_stub->UnregisterAdapter(&ctx, req, &res).error_code() ==
          grpc::StatusCode::NOT_FOUND);
  }
  // vLLM's runtime LoRA routes, as its clients call them: plain-text success answers.
  auto vllm = [&](const std::string& route, const std::string& body, const httplib::Headers& h) {
    auto res = http.Post(route, h, body, "application/json");
    REQUIRE(res);
    return std::make_pair(res->status, res->body);
  };
  CHECK(vllm("/v1/load_lora_adapter", R"({"lora_name": "v", "lora_path": "llama-lora-qv"})", {})
            .first == 401);
  CHECK(vllm("/v1/load_lora_adapter", R"({"lora_name": "v"})", admin).first == 400);
  CHECK(vllm("/v1/load_lora_adapter",
             R"({"lora_name": "v", "lora_path": "llama-lora-qv", "load_inplace": "yes"})", admin)
            .first == 400);
  CHECK(
      vllm("/v1/load_lora_adapter", R"({"lora_name": "v", "lora_path": "llama-lora-qv"})", admin) ==
      std::make_pair(200, std::string("Success: LoRA adapter 'v' added successfully.")));
  CHECK(vllm("/v1/load_lora_adapter", R"({"lora_name": "v", "lora_path": "llama-lora-qv"})", admin)
            .first == 409);
  CHECK(greedy("v", qv_ref) == qv_ref["prompts"][1]["greedy"].get<std::vector<int32_t>>());
  // load_inplace swaps the weights under the name: "v" now serves llama-lora-all's tokens.
  CHECK(vllm("/v1/load_lora_adapter",
             R"({"lora_name": "v", "lora_path": "llama-lora-all", "load_inplace": true})", admin)
            .first == 200);
  CHECK(greedy("v", ref) == ref["prompts"][1]["greedy"].get<std::vector<int32_t>>());
  // ... and on a name not registered, it registers.
  CHECK(vllm("/v1/load_lora_adapter",
             R"({"lora_name": "w", "lora_path": "llama-lora-qv", "load_inplace": true})", admin)
            .first == 200);
  CHECK(vllm("/v1/unload_lora_adapter", R"({"lora_name": "w"})", admin).first == 200);
  CHECK(vllm("/v1/unload_lora_adapter", R"({"lora_name": "v"})", admin) ==
        std::make_pair(200, std::string("Success: LoRA adapter 'v' removed successfully.")));
  CHECK(vllm("/v1/unload_lora_adapter", R"({"lora_name": "v"})", admin).first == 404);
  CHECK(vllm("/v1/unload_lora_adapter", R"({})", admin).first == 400);

  auto del = http.Delete("/v1/adapters/all", admin);
  REQUIRE(del);
  CHECK(del->status == 200);
  auto gone =
      http.Post("/v1/completions", R"({"model": "all", "prompt": [1, 2]})", "application/json");
  REQUIRE(gone);
  CHECK(gone->status == 404);
  // The pages return when the last holder lets go: the engine drops a finished request's state
  // at the end of the iteration that finished it, which may be just after the client's answer.
  const memory::UnifiedPool& pool = app->context().engine->pool();
  for (int i = 0; i < 500 && pool.pages_of(memory::PageKind::kAdapter) != 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  CHECK(pool.pages_of(memory::PageKind::kAdapter) == 0);
  auto after = http.Get("/metrics");
  REQUIRE(after);
  CHECK(after->body.find("arbor:lora_adapters_loaded 0\n") != std::string::npos);
  CHECK(after->body.find("arbor:lora_adapters_resident 0\n") != std::string::npos);
}

}  // namespace
}  // namespace arbor::server
