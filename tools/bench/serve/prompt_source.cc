#include "tools/bench/serve/prompt_source.h"

#include <fstream>

#include "absl/strings/str_cat.h"

namespace arbor::bench {
namespace {

using nlohmann::json;

// Common words, each a single token in most BPE vocabularies when preceded by a space.
constexpr const char* kWords[] = {
    "the",   "of",    "and",   "to",    "in",    "is",    "was",   "for",   "on",    "that",
    "with",  "as",    "by",    "at",    "from",  "his",   "it",    "an",    "were",  "are",
    "which", "this",  "be",    "or",    "has",   "had",   "first", "one",   "their", "its",
    "new",   "after", "who",   "they",  "two",   "her",   "she",   "been",  "other", "when",
    "time",  "year",  "city",  "world", "water", "house", "light", "music", "river", "paper",
    "north", "south", "early", "small", "large", "great", "place", "story", "night", "group",
    "state", "party", "local", "known"};
constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);

bool IsIdList(const json& v) {
  if (!v.is_array() || v.empty()) return false;
  for (const json& id : v) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) return false;
  }
  return true;
}

}  // namespace

PromptSource PromptSource::Synthetic(int32_t vocab_size, int32_t vocab_offset) {
  PromptSource s;
  s.vocab_size_ = vocab_size;
  s.vocab_offset_ = vocab_offset;
  return s;
}

absl::StatusOr<PromptSource> PromptSource::FromJsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("--prompts-file: cannot read " + path);
  PromptSource s;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    const auto where = [&] { return absl::StrCat(path, ":", line_no, ": "); };
    if (j.is_discarded() || !j.is_object() || !j.contains("prompt")) {
      return absl::InvalidArgumentError(where() + "expected {\"prompt\": ...}");
    }
    const json& p = j["prompt"];
    if (!(p.is_string() && !p.get_ref<const std::string&>().empty()) && !IsIdList(p)) {
      return absl::InvalidArgumentError(where() +
                                        "`prompt` must be a non-empty string or token-id list");
    }
    s.file_prompts_.push_back(p);
  }
  if (s.file_prompts_.empty()) return absl::InvalidArgumentError(path + ": no prompts");
  return s;
}

absl::StatusOr<json> PromptSource::Next(std::mt19937_64& rng, int32_t length, bool as_text) {
  if (!file_prompts_.empty()) {
    const json& p = file_prompts_[next_];
    next_ = (next_ + 1) % file_prompts_.size();
    if (as_text && !p.is_string()) {
      return absl::InvalidArgumentError("a chat benchmark needs text prompts, not token ids");
    }
    return p;
  }
  if (as_text || vocab_size_ <= 0) {
    std::uniform_int_distribution<size_t> word(0, kNumWords - 1);
    std::string text;
    for (int32_t i = 0; i < length; ++i) {
      if (i > 0) text.push_back(' ');
      text += kWords[word(rng)];
    }
    return json(text);
  }
  std::uniform_int_distribution<int32_t> id(vocab_offset_, vocab_size_ - 1);
  json ids = json::array();
  for (int32_t i = 0; i < length; ++i) ids.push_back(id(rng));
  return ids;
}

}  // namespace arbor::bench
