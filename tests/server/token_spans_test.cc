// TokenSpans and EchoOffsets (server/token_spans.h): a token's own bytes and its character
// offset in the returned text, on every tokenizer fixture. The peer is Hugging Face: the bytes
// of a decode case's ids, concatenated and decoded lossily, give the text HF's decode gave
// (tests/data/tokenizers/*/cases.json).
#include "server/token_spans.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/tokenizer/utf8.h"
#include "tests/tokenizer/fixture_paths.h"

namespace arbor::server {
namespace {

using nlohmann::json;

std::unique_ptr<engine::Tokenizer> Load(const std::string& path) {
  auto t = engine::Tokenizer::FromFile(path);
  REQUIRE(t.ok());
  return std::move(*t);
}

json Cases(const std::string& name) {
  std::ifstream in(testing::TokenizerFixturePath(name, "cases.json"));
  REQUIRE(in.good());
  return json::parse(in);
}

// Checks the spans of `ids` against the decoder: bytes concatenate to DecodeBytes (and, where
// the text is valid UTF-8, to Decode); each offset counts the characters before the token.
//
// Where a run of byte-fallback tokens is not valid UTF-8, HF writes one U+FFFD for every byte of
// the run, valid ASCII bytes included, so no choice of bytes decodes back to that text: the
// tokens keep their own bytes there.
void CheckSpans(const engine::Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  TokenSpans spans(&tok, skip_special, 0);
  std::string concat;
  int64_t last = 0;
  for (const int32_t id : ids) {
    const TokenSpan s = spans.Next(id);
    CHECK(s.offset >= last);
    last = s.offset;
    const int64_t lossy_chars = CharCount(engine::utf8::Lossy(concat));
    if (engine::utf8::IsValid(concat)) {
      CHECK(s.offset == CharCount(concat));
    } else {
      // A character still being completed is not counted yet.
      CHECK(s.offset >= lossy_chars - 1);
      CHECK(s.offset <= lossy_chars);
    }
    concat += s.bytes;
  }
  auto bytes = tok.DecodeBytes(ids, skip_special);
  REQUIRE(bytes.ok());
  CHECK(concat == *bytes);
  auto text = tok.Decode(ids, skip_special);
  REQUIRE(text.ok());
  if (engine::utf8::IsValid(concat)) CHECK(concat == *text);
}

TEST_CASE("token bytes concatenate to Hugging Face's decode on every fixture", "[token_spans]") {
  for (const std::string& name : testing::TokenizerFixtureNames()) {
    INFO(name);
    auto tok = Load(testing::TokenizerFixturePath(name, "tokenizer.json"));
    const json cases = Cases(name);
    for (const json& c : cases["decode"]) {
      const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
      INFO(c["ids"].dump());
      CheckSpans(*tok, ids, /*skip_special=*/true);
      // HF's own answer for the same ids.
      TokenSpans spans(tok.get(), true, 0);
      std::string concat;
      for (int32_t id : ids) concat += spans.Next(id).bytes;
      if (engine::utf8::IsValid(concat)) CHECK(concat == c["decode_skip"].get<std::string>());
    }
    for (const json& c : cases["encode"]) {
      const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
      INFO(c["text"].get<std::string>());
      CheckSpans(*tok, ids, /*skip_special=*/false);
      CheckSpans(*tok, ids, /*skip_special=*/true);
    }
  }
}

TEST_CASE("a byte-fallback piece of a character has its own byte", "[token_spans]") {
  // SentencePiece with byte fallback: a character outside the vocabulary is one token per byte.
  auto tok = Load(testing::TokenizerFixturePath("llama2", "tokenizer.json"));
  const std::string text = "\xF0\x9F\xA6\x99";  // U+1F999, four bytes
  auto ids = tok->Encode(text, /*add_special_tokens=*/false);
  REQUIRE(ids.ok());
  TokenSpans spans(tok.get(), true, 0);
  std::vector<TokenSpan> out;
  for (int32_t id : *ids) out.push_back(spans.Next(id));
  std::string concat;
  size_t single_bytes = 0;
  for (const TokenSpan& s : out) {
    concat += s.bytes;
    if (s.bytes.size() == 1 && (static_cast<unsigned char>(s.bytes[0]) & 0x80)) ++single_bytes;
  }
  CHECK(single_bytes == 4);  // not four U+FFFD, each of three bytes
  CHECK(concat.size() >= text.size());
  CHECK(concat.substr(concat.size() - text.size()) == text);
  // Every piece of the character starts where the character does.
  CHECK(out.back().offset == out[out.size() - 4].offset);
}

TEST_CASE("echo offsets count characters of the prompt as sent", "[token_spans]") {
  auto tiny = Load(testing::RunfilePath("models/tiny/tokenizer.json"));
  const std::string text = "h\xC3\xA9llo w\xC3\xB6rld";  // "héllo wörld"
  auto ids = tiny->Encode(text, /*add_special_tokens=*/true);
  REQUIRE(ids.ok());
  // BOS (no width), h, é, ll, o, " w", ö as two byte-level pieces, r, ld.
  CHECK(EchoOffsets(tiny.get(), text, *ids, /*text_prompt=*/true) ==
        std::vector<int64_t>{0, 0, 1, 2, 4, 5, 7, 7, 8, 9});

  // A token-id prompt is echoed as its decode with special tokens: the BOS text takes width.
  auto keep = tiny->Decode(*ids, /*skip_special_tokens=*/false);
  REQUIRE(keep.ok());
  const std::vector<int64_t> id_offsets = EchoOffsets(tiny.get(), *keep, *ids, false);
  const int64_t bos = CharCount(*tiny->IdToToken((*ids)[0]));
  REQUIRE(id_offsets.size() == ids->size());
  CHECK(id_offsets[0] == 0);
  CHECK(id_offsets[1] == bos);
  CHECK(id_offsets.back() == bos + 9);

  // A special token the client wrote into the prompt is matched by its content.
  const std::string bos_text = *tiny->IdToToken((*ids)[0]);
  const std::string with_special = bos_text + "ab";
  auto special_ids = tiny->Encode(with_special, /*add_special_tokens=*/false);
  REQUIRE(special_ids.ok());
  const std::vector<int64_t> special = EchoOffsets(tiny.get(), with_special, *special_ids, true);
  REQUIRE(special.size() >= 2);
  CHECK(special[0] == 0);
  CHECK(special[1] == CharCount(bos_text));

  // No tokenizer: every offset 0.
  CHECK(EchoOffsets(nullptr, "abc", {1, 2, 3}, true) == std::vector<int64_t>{0, 0, 0});
}

TEST_CASE("ids the tokenizer lacks have no bytes; the first offset is the echo's length",
          "[token_spans]") {
  auto tiny = Load(testing::RunfilePath("models/tiny/tokenizer.json"));
  TokenSpans spans(tiny.get(), true, 11);
  const TokenSpan oov = spans.Next(tiny->vocab_size() + 40);
  CHECK(oov.bytes.empty());
  CHECK(oov.offset == 11);
  auto a = tiny->Encode("a", false);
  REQUIRE(a.ok());
  const TokenSpan next = spans.Next((*a)[0]);
  CHECK(next.bytes == "a");
  CHECK(next.offset == 11);
  CHECK(spans.Next((*a)[0]).offset == 12);

  TokenSpans none(nullptr, true, 3);
  CHECK(none.Next(5).offset == 3);
  CHECK(none.Next(5).bytes.empty());
  CHECK(TokenBytes(nullptr, 5).empty());
}

}  // namespace
}  // namespace arbor::server
