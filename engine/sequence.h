// Engine-internal state of one generated sequence (one of a request's n).
#ifndef ARBOR_ENGINE_SEQUENCE_H_
#define ARBOR_ENGINE_SEQUENCE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "engine/lora/adapter_store.h"
#include "engine/request.h"
#include "engine/sampling/sequence_rng.h"
#include "engine/sampling/stop_string_matcher.h"
#include "engine/text_stream.h"
#include "memory/block_manager.h"

namespace arbor::engine {

struct RequestState;

struct Sequence {
  memory::SeqId id = 0;
  RequestState* request = nullptr;
  int32_t index = 0;            // which of the request's n samples
  std::vector<int32_t> tokens;  // prompt + generated
  int64_t prompt_len = 0;
  int64_t num_computed = 0;  // leading tokens whose KV is in the pool
  bool running = false;      // holds pages
  bool preempted = false;    // lost its pages to preemption and waits to be resumed
  bool finished = false;
  // Keeps the request's adapter resident while the sequence holds pages (admission to finish or
  // preemption); empty for the base model.
  AdapterHold adapter_hold;
  // When admission first found no pages for its adapter (the wait ends when it is admitted).
  std::optional<absl::Time> adapter_wait_since;
  // The next prompt position whose log-prob is to be streamed (prompt_logprobs requests);
  // survives preemption, so a recomputed prompt does not stream a position twice.
  int64_t next_prompt_logprob = 1;
  SequenceRng rng;
  std::unique_ptr<TextStream> text;
  std::unique_ptr<StopStringMatcher> stops;

  Sequence(memory::SeqId id, RequestState* request, int32_t index, SequenceRng rng)
      : id(id), request(request), index(index), rng(rng) {}
  int64_t num_generated() const { return int64_t(tokens.size()) - prompt_len; }
  absl::Span<const int32_t> prompt() const { return {tokens.data(), size_t(prompt_len)}; }
  absl::Span<const int32_t> output() const {
    return {tokens.data() + prompt_len, tokens.size() - size_t(prompt_len)};
  }
  // Prompt log-probs are still to come: its chunks need the logits of every position, so it
  // must be computed from token 0 rather than from the prefix cache.
  bool scores_prompt() const;
};

struct RequestState {
  uint64_t id = 0;
  Request request;
  absl::Time arrival;
  std::optional<absl::Time> first_scheduled, first_token;
  std::vector<std::unique_ptr<Sequence>> seqs;  // seqs[0] first; the rest forked after prefill
  int32_t live = 0;                             // sequences not finished
  bool forked = false;
  bool cancelled = false;
  RequestMetrics metrics;
};

inline bool Sequence::scores_prompt() const {
  return request->request.prompt_logprobs >= 0 && next_prompt_logprob < prompt_len;
}

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_SEQUENCE_H_
