#include "engine/tokenizer/decoder.h"

#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/replace_pattern.h"
#include "engine/tokenizer/split_regex.h"
#include "engine/tokenizer/utf8.h"

namespace arbor::engine {
namespace {

using json_fields::Json;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// All token bytes through the byte-level alphabet (a token with any other character is taken
// as raw UTF-8), then one lossy UTF-8 decode of the whole (unless raw_bytes): a single output
// string.
class ByteLevelDecoder : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens,
                                       bool raw_bytes) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      const size_t mark = bytes.size();
      bool all_mapped = true;
      for (size_t i = 0; i < t.size();) {
        size_t len = 1;
        const int b = byte_level::CharToByte(utf8::DecodeAt(t, i, &len));
        if (b < 0) {
          all_mapped = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
        i += len;
      }
      if (!all_mapped) {
        bytes.resize(mark);
        bytes.append(t);
      }
    }
    if (raw_bytes) return {bytes};
    return {utf8::Lossy(bytes)};
  }
  void AddTraits(DecoderTraits*) const override {}
};

// Runs of "<0xNN>" tokens become their bytes as text when valid UTF-8 (or raw_bytes), else one
// U+FFFD per byte; other tokens pass through.
class ByteFallbackDecoder : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens,
                                       bool raw_bytes) const override {
    std::vector<std::string> out;
    std::string run;
    auto flush = [&]() {
      if (run.empty()) return;
      if (raw_bytes || utf8::IsValid(run)) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back(utf8::kReplacement);
      }
      run.clear();
    };
    for (std::string& t : tokens) {
      unsigned char b = 0;
      if (ParseByteToken(t, &b)) {
        run.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    return out;
  }
  void AddTraits(DecoderTraits* traits) const override { traits->byte_fallback = true; }
};

class FuseDecoder : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens,
                                       bool /*raw_bytes*/) const override {
    return {absl::StrJoin(tokens, "")};
  }
  void AddTraits(DecoderTraits*) const override {}
};

// Removes up to `start` leading and `stop` trailing `content` characters from each string.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens,
                                       bool /*raw_bytes*/) const override {
    for (std::string& t : tokens) {
      size_t begin = 0;
      for (size_t k = 0; k < start_ && t.compare(begin, content_.size(), content_) == 0 &&
                         begin + content_.size() <= t.size();
           ++k) {
        begin += content_.size();
      }
      size_t end = t.size();
      for (size_t k = 0; k < stop_ && end >= begin + content_.size() &&
                         t.compare(end - content_.size(), content_.size(), content_) == 0;
           ++k) {
        end -= content_.size();
      }
      t = t.substr(begin, end - begin);
    }
    return tokens;
  }
  void AddTraits(DecoderTraits* traits) const override {
    if (stop_ > 0) {
      traits->strips_end = true;
      traits->strip_content = content_;
    }
  }

 private:
  std::string content_;  // one character
  size_t start_;
  size_t stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<SplitRegex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens,
                                       bool /*raw_bytes*/) const override {
    for (std::string& t : tokens) {
      const auto matches = pattern_->FindAll(t);
      if (matches.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (const auto& [b, e] : matches) {
        out.append(t, prev, b - prev);
        out.append(content_);
        prev = e;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
    return tokens;
  }
  void AddTraits(DecoderTraits*) const override {}

 private:
  std::unique_ptr<SplitRegex> pattern_;
  std::string content_;
};

// The replacement character becomes a space, except in the first string (when a prefix was
// prepended at encode time), where HF drops every replacement character.
class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool drop_in_first)
      : replacement_(std::move(replacement)), drop_in_first_(drop_in_first) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens,
                                       bool /*raw_bytes*/) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      size_t prev = 0;
      for (size_t at = t.find(replacement_); at != std::string::npos;
           at = t.find(replacement_, prev)) {
        out.append(t, prev, at - prev);
        if (!(i == 0 && drop_in_first_)) out.push_back(' ');
        prev = at + replacement_.size();
      }
      out.append(t, prev, std::string::npos);
      tokens[i] = std::move(out);
    }
    return tokens;
  }
  void AddTraits(DecoderTraits*) const override {}

 private:
  std::string replacement_;
  bool drop_in_first_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens,
                                       bool raw_bytes) const override {
    for (const auto& p : parts_) tokens = p->DecodeChain(std::move(tokens), raw_bytes);
    return tokens;
  }
  void AddTraits(DecoderTraits* traits) const override {
    for (const auto& p : parts_) p->AddTraits(traits);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

}  // namespace

bool ParseByteToken(const std::string& token, unsigned char* byte) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return false;
  // HF parses the two characters with u8::from_str_radix, which also takes "+F".
  const int hi = token[3] == '+' ? 0 : HexValue(token[3]);
  const int lo = HexValue(token[4]);
  if (hi < 0 || lo < 0) return false;
  *byte = static_cast<unsigned char>(hi * 16 + lo);
  return true;
}

absl::StatusOr<std::unique_ptr<Decoder>> Decoder::FromJson(const Json& j, const std::string& path) {
  if (j.is_null()) return std::unique_ptr<Decoder>();
  ASSIGN_OR_RETURN(const std::string type, json_fields::GetType(j, path));
  if (type == "Sequence") {
    const Json* list = json_fields::Find(j, "decoders");
    const std::string list_path = json_fields::Child(path, "decoders");
    if (list == nullptr || !list->is_array())
      return json_fields::Error(list_path, "expected a list");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      ASSIGN_OR_RETURN(auto part, FromJson((*list)[i], json_fields::Index(list_path, i)));
      if (part != nullptr) parts.push_back(std::move(part));
    }
    return std::unique_ptr<Decoder>(new SequenceDecoder(std::move(parts)));
  }
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Strip") {
    ASSIGN_OR_RETURN(std::string content, json_fields::GetChar(j, "content", path));
    ASSIGN_OR_RETURN(const int64_t start, json_fields::GetInt(j, "start", path));
    ASSIGN_OR_RETURN(const int64_t stop, json_fields::GetInt(j, "stop", path));
    if (start < 0 || stop < 0) return json_fields::Error(path, "start and stop must be >= 0");
    return std::unique_ptr<Decoder>(new StripDecoder(std::move(content), static_cast<size_t>(start),
                                                     static_cast<size_t>(stop)));
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(std::unique_ptr<SplitRegex> re, ReplacePattern(j, path));
    ASSIGN_OR_RETURN(std::string content, json_fields::GetString(j, "content", path));
    return std::unique_ptr<Decoder>(new ReplaceDecoder(std::move(re), std::move(content)));
  }
  if (type == "Metaspace") {
    ASSIGN_OR_RETURN(std::string replacement, json_fields::GetChar(j, "replacement", path));
    ASSIGN_OR_RETURN(const std::optional<std::string> scheme,
                     json_fields::GetOptionalString(j, "prepend_scheme", path));
    bool drop_in_first = true;
    if (scheme.has_value()) {
      if (*scheme != "always" && *scheme != "first" && *scheme != "never") {
        return json_fields::Error(json_fields::Child(path, "prepend_scheme"),
                                  "expected always, first or never");
      }
      drop_in_first = *scheme != "never";
    }
    ASSIGN_OR_RETURN(const bool add_prefix_space,
                     json_fields::GetBool(j, "add_prefix_space", path, true));
    if (!add_prefix_space) drop_in_first = false;
    return std::unique_ptr<Decoder>(new MetaspaceDecoder(std::move(replacement), drop_in_first));
  }
  return json_fields::UnsupportedType(path, "decoder", type,
                                      "Sequence, ByteLevel, ByteFallback, Fuse, Strip, Replace, "
                                      "Metaspace");
}

}  // namespace arbor::engine
