#include "eval/jsonl.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/checkpoint/json_input.h"

namespace arbor::eval {
namespace {

const char* TypeName(const nlohmann::json& v) { return v.type_name(); }

}  // namespace

std::string JsonlRecord::Where() const { return absl::StrCat(file, ":", line); }

absl::StatusOr<std::string> JsonlRecord::String(const std::string& field) const {
  auto it = value.find(field);
  if (it == value.end()) {
    return absl::InvalidArgumentError(absl::StrCat(Where(), ": missing field \"", field, "\""));
  }
  if (!it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(), ": field \"", field, "\" must be a string, got ", TypeName(*it)));
  }
  return it->get<std::string>();
}

absl::StatusOr<int64_t> JsonlRecord::Integer(const std::string& field) const {
  auto it = value.find(field);
  if (it == value.end()) {
    return absl::InvalidArgumentError(absl::StrCat(Where(), ": missing field \"", field, "\""));
  }
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(), ": field \"", field, "\" must be an integer, got ", it->dump()));
  }
  return it->get<int64_t>();
}

absl::StatusOr<std::vector<JsonlRecord>> ReadJsonl(const std::string& path, int64_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot read: ", std::strerror(errno)));
  }
  std::vector<JsonlRecord> out;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (limit > 0 && int64_t(out.size()) >= limit) break;
    const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
    if (trimmed.empty()) continue;
    JsonlRecord r{path, line, nlohmann::json()};
    std::optional<engine::JsonDuplicateKey> duplicate;
    auto parsed =
        engine::ParseJsonNoDuplicates(std::string_view(trimmed.data(), trimmed.size()), &duplicate);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(r.Where(), ": not valid JSON: ", parsed.status().message()));
    }
    if (duplicate.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(r.Where(), ": field \"", duplicate->key, "\" appears twice"));
    }
    r.value = std::move(*parsed);
    if (!r.value.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(r.Where(), ": expected a JSON object, got ", TypeName(r.value)));
    }
    out.push_back(std::move(r));
  }
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat(path, ": read failed: ", std::strerror(errno)));
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no records (the file is empty)"));
  }
  return out;
}

}  // namespace arbor::eval
