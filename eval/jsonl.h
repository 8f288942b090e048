// Reading the JSON Lines files `arbor eval` takes: one object a line, blank lines skipped, every
// error naming the file and the line (and the field).
#ifndef ARBOR_EVAL_JSONL_H_
#define ARBOR_EVAL_JSONL_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::eval {

// One object of a JSONL file and where it came from (for error messages).
struct JsonlRecord {
  std::string file;
  int64_t line = 0;  // 1-based
  nlohmann::json value;

  std::string Where() const;  // "FILE:LINE"
  // The field as a string / an integer; InvalidArgument "FILE:LINE: ..." naming the field when
  // it is missing or of another type.
  absl::StatusOr<std::string> String(const std::string& field) const;
  absl::StatusOr<int64_t> Integer(const std::string& field) const;
};

// Every object of `path`, in order; at most `limit` of them when limit > 0. NotFound when the
// file cannot be read; InvalidArgument for a line that is not a JSON object, and for a file
// without records.
absl::StatusOr<std::vector<JsonlRecord>> ReadJsonl(const std::string& path, int64_t limit = 0);

}  // namespace arbor::eval

#endif  // ARBOR_EVAL_JSONL_H_
