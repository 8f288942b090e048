#include "engine/checkpoint/json_input.h"

#include <cstdint>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace arbor::engine {

using Json = nlohmann::json;

absl::StatusOr<Json> ParseJsonNoDuplicates(std::string_view text,
                                           std::optional<JsonDuplicateKey>* duplicate) {
  // One level per open object: the keys seen in it and the latest one (whose value is being
  // parsed, so it names the enclosing object of any deeper level).
  struct Level {
    std::set<std::string> keys;
    std::string last_key;
  };
  std::vector<Level> levels;
  Json::parser_callback_t callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        levels.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!levels.empty()) levels.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!levels.empty()) {
          const auto& key = parsed.get_ref<const std::string&>();
          if (!levels.back().keys.insert(key).second && !duplicate->has_value()) {
            JsonDuplicateKey d;
            for (size_t i = 0; i + 1 < levels.size(); ++i) d.path.push_back(levels[i].last_key);
            d.key = key;
            *duplicate = std::move(d);
          }
          levels.back().last_key = key;
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json value;
  try {
    value = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                        /*ignore_comments=*/false);
  } catch (const Json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 7: ..." -> from "parse".
    std::string_view what = e.what();
    if (const size_t close = what.find("] "); close != std::string_view::npos) {
      what.remove_prefix(close + 2);
    }
    // The excerpt of input it quotes may hold control bytes or part of a UTF-8 sequence.
    return absl::InvalidArgumentError(EscapeForError(what, 400));
  }
  return value;
}

std::optional<size_t> FirstInvalidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    uint32_t min_cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min_cp = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min_cp = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min_cp = 0x10000;
    } else {
      return i;
    }
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::nullopt;
}

std::string EscapeForError(std::string_view s, size_t max_shown) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (out.size() >= max_shown) {
      out += "...";
      break;
    }
    const auto u = static_cast<uint8_t>(s[i]);
    if (u >= 0x80) {
      // Copy a whole well-formed sequence, or escape this one byte.
      const size_t len = u >= 0xF0 ? 4 : u >= 0xE0 ? 3 : 2;
      const std::string_view seq = s.substr(i, len);
      if (seq.size() == len && !FirstInvalidUtf8(seq).has_value()) {
        out += seq;
        i += len;
        continue;
      }
    }
    if (s[i] == '"' || s[i] == '\\') {
      out += '\\';
      out += s[i];
    } else if (u < 0x20 || u >= 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += s[i];
    }
    ++i;
  }
  return out;
}

std::string QuoteForError(std::string_view s) {
  return absl::StrCat("\"", EscapeForError(s), "\"");
}

std::string JsonTypeForError(const Json& v) {
  if (v.is_number_float()) return "a non-integer number";
  if (v.is_number_integer()) return "an integer";
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  return "null";
}

}  // namespace arbor::engine
