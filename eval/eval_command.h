// `arbor eval perplexity|reasoning`: loads the model a launch config describes (as `arbor serve`
// does, server/engine_stack.h), runs the evaluation through its engine, and prints a summary
// (or one JSON object with --json) on stdout; progress and errors go to stderr.
#ifndef ARBOR_EVAL_EVAL_COMMAND_H_
#define ARBOR_EVAL_EVAL_COMMAND_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/launch_args.h"

namespace arbor::eval {

extern const char kEvalUsage[];

struct EvalOptions {
  std::string task;  // "perplexity" or "reasoning"
  server::LaunchArgs launch;
  std::string data;        // --data: the JSONL file
  std::string adapter;     // --adapter: a PEFT LoRA directory; empty: the base model
  std::string prm;         // reasoning --prm: a process reward model directory; empty: none
  int64_t max_tokens = 0;  // --max-tokens; 0: the task's default (512 / 256)
  int64_t limit = 0;       // --limit: the first N records; 0: all
  bool json = false;       // --json
  bool help = false;       // --help
};

// `args` are those after `eval`. InvalidArgument naming the flag for a bad one.
absl::StatusOr<EvalOptions> ParseEvalArgs(const std::vector<std::string>& args);

// The subcommand. Returns the exit code: 0 done, 1 the evaluation failed (bad data, model),
// 2 bad flags. `err_tty`: stderr is a terminal (the progress bar is drawn in place).
int EvalMain(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
             bool err_tty);

}  // namespace arbor::eval

#endif  // ARBOR_EVAL_EVAL_COMMAND_H_
