// tokenizer.json "post_processor": what Encode(add_special_tokens = true) adds around the ids
// of one sequence (BOS for Llama). Supported: TemplateProcessing (its "single" template),
// ByteLevel (offsets only: no change to ids), Sequence.
#ifndef ARBOR_ENGINE_TOKENIZER_POST_PROCESSOR_H_
#define ARBOR_ENGINE_TOKENIZER_POST_PROCESSOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/json_fields.h"

namespace arbor::engine {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Applied only when add_special_tokens is true.
  virtual std::vector<int32_t> Process(std::vector<int32_t> ids) const = 0;

  // The post-processor described by `j` at `path`; null -> nullptr.
  static absl::StatusOr<std::unique_ptr<PostProcessor>> FromJson(const json_fields::Json& j,
                                                                 const std::string& path);
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_POST_PROCESSOR_H_
