// Token ids and decoded text against Hugging Face tokenizers, on every case of every fixture
// (tests/data/tokenizers/<name>/cases.json, written by tools/fixtures/make_tokenizers.py):
// Encode with and without special tokens, Decode skipping and keeping special tokens, streaming
// decode, whose chunks must be valid UTF-8 and add up to the full decode, and DecodeBytes.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer/incremental_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "tests/tokenizer/fixture_paths.h"

namespace arbor::engine {
namespace {

using Json = nlohmann::json;

Json ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::stringstream s;
  s << in.rdbuf();
  return Json::parse(s.str());
}

std::string Show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

std::string Quote(const std::string& s) { return Json(s).dump(); }

// Mismatch descriptions, the first few in full.
class Mismatches {
 public:
  void Add(const std::string& what) {
    if (++count_ <= 12) text_ += what + "\n";
  }
  int count() const { return count_; }
  const std::string& text() const { return text_; }

 private:
  int count_ = 0;
  std::string text_;
};

// Streams `ids` through an IncrementalDecoder; records a mismatch unless every chunk is valid
// UTF-8 and their concatenation is `want`.
void CheckStream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip,
                 const std::string& want, Mismatches* bad) {
  IncrementalDecoder dec(tok, skip);
  std::string all;
  for (const int32_t id : ids) {
    auto chunk = dec.Append(id);
    if (!chunk.ok()) {
      bad->Add("stream " + Show(ids) + ": " + std::string(chunk.status().message()));
      return;
    }
    if (!utf8::IsValid(*chunk)) bad->Add("stream " + Show(ids) + ": invalid UTF-8 chunk");
    all += *chunk;
  }
  auto rest = dec.Flush();
  if (!rest.ok()) {
    bad->Add("stream flush " + Show(ids) + ": " + std::string(rest.status().message()));
    return;
  }
  if (!utf8::IsValid(*rest)) bad->Add("stream " + Show(ids) + ": invalid UTF-8 in flush");
  all += *rest;
  if (all != want) {
    bad->Add("stream " + Show(ids) + " skip=" + std::to_string(skip) + ": got " + Quote(all) +
             ", want " + Quote(want));
  }
}

// DecodeBytes keeps a token's bytes where they are not valid UTF-8; where they are, they are
// HF's text, and where they are not, HF's text shows U+FFFD.
void CheckBytes(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip,
                const std::string& want, Mismatches* bad) {
  auto raw = tok.DecodeBytes(ids, skip);
  if (!raw.ok()) {
    bad->Add("bytes " + Show(ids) + ": " + std::string(raw.status().message()));
    return;
  }
  const bool valid = utf8::IsValid(*raw);
  if (valid ? *raw != want : want.find(utf8::kReplacement) == std::string::npos) {
    bad->Add("bytes " + Show(ids) + " skip=" + std::to_string(skip) + ": got " + Quote(*raw) +
             ", want " + Quote(want));
  }
}

void CheckFixture(const std::string& name) {
  auto tok = Tokenizer::FromFile(testing::TokenizerFixturePath(name, "tokenizer.json"));
  INFO(tok.status().ToString());
  REQUIRE(tok.ok());
  const Json cases = ReadJson(testing::TokenizerFixturePath(name, "cases.json"));
  CHECK((*tok)->vocab_size() == cases["vocab_size_with_added"].get<int32_t>());

  Mismatches bad;
  int checked = 0;
  for (const Json& c : cases["encode"]) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto want_plain = c["ids_no_special"].get<std::vector<int32_t>>();
    auto got = (*tok)->Encode(text, /*add_special_tokens=*/true);
    auto got_plain = (*tok)->Encode(text, /*add_special_tokens=*/false);
    if (!got.ok() || *got != want) {
      bad.Add("encode " + Quote(text) + ": got " + (got.ok() ? Show(*got) : "error") + ", want " +
              Show(want));
    }
    if (!got_plain.ok() || *got_plain != want_plain) {
      bad.Add("encode (no special) " + Quote(text) + ": got " +
              (got_plain.ok() ? Show(*got_plain) : "error") + ", want " + Show(want_plain));
    }
    for (const bool skip : {true, false}) {
      const std::string want_text = c[skip ? "decode_skip" : "decode_keep"].get<std::string>();
      auto dec = (*tok)->Decode(want, skip);
      if (!dec.ok() || *dec != want_text) {
        bad.Add("decode " + Show(want) + " skip=" + std::to_string(skip) + ": got " +
                (dec.ok() ? Quote(*dec) : "error") + ", want " + Quote(want_text));
      }
      CheckStream(**tok, want, skip, want_text, &bad);
      CheckBytes(**tok, want, skip, want_text, &bad);
    }
    ++checked;
  }
  for (const Json& c : cases["decode"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    for (const bool skip : {true, false}) {
      const std::string want_text = c[skip ? "decode_skip" : "decode_keep"].get<std::string>();
      auto dec = (*tok)->Decode(ids, skip);
      if (!dec.ok() || *dec != want_text) {
        bad.Add("decode " + Show(ids) + " skip=" + std::to_string(skip) + ": got " +
                (dec.ok() ? Quote(*dec) : "error") + ", want " + Quote(want_text));
      }
      CheckStream(**tok, ids, skip, want_text, &bad);
      CheckBytes(**tok, ids, skip, want_text, &bad);
    }
    ++checked;
  }
  INFO(name << ": " << bad.count() << " mismatches in " << checked << " cases\n" << bad.text());
  CHECK(checked > 200);
  CHECK(bad.count() == 0);
}

TEST_CASE("llama3 (ByteLevel, Llama-3 regex, ignore_merges, BOS) matches HF", "[tokenizer]") {
  CheckFixture("llama3");
}

TEST_CASE("gpt2 (ByteLevel regex, lstrip/rstrip/single_word added tokens) matches HF",
          "[tokenizer]") {
  CheckFixture("gpt2");
}

TEST_CASE("qwen2 (NFC, Qwen2 regex, non-special added tokens) matches HF", "[tokenizer]") {
  CheckFixture("qwen2");
}

TEST_CASE("llama2 (Prepend/Replace normalizers, byte fallback) matches HF", "[tokenizer]") {
  CheckFixture("llama2");
}

TEST_CASE("mistral (Metaspace prepend_scheme first, byte fallback) matches HF", "[tokenizer]") {
  CheckFixture("mistral");
}

TEST_CASE("metaspace (Metaspace split, Metaspace decoder) matches HF", "[tokenizer]") {
  CheckFixture("metaspace");
}

}  // namespace
}  // namespace arbor::engine
