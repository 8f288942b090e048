// Starting the real ServerApp for a test: loopback ports the OS picks, the CPU, quiet logs, and
// any further `key=value` overrides of the launch config.
#ifndef ARBOR_TESTS_SERVER_START_APP_H_
#define ARBOR_TESTS_SERVER_START_APP_H_

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "configs/embedded_default.h"
#include "engine/launch_config.h"
#include "server/app.h"

namespace arbor::server::testing {

// `yaml` is a launch config's text ("" for none), `extra` its overrides.
inline std::unique_ptr<ServerApp> StartApp(const std::string& yaml,
                                           const std::vector<std::string>& extra) {
  std::vector<std::string> overrides = {"server.http_port=0", "server.grpc_port=0", "device=cpu",
                                        "log_level=warn"};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  auto config = engine::ParseLaunchConfig(yaml, "test", overrides);
  INFO(config.status().ToString());
  REQUIRE(config.ok());
  auto app = ServerApp::Start(*config);
  INFO(app.status().ToString());
  REQUIRE(app.ok());
  return std::move(*app);
}

// The embedded default config on models/tiny (the random-weight model whose tokenizer, chat
// template and vocab of 1206 these tests pin; the default itself serves models/testbed/chat),
// served as "tiny", with a 16 MiB pool.
inline std::unique_ptr<ServerApp> StartTinyApp(std::vector<std::string> extra = {}) {
  extra.insert(extra.begin(), {"model.path=models/tiny", "engine.pool_bytes=16777216"});
  return StartApp(configs::kEmbeddedDefaultYaml, extra);
}

}  // namespace arbor::server::testing

#endif  // ARBOR_TESTS_SERVER_START_APP_H_
