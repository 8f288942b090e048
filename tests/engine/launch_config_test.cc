#include "engine/launch_config.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "configs/embedded_default.h"

namespace arbor::engine {
namespace {

TEST_CASE("the embedded default config parses", "[config]") {
  auto c = ParseLaunchConfig(configs::kEmbeddedDefaultYaml, "embedded:tiny.yaml");
  REQUIRE(c.ok());
  CHECK(c->model.served_model_name == "tiny");
  CHECK(c->device == "auto");
  CHECK(c->server.http_port == 8000);
  CHECK(c->server.grpc_port == 50051);
}

TEST_CASE("overrides replace values and are read as YAML scalars", "[config]") {
  auto c = ParseLaunchConfig("server:\n  http_port: 8000\n", "a.yaml",
                             {"server.http_port=9001", "device=cpu", "server.drain_timeout_s=0.5"});
  REQUIRE(c.ok());
  CHECK(c->server.http_port == 9001);
  CHECK(c->device == "cpu");
  CHECK(c->server.drain_timeout_s == 0.5);
  CHECK(c->server.request_timeout_s == 600.0);  // defaults
  CHECK(c->server.read_timeout_s == 30.0);
}

TEST_CASE("the HTTP transport's keys: defaults, values and lists", "[config]") {
  auto d = ParseLaunchConfig("", "empty.yaml");
  REQUIRE(d.ok());
  CHECK(d->server.header_timeout_s == 10.0);
  CHECK(d->server.idle_timeout_s == 5.0);
  CHECK(d->server.max_connections == 10000);
  CHECK(d->server.cors_allowed_origins.empty());

  auto c = ParseLaunchConfig(
      "server:\n  cors_allowed_origins: [\"https://app.example\", \"http://localhost:3000\"]\n",
      "a.yaml",
      {"server.header_timeout_s=2.5", "server.idle_timeout_s=60", "server.max_connections=50"});
  REQUIRE(c.ok());
  CHECK(c->server.header_timeout_s == 2.5);
  CHECK(c->server.idle_timeout_s == 60.0);
  CHECK(c->server.max_connections == 50);
  CHECK(c->server.cors_allowed_origins ==
        std::vector<std::string>{"https://app.example", "http://localhost:3000"});

  auto any = ParseLaunchConfig("", "b.yaml", {"server.cors_allowed_origins=[\"*\"]"});
  REQUIRE(any.ok());
  CHECK(any->server.cors_allowed_origins == std::vector<std::string>{"*"});
  // The list survives the effective config's round trip.
  auto again = ParseLaunchConfig(LaunchConfigToYaml(*c), "effective");
  REQUIRE(again.ok());
  CHECK(again->server.cors_allowed_origins == c->server.cors_allowed_origins);
  CHECK(again->server.max_connections == 50);
}

TEST_CASE("the GPU runner's keys: engine.cuda_graphs and engine.deterministic", "[config]") {
  auto d = ParseLaunchConfig("", "empty.yaml");
  REQUIRE(d.ok());
  CHECK(d->engine.cuda_graphs);  // on by default; deterministic mode off (it costs speed)
  CHECK_FALSE(d->engine.deterministic);
  auto c =
      ParseLaunchConfig("engine:\n  cuda_graphs: false\n", "a.yaml", {"engine.deterministic=true"});
  REQUIRE(c.ok());
  CHECK_FALSE(c->engine.cuda_graphs);
  CHECK(c->engine.deterministic);
  auto again = ParseLaunchConfig(LaunchConfigToYaml(*c), "effective");
  REQUIRE(again.ok());
  CHECK_FALSE(again->engine.cuda_graphs);
  CHECK(again->engine.deterministic);
}

TEST_CASE("lora.host_bytes: 8 GiB by default, at least 1, kept through YAML", "[config]") {
  auto d = ParseLaunchConfig("", "empty.yaml");
  REQUIRE(d.ok());
  CHECK(d->lora.host_bytes == int64_t(8) << 30);
  auto c = ParseLaunchConfig("lora:\n  host_bytes: 1048576\n", "a.yaml");
  REQUIRE(c.ok());
  CHECK(c->lora.host_bytes == 1048576);
  auto again = ParseLaunchConfig(LaunchConfigToYaml(*c), "effective");
  REQUIRE(again.ok());
  CHECK(again->lora.host_bytes == 1048576);
  for (const char* bad : {"lora.host_bytes=0", "lora.host_bytes=lots", "lora.host_byte=1"}) {
    auto e = ParseLaunchConfig("", "a.yaml", {bad});
    CHECK_FALSE(e.ok());
    CHECK_THAT(std::string(e.status().message()), Catch::Contains("lora.host_byte"));
  }
}

TEST_CASE("lora.adapters: start-up adapters as maps or name=path, checked", "[config]") {
  auto c = ParseLaunchConfig(
      "server:\n  adapter_root: adapters\nlora:\n  adapters:\n"
      "    - {name: kjv, path: kjv-r8, pin: true}\n    - jargon=jargon-r64\n"
      "    - {name: v, path: 'a: b', base_model_name: whatever}\n",
      "a.yaml");
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  REQUIRE(c->lora.adapters.size() == 3);
  CHECK((c->lora.adapters[0].name == "kjv" && c->lora.adapters[0].path == "kjv-r8" &&
         c->lora.adapters[0].pin));
  CHECK((c->lora.adapters[1].name == "jargon" && c->lora.adapters[1].path == "jargon-r64" &&
         !c->lora.adapters[1].pin));
  CHECK(c->lora.adapters[2].path == "a: b");
  auto again = ParseLaunchConfig(LaunchConfigToYaml(*c), "effective");
  REQUIRE(again.ok());
  REQUIRE(again->lora.adapters.size() == 3);
  CHECK((again->lora.adapters[0].pin && again->lora.adapters[2].path == "a: b"));
  const std::string root = "server.adapter_root=adapters";
  for (const auto& [override, says] : std::vector<std::pair<std::string, std::string>>{
           {"lora.adapters=[a=x, a=y]", "lora.adapters[1] (a): the name is used twice"},
           {"lora.adapters=[tiny=x]", "that is the base model's name"},
           {"lora.adapters=[nopath]", "lora.adapters[0]: 'nopath' is not name=path"},
           {"lora.adapters=[{name: a}]", "lora.adapters[0]: path is empty"},
           {"lora.adapters=[{name: a, path: b, colour: red}]", "lora.adapters[0].colour"},
           {"lora.adapters=[{name: a, path: b, pin: maybe}]", "lora.adapters[0].pin"},
           {"lora.adapters=a=b", "expected a list"}}) {
    INFO(override);
    auto e = ParseLaunchConfig("model:\n  served_model_name: tiny\n", "a.yaml", {root, override});
    REQUIRE_FALSE(e.ok());
    CHECK_THAT(std::string(e.status().message()), Catch::Contains(says));
  }
  auto no_root = ParseLaunchConfig("", "a.yaml", {"lora.adapters=[a=b]"});
  REQUIRE_FALSE(no_root.ok());
  CHECK_THAT(std::string(no_root.status().message()), Catch::Contains("server.adapter_root"));
}

TEST_CASE("--lora-modules values: vLLM's name=path and JSON forms", "[config]") {
  auto plain = ParseLoraModule("sql=/srv/adapters/sql: v2");
  REQUIRE(plain.ok());
  CHECK((plain->name == "sql" && plain->path == "/srv/adapters/sql: v2" && !plain->pin));
  auto js = ParseLoraModule(R"({"name": "sql", "path": "sql-lora", "base_model_name": "m"})");
  REQUIRE(js.ok());
  CHECK((js->name == "sql" && js->path == "sql-lora"));
  for (const char* bad : {"sql", "=path", "sql=", R"({"name": "sql"})", R"({"name": )"}) {
    INFO(bad);
    auto e = ParseLoraModule(bad);
    REQUIRE_FALSE(e.ok());
    CHECK_THAT(std::string(e.status().message()), Catch::Contains("--lora-modules"));
  }
}

TEST_CASE("engine.max_lora_rank: 64 by default, up to the LoRA op's 128", "[config]") {
  auto d = ParseLaunchConfig("", "empty.yaml");
  REQUIRE(d.ok());
  CHECK(d->engine.max_lora_rank == 64);
  auto c = ParseLaunchConfig("engine:\n  max_lora_rank: 128\n", "a.yaml");
  REQUIRE(c.ok());
  CHECK(c->engine.max_lora_rank == 128);
  // Above 128 an adapter would register, then fail every forward pass that used it.
  for (const char* bad :
       {"engine.max_lora_rank=129", "engine.max_lora_rank=1024", "engine.max_lora_rank=0"}) {
    auto e = ParseLaunchConfig("", "a.yaml", {bad});
    CHECK_FALSE(e.ok());
    CHECK_THAT(std::string(e.status().message()), Catch::Contains("engine.max_lora_rank"));
  }
}

TEST_CASE("an override creates a missing section", "[config]") {
  auto c = ParseLaunchConfig("", "empty.yaml", {"model.served_model_name=m1"});
  REQUIRE(c.ok());
  CHECK(c->model.served_model_name == "m1");
}

TEST_CASE("errors name the key and the source", "[config]") {
  struct Bad {
    std::string yaml;
    std::vector<std::string> overrides;
    std::string must_mention;
  };
  const std::vector<Bad> cases = {
      {"server:\n  htp_port: 1\n", {}, "server.htp_port: unknown key"},
      {"colour: red\n", {}, "colour: unknown key"},
      {"server:\n  http_port: 70000\n", {}, "server.http_port"},
      {"server:\n  http_port: abc\n", {}, "server.http_port"},
      {"server:\n  http_port: [1, 2]\n", {}, "server.http_port"},
      {"device: tpu\n", {}, "device: expected one of auto, cpu, cuda"},
      {"log_level: loud\n", {}, "log_level"},
      {"server:\n  drain_timeout_s: .inf\n", {}, "server.drain_timeout_s"},
      {"server:\n  request_timeout_s: -1\n", {}, "server.request_timeout_s"},
      {"server:\n  read_timeout_s: 0\n", {}, "server.read_timeout_s"},
      {"server:\n  read_timeout_s: fast\n", {}, "server.read_timeout_s"},
      {"server:\n  header_timeout_s: 0\n", {}, "server.header_timeout_s"},
      {"server:\n  idle_timeout_s: -5\n", {}, "server.idle_timeout_s"},
      {"server:\n  max_connections: 0\n", {}, "server.max_connections"},
      {"server:\n  max_connections: lots\n", {}, "server.max_connections"},
      {"server:\n  cors_allowed_origins: https://app.example\n",
       {},
       "server.cors_allowed_origins: expected a list"},
      {"server:\n  cors_allowed_origins: [\"https://app.example/\"]\n",
       {},
       "server.cors_allowed_origins: 'https://app.example/' is not an origin"},
      {"server:\n  cors_allowed_origins: [\"app.example\"]\n",
       {},
       "server.cors_allowed_origins: 'app.example' is not an origin"},
      {"server:\n  cors_allowed_origins: [\"*\", \"https://a.example\"]\n",
       {},
       "server.cors_allowed_origins: \"*\" must be the only entry"},
      {"server:\n  cors_allowed_origins: [[1]]\n", {}, "server.cors_allowed_origins"},
      {"model:\n  served_model_name: ''\n", {}, "model.served_model_name"},
      {"server: 5\n", {}, "server: unknown key"},
      {"- a\n- b\n", {}, "mapping"},
      {"server: {http_port: 1\n", {}, "not valid YAML"},
      {"", {"server.nope=1"}, "server.nope: unknown key"},
      {"", {"novalue"}, "expected dotted.key=value"},
      {"", {"server.http_port=-1"}, "server.http_port"},
      {"engine:\n  cuda_graphs: maybe\n", {}, "engine.cuda_graphs"},
      {"engine:\n  deterministic: [1]\n", {}, "engine.deterministic"},
  };
  for (const auto& b : cases) {
    INFO(b.yaml << " overrides " << b.overrides.size());
    auto c = ParseLaunchConfig(b.yaml, "bad.yaml", b.overrides);
    REQUIRE_FALSE(c.ok());
    CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(c.status().message()), Catch::Contains(b.must_mention));
    if (b.overrides.empty()) {
      CHECK_THAT(std::string(c.status().message()), Catch::StartsWith("bad.yaml"));
    }
  }
}

TEST_CASE("the effective config round-trips through YAML", "[config]") {
  auto c = ParseLaunchConfig("device: cpu\nserver:\n  grpc_port: 1234\n", "a.yaml");
  REQUIRE(c.ok());
  auto again = ParseLaunchConfig(LaunchConfigToYaml(*c), "effective");
  REQUIRE(again.ok());
  CHECK(again->device == "cpu");
  CHECK(again->server.grpc_port == 1234);
  CHECK(again->model.served_model_name == c->model.served_model_name);
}

}  // namespace
}  // namespace arbor::engine
