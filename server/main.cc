// arbor: the server binary. `arbor serve [--config FILE] [overrides]`, `arbor bench serve
// [options]` (the load generator, tools/bench/serve/), `arbor eval perplexity|reasoning`
// (model quality through the engine, eval/), `arbor --help`.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "engine/launch_config.h"
#include "eval/eval_command.h"
#include "server/app.h"
#include "server/launch_args.h"
#include "server/version.h"
#include "tools/bench/serve/bench_serve.h"

namespace {

constexpr char kUsage[] = R"(arbor — LLM inference server

Usage:
  arbor serve [--config FILE] [options] [--set KEY=VALUE ...]
  arbor bench serve --model NAME [options]   (load generator: arbor bench serve --help)
  arbor eval perplexity --data FILE.jsonl [options]   (arbor eval --help)
  arbor eval reasoning --data FILE.jsonl [options]
  arbor version
  arbor --help

serve: starts the HTTP (OpenAI-style) and gRPC servers. Without --config it runs the embedded
default config (configs/tiny.yaml). Every config key can be overridden:
  --config FILE       YAML launch config (keys: configs/README.md)
  --set KEY=VALUE     override any key, e.g. --set server.http_port=9000
  --host HOST         = --set server.host=HOST
  --port N            = --set server.http_port=N   (0 picks a free port)
  --grpc-port N       = --set server.grpc_port=N   (0 picks a free port)
  --device D          = --set device=D             (auto | cpu | cuda)
  --log-level L       = --set log_level=L          (trace | debug | info | warn | error | off)
  --lora-modules NAME=PATH ...   adapters registered at start-up (vLLM's flag; also its JSON
                      form '{"name": ..., "path": ...}'); paths under server.adapter_root
  --print-config      print the effective config and exit
SIGTERM or SIGINT: stop accepting, drain in-flight requests for server.drain_timeout_s, exit 0.
)";

int Fail(const std::string& message) {
  std::fprintf(stderr, "arbor: %s\n", message.c_str());
  return 2;
}

int Serve(const std::vector<std::string>& args) {
  arbor::server::LaunchArgs launch;
  bool print_config = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (args[i] == "--print-config") {
      print_config = true;
      continue;
    }
    auto taken = arbor::server::TakeLaunchArg(args, &i, &launch);
    if (!taken.ok()) return Fail(std::string(taken.status().message()));
    if (!*taken) return Fail("unknown argument '" + args[i] + "' (see arbor --help)");
  }
  std::string source;
  auto config = arbor::server::LoadLaunchConfig(launch, &source);
  if (!config.ok()) return Fail(std::string(config.status().message()));
  if (print_config) {
    std::cout << arbor::engine::LaunchConfigToYaml(*config) << "\n";
    return 0;
  }

  spdlog::set_level(spdlog::level::from_str(config->log_level));
  spdlog::info("arbor {} starting; config from {}", arbor::kVersion, source);
  spdlog::info("effective config:\n{}", arbor::engine::LaunchConfigToYaml(*config));

  // Signals are taken synchronously by this thread; every thread started later inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto app = arbor::server::ServerApp::Start(*config);
  if (!app.ok()) {
    spdlog::error("start-up failed: {}", app.status().ToString());
    return 1;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}; draining for up to {}s", strsignal(sig),
               config->server.drain_timeout_s);
  (*app)->Shutdown(absl::Seconds(config->server.drain_timeout_s));
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "version" || cmd == "--version") {
    std::printf("arbor %s\n", arbor::kVersion);
    return 0;
  }
  if (cmd == "serve") return Serve(std::vector<std::string>(argv + 2, argv + argc));
  if (cmd == "bench") {
    if (argc < 3 || std::strcmp(argv[2], "serve") != 0) {
      return Fail("bench: expected `arbor bench serve` (see arbor bench serve --help)");
    }
    return arbor::bench::BenchServeMain(std::vector<std::string>(argv + 3, argv + argc));
  }
  if (cmd == "eval") {
    return arbor::eval::EvalMain(std::vector<std::string>(argv + 2, argv + argc), std::cout,
                                 std::cerr, isatty(STDERR_FILENO) != 0);
  }
  return Fail("unknown command '" + cmd + "' (see arbor --help)");
}
