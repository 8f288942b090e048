// The OpenAI HTTP API as real clients use it (issue 9), against the real ServerApp on loopback
// with the tiny model: chat's length default, batched prompts, scoring through echo, text
// offsets and token bytes, integral floats, media types, retrieve/tokenize routes,
// system_fingerprint, ids the tokenizer lacks, adapter names and live pool gauges.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "configs/embedded_default.h"
#include "engine/launch_config.h"
#include "proto/arbor.grpc.pb.h"
#include "server/app.h"
#include "tests/server/start_app.h"

namespace arbor::server {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::unique_ptr<ServerApp> Start(const std::string& yaml, std::vector<std::string> extra) {
  extra.insert(extra.begin(), "engine.pool_bytes=16777216");
  return testing::StartApp(yaml, extra);
}

std::unique_ptr<ServerApp> StartTiny(std::vector<std::string> extra = {}) {
  return testing::StartTinyApp(std::move(extra));
}

struct Reply {
  int status = 0;
  json body;
};

Reply Post(httplib::Client& http, const std::string& path, const json& body,
           const std::string& content_type = "application/json") {
  auto res = http.Post(path.c_str(), body.dump(), content_type.c_str());
  REQUIRE(res);
  Reply r{res->status, json::parse(res->body, nullptr, false)};
  INFO(res->body);
  REQUIRE_FALSE(r.body.is_discarded());
  return r;
}

// Server-Sent Events of a streamed response: the JSON chunks before [DONE].
std::vector<json> Stream(httplib::Client& http, const std::string& path, json body) {
  body["stream"] = true;
  auto res = http.Post(path.c_str(), body.dump(), "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  std::vector<json> chunks;
  bool done = false;
  size_t at = 0;
  while ((at = res->body.find("data: ", at)) != std::string::npos) {
    const size_t end = res->body.find("\n\n", at);
    REQUIRE(end != std::string::npos);
    const std::string data = res->body.substr(at + 6, end - at - 6);
    at = end;
    if (data == "[DONE]") {
      done = true;
      break;
    }
    chunks.push_back(json::parse(data));
  }
  CHECK(done);
  return chunks;
}

std::string ParamOf(const Reply& r) {
  const json& p = r.body["error"]["param"];
  return p.is_string() ? p.get<std::string>() : "<null>";
}

std::vector<int32_t> Tokenize(httplib::Client& http, const std::string& text, bool special) {
  const Reply r = Post(http, "/tokenize", {{"prompt", text}, {"add_special_tokens", special}});
  REQUIRE(r.status == 200);
  return r.body["tokens"].get<std::vector<int32_t>>();
}

const json kUser = json::array({{{"role", "user"}, {"content", "hi"}}});

TEST_CASE("chat without max_tokens generates to the end of the context, not 16 tokens",
          "[server][openai]") {
  auto app = StartTiny({"model.max_model_len=64"});
  httplib::Client http("127.0.0.1", app->http_port());
  const Reply r = Post(http, "/v1/chat/completions",
                       {{"model", "tiny"}, {"messages", kUser}, {"ignore_eos", true}});
  REQUIRE(r.status == 200);
  const int64_t prompt = r.body["usage"]["prompt_tokens"];
  CHECK(r.body["usage"]["completion_tokens"] == 64 - prompt);
  CHECK(r.body["choices"][0]["finish_reason"] == "length");

  // A prompt that leaves fewer than 16 tokens of context is served (16 used to be added to it).
  std::string words;
  json long_user;
  for (int i = 0; i < 60; ++i) {
    words += " word";
    long_user = json::array({{{"role", "user"}, {"content", words}}});
    const Reply count = Post(http, "/tokenize", {{"messages", long_user}});
    REQUIRE(count.status == 200);
    if (count.body["count"] > 64 - 16) break;
  }
  const Reply near = Post(http, "/v1/chat/completions",
                          {{"model", "tiny"}, {"messages", long_user}, {"ignore_eos", true}});
  REQUIRE(near.status == 200);
  const int64_t near_prompt = near.body["usage"]["prompt_tokens"];
  REQUIRE(near_prompt > 64 - 16);
  CHECK(near.body["usage"]["completion_tokens"] == 64 - near_prompt);

  // Completions keep the legacy default of 16.
  const Reply legacy =
      Post(http, "/v1/completions", {{"model", "tiny"}, {"prompt", "hi"}, {"ignore_eos", true}});
  REQUIRE(legacy.status == 200);
  CHECK(legacy.body["usage"]["completion_tokens"] == 16);

  // gRPC's ChatComplete shares the default.
  auto gen = arbor::v1::Generation::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(app->grpc_port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  arbor::v1::ChatRequest req;
  req.set_model("tiny");
  auto* m = req.add_messages();
  m->set_role("user");
  m->set_content("hi");
  req.mutable_sampling()->set_ignore_eos(true);
  auto reader = gen->ChatComplete(&ctx, req);
  arbor::v1::CompletionChunk chunk;
  int64_t completion = 0;
  while (reader->Read(&chunk)) {
    if (chunk.has_usage()) completion = chunk.usage().completion_tokens();
  }
  REQUIRE(reader->Finish().ok());
  CHECK(completion == 64 - prompt);
}

TEST_CASE("a list of prompts gives len(prompt) x n choices, indexed as OpenAI does",
          "[server][openai]") {
  auto app = StartTiny();
  httplib::Client http("127.0.0.1", app->http_port());
  const json base = {{"model", "tiny"}, {"max_tokens", 4}, {"temperature", 0}, {"n", 2}};
  auto alone = [&](const json& prompt) {
    json b = base;
    b["prompt"] = prompt;
    b["n"] = 1;
    const Reply r = Post(http, "/v1/completions", b);
    REQUIRE(r.status == 200);
    return std::make_pair(r.body["choices"][0]["text"].get<std::string>(),
                          r.body["usage"]["prompt_tokens"].get<int64_t>());
  };
  for (const json& prompts :
       {json::array({"a b c", "hello"}), json::array({json::array({5, 6, 7}), json::array({9})})}) {
    INFO(prompts.dump());
    const auto first = alone(prompts[0]);
    const auto second = alone(prompts[1]);
    json body = base;
    body["prompt"] = prompts;
    const Reply r = Post(http, "/v1/completions", body);
    REQUIRE(r.status == 200);
    const json& choices = r.body["choices"];
    REQUIRE(choices.size() == 4);
    for (size_t i = 0; i < 4; ++i) CHECK(choices[i]["index"] == i);
    // Greedy: both samples of a prompt are what that prompt gives alone.
    CHECK(choices[0]["text"] == first.first);
    CHECK(choices[1]["text"] == first.first);
    CHECK(choices[2]["text"] == second.first);
    CHECK(choices[3]["text"] == second.first);
    CHECK(r.body["usage"]["prompt_tokens"] == first.second + second.second);
    CHECK(r.body["usage"]["completion_tokens"] == 16);

    // Streamed: every choice's chunks add up to the same text, and every index finishes.
    std::vector<std::string> text(4);
    std::vector<int> finished(4, 0);
    for (const json& c : Stream(http, "/v1/completions", body)) {
      for (const json& ch : c["choices"]) {
        const size_t i = ch["index"];
        REQUIRE(i < 4);
        text[i] += ch["text"].get<std::string>();
        if (!ch["finish_reason"].is_null()) ++finished[i];
      }
    }
    for (size_t i = 0; i < 4; ++i) {
      CHECK(text[i] == choices[i]["text"]);
      CHECK(finished[i] == 1);
    }
  }
  // One bad prompt refuses the whole request, and nothing of it runs.
  json bad = base;
  bad["prompt"] = json::array({"fine", json::array({1, 99999})});
  const Reply refused = Post(http, "/v1/completions", bad);
  CHECK(refused.status == 400);
  CHECK(ParamOf(refused) == "prompt");
}

TEST_CASE("echo with max_tokens 0 scores the prompt, as Score does", "[server][openai]") {
  auto app = StartTiny();
  httplib::Client http("127.0.0.1", app->http_port());
  const std::string prompt = "h\xC3\xA9llo w\xC3\xB6rld";
  const json body = {
      {"model", "tiny"}, {"prompt", prompt}, {"echo", true}, {"max_tokens", 0}, {"logprobs", 2}};
  const Reply r = Post(http, "/v1/completions", body);
  REQUIRE(r.status == 200);
  const json& c = r.body["choices"][0];
  CHECK(c["text"] == prompt);
  CHECK(c["finish_reason"] == "length");
  CHECK(r.body["usage"]["completion_tokens"] == 0);
  const json& lp = c["logprobs"];
  const std::vector<int32_t> ids = Tokenize(http, prompt, true);
  REQUIRE(lp["token_logprobs"].size() == ids.size());
  CHECK(lp["token_logprobs"][0].is_null());
  CHECK(lp["top_logprobs"][0].is_null());
  // text_offset counts characters of the echoed text (BOS, h, é, ll, o, " w", ö in two byte
  // pieces, r, ld).
  CHECK(lp["text_offset"] == json::array({0, 0, 1, 2, 4, 5, 7, 7, 8, 9}));

  // The same log-probs as gRPC's Score.
  auto gen = arbor::v1::Generation::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(app->grpc_port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  arbor::v1::ScoreRequest req;
  req.set_model("tiny");
  req.set_prompt(prompt);
  req.set_top_logprobs(2);
  arbor::v1::ScoreResponse scored;
  REQUIRE(gen->Score(&ctx, req, &scored).ok());
  REQUIRE(scored.prompt_logprobs_size() == int(ids.size()));
  for (size_t i = 1; i < ids.size(); ++i) {
    CHECK(lp["token_logprobs"][i].get<double>() ==
          Approx(scored.prompt_logprobs(int(i)).logprob()).margin(1e-6));
    // Keyed by token text: two alternatives with the same text (two byte pieces) share a key.
    CHECK(lp["top_logprobs"][i].size() >= 1);
    CHECK(lp["top_logprobs"][i].size() <= 2);
  }

  // Streamed: one chunk with the prompt, and it ends with "length".
  const std::vector<json> chunks = Stream(http, "/v1/completions", body);
  std::string text;
  json offsets = json::array();
  std::string finish;
  for (const json& ch : chunks) {
    for (const json& choice : ch["choices"]) {
      text += choice["text"].get<std::string>();
      if (choice["logprobs"].is_object()) {
        for (const json& o : choice["logprobs"]["text_offset"]) offsets.push_back(o);
      }
      if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
    }
  }
  CHECK(text == prompt);
  CHECK(finish == "length");
  CHECK(offsets == lp["text_offset"]);
}

TEST_CASE("text_offset counts characters, and a stream's offsets continue across chunks",
          "[server][openai]") {
  auto app = StartTiny();
  httplib::Client http("127.0.0.1", app->http_port());
  // Two byte-level pieces of one character forced in turn: the bias picks the first piece, the
  // repetition penalty (applied after the bias) then lets the second through.
  const std::vector<int32_t> o = Tokenize(http, "\xC3\xB6", false);  // "ö"
  REQUIRE(o.size() == 2);
  json body = {{"model", "tiny"},
               {"prompt", "h\xC3\xA9llo"},
               {"max_tokens", 6},
               {"temperature", 0},
               {"logprobs", 0},
               {"echo", true},
               {"repetition_penalty", 2},
               {"logit_bias", {{std::to_string(o[0]), 100}, {std::to_string(o[1]), 60}}}};
  const Reply r = Post(http, "/v1/completions", body);
  REQUIRE(r.status == 200);
  const json& lp = r.body["choices"][0]["logprobs"];
  const std::string text = r.body["choices"][0]["text"];
  REQUIRE(text.rfind("h\xC3\xA9llo\xC3\xB6", 0) == 0);  // "héllo" then "ö"
  const json offsets = lp["text_offset"];
  // BOS, h, é, ll, o, then the two pieces of ö, both at character 5.
  REQUIRE(offsets.size() == 5 + 6);
  CHECK(offsets[5] == 5);
  CHECK(offsets[6] == 5);
  CHECK(offsets[7] == 6);

  json streamed = json::array();
  std::string streamed_text;
  for (const json& ch : Stream(http, "/v1/completions", body)) {
    const json& choice = ch["choices"][0];
    streamed_text += choice["text"].get<std::string>();
    if (choice["logprobs"].is_object()) {
      for (const json& x : choice["logprobs"]["text_offset"]) streamed.push_back(x);
    }
  }
  CHECK(streamed_text == text);
  CHECK(streamed == offsets);
}

TEST_CASE("chat logprobs give each token its own bytes, which concatenate to the content",
          "[server][openai]") {
  auto app = StartTiny();
  httplib::Client http("127.0.0.1", app->http_port());
  const std::vector<int32_t> o = Tokenize(http, "\xC3\xB6", false);
  REQUIRE(o.size() == 2);
  json body = {{"model", "tiny"},
               {"messages", kUser},
               {"max_tokens", 2},
               {"temperature", 0},
               {"logprobs", true},
               {"top_logprobs", 2},
               {"repetition_penalty", 2},
               {"logit_bias", {{std::to_string(o[0]), 100}, {std::to_string(o[1]), 60}}}};
  auto check = [&](const json& content_logprobs, const std::string& content) {
    REQUIRE(content_logprobs.size() == 2);
    std::string bytes;
    for (const json& t : content_logprobs) {
      for (int b : t["bytes"]) bytes.push_back(static_cast<char>(b));
      for (const json& alt : t["top_logprobs"]) CHECK(alt["bytes"].is_array());
    }
    CHECK(content == "\xC3\xB6");
    CHECK(bytes == content);
    CHECK(content_logprobs[0]["bytes"] == json::array({0xC3}));
    CHECK(content_logprobs[1]["bytes"] == json::array({0xB6}));
  };
  const Reply r = Post(http, "/v1/chat/completions", body);
  REQUIRE(r.status == 200);
  check(r.body["choices"][0]["logprobs"]["content"], r.body["choices"][0]["message"]["content"]);

  json streamed = json::array();
  std::string content;
  for (const json& ch : Stream(http, "/v1/chat/completions", body)) {
    const json& choice = ch["choices"][0];
    if (choice["delta"].contains("content"))
      content += choice["delta"]["content"].get<std::string>();
    if (choice["logprobs"].is_object()) {
      for (const json& t : choice["logprobs"]["content"]) streamed.push_back(t);
    }
  }
  check(streamed, content);
}

TEST_CASE("harmless shapes are accepted: integral floats, response_format text, media type case",
          "[server][openai]") {
  auto app = StartTiny();
  httplib::Client http("127.0.0.1", app->http_port());
  const Reply floats = Post(
      http, "/v1/completions",
      {{"model", "tiny"}, {"prompt", "hi"}, {"max_tokens", 8.0}, {"n", 2.0}, {"ignore_eos", true}});
  REQUIRE(floats.status == 200);
  CHECK(floats.body["choices"].size() == 2);
  CHECK(floats.body["usage"]["completion_tokens"] == 16);
  const Reply fraction =
      Post(http, "/v1/completions", {{"model", "tiny"}, {"prompt", "hi"}, {"max_tokens", 8.5}});
  CHECK(fraction.status == 400);
  CHECK(ParamOf(fraction) == "max_tokens");

  const Reply text_format = Post(http, "/v1/chat/completions",
                                 {{"model", "tiny"},
                                  {"messages", kUser},
                                  {"max_tokens", 2},
                                  {"response_format", {{"type", "text"}}}});
  CHECK(text_format.status == 200);
  const Reply json_format = Post(
      http, "/v1/chat/completions",
      {{"model", "tiny"}, {"messages", kUser}, {"response_format", {{"type", "json_object"}}}});
  CHECK(json_format.status == 400);
  CHECK(ParamOf(json_format) == "response_format");

  const json small = {{"model", "tiny"}, {"prompt", "hi"}, {"max_tokens", 2}};
  CHECK(Post(http, "/v1/completions", small, "Application/JSON").status == 200);
  CHECK(Post(http, "/v1/completions", small, "APPLICATION/json; charset=UTF-8").status == 200);
  CHECK(Post(http, "/v1/completions", small, "text/plain").status == 400);
  CHECK(Post(http, "/v1/completions", small, "application/jsonx").status == 400);
}

TEST_CASE("fields the server does not implement are refused by name, never dropped",
          "[server][openai]") {
  auto app = StartTiny();
  httplib::Client http("127.0.0.1", app->http_port());
  const Reply suffix =
      Post(http, "/v1/completions", {{"model", "tiny"}, {"prompt", "hi"}, {"suffix", " the end"}});
  CHECK(suffix.status == 400);
  CHECK(ParamOf(suffix) == "suffix");
  const json fn = {{"name", "f"}, {"parameters", json::object()}};
  const Reply functions = Post(http, "/v1/chat/completions",
                               {{"model", "tiny"}, {"messages", kUser}, {"functions", {fn}}});
  CHECK(functions.status == 400);
  CHECK(ParamOf(functions) == "functions");
  const Reply call = Post(http, "/v1/chat/completions",
                          {{"model", "tiny"}, {"messages", kUser}, {"function_call", "auto"}});
  CHECK(call.status == 400);
  CHECK(ParamOf(call) == "function_call");
  const Reply options =
      Post(http, "/v1/chat/completions",
           {{"model", "tiny"}, {"messages", kUser}, {"stream_options", {{"include_usage", true}}}});
  CHECK(options.status == 400);
  CHECK(ParamOf(options) == "stream_options");
  const Reply bias = Post(http, "/v1/completions",
                          {{"model", "tiny"}, {"prompt", "hi"}, {"logit_bias", {{"99999", 1}}}});
  CHECK(bias.status == 400);
  CHECK(ParamOf(bias) == "logit_bias");
}

TEST_CASE("GET /v1/models/{id}, POST /tokenize and /detokenize", "[server][openai]") {
  auto app = StartTiny({"model.served_model_name=org/tiny"});
  httplib::Client http("127.0.0.1", app->http_port());
  for (const char* path :
       {"/v1/models/org/tiny", "/v1/models/org%2Ftiny", "/v1/models/org%2ftiny"}) {
    INFO(path);
    auto res = http.Get(path);
    REQUIRE(res);
    CHECK(res->status == 200);
    const json m = json::parse(res->body);
    CHECK(m["id"] == "org/tiny");
    CHECK(m["object"] == "model");
    CHECK(m["max_model_len"] == 2048);
  }
  auto missing = http.Get("/v1/models/nope");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(json::parse(missing->body)["error"]["param"] == "model");

  // The tokenizer, as gRPC's Tokenize has it.
  auto gen = arbor::v1::Generation::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(app->grpc_port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  arbor::v1::TokenizeRequest treq;
  treq.set_model("org/tiny");
  treq.set_text("Hello world");
  treq.set_add_special_tokens(true);
  arbor::v1::TokenizeResponse tres;
  REQUIRE(gen->Tokenize(&ctx, treq, &tres).ok());
  const Reply tok =
      Post(http, "/tokenize",
           {{"model", "org/tiny"}, {"prompt", "Hello world"}, {"return_token_strs", true}});
  REQUIRE(tok.status == 200);
  const std::vector<int32_t> ids = tok.body["tokens"].get<std::vector<int32_t>>();
  CHECK(ids == std::vector<int32_t>(tres.ids().begin(), tres.ids().end()));
  CHECK(tok.body["count"] == ids.size());
  CHECK(tok.body["max_model_len"] == 2048);
  CHECK(tok.body["token_strs"].size() == ids.size());
  const Reply plain =
      Post(http, "/tokenize", {{"prompt", "Hello world"}, {"add_special_tokens", false}});
  REQUIRE(plain.status == 200);
  CHECK(plain.body["count"] == ids.size() - 1);  // no BOS

  // The chat form counts what a chat completion's prompt holds.
  const Reply chat_tok = Post(http, "/tokenize", {{"messages", kUser}});
  REQUIRE(chat_tok.status == 200);
  const Reply chat = Post(http, "/v1/chat/completions",
                          {{"model", "org/tiny"}, {"messages", kUser}, {"max_tokens", 1}});
  REQUIRE(chat.status == 200);
  CHECK(chat_tok.body["count"] == chat.body["usage"]["prompt_tokens"]);

  const Reply detok = Post(http, "/detokenize", {{"tokens", ids}});
  REQUIRE(detok.status == 200);
  CHECK(detok.body["prompt"].get<std::string>().find("Hello world") != std::string::npos);

  CHECK(ParamOf(Post(http, "/detokenize", {{"tokens", {1, 99999}}})) == "tokens");
  CHECK(ParamOf(Post(http, "/tokenize", {{"model", "other"}, {"prompt", "x"}})) == "model");
  CHECK(Post(http, "/tokenize", {{"model", "other"}, {"prompt", "x"}}).status == 404);
  CHECK(Post(http, "/tokenize", json::object()).status == 400);
  CHECK(Post(http, "/tokenize", {{"prompt", 5}}).status == 400);
}

TEST_CASE("responses and stream chunks carry one system_fingerprint", "[server][openai]") {
  auto app = StartTiny();
  httplib::Client http("127.0.0.1", app->http_port());
  const Reply a =
      Post(http, "/v1/completions", {{"model", "tiny"}, {"prompt", "hi"}, {"max_tokens", 2}});
  const Reply b = Post(http, "/v1/chat/completions",
                       {{"model", "tiny"}, {"messages", kUser}, {"max_tokens", 2}});
  REQUIRE(a.status == 200);
  REQUIRE(b.status == 200);
  const std::string fp = a.body["system_fingerprint"];
  CHECK(fp.rfind("fp_", 0) == 0);
  CHECK(fp.size() > 3);
  CHECK(b.body["system_fingerprint"] == fp);
  for (const json& c : Stream(http, "/v1/chat/completions",
                              {{"model", "tiny"}, {"messages", kUser}, {"max_tokens", 2}})) {
    CHECK(c["system_fingerprint"] == fp);
  }
}

TEST_CASE("a sampled id the tokenizer lacks decodes as no text instead of aborting",
          "[server][openai]") {
  // The tiny model with its embedding padded past the tokenizer's 1206 ids (as Qwen2's is).
  const char* tmp = std::getenv("TEST_TMPDIR");
  const fs::path dir = fs::path(tmp != nullptr ? tmp : "/tmp") / "padded-vocab";
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                        "generation_config.json"}) {
    fs::copy_file(fs::path("models/tiny") / f, dir / f, fs::copy_options::overwrite_existing);
  }
  std::ifstream in("models/tiny/config.json");
  json config = json::parse(in);
  config["vocab_size"] = 1300;
  std::ofstream(dir / "config.json") << config.dump();
  auto app = Start("", {"model.path=" + dir.string(), "model.load_format=dummy",
                        "model.served_model_name=padded"});
  httplib::Client http("127.0.0.1", app->http_port());
  const Reply r = Post(http, "/v1/completions",
                       {{"model", "padded"},
                        {"prompt", "hi"},
                        {"max_tokens", 3},
                        {"logprobs", 0},
                        {"logit_bias", {{"1250", 100}}}});
  REQUIRE(r.status == 200);
  const json& c = r.body["choices"][0];
  CHECK(c["finish_reason"] == "length");
  CHECK(c["text"] == "");
  CHECK(r.body["usage"]["completion_tokens"] == 3);
  CHECK(c["logprobs"]["tokens"] == json::array({"", "", ""}));
  // The stream, too.
  std::string finish;
  for (const json& ch : Stream(http, "/v1/completions",
                               {{"model", "padded"},
                                {"prompt", "hi"},
                                {"max_tokens", 3},
                                {"logit_bias", {{"1250", 100}}}})) {
    if (!ch["choices"][0]["finish_reason"].is_null()) finish = ch["choices"][0]["finish_reason"];
  }
  CHECK(finish == "length");
}

TEST_CASE("adapters: . and .. are not names, and pool gauges show a pinned registration at once",
          "[server][openai]") {
  auto app = Start("", {"model.path=tests/data/models/llama", "model.served_model_name=tiny",
                        "server.admin_key=root", "server.adapter_root=tests/data/adapters",
                        "engine.pool_bytes=4194304"});
  httplib::Client http("127.0.0.1", app->http_port());
  const httplib::Headers admin = {{"Authorization", "Bearer root"}};
  for (const char* name : {".", ".."}) {
    auto res =
        http.Post("/v1/adapters", admin, json{{"name", name}, {"path", "llama-lora-all"}}.dump(),
                  "application/json");
    REQUIRE(res);
    CHECK(res->status == 400);
    CHECK(json::parse(res->body)["error"]["message"].get<std::string>().find("name") !=
          std::string::npos);
  }
  auto gauge = [&](const std::string& kind) {
    auto m = http.Get("/metrics");
    REQUIRE(m);
    const std::string key = "arbor:pool_pages{kind=\"" + kind + "\"} ";
    const size_t at = m->body.find(key);
    REQUIRE(at != std::string::npos);
    return std::stod(m->body.substr(at + key.size()));
  };
  CHECK(gauge("adapter") == 0);
  const double free_before = gauge("free");
  // Unpinned, registration costs host memory only; pinned, the adapter is resident at once.
  auto bad_pin =
      http.Post("/v1/adapters", admin, R"({"name": "all", "path": "llama-lora-all", "pin": "yes"})",
                "application/json");
  REQUIRE(bad_pin);
  CHECK(bad_pin->status == 400);
  CHECK(json::parse(bad_pin->body)["error"]["param"] == "pin");
  auto unpinned = http.Post("/v1/adapters", admin, R"({"name": "qv", "path": "llama-lora-qv"})",
                            "application/json");
  REQUIRE(unpinned);
  REQUIRE(unpinned->status == 200);
  CHECK(json::parse(unpinned->body)["gpu_resident"] == false);
  CHECK(gauge("adapter") == 0);
  auto res =
      http.Post("/v1/adapters", admin, R"({"name": "all", "path": "llama-lora-all", "pin": true})",
                "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(json::parse(res->body)["pinned"] == true);
  CHECK(json::parse(res->body)["gpu_resident"] == true);
  const int64_t pages = json::parse(res->body)["pages"];
  REQUIRE(pages > 0);
  // No generation ran since: the gauges come from the pool, not from the last engine step.
  CHECK(gauge("adapter") == double(pages));
  CHECK(gauge("free") == free_before - double(pages));
  auto del = http.Delete("/v1/adapters/all", admin);
  REQUIRE(del);
  CHECK(del->status == 200);
  CHECK(gauge("adapter") == 0);
  CHECK(gauge("free") == free_before);
}

// A small pool (7 pages: one 4-page adapter and a sequence's KV, or the other 2-page adapter)
// and a host budget that holds one of the two adapters' copies: the counters on /metrics equal
// the store's, and each moved.
TEST_CASE("adapter metrics: tiers, disk loads, copies, evictions, prefetches and waits",
          "[server][openai]") {
  auto app = Start("", {"model.path=tests/data/models/llama", "model.served_model_name=tiny",
                        "model.max_model_len=64", "server.admin_key=root",
                        "server.adapter_root=tests/data/adapters", "engine.pool_bytes=57344",
                        "lora.host_bytes=40000"});
  httplib::Client http("127.0.0.1", app->http_port());
  const httplib::Headers admin = {{"Authorization", "Bearer root"}};
  for (const char* body : {R"({"name": "all", "path": "llama-lora-all"})",
                           R"({"name": "qv", "path": "llama-lora-qv"})"}) {
    auto res = http.Post("/v1/adapters", admin, body, "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 200);
  }
  int adapter_requests = 0;
  for (const char* model : {"all", "qv", "all", "tiny", "qv"}) {
    auto res = http.Post("/v1/completions",
                         json{{"model", model},
                              {"prompt", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
                              {"max_tokens", 8}}
                             .dump(),
                         "application/json");
    REQUIRE(res);
    INFO(res->body);
    REQUIRE(res->status == 200);
    if (std::string(model) != "tiny") ++adapter_requests;
  }
  const engine::AdapterStoreStats s = app->context().adapters->stats();
  auto m = http.Get("/metrics");
  REQUIRE(m);
  auto value = [&](const std::string& key) {
    const size_t at = m->body.find("\n" + key + " ");
    INFO(key);
    REQUIRE(at != std::string::npos);
    return std::stod(m->body.substr(at + key.size() + 2));
  };
  CHECK(value("arbor:lora_adapters_loaded") == 2);
  CHECK(value("arbor:lora_adapters_resident") == double(s.gpu_resident));
  CHECK(value("arbor:lora_adapters_host_resident") == double(s.host_resident));
  CHECK(value("arbor:lora_host_bytes") == double(s.host_bytes_used));
  CHECK(s.host_bytes_used <= 40000);
  CHECK(value("arbor:lora_adapter_disk_loads_total") == double(s.disk_loads));
  CHECK(value("arbor:lora_adapter_copies_total") == double(s.copies));
  CHECK(value("arbor:lora_adapter_copy_bytes_total") == double(s.copy_bytes));
  CHECK(value("arbor:lora_adapter_evictions_total{tier=\"host\"}") == double(s.host_evictions));
  CHECK(value("arbor:lora_adapter_evictions_total{tier=\"gpu\"}") == double(s.gpu_evictions));
  CHECK(value("arbor:lora_prefetch_hits_total") == double(s.prefetch_hits));
  CHECK(value("arbor:lora_prefetch_misses_total") == double(s.prefetch_misses));
  CHECK(value("arbor:lora_adapter_wait_seconds_count") == double(adapter_requests));
  // Alternating adapters through a pool and a host budget that hold one of them at a time.
  CHECK(s.disk_loads >= 1);
  CHECK(s.host_evictions >= 2);
  CHECK(s.gpu_evictions >= 1);
  CHECK(s.copies >= 3);
  CHECK(s.copies == s.gpu_evictions + s.gpu_resident);
  CHECK(s.prefetch_hits + s.prefetch_misses >= 3);  // pages in at or ahead of admission
}

}  // namespace
}  // namespace arbor::server
