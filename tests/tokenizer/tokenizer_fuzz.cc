// libFuzzer target: arbitrary bytes through Encode, Decode and IncrementalDecoder of the six
// fixture tokenizers (their tokenizer.json files are compiled in by the :fuzz_fixtures
// genrule). Input: byte 0 picks the tokenizer and the flags, the rest is text; the same bytes,
// read as 16-bit ids, are decoded too. Any crash, sanitizer report or broken invariant fails.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/incremental_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

// From the genrule: llama3, gpt2, qwen2, llama2, mistral, metaspace.
extern const char* const kFuzzTokenizerJson[];
extern const size_t kFuzzTokenizerJsonCount;

namespace arbor::engine {
namespace {

void Require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tokenizer fuzz: %s\n", what);
    std::abort();
  }
}

const std::vector<std::unique_ptr<Tokenizer>>& Tokenizers() {
  static const auto* tokenizers = [] {
    auto* v = new std::vector<std::unique_ptr<Tokenizer>>();
    for (size_t i = 0; i < kFuzzTokenizerJsonCount; ++i) {
      auto tok = Tokenizer::FromJson(kFuzzTokenizerJson[i], "fixture " + std::to_string(i));
      Require(tok.ok(), "a fixture tokenizer does not load");
      v->push_back(std::move(*tok));
    }
    return v;
  }();
  return *tokenizers;
}

// Streams `ids` and checks the chunks against the full decode.
void CheckStream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip,
                 const std::string& full) {
  IncrementalDecoder stream(tok, skip);
  std::string all;
  for (const int32_t id : ids) {
    auto chunk = stream.Append(id);
    Require(chunk.ok(), "IncrementalDecoder::Append failed on a valid id");
    Require(utf8::IsValid(*chunk), "a streamed chunk is not valid UTF-8");
    all += *chunk;
  }
  auto rest = stream.Flush();
  Require(rest.ok(), "IncrementalDecoder::Flush failed");
  Require(utf8::IsValid(*rest), "the flushed text is not valid UTF-8");
  Require(all + *rest == full, "streamed text differs from Decode");
}

void Run(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const auto& tokenizers = Tokenizers();
  const Tokenizer& tok = *tokenizers[data[0] % tokenizers.size()];
  const bool add_special = (data[0] & 0x40) != 0;
  const bool skip = (data[0] & 0x80) != 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  auto ids = tok.Encode(text, add_special);
  Require(ids.ok() == utf8::IsValid(text), "Encode accepts exactly valid UTF-8");
  if (ids.ok()) {
    for (const int32_t id : *ids) Require(id >= 0 && id < tok.vocab_size(), "id out of range");
    auto decoded = tok.Decode(*ids, skip);
    Require(decoded.ok(), "Decode failed on Encode's ids");
    Require(utf8::IsValid(*decoded), "Decode gave invalid UTF-8");
    CheckStream(tok, *ids, skip, *decoded);
  }

  // The bytes as ids, a few of them out of range.
  std::vector<int32_t> raw;
  bool all_valid = true;
  for (size_t i = 1; i + 1 < size; i += 2) {
    const int32_t id = static_cast<int32_t>((data[i] | (data[i + 1] << 8)) %
                                            static_cast<uint32_t>(tok.vocab_size() + 4)) -
                       2;
    all_valid = all_valid && id >= 0 && id < tok.vocab_size();
    raw.push_back(id);
  }
  auto decoded = tok.Decode(raw, skip);
  Require(decoded.ok() == all_valid, "Decode accepts exactly known ids");
  if (decoded.ok()) {
    Require(utf8::IsValid(*decoded), "Decode gave invalid UTF-8");
    CheckStream(tok, raw, skip, *decoded);
  }
}

}  // namespace
}  // namespace arbor::engine

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  arbor::engine::Run(data, size);
  return 0;
}
