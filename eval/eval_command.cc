#include "eval/eval_command.h"

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "eval/framing.h"
#include "eval/jsonl.h"
#include "eval/perplexity.h"
#include "eval/prm.h"
#include "eval/progress.h"
#include "eval/reasoning.h"
#include "kernels/backend.h"
#include "server/engine_stack.h"

namespace arbor::eval {

const char kEvalUsage[] = R"(arbor eval — measure a model through the serving engine

Usage:
  arbor eval perplexity --data FILE.jsonl [--max-tokens 512] [options]
  arbor eval reasoning --data arith_test.jsonl [--max-tokens 256] [options]

perplexity: each line {"text": ...}; per document the tokens are BOS + the text (no special
  tokens added) + <|end_of_text|> (else the tokenizer's EOS), the first --max-tokens kept, and
  every token after BOS is scored given those before it, through the fused LM-head log-prob
  kernel (gRPC Score's path). Reports exp(sum NLL / scored tokens) over all documents: the
  definition tools/train/train_all.py reports.
reasoning: each line {"prompt": ..., "answer": N, ...} (tools/train/arith.py); greedy plain
  completion from BOS + prompt until the end-of-text or EOS token, at most --max-tokens; an
  answer is right when the first line "The answer is N" has the expected N.

Options:
  --data FILE         the JSONL file (required)
  --max-tokens N      perplexity: tokens kept per document (default 512, at least 2);
                      reasoning: tokens generated per problem (default 256)
  --limit N           only the first N records
  --adapter DIR       run under this PEFT LoRA adapter directory
  --prm DIR           reasoning: then score the answers' steps with this process reward
                      model (its prm.json names the step tag and the '+' / '-' tokens) and
                      report its step accuracy against arith.py's step labels
  --json              print one JSON object instead of the summary
  --config FILE, --set KEY=VALUE, --device D, --log-level L
                      the launch config, as for `arbor serve` (default: the embedded
                      configs/tiny.yaml; log level warn unless set)
Progress goes to stderr: a bar on a terminal, a line every 10 s otherwise.
)";

namespace {

absl::StatusOr<int64_t> PositiveValue(const std::string& flag, const std::string& text) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v) || v < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be a positive integer, got '", text, "'"));
  }
  return v;
}

// Everything the run needs once the model is up.
struct Loaded {
  engine::LaunchConfig config;
  std::unique_ptr<server::EngineStack> stack;
  std::string device;  // the backend's kind: "cpu" or "cuda"
  Framing framing;
  std::shared_ptr<const engine::LoraAdapter> adapter;
};

// While it lives, log lines go to `err` (stdout holds the result); then the logger before.
class ScopedLogger {
 public:
  explicit ScopedLogger(std::ostream& err)
      : previous_(spdlog::default_logger()), previous_level_(spdlog::get_level()) {
    spdlog::set_default_logger(std::make_shared<spdlog::logger>(
        "arbor-eval", std::make_shared<spdlog::sinks::ostream_sink_mt>(err, true)));
  }
  ~ScopedLogger() {
    spdlog::set_default_logger(previous_);
    spdlog::set_level(previous_level_);
  }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  spdlog::level::level_enum previous_level_;
};

// The config's model (or `model_path`, when given, without the adapter). Logs at warn unless
// the command line says otherwise.
absl::StatusOr<Loaded> Load(const EvalOptions& options, const std::string& model_path = "") {
  server::LaunchArgs launch = options.launch;
  launch.overrides.insert(launch.overrides.begin(), "log_level=warn");
  Loaded l;
  ASSIGN_OR_RETURN(l.config, server::LoadLaunchConfig(launch));
  const bool adapter = !options.adapter.empty() && model_path.empty();
  if (!model_path.empty()) l.config.model.path = model_path;
  if (adapter) l.config.server.adapter_root = options.adapter;
  spdlog::set_level(spdlog::level::from_str(l.config.log_level));

  ASSIGN_OR_RETURN(auto backend, server::CreateConfiguredBackend(l.config));
  l.device = kernels::DeviceKindName(backend->kind());
  ASSIGN_OR_RETURN(l.stack, server::BuildEngineStack(l.config, std::move(backend)));
  if (l.stack->tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model.path ", l.config.model.path, " has no tokenizer.json"));
  }
  ASSIGN_OR_RETURN(l.framing, FramingFor(l.stack->model->spec(), *l.stack->tokenizer,
                                         l.stack->bos_token, l.stack->eos_token));
  if (adapter) {
    // The adapter root is the adapter's own directory.
    auto info = l.stack->adapters->Register("eval-adapter", ".");
    if (!info.ok()) {
      return absl::Status(info.status().code(), absl::StrCat("--adapter ", options.adapter, ": ",
                                                             info.status().message()));
    }
    l.adapter = l.stack->adapters->Find("eval-adapter");
  }
  return l;
}

// The result on `out`: one JSON object (what ran, then `result`) or a line and the summary.
void Print(const EvalOptions& options, const std::string& model, const std::string& device,
           int64_t max_tokens, const nlohmann::ordered_json& result, const std::string& summary,
           std::ostream& out) {
  if (!options.json) {
    out << "arbor eval " << options.task << ": " << options.data << " on " << model
        << (options.adapter.empty() ? "" : " + adapter " + options.adapter) << " (" << device
        << ")\n"
        << summary;
    return;
  }
  nlohmann::ordered_json j;
  j["task"] = options.task;
  j["data"] = options.data;
  j["model"] = model;
  j["adapter"] =
      options.adapter.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(options.adapter);
  j["device"] = device;
  j["max_tokens"] = max_tokens;
  j.update(result);
  out << j.dump() << "\n";
}

// The same for the model `l` evaluated.
void Print(const EvalOptions& options, const Loaded& l, int64_t max_tokens,
           const nlohmann::ordered_json& result, const std::string& summary, std::ostream& out) {
  Print(options, l.config.model.path, l.device, max_tokens, result, summary, out);
}

absl::Status RunPerplexity(const EvalOptions& options, std::ostream& out, std::ostream& err,
                           bool err_tty) {
  const int64_t max_tokens = options.max_tokens > 0 ? options.max_tokens : 512;
  if (max_tokens < 2) {
    return absl::InvalidArgumentError("--max-tokens must be at least 2 (BOS and one token)");
  }
  ASSIGN_OR_RETURN(std::vector<JsonlRecord> records, ReadJsonl(options.data, options.limit));
  ASSIGN_OR_RETURN(Loaded l, Load(options));
  if (max_tokens > l.stack->max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-tokens ", max_tokens, " is more than the model's context (max_model_len ",
        l.stack->max_model_len, "): lower it or raise model.max_model_len"));
  }
  ASSIGN_OR_RETURN(std::vector<Document> docs,
                   FrameDocuments(records, *l.stack->tokenizer, l.framing, max_tokens));
  Progress progress(err, err_tty, "documents", int64_t(docs.size()));
  PerplexityOptions po;
  po.adapter = l.adapter;
  po.max_in_flight = 4 * l.config.engine.max_num_seqs;
  po.on_progress = [&](int64_t done, int64_t tokens) { progress.Update(done, tokens); };
  auto result = ScoreDocuments(*l.stack->engine, docs, po);
  progress.Finish();
  if (!result.ok()) return result.status();
  Print(options, l, max_tokens, PerplexityJson(*result), PerplexitySummary(*result), out);
  return absl::OkStatus();
}

absl::Status RunReasoning(const EvalOptions& options, std::ostream& out, std::ostream& err,
                          bool err_tty) {
  const int64_t max_tokens = options.max_tokens > 0 ? options.max_tokens : 256;
  ASSIGN_OR_RETURN(std::vector<ArithProblem> problems,
                   ReadArithProblems(options.data, options.limit));
  if (!options.prm.empty()) RETURN_IF_ERROR(CheckChains(problems));  // before any model loads
  std::vector<std::string> texts;
  nlohmann::ordered_json json;
  std::string summary, policy, device;
  {
    ASSIGN_OR_RETURN(Loaded l, Load(options));
    Progress progress(err, err_tty, "problems", int64_t(problems.size()));
    ReasoningOptions ro;
    ro.max_tokens = max_tokens;
    ro.adapter = l.adapter;
    ro.max_in_flight = 4 * l.config.engine.max_num_seqs;
    ro.on_progress = [&](int64_t done, int64_t tokens) { progress.Update(done, tokens); };
    ro.on_answer = [&](const ArithProblem&, const std::string& text, Verdict) {
      texts.push_back(text);
    };
    auto result = SolveProblems(*l.stack->engine, *l.stack->tokenizer, l.framing, problems, ro);
    progress.Finish();
    if (!result.ok()) return result.status();
    json = ReasoningJson(*result);
    summary = ReasoningSummary(*result);
    policy = l.config.model.path;
    device = l.device;
  }  // the policy's engine is gone before the PRM's starts
  if (!options.prm.empty()) {
    ASSIGN_OR_RETURN(Loaded prm, Load(options, options.prm));
    ASSIGN_OR_RETURN(PrmFormat format, ReadPrmFormat(options.prm, *prm.stack->tokenizer));
    int64_t skipped = 0;
    ASSIGN_OR_RETURN(std::vector<PrmItem> items, MakePrmItems(*prm.stack->tokenizer, prm.framing,
                                                              format, problems, texts, &skipped));
    int64_t requests = 0;
    for (const PrmItem& item : items) requests += 2 * int64_t(item.tags.size());
    Progress progress(err, err_tty, "PRM requests", requests);
    PrmOptions po;
    po.max_in_flight = 4 * prm.config.engine.max_num_seqs;
    po.on_progress = [&](int64_t done, int64_t tokens) { progress.Update(done, tokens); };
    auto scored = ScoreSteps(*prm.stack->engine, format, items, po);
    progress.Finish();
    if (!scored.ok()) return scored.status();
    scored->skipped = skipped;
    json["prm"] = nlohmann::ordered_json{{"model", options.prm}};
    json["prm"].update(PrmJson(*scored));
    summary += PrmSummary(*scored);
  }
  Print(options, policy, device, max_tokens, json, summary, out);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EvalOptions> ParseEvalArgs(const std::vector<std::string>& args) {
  EvalOptions o;
  if (args.empty()) {
    return absl::InvalidArgumentError("eval: expected `perplexity` or `reasoning`");
  }
  if (args[0] == "--help" || args[0] == "-h") {
    o.help = true;
    return o;
  }
  o.task = args[0];
  if (o.task != "perplexity" && o.task != "reasoning") {
    return absl::InvalidArgumentError(
        absl::StrCat("eval: unknown task '", o.task, "' (perplexity or reasoning)"));
  }
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      o.help = true;
      continue;
    }
    if (arg == "--json") {
      o.json = true;
      continue;
    }
    ASSIGN_OR_RETURN(bool launch_arg, server::TakeLaunchArg(args, &i, &o.launch));
    if (launch_arg) continue;
    if (arg != "--data" && arg != "--adapter" && arg != "--prm" && arg != "--max-tokens" &&
        arg != "--limit") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown argument '", arg, "' (see arbor eval --help)"));
    }
    if (i + 1 >= args.size()) return absl::InvalidArgumentError(arg + " needs a value");
    const std::string& value = args[++i];
    if (arg == "--data") {
      o.data = value;
    } else if (arg == "--adapter") {
      o.adapter = value;
    } else if (arg == "--prm") {
      o.prm = value;
    } else if (arg == "--max-tokens") {
      ASSIGN_OR_RETURN(o.max_tokens, PositiveValue(arg, value));
    } else {
      ASSIGN_OR_RETURN(o.limit, PositiveValue(arg, value));
    }
  }
  if (!o.help && o.data.empty()) return absl::InvalidArgumentError("--data FILE is required");
  if (!o.prm.empty() && o.task != "reasoning") {
    return absl::InvalidArgumentError("--prm is for `arbor eval reasoning`");
  }
  return o;
}

int EvalMain(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
             bool err_tty) {
  auto options = ParseEvalArgs(args);
  if (!options.ok()) {
    err << "arbor: " << options.status().message() << "\n";
    return 2;
  }
  if (options->help) {
    out << kEvalUsage;
    return 0;
  }
  ScopedLogger logger(err);
  const absl::Status s = options->task == "perplexity" ? RunPerplexity(*options, out, err, err_tty)
                                                       : RunReasoning(*options, out, err, err_tty);
  if (!s.ok()) {
    err << "arbor eval " << options->task << ": " << s.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace arbor::eval
