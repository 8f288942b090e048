#include "eval/perplexity.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "eval/batch_runner.h"

namespace arbor::eval {

absl::StatusOr<std::vector<Document>> FrameDocuments(const std::vector<JsonlRecord>& records,
                                                     const engine::Tokenizer& tokenizer,
                                                     const Framing& framing, int64_t max_tokens) {
  std::vector<Document> docs;
  docs.reserve(records.size());
  for (const JsonlRecord& r : records) {
    ASSIGN_OR_RETURN(std::string text, r.String("text"));
    auto framed = FrameDocument(tokenizer, framing, text, max_tokens);
    if (!framed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(r.Where(), ": field \"text\": ", framed.status().message()));
    }
    docs.push_back({r.Where(), std::move(*framed)});
  }
  return docs;
}

double PerplexityResult::perplexity() const {
  if (scored_tokens == 0) return std::numeric_limits<double>::quiet_NaN();
  return std::exp(nll / double(scored_tokens));
}

double PerplexityResult::tokens_per_second() const {
  return seconds > 0 ? double(scored_tokens) / seconds : 0.0;
}

absl::StatusOr<PerplexityResult> ScoreDocuments(engine::Engine& engine,
                                                const std::vector<Document>& documents,
                                                const PerplexityOptions& options) {
  // A document of one token (BOS alone) has nothing to score and is not sent.
  std::vector<int64_t> sent;
  for (int64_t d = 0; d < int64_t(documents.size()); ++d) {
    if (documents[size_t(d)].framed.tokens.size() >= 2) sent.push_back(d);
  }
  // Per document, summed in document order at the end: the result does not depend on the
  // order the engine finishes them in.
  std::vector<double> nll(documents.size(), 0.0);
  std::vector<int64_t> scored(documents.size(), 0);
  int64_t tokens_so_far = 0;
  const absl::Time start = absl::Now();

  BatchRun run;
  run.count = int64_t(sent.size());
  run.max_in_flight = options.max_in_flight;
  run.name = [&](int64_t i) { return documents[size_t(sent[size_t(i)])].where; };
  run.make = [&](int64_t i) -> absl::StatusOr<engine::Request> {
    engine::Request r;
    r.prompt = documents[size_t(sent[size_t(i)])].framed.tokens;
    r.prompt_logprobs = 0;
    r.score_only = true;
    r.adapter = options.adapter;
    return r;
  };
  run.on_event = [&](int64_t i, const engine::StreamEvent& ev) -> absl::Status {
    const size_t d = size_t(sent[size_t(i)]);
    for (const engine::PromptLogprob& p : ev.prompt_logprobs) {
      nll[d] -= double(p.logprob);
      ++scored[d];
    }
    tokens_so_far += int64_t(ev.prompt_logprobs.size());
    if (!ev.finish) return absl::OkStatus();
    if (*ev.finish == engine::FinishReason::kAbort) {
      return absl::AbortedError(
          absl::StrCat(documents[d].where, ": the engine aborted it: ", ev.finish_detail));
    }
    const int64_t want = int64_t(documents[d].framed.tokens.size()) - 1;
    if (scored[d] != want) {
      return absl::InternalError(
          absl::StrCat(documents[d].where, ": scored ", scored[d], " of ", want, " tokens"));
    }
    return absl::OkStatus();
  };
  run.on_progress = [&](int64_t done) {
    if (options.on_progress) {
      options.on_progress(done + int64_t(documents.size() - sent.size()), tokens_so_far);
    }
  };
  RETURN_IF_ERROR(RunBatch(engine, run));

  PerplexityResult r;
  r.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  r.documents = int64_t(documents.size());
  for (size_t d = 0; d < documents.size(); ++d) {
    r.truncated += documents[d].framed.truncated ? 1 : 0;
    r.nll += nll[d];
    r.scored_tokens += scored[d];
  }
  return r;
}

nlohmann::ordered_json PerplexityJson(const PerplexityResult& r) {
  nlohmann::ordered_json j;
  j["perplexity"] = r.scored_tokens > 0 ? nlohmann::ordered_json(r.perplexity()) : nullptr;
  j["nll_sum"] = r.nll;
  j["documents"] = r.documents;
  j["truncated_documents"] = r.truncated;
  j["tokens"] = r.scored_tokens;
  j["seconds"] = r.seconds;
  j["tokens_per_s"] = r.tokens_per_second();
  return j;
}

std::string PerplexitySummary(const PerplexityResult& r) {
  return absl::StrFormat(
      "perplexity %.4f over %d documents (%d truncated), %d tokens scored\n"
      "%.2f s, %.0f tokens/s\n",
      r.perplexity(), r.documents, r.truncated, r.scored_tokens, r.seconds, r.tokens_per_second());
}

}  // namespace arbor::eval
