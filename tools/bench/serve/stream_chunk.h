// What one `data:` payload of an OpenAI-style completion stream means to the benchmark:
// `[DONE]`, a chunk that carries generated text (a token, or several), the end of a choice,
// a usage chunk (stream_options.include_usage), or an error object some servers send mid-stream.
#ifndef ARBOR_TOOLS_BENCH_SERVE_STREAM_CHUNK_H_
#define ARBOR_TOOLS_BENCH_SERVE_STREAM_CHUNK_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace arbor::bench {

struct StreamChunk {
  bool done = false;       // `[DONE]`: the stream is over
  bool has_token = false;  // generated output: text, or a token that decoded to no text
  bool finished = false;   // a choice's finish_reason is set
  bool error = false;      // {"error": {...}} in the stream
  std::string error_message;
  int64_t completion_tokens = -1;  // from `usage`, when the chunk carries it
  int64_t prompt_tokens = -1;
};

// Parses `data` (one SSE event's data). A payload that is not JSON, or JSON of another shape,
// is DataLoss: the stream is malformed.
absl::StatusOr<StreamChunk> ParseStreamChunk(std::string_view data);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_STREAM_CHUNK_H_
