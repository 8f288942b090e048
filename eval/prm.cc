#include "eval/prm.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "eval/arith_format.h"
#include "eval/batch_runner.h"
#include "eval/jsonl.h"

namespace arbor::eval {

absl::StatusOr<PrmFormat> ReadPrmFormat(const std::string& dir,
                                        const engine::Tokenizer& tokenizer) {
  const std::string path = dir + "/prm.json";
  std::ifstream in(path);
  if (!in)
    return absl::NotFoundError(absl::StrCat(path, ": cannot read (a PRM directory has one)"));
  std::stringstream text;
  text << in.rdbuf();
  JsonlRecord r{path, 1, nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false)};
  if (!r.value.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  PrmFormat f;
  int32_t* ids[] = {&f.step_tag_id, &f.plus_id, &f.minus_id};
  const char* fields[] = {"step_tag", "plus_token", "minus_token"};
  for (int k = 0; k < 3; ++k) {
    ASSIGN_OR_RETURN(std::string token, r.String(fields[k]));
    if (k == 0) f.step_tag = token;
    ASSIGN_OR_RETURN(std::vector<int32_t> encoded, tokenizer.Encode(token, false));
    if (encoded.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": field \"", fields[k], "\" (\"", token,
                                                     "\") is not one token of the PRM's "
                                                     "tokenizer"));
    }
    *ids[k] = encoded[0];
  }
  return f;
}

absl::Status CheckChains(const std::vector<ArithProblem>& problems) {
  for (const ArithProblem& p : problems) {
    if (!p.chain) {
      return absl::InvalidArgumentError(
          absl::StrCat(p.where, ": the PRM's step labels need the fields \"start\" and \"ops\""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PrmItem>> MakePrmItems(const engine::Tokenizer& tokenizer,
                                                  const Framing& framing, const PrmFormat& format,
                                                  const std::vector<ArithProblem>& problems,
                                                  const std::vector<std::string>& texts,
                                                  int64_t* skipped) {
  std::vector<PrmItem> items;
  *skipped = 0;
  for (size_t i = 0; i < problems.size() && i < texts.size(); ++i) {
    const ArithProblem& p = problems[i];
    if (!p.chain) {
      return absl::InvalidArgumentError(
          absl::StrCat(p.where, ": the PRM's step labels need the fields \"start\" and \"ops\""));
    }
    const std::vector<std::string> steps = SolutionLines(texts[i]);
    std::string text = p.prompt;
    for (const std::string& s : steps) absl::StrAppend(&text, s, format.step_tag, "\n");
    auto ids = tokenizer.Encode(text, /*add_special_tokens=*/false);
    if (!ids.ok()) {
      return absl::Status(ids.status().code(), absl::StrCat(p.where, ": ", ids.status().message()));
    }
    PrmItem item{p.where, FramePrompt(framing, *ids), {}, LabelSteps(*p.chain, steps)};
    for (size_t t = 0; t < item.tokens.size(); ++t) {
      if (item.tokens[t] == format.step_tag_id) item.tags.push_back(int64_t(t));
    }
    if (steps.empty() || item.tags.size() != steps.size()) {
      ++*skipped;
      continue;
    }
    items.push_back(std::move(item));
  }
  return items;
}

double PrmResult::accuracy() const { return steps > 0 ? double(right) / double(steps) : 0.0; }

absl::StatusOr<PrmResult> ScoreSteps(engine::Engine& engine, const PrmFormat& format,
                                     const std::vector<PrmItem>& items, const PrmOptions& options) {
  // Request 2k scores step k's prefix + '+', request 2k + 1 the same + '-'.
  std::vector<std::pair<size_t, size_t>> steps;  // (item, step)
  for (size_t i = 0; i < items.size(); ++i) {
    for (size_t k = 0; k < items[i].tags.size(); ++k) steps.emplace_back(i, k);
  }
  std::vector<double> logprob(2 * steps.size(), 0.0);
  int64_t tokens = 0;
  const absl::Time start = absl::Now();

  BatchRun run;
  run.count = int64_t(2 * steps.size());
  run.max_in_flight = options.max_in_flight;
  run.name = [&](int64_t r) { return items[steps[size_t(r / 2)].first].where; };
  run.make = [&](int64_t r) -> absl::StatusOr<engine::Request> {
    const auto [i, k] = steps[size_t(r / 2)];
    const PrmItem& item = items[i];
    engine::Request q;
    q.prompt.assign(item.tokens.begin(), item.tokens.begin() + item.tags[k] + 1);
    q.prompt.push_back(r % 2 == 0 ? format.plus_id : format.minus_id);
    q.prompt_logprobs = 0;
    q.score_only = true;
    return q;
  };
  run.on_event = [&](int64_t r, const engine::StreamEvent& ev) -> absl::Status {
    const auto [i, k] = steps[size_t(r / 2)];
    const int64_t last = items[i].tags[k] + 1;
    for (const engine::PromptLogprob& p : ev.prompt_logprobs) {
      if (p.position == last) logprob[size_t(r)] = p.logprob;
    }
    tokens += int64_t(ev.prompt_logprobs.size());
    if (ev.finish && *ev.finish == engine::FinishReason::kAbort) {
      return absl::AbortedError(
          absl::StrCat(items[i].where, ": the engine aborted it: ", ev.finish_detail));
    }
    return absl::OkStatus();
  };
  run.on_progress = [&](int64_t done) {
    if (options.on_progress) options.on_progress(done, tokens);
  };
  RETURN_IF_ERROR(RunBatch(engine, run));

  PrmResult result;
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  result.solutions = int64_t(items.size());
  for (size_t s = 0; s < steps.size(); ++s) {
    const auto [i, k] = steps[s];
    // softmax over the two: the log-softmax's normaliser cancels.
    const double p_plus = 1.0 / (1.0 + std::exp(logprob[2 * s + 1] - logprob[2 * s]));
    const bool predicted_right = logprob[2 * s] > logprob[2 * s + 1];
    ++result.steps;
    result.right += predicted_right == bool(items[i].labels[k]) ? 1 : 0;
    if (options.on_step) options.on_step(i, k, p_plus);
  }
  return result;
}

nlohmann::ordered_json PrmJson(const PrmResult& r) {
  nlohmann::ordered_json j;
  j["step_accuracy"] = r.accuracy();
  j["steps"] = r.steps;
  j["right"] = r.right;
  j["solutions"] = r.solutions;
  j["skipped"] = r.skipped;
  j["seconds"] = r.seconds;
  return j;
}

std::string PrmSummary(const PrmResult& r) {
  return absl::StrFormat(
      "PRM step accuracy %.4f: %d of %d steps of %d solutions (%d skipped), %.2f s\n", r.accuracy(),
      r.right, r.steps, r.solutions, r.skipped, r.seconds);
}

}  // namespace arbor::eval
