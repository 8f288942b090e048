#include "server/token_spans.h"

#include "absl/strings/match.h"
#include "engine/tokenizer/utf8.h"

namespace arbor::server {
namespace {

// Ids of context before the token: enough for every supported decoder (a leading space that
// a Strip or Metaspace step drops only at the start, a byte-fallback run).
constexpr size_t kWindow = 6;

bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

int64_t CharCount(std::string_view text) {
  int64_t n = 0;
  for (char c : text) n += IsContinuation(c) ? 0 : 1;
  return n;
}

std::string TokenBytes(const engine::Tokenizer* tokenizer, int32_t id) {
  if (tokenizer == nullptr) return "";
  auto bytes = tokenizer->DecodeBytes({&id, 1}, /*skip_special_tokens=*/false);
  return bytes.ok() ? *bytes : std::string();
}

TokenSpans::TokenSpans(const engine::Tokenizer* tokenizer, bool skip_special_tokens,
                       int64_t first_offset)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens), chars_(first_offset) {}

TokenSpan TokenSpans::Next(int32_t id) {
  TokenSpan span;
  span.offset = chars_;
  if (tokenizer_ == nullptr || !tokenizer_->IdToToken(id).has_value()) return span;
  auto before = tokenizer_->DecodeBytes(window_, skip_special_);
  window_.push_back(id);
  auto after = tokenizer_->DecodeBytes(window_, skip_special_);
  if (before.ok() && after.ok() && absl::StartsWith(*after, *before)) {
    span.bytes = after->substr(before->size());
  } else if (!(skip_special_ && tokenizer_->IsSpecial(id))) {
    // A decoder whose output is not a prefix of the longer one's (a Strip of trailing
    // characters): the token alone.
    span.bytes = TokenBytes(tokenizer_, id);
  }
  if (window_.size() > kWindow) window_.erase(window_.begin());
  Count(span.bytes);
  return span;
}

void TokenSpans::Count(std::string_view bytes) {
  tail_.append(bytes.data(), bytes.size());
  size_t used = 0;
  while (used < tail_.size()) {
    bool valid = false;
    const size_t len = engine::utf8::Scan(tail_, used, &valid);
    // An ill-formed run reaching the end may still become a character; wait for more bytes.
    if (!valid && used + len == tail_.size() && tail_.size() - used < 4) break;
    ++chars_;  // a character, or one U+FFFD for an ill-formed run, as the text shows it
    used += len;
  }
  tail_.erase(0, used);
}

std::vector<int64_t> EchoOffsets(const engine::Tokenizer* tokenizer, const std::string& text,
                                 const std::vector<int32_t>& ids, bool text_prompt) {
  std::vector<int64_t> out;
  out.reserve(ids.size());
  if (tokenizer == nullptr) {
    out.assign(ids.size(), 0);
    return out;
  }
  // A sent prompt is decoded without special tokens (so the one after a BOS is decoded as the
  // text's start); a special token the client wrote into it is matched by its content.
  TokenSpans spans(tokenizer, /*skip_special_tokens=*/text_prompt, 0);
  size_t cursor = 0;  // bytes of `text` the tokens so far account for
  int64_t chars = 0;  // CharCount(text[0, cursor))
  auto advance = [&](size_t bytes) {
    const size_t to = std::min(text.size(), cursor + bytes);
    chars += CharCount(std::string_view(text).substr(cursor, to - cursor));
    cursor = to;
  };
  for (const int32_t id : ids) {
    // A token starting inside a character belongs to that character.
    out.push_back(chars - (cursor < text.size() && IsContinuation(text[cursor]) ? 1 : 0));
    if (text_prompt && tokenizer->IsSpecial(id)) {
      const auto content = tokenizer->IdToToken(id);
      if (content.has_value() && text.compare(cursor, content->size(), *content) == 0) {
        advance(content->size());
      }
      (void)spans.Next(id);
      continue;
    }
    // When the decoded bytes differ from what the client sent (a normalizer changed them),
    // they still keep pace with it.
    advance(spans.Next(id).bytes.size());
  }
  return out;
}

}  // namespace arbor::server
