// ScoreDocuments (eval/perplexity.h) through a real engine: the perplexity equals one computed
// from Model::Forward's full logits (log-softmax, summed) over documents of different lengths,
// truncated ones and a document with a single scored token; documents run batched; under a
// LoRA adapter it equals PEFT's logits (tests/data/adapters); the per-document framing.
#include "eval/perplexity.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/framing.h"
#include "server/engine_stack.h"
#include "tests/eval/reference.h"

namespace arbor::eval {
namespace {

using testing::ReferenceNll;
using testing::TinyConfig;

std::vector<JsonlRecord> Records(const std::vector<std::string>& texts) {
  std::vector<JsonlRecord> out;
  for (size_t i = 0; i < texts.size(); ++i) {
    out.push_back({"docs.jsonl", int64_t(i + 1), nlohmann::json{{"text", texts[i]}}});
  }
  return out;
}

std::string Repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

TEST_CASE("a document is BOS + text + end-of-text, cut at max_tokens") {
  auto stack = testing::NewEvalStack(TinyConfig());
  const Framing& framing = stack.framing;
  // models/tiny: <|begin_of_text|> 1200, <|end_of_text|> 1201 (its EOS list is 1201, 1204).
  REQUIRE(framing.bos == 1200);
  REQUIRE(framing.end_of_text == 1201);
  auto ids = stack->tokenizer->Encode("hello world", false);
  REQUIRE(ids.ok());
  auto doc = FrameDocument(*stack->tokenizer, framing, "hello world", 100);
  REQUIRE(doc.ok());
  std::vector<int32_t> want = {1200};
  want.insert(want.end(), ids->begin(), ids->end());
  want.push_back(1201);
  CHECK(doc->tokens == want);
  CHECK_FALSE(doc->truncated);
  auto cut = FrameDocument(*stack->tokenizer, framing, "hello world", int64_t(want.size()) - 1);
  REQUIRE(cut.ok());
  CHECK(cut->truncated);
  CHECK(cut->tokens == std::vector<int32_t>(want.begin(), want.end() - 1));
  auto empty = FrameDocument(*stack->tokenizer, framing, "", 100);
  REQUIRE(empty.ok());
  CHECK(empty->tokens == std::vector<int32_t>{1200, 1201});
  CHECK_FALSE(FrameDocument(*stack->tokenizer, framing, "\xff\xfe", 100).ok());
}

TEST_CASE("perplexity equals the log-softmax of full logits, batched through the engine") {
  auto stack = testing::NewEvalStack(TinyConfig());
  const Framing& framing = stack.framing;
  const std::string sentence = "In the beginning God created the heaven and the earth. ";
  const auto medium = FrameDocument(*stack->tokenizer, framing, sentence, 0);
  REQUIRE(medium.ok());
  // The medium document loses exactly its end-of-text token; the long one many tokens.
  const int64_t max_tokens = int64_t(medium->tokens.size()) - 1;
  std::vector<std::string> texts = {"",  // BOS + end-of-text: one scored token
                                    "a", sentence, Repeat(sentence, 6), "Blessed are the meek."};
  for (int i = 0; i < 30; ++i) texts.push_back(Repeat("word ", i % 7 + 1) + std::to_string(i));
  auto docs = FrameDocuments(Records(texts), *stack->tokenizer, framing, max_tokens);
  REQUIRE(docs.ok());
  REQUIRE((*docs)[0].framed.tokens.size() == 2);
  CHECK((*docs)[2].framed.truncated);
  CHECK((*docs)[3].framed.truncated);
  CHECK_FALSE((*docs)[4].framed.truncated);

  // The reference: a model of its own, whole logits, each document alone.
  const testing::TinyReference want = testing::TinyPerplexity(texts, max_tokens);

  const int64_t iterations_before = stack->engine->stats().iterations;
  int64_t progress_calls = 0, last_done = -1;
  PerplexityOptions options;
  options.on_progress = [&](int64_t done, int64_t) {
    CHECK(done >= last_done);
    last_done = done;
    ++progress_calls;
  };
  auto got = ScoreDocuments(*stack->engine, *docs, options);
  INFO(got.status().ToString());
  REQUIRE(got.ok());
  CHECK(got->documents == int64_t(texts.size()));
  CHECK(got->scored_tokens == want.tokens);
  CHECK(got->truncated == want.truncated);
  INFO("engine nll " << got->nll << " reference " << want.nll);
  CHECK(std::fabs(got->nll - want.nll) <= 1e-5 * want.nll);
  CHECK(std::fabs(got->perplexity() - want.perplexity()) <= 1e-4 * want.perplexity());
  CHECK(last_done == int64_t(texts.size()));
  CHECK(progress_calls >= 1);
  // 35 documents in far fewer passes than one each: the engine batched them.
  const int64_t iterations = stack->engine->stats().iterations - iterations_before;
  INFO("iterations " << iterations);
  CHECK(iterations <= 8);
  // The JSON carries the same figures.
  const auto j = PerplexityJson(*got);
  CHECK(j["tokens"] == want.tokens);
  CHECK(j["documents"] == int64_t(texts.size()));
  CHECK(j["truncated_documents"] == want.truncated);
  CHECK(j["perplexity"].get<double>() == got->perplexity());
}

TEST_CASE("perplexity under a LoRA adapter equals PEFT's") {
  for (const char* name : {"llama-lora-all", "llama-lora-qv"}) {
    INFO(name);
    // As `arbor eval --adapter DIR` registers it: the adapter root is DIR itself.
    auto stack = testing::NewEvalStack(
        TinyConfig({"model.path=tests/data/models/llama",
                    std::string("server.adapter_root=tests/data/adapters/") + name}));
    auto info = stack->adapters->Register(name, ".");
    INFO(info.status().ToString());
    REQUIRE(info.ok());
    std::ifstream in(std::string("tests/data/adapters/") + name + "/reference.json");
    REQUIRE(in);
    const auto ref = nlohmann::json::parse(in);
    std::vector<Document> docs;
    double want = 0;
    for (const auto& p : ref["prompts"]) {
      const auto ids = p["ids"].get<std::vector<int32_t>>();
      docs.push_back({"ref", {ids, false}});
      want += ReferenceNll(p["logits"].get<std::vector<std::vector<double>>>(), ids);
    }
    PerplexityOptions base_options;
    auto base = ScoreDocuments(*stack->engine, docs, base_options);
    REQUIRE(base.ok());
    PerplexityOptions options;
    options.adapter = stack->adapters->Find(name);
    REQUIRE(options.adapter != nullptr);
    auto got = ScoreDocuments(*stack->engine, docs, options);
    INFO(got.status().ToString());
    REQUIRE(got.ok());
    INFO("adapter nll " << got->nll << " PEFT " << want << " base " << base->nll);
    CHECK(std::fabs(got->nll - want) <= 1e-4 * std::fabs(want));
    // The adapter moved it far more than that tolerance: it was applied.
    CHECK(std::fabs(base->nll - want) > 1e-2 * std::fabs(want));
  }
}

// Not yet run on a GPU: fp32 should match the CPU's reference closely; bf16 (the CUDA default
// for this fp32 checkpoint) within a looser bound.
TEST_CASE("on the GPU: perplexity in fp32 and bf16 against the CPU reference", "[gpu]") {
  std::vector<std::string> texts;
  for (int i = 0; i < 40; ++i) texts.push_back(Repeat("the earth and the heaven ", i % 9 + 1));
  const int64_t max_tokens = 48;
  const testing::TinyReference want = testing::TinyPerplexity(texts, max_tokens);
  for (const auto& [dtype, tolerance] : {std::pair<std::string, double>{"float32", 1e-3},
                                         std::pair<std::string, double>{"bfloat16", 5e-2}}) {
    INFO(dtype);
    auto stack = testing::NewEvalStack(TinyConfig({"device=cuda", "model.dtype=" + dtype}));
    const Framing& framing = stack.framing;
    auto docs = FrameDocuments(Records(texts), *stack->tokenizer, framing, max_tokens);
    REQUIRE(docs.ok());
    auto got = ScoreDocuments(*stack->engine, *docs, {});
    INFO(got.status().ToString());
    REQUIRE(got.ok());
    CHECK(got->scored_tokens == want.tokens);
    INFO("cuda " << got->perplexity() << " cpu reference " << want.perplexity());
    CHECK(std::fabs(got->perplexity() - want.perplexity()) <= tolerance * want.perplexity());
  }
}

TEST_CASE("a document the engine refuses is an error naming it") {
  auto stack = testing::NewEvalStack(TinyConfig());
  std::vector<Document> docs = {{"docs.jsonl:7", {{1200, 99999}, false}}};  // id past the vocab
  auto got = ScoreDocuments(*stack->engine, docs, {});
  REQUIRE_FALSE(got.ok());
  CHECK_THAT(std::string(got.status().message()), Catch::Contains("docs.jsonl:7"));
}

}  // namespace
}  // namespace arbor::eval
