// Robustness case 17 end to end: a device that fails mid-generation turns /health and
// Admin.Health to 503 / NOT_SERVING with the reason, the in-flight request ends aborted, new
// requests get 503, and the server still shuts down cleanly.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/time/clock.h"
#include "configs/embedded_default.h"
#include "engine/launch_config.h"
#include "kernels/cpu/cpu_backend.h"
#include "proto/arbor.grpc.pb.h"
#include "server/app.h"
#include "tests/faulty_backend.h"

namespace arbor::server {
namespace {

using nlohmann::json;

// `health_reports_it`: whether the device's own health check sees the failure (a CUDA sticky
// error) or only the engine's forward pass does.
void RunFailure(bool health_reports_it, const std::string& want_in_health) {
  auto config = engine::ParseLaunchConfig(
      configs::kEmbeddedDefaultYaml, "embedded",
      {"server.http_port=0", "server.grpc_port=0", "log_level=off", "model.path=models/tiny"});
  REQUIRE(config.ok());
  auto owned = std::make_unique<testing::FaultyBackend>(std::make_unique<kernels::CpuBackend>());
  testing::FaultyBackend* device = owned.get();
  auto started = ServerApp::Start(*config, std::move(owned));
  REQUIRE(started.ok());
  std::unique_ptr<ServerApp> app = std::move(*started);
  httplib::Client http("127.0.0.1", app->http_port());
  http.set_read_timeout(30, 0);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", app->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto admin = arbor::v1::Admin::NewStub(channel);
  auto grpc_health = [&] {
    grpc::ClientContext ctx;
    arbor::v1::HealthRequest req;
    arbor::v1::HealthResponse resp;
    REQUIRE(admin->Health(&ctx, req, &resp).ok());
    return resp.status();
  };

  auto ok = http.Get("/health");
  REQUIRE(ok);
  CHECK(ok->status == 200);
  CHECK(grpc_health() == arbor::v1::HealthResponse::SERVING);

  // A long generation; the device dies while it runs.
  std::thread killer([&] {
    while (device->ops() < 2000) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    device->Fail(absl::InternalError("injected: unspecified launch failure"), health_reports_it);
  });
  auto gen = http.Post(
      "/v1/completions",
      json{{"model", "tiny"}, {"prompt", "once upon"}, {"max_tokens", 1500}, {"ignore_eos", true}}
          .dump(),
      "application/json");
  killer.join();
  REQUIRE(gen);
  REQUIRE(gen->status == 200);
  const json body = json::parse(gen->body);
  CHECK(body["choices"][0]["finish_reason"] == "abort");
  CHECK(body["usage"]["completion_tokens"].get<int>() < 1500);

  auto sick = http.Get("/health");
  REQUIRE(sick);
  CHECK(sick->status == 503);
  const json err = json::parse(sick->body);
  CHECK(err["error"]["code"] == 503);
  CHECK_THAT(err["error"]["message"].get<std::string>(),
             Catch::Contains("unspecified launch failure"));
  CHECK_THAT(err["error"]["message"].get<std::string>(), Catch::Contains(want_in_health));
  CHECK(grpc_health() == arbor::v1::HealthResponse::NOT_SERVING);

  auto refused = http.Post("/v1/completions",
                           json{{"model", "tiny"}, {"prompt", "again"}, {"max_tokens", 3}}.dump(),
                           "application/json");
  REQUIRE(refused);
  CHECK(refused->status == 503);

  // Still 503 later (sticky), and the process shuts down in order.
  auto still = http.Get("/health");
  REQUIRE(still);
  CHECK(still->status == 503);
  app->Shutdown(absl::ZeroDuration());
}

TEST_CASE("a device failure mid-generation turns health to 503 and aborts the request",
          "[server]") {
  RunFailure(/*health_reports_it=*/true, "device failure");
}

TEST_CASE("an engine failure the device does not report still turns health to 503", "[server]") {
  RunFailure(/*health_reports_it=*/false, "engine failure");
}

}  // namespace
}  // namespace arbor::server
