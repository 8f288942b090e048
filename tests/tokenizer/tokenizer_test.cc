// Tokenizer behaviour beyond parity with HF: bad input (invalid UTF-8, unknown ids), load
// errors that name the file and the field, the special-token API, the regex translation,
// lossy UTF-8, streaming on random ids, thread safety and speed.
#include "engine/tokenizer/tokenizer.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/tokenizer/incremental_decoder.h"
#include "engine/tokenizer/split_regex.h"
#include "engine/tokenizer/utf8.h"
#include "tests/tokenizer/fixture_paths.h"

namespace arbor::engine {
namespace {

std::unique_ptr<Tokenizer> LoadFixture(const std::string& name) {
  auto tok = Tokenizer::FromFile(testing::TokenizerFixturePath(name, "tokenizer.json"));
  INFO(tok.status().ToString());
  REQUIRE(tok.ok());
  return std::move(*tok);
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// A small valid tokenizer.json; the error cases below each break one field of it.
constexpr const char* kMiniJson = R"({
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [{"id": 5, "content": "<s>", "special": true, "lstrip": false,
                    "rstrip": false, "normalized": false, "single_word": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
               {"Sequence": {"id": "A", "type_id": 0}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [5], "tokens": ["<s>"]}}},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4},
            "merges": [["a", "b"], ["Ġ", "ab"]]}
})";

// kMiniJson with the first occurrence of `from` replaced by `to`.
std::string Mini(const std::string& from, const std::string& to) {
  std::string s = kMiniJson;
  const size_t at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

TEST_CASE("the mini tokenizer used by the error cases is valid", "[tokenizer]") {
  auto tok = Tokenizer::FromJson(kMiniJson, "mini.json");
  INFO(tok.status().ToString());
  REQUIRE(tok.ok());
  auto ids = (*tok)->Encode("ab ab", true);
  REQUIRE(ids.ok());
  CHECK(*ids == std::vector<int32_t>{5, 2, 4});
  CHECK(*(*tok)->Decode(*ids, false) == "<s>ab ab");
  CHECK((*tok)->vocab_size() == 6);
}

TEST_CASE("invalid UTF-8 input is InvalidArgument", "[tokenizer]") {
  const std::vector<std::string> bad = {
      "\xff",
      "abc\xc3",
      "\xed\xa0\x80",      // a surrogate
      "\xc0\xaf",          // overlong '/'
      "\xf4\x90\x80\x80",  // above U+10FFFF
      "ok <s>\x80",
      "\xe4\xbd",
      std::string("a\0\xfe", 3),
  };
  for (const std::string& name : testing::TokenizerFixtureNames()) {
    auto tok = LoadFixture(name);
    for (const std::string& text : bad) {
      INFO(name << " " << text.size() << " bytes");
      auto ids = tok->Encode(text, true);
      REQUIRE_FALSE(ids.ok());
      CHECK(ids.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(Message(ids.status()), Catch::Contains("not valid UTF-8"));
    }
    CHECK(tok->Encode(std::string("nul\0inside", 10), false).ok());
  }
}

TEST_CASE("ids outside the vocabulary are InvalidArgument", "[tokenizer]") {
  for (const std::string& name : testing::TokenizerFixtureNames()) {
    auto tok = LoadFixture(name);
    for (const int32_t id : {-1, tok->vocab_size(), tok->vocab_size() + 7, int32_t{1} << 30,
                             std::numeric_limits<int32_t>::min()}) {
      INFO(name << " id " << id);
      auto text = tok->Decode(std::vector<int32_t>{1, id}, false);
      REQUIRE_FALSE(text.ok());
      CHECK(text.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(Message(text.status()), Catch::Contains(std::to_string(id)));
      CHECK_FALSE(tok->IdToToken(id).has_value());

      // The stream refuses it and carries on as if it had not been given.
      IncrementalDecoder stream(*tok, false);
      auto hello = tok->Encode("Hello there", false);
      REQUIRE(hello.ok());
      std::string out;
      for (size_t i = 0; i < hello->size(); ++i) {
        if (i == 1) {
          auto bad = stream.Append(id);
          REQUIRE_FALSE(bad.ok());
          CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
        }
        auto chunk = stream.Append((*hello)[i]);
        REQUIRE(chunk.ok());
        out += *chunk;
      }
      out += *stream.Flush();
      CHECK(out == *tok->Decode(*hello, false));
    }
  }
}

TEST_CASE("load errors name the file and the field", "[tokenizer]") {
  struct Bad {
    std::string json;
    std::string must_mention;
  };
  const std::vector<Bad> cases = {
      {"{", "not valid JSON"},
      {"[1, 2]", "expected a JSON object"},
      {"{\"added_tokens\": []}", "model: missing"},
      {Mini("\"type\": \"BPE\"", "\"type\": \"WordPiece\""),
       "model.type: unsupported model \"WordPiece\""},
      {Mini("\"type\": \"BPE\"", "\"type\": \"Unigram\""),
       "model.type: unsupported model \"Unigram\""},
      {Mini("[\"a\", \"b\"]", "[\"a\", \"zz\"]"),
       "model.merges[0]: token \"zz\" is not in model.vocab"},
      {Mini("\"ab\": 2", "\"abx\": 2"),
       "model.merges[0]: merged token \"ab\" is not in model.vocab"},
      {Mini("[\"a\", \"b\"]", "42"), "model.merges[0]: expected"},
      {Mini("[\"a\", \"b\"]", "\"a  b\""), "model.merges[0]"},
      {Mini("\"a\": 0", "\"a\": \"zero\""), "model.vocab: id of \"a\""},
      {Mini("\"b\": 1", "\"b\": 0"), "model.vocab: id 0 is given to both"},
      {Mini("\"vocab\":", "\"vocabulary\":"), "model.vocab: missing"},
      {Mini("\"type\": \"BPE\",", "\"type\": \"BPE\", \"dropout\": 0.1,"), "model.dropout"},
      {Mini("\"type\": \"BPE\",", "\"type\": \"BPE\", \"unk_token\": \"<unk>\","),
       "model.unk_token: \"<unk>\" is not in model.vocab"},
      {Mini("\"type\": \"ByteLevel\", \"add_prefix_space\"", "\"type\": \"Whitespace\", \"x\""),
       "pre_tokenizer.type: unsupported pre-tokenizer \"Whitespace\""},
      {Mini("\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
            "\"use_regex\": true}",
            "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
            "\"ByteLevel\"}, "
            "{\"type\": \"Digits\"}]}"),
       "pre_tokenizer.pretokenizers[1].type: unsupported pre-tokenizer \"Digits\""},
      {Mini("\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
            "\"use_regex\": true}",
            "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a(?=b)\"}, "
            "\"behavior\": \"Isolated\", \"invert\": false}"),
       "pre_tokenizer.pattern.Regex: regex lookaround is not supported"},
      {Mini("\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
            "\"use_regex\": true}",
            "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+\"}, "
            "\"behavior\": \"MergedWithPrevious\", \"invert\": false}"),
       "pre_tokenizer.behavior: unsupported \"MergedWithPrevious\""},
      {Mini("\"normalizer\": null", "\"normalizer\": {\"type\": \"Lowercase\"}"),
       "normalizer.type: unsupported normalizer \"Lowercase\""},
      {Mini("\"decoder\": {\"type\": \"ByteLevel\"}", "\"decoder\": {\"type\": \"WordPiece\"}"),
       "decoder.type: unsupported decoder \"WordPiece\""},
      {Mini("\"decoder\": {\"type\": \"ByteLevel\"}", "\"decoder\": {\"kind\": \"ByteLevel\"}"),
       "decoder.type: missing"},
      {Mini("\"post_processor\": {\"type\": \"TemplateProcessing\"",
            "\"post_processor\": {\"type\": \"BertProcessing\""),
       "post_processor.type: unsupported post-processor \"BertProcessing\""},
      {Mini("{\"SpecialToken\": {\"id\": \"<s>\"", "{\"SpecialToken\": {\"id\": \"<bos>\""),
       "post_processor.single[0].SpecialToken.id: \"<bos>\" is not in"},
      {Mini("\"ids\": [5]", "\"ids\": [99]"), "post_processor: adds id 99"},
      {Mini("[{\"id\": 5,", "[{"), "added_tokens[0].id: missing"},
      {Mini("\"id\": 5, \"content\": \"<s>\"", "\"id\": 5, \"content\": \"ab\""),
       "added_tokens[0].id: 5 differs from the id of \"ab\" in model.vocab (2)"},
      {Mini("\"truncation\": null", "\"truncation\": {\"max_length\": 5}"),
       "truncation: must be null"},
  };
  for (const Bad& b : cases) {
    INFO(b.json);
    auto tok = Tokenizer::FromJson(b.json, "dir/bad.json");
    REQUIRE_FALSE(tok.ok());
    CHECK(tok.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(Message(tok.status()), Catch::StartsWith("dir/bad.json: "));
    CHECK_THAT(Message(tok.status()), Catch::Contains(b.must_mention));
  }
  auto missing = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(Message(missing.status()), Catch::StartsWith("/nonexistent/tokenizer.json"));
}

TEST_CASE("special tokens: lookup, flags and BOS", "[tokenizer]") {
  auto llama3 = LoadFixture("llama3");
  const auto bos = llama3->TokenToId("<|begin_of_text|>");
  const auto eot = llama3->TokenToId("<|eot_id|>");
  REQUIRE(bos.has_value());
  REQUIRE(eot.has_value());
  CHECK(llama3->IsSpecial(*bos));
  CHECK(llama3->IsSpecial(*eot));
  CHECK(*llama3->IdToToken(*eot) == "<|eot_id|>");
  CHECK_FALSE(llama3->IsSpecial(0));
  CHECK(llama3->TokenToId("Ġthe").has_value());
  CHECK_FALSE(llama3->TokenToId("no such token").has_value());
  auto ids = llama3->Encode("hi<|eot_id|>", true);
  REQUIRE(ids.ok());
  CHECK(ids->front() == *bos);
  CHECK(ids->back() == *eot);
  CHECK(*llama3->Decode(*ids, true) == "hi");
  CHECK(*llama3->Decode(*ids, false) == "<|begin_of_text|>hi<|eot_id|>");

  auto llama2 = LoadFixture("llama2");
  CHECK(*llama2->TokenToId("<s>") == 1);
  CHECK(*llama2->TokenToId("<0x0A>") == 3 + 0x0A);
  CHECK(llama2->IsSpecial(1));
  CHECK_FALSE(llama2->IsSpecial(3 + 0x0A));  // byte tokens are vocabulary, not added tokens
  const auto tool = llama2->TokenToId("<tool>");
  REQUIRE(tool.has_value());
  CHECK_FALSE(llama2->IsSpecial(*tool));
  CHECK(*llama2->IdToToken(*tool) == "<tool>");
}

TEST_CASE("the Oniguruma-to-RE2 translation", "[tokenizer]") {
  auto split = [](const std::string& pattern, const std::string& text) {
    auto re = SplitRegex::Compile(pattern);
    INFO(re.status().ToString());
    REQUIRE(re.ok());
    std::vector<std::string> out;
    for (const auto& [b, e] : (*re)->FindAll(text)) out.push_back(text.substr(b, e - b));
    return out;
  };
  using V = std::vector<std::string>;
  const std::string gpt2 =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  // `\s+(?!\S)` leaves the last space of a run for the word after it.
  CHECK(split(gpt2, "a   b") == V{"a", "  ", " b"});
  CHECK(split(gpt2, "a b") == V{"a", " b"});
  CHECK(split(gpt2, "a   ") == V{"a", "   "});
  CHECK(split(gpt2, "a \n\nb") == V{"a", " \n", "\n", "b"});
  CHECK(split(gpt2, "x\t!") == V{"x", "\t", "!"});
  // Unicode whitespace counts as \s (RE2's own \s is ASCII only).
  CHECK(split(gpt2, "a\xe3\x80\x80\xe3\x80\x80z") == V{"a", "\xe3\x80\x80", "\xe3\x80\x80", "z"});
  CHECK(split(gpt2, "it's 12x") == V{"it", "'s", " 12", "x"});
  CHECK(split(R"(\s+(?!\S))", "a  b ") == V{" ", " "});
  CHECK(split(R"(\d+|\w+)", "ab_1 ٣٤") == V{"ab_1", "٣٤"});
  for (const char* unsupported : {"a(?=b)", "(?<=a)b", "(?!x)y", "a++", "(?>ab)", "\\h+", "[a[b]]",
                                  "\\S+(?!\\S)", "x\\s+(?!\\S)"}) {
    INFO(unsupported);
    CHECK_FALSE(SplitRegex::Compile(unsupported).ok());
  }
}

TEST_CASE("lossy UTF-8 replaces each maximal ill-formed subpart once", "[tokenizer]") {
  const std::string r = std::string(utf8::kReplacement);
  CHECK(utf8::Lossy("ok") == "ok");
  CHECK(utf8::Lossy("\xe4\xbd") == r);
  CHECK(utf8::Lossy("\xe4\x41") == r + "A");
  CHECK(utf8::Lossy("\xf0\x9f\x98") == r);
  CHECK(utf8::Lossy("\xed\xa0\x80") == r + r + r);
  CHECK(utf8::Lossy("\xc0\xaf") == r + r);
  CHECK(utf8::Lossy("\xff\xfe") == r + r);
  CHECK(utf8::Lossy("\xe4\xbd\xa0") == "\xe4\xbd\xa0");
}

TEST_CASE("streaming random ids adds up to Decode, in valid UTF-8 chunks", "[tokenizer]") {
  std::mt19937 rng(1234);
  for (const std::string& name : testing::TokenizerFixtureNames()) {
    auto tok = LoadFixture(name);
    std::uniform_int_distribution<int32_t> any_id(0, tok->vocab_size() - 1);
    // Byte-level single bytes and <0xNN> tokens make partial characters common.
    std::uniform_int_distribution<int32_t> low_id(0, 300);
    for (const bool skip : {false, true}) {
      IncrementalDecoder stream(*tok, skip);  // reused: Flush starts a new stream
      for (int round = 0; round < 150; ++round) {
        std::vector<int32_t> ids(static_cast<size_t>(rng() % 40));
        for (auto& id : ids) id = (rng() % 2) ? any_id(rng) : low_id(rng);
        std::string all;
        for (const int32_t id : ids) {
          auto chunk = stream.Append(id);
          REQUIRE(chunk.ok());
          CHECK(utf8::IsValid(*chunk));
          all += *chunk;
        }
        auto rest = stream.Flush();
        REQUIRE(rest.ok());
        CHECK(utf8::IsValid(*rest));
        all += *rest;
        INFO(name << " skip=" << skip << " round " << round);
        CHECK(all == *tok->Decode(ids, skip));
      }
    }
  }
}

TEST_CASE("streaming holds back only what may still change", "[tokenizer]") {
  for (const std::string& name : testing::TokenizerFixtureNames()) {
    auto tok = LoadFixture(name);
    auto ids = tok->Encode("Hello world, this is the LORD's test.", true);
    REQUIRE(ids.ok());
    IncrementalDecoder stream(*tok, true);
    std::string before_flush;
    for (const int32_t id : *ids) before_flush += *stream.Append(id);
    INFO(name);
    CHECK(before_flush == *tok->Decode(*ids, true));
    CHECK(*stream.Flush() == "");
  }
  // A character split over byte-fallback tokens comes out whole, once the run ends.
  auto llama2 = LoadFixture("llama2");
  IncrementalDecoder stream(*llama2, true);
  CHECK(*stream.Append(3 + 0xE4) == "");
  CHECK(*stream.Append(3 + 0xBD) == "");
  CHECK(*stream.Append(3 + 0xA0) == "");  // valid now, but a later byte could still spoil it
  CHECK(*stream.Append(*llama2->TokenToId("</s>")) == "");  // skipped: the run goes on
  const std::string rest = *stream.Append(*llama2->TokenToId("a"));
  CHECK(rest ==
        "\xe4\xbd\xa0"
        "a");
  CHECK(*stream.Flush() == "");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST_CASE("encoding is fast and thread-safe", "[tokenizer]") {
  const std::string corpus = ReadFile(testing::RunfilePath("tools/fixtures/corpus/kjv.txt"));
  REQUIRE(corpus.size() > 100000);
  for (const std::string& name : testing::TokenizerFixtureNames()) {
    auto tok = LoadFixture(name);
    const auto start = std::chrono::steady_clock::now();
    auto ids = tok->Encode(corpus, false);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    REQUIRE(ids.ok());
    std::printf("%s: %zu bytes -> %zu tokens in %.3f s\n", name.c_str(), corpus.size(), ids->size(),
                seconds);
    CHECK(seconds < 10.0);
    CHECK(*tok->Decode(*ids, false) == corpus);  // these fixtures round-trip plain text
    // One long word: the merge queue keeps this near-linear.
    const std::string word(100000, 'a');
    auto long_ids = tok->Encode(word, false);
    REQUIRE(long_ids.ok());
    // The same answers from four threads at once (the BPE cache is shared).
    std::vector<std::vector<int32_t>> got(4);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < got.size(); ++t) {
      threads.emplace_back([&, t] { got[t] = *tok->Encode(corpus.substr(0, 20000), false); });
    }
    for (auto& th : threads) th.join();
    const auto want = *tok->Encode(corpus.substr(0, 20000), false);
    for (const auto& g : got) CHECK(g == want);
  }
}

}  // namespace
}  // namespace arbor::engine
