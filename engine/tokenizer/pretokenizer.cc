#include "engine/tokenizer/pretokenizer.h"

#include <string_view>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/split_regex.h"

namespace arbor::engine {
namespace {

using json_fields::Json;

// GPT-2's split regex, which ByteLevel applies when `use_regex` is true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void PushPiece(std::string text, bool at_input_start, std::vector<TextPiece>* out) {
  if (!text.empty()) out->push_back(TextPiece{std::move(text), at_input_start});
}

// Pieces for the matches of `re` and (when `keep_gaps`) the text between them; the behaviour
// "Isolated" keeps both, "Removed" drops the matches.
void SplitIsolated(const SplitRegex& re, const TextPiece& piece, bool keep_matches,
                   std::vector<TextPiece>* out) {
  const std::string& s = piece.text;
  size_t prev = 0;
  for (const auto& [b, e] : re.FindAll(s)) {
    if (b > prev) PushPiece(s.substr(prev, b - prev), piece.at_input_start && prev == 0, out);
    if (keep_matches) PushPiece(s.substr(b, e - b), piece.at_input_start && b == 0, out);
    prev = e;
  }
  if (prev < s.size()) PushPiece(s.substr(prev), piece.at_input_start && prev == 0, out);
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<SplitRegex> re, bool keep_matches)
      : re_(std::move(re)), keep_matches_(keep_matches) {}
  void PreTokenize(std::vector<TextPiece>* pieces) const override {
    std::vector<TextPiece> out;
    for (const auto& p : *pieces) SplitIsolated(*re_, p, keep_matches_, &out);
    *pieces = std::move(out);
  }

 private:
  std::unique_ptr<SplitRegex> re_;
  bool keep_matches_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<SplitRegex> re)
      : add_prefix_space_(add_prefix_space), re_(std::move(re)) {}
  void PreTokenize(std::vector<TextPiece>* pieces) const override {
    std::vector<TextPiece> split;
    for (auto& p : *pieces) {
      if (add_prefix_space_ && !absl::StartsWith(p.text, " ")) p.text.insert(0, " ");
      if (re_ != nullptr) {
        SplitIsolated(*re_, p, /*keep_matches=*/true, &split);
      } else {
        PushPiece(std::move(p.text), p.at_input_start, &split);
      }
    }
    for (auto& p : split) p.text = byte_level::Encode(p.text);
    *pieces = std::move(split);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitRegex> re_;  // null: use_regex is false
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void PreTokenize(std::vector<TextPiece>* pieces) const override {
    std::vector<TextPiece> out;
    for (auto& p : *pieces) {
      std::string s = absl::StrReplaceAll(p.text, {{" ", replacement_}});
      const bool prepend = !absl::StartsWith(s, replacement_) &&
                           (scheme_ == PrependScheme::kAlways ||
                            (scheme_ == PrependScheme::kFirst && p.at_input_start));
      if (prepend) s.insert(0, replacement_);
      if (!split_) {
        PushPiece(std::move(s), p.at_input_start, &out);
        continue;
      }
      // Each replacement character starts a new piece (HF: MergedWithNext).
      size_t start = 0;
      size_t at = s.find(replacement_, 1);
      while (at != std::string::npos) {
        PushPiece(s.substr(start, at - start), p.at_input_start && start == 0, &out);
        start = at;
        at = s.find(replacement_, at + replacement_.size());
      }
      PushPiece(s.substr(start), p.at_input_start && start == 0, &out);
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void PreTokenize(std::vector<TextPiece>* pieces) const override {
    for (const auto& p : parts_) p->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

absl::StatusOr<std::unique_ptr<SplitRegex>> CompileAt(std::string_view pattern,
                                                      const std::string& path) {
  auto re = SplitRegex::Compile(pattern);
  if (!re.ok()) return json_fields::Error(path, ToStd(re.status().message()));
  return std::move(*re);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const Json& j,
                                                                     const std::string& path) {
  if (j.is_null()) return std::unique_ptr<PreTokenizer>();
  ASSIGN_OR_RETURN(const std::string type, json_fields::GetType(j, path));
  if (type == "Sequence") {
    const Json* list = json_fields::Find(j, "pretokenizers");
    const std::string list_path = json_fields::Child(path, "pretokenizers");
    if (list == nullptr || !list->is_array())
      return json_fields::Error(list_path, "expected a list");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      ASSIGN_OR_RETURN(auto part, FromJson((*list)[i], json_fields::Index(list_path, i)));
      if (part != nullptr) parts.push_back(std::move(part));
    }
    return std::unique_ptr<PreTokenizer>(new SequencePreTokenizer(std::move(parts)));
  }
  if (type == "Split") {
    ASSIGN_OR_RETURN(const json_fields::Pattern pattern,
                     json_fields::GetPattern(j, "pattern", path));
    ASSIGN_OR_RETURN(const std::string behavior, json_fields::GetString(j, "behavior", path));
    ASSIGN_OR_RETURN(const bool invert, json_fields::GetBool(j, "invert", path, false));
    if (invert)
      return json_fields::Error(json_fields::Child(path, "invert"), "true is not supported");
    if (behavior != "Isolated" && behavior != "Removed") {
      return json_fields::Error(json_fields::Child(path, "behavior"),
                                "unsupported \"" + behavior + "\" (supported: Isolated, Removed)");
    }
    std::unique_ptr<SplitRegex> re;
    if (pattern.is_regex) {
      ASSIGN_OR_RETURN(re, CompileAt(pattern.text, json_fields::Child(path, "pattern.Regex")));
    } else {
      re = SplitRegex::Literal(pattern.text);
    }
    return std::unique_ptr<PreTokenizer>(
        new SplitPreTokenizer(std::move(re), /*keep_matches=*/behavior == "Isolated"));
  }
  if (type == "ByteLevel") {
    ASSIGN_OR_RETURN(const bool add_prefix_space,
                     json_fields::GetBool(j, "add_prefix_space", path, true));
    ASSIGN_OR_RETURN(const bool use_regex, json_fields::GetBool(j, "use_regex", path, true));
    std::unique_ptr<SplitRegex> re;
    if (use_regex) {
      ASSIGN_OR_RETURN(re, CompileAt(kGpt2Pattern, path));
    }
    return std::unique_ptr<PreTokenizer>(
        new ByteLevelPreTokenizer(add_prefix_space, std::move(re)));
  }
  if (type == "Metaspace") {
    ASSIGN_OR_RETURN(std::string replacement, json_fields::GetChar(j, "replacement", path));
    ASSIGN_OR_RETURN(const std::optional<std::string> scheme_name,
                     json_fields::GetOptionalString(j, "prepend_scheme", path));
    PrependScheme scheme = PrependScheme::kAlways;
    if (scheme_name.has_value()) {
      if (*scheme_name == "always") {
        scheme = PrependScheme::kAlways;
      } else if (*scheme_name == "first") {
        scheme = PrependScheme::kFirst;
      } else if (*scheme_name == "never") {
        scheme = PrependScheme::kNever;
      } else {
        return json_fields::Error(json_fields::Child(path, "prepend_scheme"),
                                  "expected always, first or never");
      }
    }
    // Files from before prepend_scheme say add_prefix_space instead.
    if (const Json* aps = json_fields::Find(j, "add_prefix_space"); aps != nullptr) {
      if (!aps->is_boolean()) {
        return json_fields::Error(json_fields::Child(path, "add_prefix_space"), "expected a bool");
      }
      if (!aps->get<bool>()) {
        if (scheme_name.has_value() && scheme != PrependScheme::kNever) {
          return json_fields::Error(json_fields::Child(path, "add_prefix_space"),
                                    "false does not match prepend_scheme");
        }
        scheme = PrependScheme::kNever;
      }
    }
    ASSIGN_OR_RETURN(const bool split, json_fields::GetBool(j, "split", path, true));
    return std::unique_ptr<PreTokenizer>(
        new MetaspacePreTokenizer(std::move(replacement), scheme, split));
  }
  return json_fields::UnsupportedType(path, "pre-tokenizer", type,
                                      "Sequence, Split, ByteLevel, Metaspace");
}

}  // namespace arbor::engine
