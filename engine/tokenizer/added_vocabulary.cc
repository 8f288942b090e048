#include "engine/tokenizer/added_vocabulary.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/utf8.h"

namespace arbor::engine {
namespace {

using json_fields::Json;

// The last code point of a non-empty valid UTF-8 string.
char32_t LastChar(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  size_t len = 0;
  return utf8::DecodeAt(s, i, &len);
}

// Start of the whitespace run that ends `s` (s.size() when there is none).
size_t TrailingSpaceStart(std::string_view s) {
  size_t i = s.size();
  while (i > 0) {
    size_t j = i - 1;
    while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
    size_t len = 0;
    if (!utf8::IsWhitespace(utf8::DecodeAt(s, j, &len))) break;
    i = j;
  }
  return i;
}

// Length of the whitespace run that starts `s`.
size_t LeadingSpaceLength(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t len = 0;
    if (!utf8::IsWhitespace(utf8::DecodeAt(s, i, &len))) break;
    i += len;
  }
  return i;
}

}  // namespace

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const Json& list, const std::string& path,
                                                          const Normalizer* normalizer) {
  AddedVocabulary v;
  v.raw_.by_first_byte.resize(256);
  v.normalized_.by_first_byte.resize(256);
  if (list.is_null()) return v;
  if (!list.is_array()) return json_fields::Error(path, "expected a list");
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& j = list[i];
    const std::string p = json_fields::Index(path, i);
    if (!j.is_object()) return json_fields::Error(p, "expected an object");
    AddedToken t;
    ASSIGN_OR_RETURN(const int64_t id, json_fields::GetInt(j, "id", p));
    if (id < 0 || id > (int64_t{1} << 30)) {
      return json_fields::Error(json_fields::Child(p, "id"), "expected an id in [0, 2^30]");
    }
    t.id = static_cast<int32_t>(id);
    ASSIGN_OR_RETURN(t.content, json_fields::GetString(j, "content", p));
    ASSIGN_OR_RETURN(t.special, json_fields::GetBool(j, "special", p, false));
    ASSIGN_OR_RETURN(t.lstrip, json_fields::GetBool(j, "lstrip", p, false));
    ASSIGN_OR_RETURN(t.rstrip, json_fields::GetBool(j, "rstrip", p, false));
    ASSIGN_OR_RETURN(t.normalized, json_fields::GetBool(j, "normalized", p, !t.special));
    ASSIGN_OR_RETURN(t.single_word, json_fields::GetBool(j, "single_word", p, false));
    if (t.content.empty()) return json_fields::Error(json_fields::Child(p, "content"), "is empty");
    if (v.by_id_.count(t.id) > 0) {
      return json_fields::Error(json_fields::Child(p, "id"),
                                absl::StrCat(t.id, " is used by an earlier added token"));
    }
    if (v.by_content_.count(t.content) > 0) {
      return json_fields::Error(json_fields::Child(p, "content"),
                                absl::StrCat("\"", t.content, "\" is added twice"));
    }
    v.by_id_[t.id] = v.tokens_.size();
    v.by_content_[t.content] = v.tokens_.size();
    v.tokens_.push_back(std::move(t));
  }
  for (AddedToken& t : v.tokens_) {
    t.decode_form = t.content;
    if (t.normalized && normalizer != nullptr) normalizer->Normalize(&t.decode_form);
  }
  // HF builds its matchers from the special tokens first, then the others, each in file order.
  for (const bool special_pass : {true, false}) {
    for (size_t k = 0; k < v.tokens_.size(); ++k) {
      const AddedToken& t = v.tokens_[k];
      if (t.special != special_pass) continue;
      if (!t.normalized) {
        AddPattern(&v.raw_, t.content, k);
      } else {
        if (!t.decode_form.empty()) AddPattern(&v.normalized_, t.decode_form, k);
      }
    }
  }
  return v;
}

void AddedVocabulary::AddPattern(Matcher* m, std::string text, size_t token) {
  auto& bucket = m->by_first_byte[static_cast<uint8_t>(text[0])];
  // Stable: among equal lengths the earlier pattern stays first (it wins, as in aho-corasick).
  auto pos =
      std::upper_bound(bucket.begin(), bucket.end(), text.size(),
                       [](size_t len, const Matcher::Pattern& p) { return len > p.text.size(); });
  bucket.insert(pos, Matcher::Pattern{std::move(text), token});
  m->empty = false;
}

std::vector<AddedSplit> AddedVocabulary::Split(const Matcher& m, std::string_view text) const {
  std::vector<AddedSplit> out;
  if (m.empty || text.empty()) {
    if (!text.empty()) out.push_back(AddedSplit{0, text.size(), -1});
    return out;
  }
  size_t start_offset = 0;  // end of the last split emitted
  size_t pos = 0;           // where the next leftmost-longest search starts
  while (pos < text.size()) {
    const Matcher::Pattern* hit = nullptr;
    for (const auto& p : m.by_first_byte[static_cast<uint8_t>(text[pos])]) {
      if (text.compare(pos, p.text.size(), p.text) == 0) {
        hit = &p;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + hit->text.size();
    pos = stop;
    const AddedToken& t = tokens_[hit->token];
    if (t.single_word) {
      const bool start_ok = start == 0 || !utf8::IsWordChar(LastChar(text.substr(0, start)));
      size_t len = 0;
      const bool stop_ok =
          stop == text.size() || !utf8::IsWordChar(utf8::DecodeAt(text, stop, &len));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) start = std::max(TrailingSpaceStart(text.substr(0, start)), start_offset);
    if (t.rstrip) stop += LeadingSpaceLength(text.substr(stop));
    if (start_offset < start) out.push_back(AddedSplit{start_offset, start, -1});
    out.push_back(AddedSplit{start, stop, t.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back(AddedSplit{start_offset, text.size(), -1});
  return out;
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::FindByContent(std::string_view content) const {
  auto it = by_content_.find(ToAbsl(content));
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

bool AddedVocabulary::IsSpecialContent(std::string_view token) const {
  auto it = by_content_.find(ToAbsl(token));
  return it != by_content_.end() && tokens_[it->second].special;
}

}  // namespace arbor::engine
