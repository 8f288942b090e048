#include "eval/reasoning.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "eval/batch_runner.h"
#include "eval/jsonl.h"

namespace arbor::eval {
namespace {

// "start" and "ops" when the record has them.
absl::StatusOr<std::optional<ArithChain>> ReadChain(const JsonlRecord& r) {
  if (!r.value.contains("start") && !r.value.contains("ops")) return std::nullopt;
  ArithChain chain;
  ASSIGN_OR_RETURN(chain.start, r.Integer("start"));
  auto ops = r.value.find("ops");
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(r.Where(), ": field \"ops\" must be a list of [\"+\" or \"*\", integer]"));
  };
  if (ops == r.value.end() || !ops->is_array()) return bad();
  for (const auto& op : *ops) {
    if (!op.is_array() || op.size() != 2 || !op[0].is_string() || !op[1].is_number_integer()) {
      return bad();
    }
    const std::string name = op[0].get<std::string>();
    if (name != "+" && name != "*") return bad();
    chain.ops.emplace_back(name[0], op[1].get<int64_t>());
  }
  return chain;
}

}  // namespace

absl::StatusOr<std::vector<ArithProblem>> ReadArithProblems(const std::string& path,
                                                            int64_t limit) {
  ASSIGN_OR_RETURN(std::vector<JsonlRecord> records, ReadJsonl(path, limit));
  std::vector<ArithProblem> out;
  out.reserve(records.size());
  for (const JsonlRecord& r : records) {
    ArithProblem p;
    p.where = r.Where();
    ASSIGN_OR_RETURN(p.prompt, r.String("prompt"));
    ASSIGN_OR_RETURN(p.answer, r.Integer("answer"));
    ASSIGN_OR_RETURN(p.chain, ReadChain(r));
    if (p.prompt.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(r.Where(), ": field \"prompt\" is empty"));
    }
    out.push_back(std::move(p));
  }
  return out;
}

Verdict Judge(int64_t answer, std::string_view text) {
  const std::optional<std::string> got = FinalAnswer(text);
  if (!got) return Verdict::kNoAnswer;
  int64_t value = 0;
  // A number too large for int64 cannot equal the answer.
  return absl::SimpleAtoi(*got, &value) && value == answer ? Verdict::kCorrect : Verdict::kWrong;
}

void ReasoningResult::Add(Verdict v) {
  ++problems;
  switch (v) {
    case Verdict::kCorrect:
      ++correct;
      break;
    case Verdict::kWrong:
      ++wrong;
      break;
    case Verdict::kNoAnswer:
      ++no_answer;
      break;
  }
}

double ReasoningResult::accuracy() const {
  return problems > 0 ? double(correct) / double(problems) : 0.0;
}

double ReasoningResult::tokens_per_second() const {
  return seconds > 0 ? double(generated_tokens) / seconds : 0.0;
}

absl::StatusOr<ReasoningResult> SolveProblems(engine::Engine& engine,
                                              const engine::Tokenizer& tokenizer,
                                              const Framing& framing,
                                              const std::vector<ArithProblem>& problems,
                                              const ReasoningOptions& options) {
  std::vector<std::vector<int32_t>> prompts;
  prompts.reserve(problems.size());
  for (const ArithProblem& p : problems) {
    auto ids = tokenizer.Encode(p.prompt, /*add_special_tokens=*/false);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(p.where, ": field \"prompt\": ", ids.status().message()));
    }
    prompts.push_back(FramePrompt(framing, *ids));
    if (int64_t(prompts.back().size()) >= engine.max_model_len()) {
      return absl::InvalidArgumentError(
          absl::StrCat(p.where, ": the prompt's ", prompts.back().size(),
                       " tokens leave no room in the model's context (max_model_len ",
                       engine.max_model_len(), ")"));
    }
  }
  std::vector<std::string> texts(problems.size());
  std::vector<bool> truncated(problems.size(), false);
  ReasoningResult result;
  const absl::Time start = absl::Now();

  BatchRun run;
  run.count = int64_t(problems.size());
  run.max_in_flight = options.max_in_flight;
  run.name = [&](int64_t i) { return problems[size_t(i)].where; };
  run.make = [&](int64_t i) -> absl::StatusOr<engine::Request> {
    engine::Request r;
    r.prompt = prompts[size_t(i)];
    r.params.temperature = 0.0f;
    // Room for max_tokens, or what the context has left.
    r.params.max_tokens = int32_t(
        std::min<int64_t>(options.max_tokens, engine.max_model_len() - int64_t(r.prompt.size())));
    r.params.stop_token_ids = {framing.end_of_text};
    r.adapter = options.adapter;
    return r;
  };
  run.on_event = [&](int64_t i, const engine::StreamEvent& ev) -> absl::Status {
    texts[size_t(i)] += ev.text;
    result.generated_tokens += int64_t(ev.token_ids.size());
    if (!ev.finish) return absl::OkStatus();
    if (*ev.finish == engine::FinishReason::kAbort) {
      return absl::AbortedError(
          absl::StrCat(problems[size_t(i)].where, ": the engine aborted it: ", ev.finish_detail));
    }
    truncated[size_t(i)] = *ev.finish == engine::FinishReason::kLength;
    return absl::OkStatus();
  };
  run.on_progress = [&](int64_t done) {
    if (options.on_progress) options.on_progress(done, result.generated_tokens);
  };
  RETURN_IF_ERROR(RunBatch(engine, run));
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);

  for (size_t i = 0; i < problems.size(); ++i) {
    const Verdict v = Judge(problems[i].answer, texts[i]);
    result.Add(v);
    result.truncated += truncated[i] ? 1 : 0;
    result.prompt_tokens += int64_t(prompts[i].size());
    if (options.on_answer) options.on_answer(problems[i], texts[i], v);
  }
  return result;
}

nlohmann::ordered_json ReasoningJson(const ReasoningResult& r) {
  nlohmann::ordered_json j;
  j["accuracy"] = r.accuracy();
  j["problems"] = r.problems;
  j["correct"] = r.correct;
  j["wrong"] = r.wrong;
  j["no_answer"] = r.no_answer;
  j["truncated"] = r.truncated;
  j["prompt_tokens"] = r.prompt_tokens;
  j["generated_tokens"] = r.generated_tokens;
  j["seconds"] = r.seconds;
  j["tokens_per_s"] = r.tokens_per_second();
  return j;
}

std::string ReasoningSummary(const ReasoningResult& r) {
  return absl::StrFormat(
      "accuracy %.4f: %d of %d problems correct (%d wrong, %d without an answer line, "
      "%d cut at max tokens)\n%d tokens generated in %.2f s, %.0f tokens/s\n",
      r.accuracy(), r.correct, r.problems, r.wrong, r.no_answer, r.truncated, r.generated_tokens,
      r.seconds, r.tokens_per_second());
}

}  // namespace arbor::eval
