#include "engine/tokenizer/normalizer.h"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <vector>

#include "common/status_macros.h"
#include "engine/tokenizer/replace_pattern.h"
#include "engine/tokenizer/split_regex.h"

namespace arbor::engine {
namespace {

using json_fields::Json;

// Prepends `prefix` to non-empty text (Llama-2's "▁").
class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

// Replaces every match of a pattern with `content` (Llama-2's " " -> "▁").
class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<SplitRegex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override {
    const auto matches = pattern_->FindAll(*text);
    if (matches.empty()) return;
    std::string out;
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
      out.append(*text, prev, b - prev);
      out.append(content_);
      prev = e;
    }
    out.append(*text, prev, std::string::npos);
    *text = std::move(out);
  }

 private:
  std::unique_ptr<SplitRegex> pattern_;
  std::string content_;
};

// Unicode normalization forms, by ICU.
class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(const icu::Normalizer2* form) : form_(form) {}
  void Normalize(std::string* text) const override {
    UErrorCode err = U_ZERO_ERROR;
    const icu::UnicodeString in = icu::UnicodeString::fromUTF8(
        icu::StringPiece(text->data(), static_cast<int32_t>(text->size())));
    const icu::UnicodeString out = form_->normalize(in, err);
    if (U_FAILURE(err)) return;  // ICU fails only on allocation; keep the text as it was
    text->clear();
    out.toUTF8String(*text);
  }

 private:
  const icu::Normalizer2* form_;  // owned by ICU
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void Normalize(std::string* text) const override {
    for (const auto& p : parts_) p->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> Normalizer::FromJson(const Json& j,
                                                                 const std::string& path) {
  if (j.is_null()) return std::unique_ptr<Normalizer>();
  ASSIGN_OR_RETURN(const std::string type, json_fields::GetType(j, path));
  if (type == "Sequence") {
    const Json* list = json_fields::Find(j, "normalizers");
    const std::string list_path = json_fields::Child(path, "normalizers");
    if (list == nullptr || !list->is_array())
      return json_fields::Error(list_path, "expected a list");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      ASSIGN_OR_RETURN(auto part, FromJson((*list)[i], json_fields::Index(list_path, i)));
      if (part != nullptr) parts.push_back(std::move(part));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(parts)));
  }
  if (type == "Prepend") {
    ASSIGN_OR_RETURN(std::string prefix, json_fields::GetString(j, "prepend", path));
    return std::unique_ptr<Normalizer>(new PrependNormalizer(std::move(prefix)));
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(std::unique_ptr<SplitRegex> re, ReplacePattern(j, path));
    ASSIGN_OR_RETURN(std::string content, json_fields::GetString(j, "content", path));
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(std::move(re), std::move(content)));
  }
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* form = nullptr;
  if (type == "NFC") form = icu::Normalizer2::getNFCInstance(err);
  if (type == "NFD") form = icu::Normalizer2::getNFDInstance(err);
  if (type == "NFKC") form = icu::Normalizer2::getNFKCInstance(err);
  if (type == "NFKD") form = icu::Normalizer2::getNFKDInstance(err);
  if (form != nullptr) {
    if (U_FAILURE(err)) return json_fields::Error(path, "ICU normalizer is unavailable");
    return std::unique_ptr<Normalizer>(new UnicodeNormalizer(form));
  }
  return json_fields::UnsupportedType(path, "normalizer", type,
                                      "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD");
}

}  // namespace arbor::engine
