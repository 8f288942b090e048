#include "engine/tokenizer/json_fields.h"

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace arbor::engine::json_fields {

std::string Child(std::string_view path, std::string_view key) {
  if (path.empty()) return std::string(key);
  return absl::StrCat(ToAbsl(path), ".", ToAbsl(key));
}

std::string Index(std::string_view path, size_t i) {
  return absl::StrCat(ToAbsl(path), "[", i, "]");
}

absl::Status Error(std::string_view path, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(ToAbsl(path), ": ", ToAbsl(message)));
}

const Json* Find(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::string> GetString(const Json& obj, std::string_view key,
                                      std::string_view path) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return Error(Child(path, key), "missing (expected a string)");
  if (!v->is_string()) return Error(Child(path, key), "expected a string");
  return v->get<std::string>();
}

absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& obj, std::string_view key,
                                                             std::string_view path) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return Error(Child(path, key), "expected a string or null");
  return std::optional<std::string>(v->get<std::string>());
}

absl::StatusOr<bool> GetBool(const Json& obj, std::string_view key, std::string_view path,
                             bool fallback) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) return Error(Child(path, key), "expected true or false");
  return v->get<bool>();
}

absl::StatusOr<int64_t> GetInt(const Json& obj, std::string_view key, std::string_view path) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return Error(Child(path, key), "missing (expected an integer)");
  if (!v->is_number_integer()) return Error(Child(path, key), "expected an integer");
  return v->get<int64_t>();
}

absl::StatusOr<std::string> GetChar(const Json& obj, std::string_view key, std::string_view path) {
  auto s = GetString(obj, key, path);
  if (!s.ok()) return s.status();
  size_t len = 0;
  if (s->empty() || (utf8::DecodeAt(*s, 0, &len), len != s->size())) {
    return Error(Child(path, key), "expected a string of exactly one character");
  }
  return s;
}

absl::StatusOr<std::string> GetType(const Json& component, std::string_view path) {
  if (!component.is_object()) return Error(path, "expected an object or null");
  return GetString(component, "type", path);
}

absl::Status UnsupportedType(std::string_view path, std::string_view what, std::string_view type,
                             std::string_view supported) {
  return Error(Child(path, "type"), absl::StrCat("unsupported ", ToAbsl(what), " \"", ToAbsl(type),
                                                 "\" (supported: ", ToAbsl(supported), ")"));
}

absl::StatusOr<Pattern> GetPattern(const Json& obj, std::string_view key, std::string_view path) {
  const std::string p = Child(path, key);
  const Json* v = Find(obj, key);
  if (v == nullptr || !v->is_object()) {
    return Error(p, "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  Pattern out;
  if (const Json* s = Find(*v, "String"); s != nullptr && s->is_string()) {
    out.text = s->get<std::string>();
  } else if (const Json* r = Find(*v, "Regex"); r != nullptr && r->is_string()) {
    out.is_regex = true;
    out.text = r->get<std::string>();
  } else {
    return Error(p, "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  return out;
}

}  // namespace arbor::engine::json_fields
