// arbor: the server binary. `arbor serve [--config FILE] [overrides]`, `arbor bench serve
// [options]` (the load generator, tools/bench/serve/), `arbor --help`.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "configs/embedded_default.h"
#include "engine/launch_config.h"
#include "server/app.h"
#include "server/version.h"
#include "tools/bench/serve/bench_serve.h"

namespace {

constexpr char kUsage[] = R"(arbor — LLM inference server

Usage:
  arbor serve [--config FILE] [options] [--set KEY=VALUE ...]
  arbor bench serve --model NAME [options]   (load generator: arbor bench serve --help)
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
  --print-config      print the effective config and exit
SIGTERM or SIGINT: stop accepting, drain in-flight requests for server.drain_timeout_s, exit 0.
)";

int Fail(const std::string& message) {
  std::fprintf(stderr, "arbor: %s\n", message.c_str());
  return 2;
}

int Serve(int argc, char** argv) {
  std::string config_path;
  std::vector<std::string> overrides;
  bool print_config = false;
  const std::vector<std::pair<std::string, std::string>> shortcuts = {
      {"--host", "server.host"},           {"--port", "server.http_port"},
      {"--grpc-port", "server.grpc_port"}, {"--device", "device"},
      {"--log-level", "log_level"},
  };
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& flag) -> const char* {
      if (i + 1 >= argc) return nullptr;
      (void)flag;
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--print-config") {
      print_config = true;
      continue;
    }
    if (arg == "--config" || arg == "--set") {
      const char* v = value(arg);
      if (v == nullptr) return Fail(arg + " needs a value");
      (arg == "--config" ? config_path = v : (overrides.push_back(v), config_path));
      continue;
    }
    bool matched = false;
    for (const auto& [flag, key] : shortcuts) {
      if (arg == flag) {
        const char* v = value(arg);
        if (v == nullptr) return Fail(arg + " needs a value");
        overrides.push_back(key + "=" + v);
        matched = true;
      }
    }
    if (!matched) return Fail("unknown argument '" + arg + "' (see arbor --help)");
  }

  std::string yaml = arbor::configs::kEmbeddedDefaultYaml;
  std::string source = "embedded configs/tiny.yaml";
  if (!config_path.empty()) {
    std::ifstream in(config_path);
    if (!in) return Fail("--config: cannot read " + config_path + ": " + std::strerror(errno));
    std::stringstream ss;
    ss << in.rdbuf();
    yaml = ss.str();
    source = config_path;
  }
  auto config = arbor::engine::ParseLaunchConfig(yaml, source, overrides);
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
  if (cmd == "serve") return Serve(argc - 2, argv + 2);
  if (cmd == "bench") {
    if (argc < 3 || std::strcmp(argv[2], "serve") != 0) {
      return Fail("bench: expected `arbor bench serve` (see arbor bench serve --help)");
    }
    return arbor::bench::BenchServeMain(std::vector<std::string>(argv + 3, argv + argc));
  }
  return Fail("unknown command '" + cmd + "' (see arbor --help)");
}
