// What the HTTP and gRPC front ends share: the effective config, the backend's identity and the
// serving state. Owned by ServerApp; handlers only read it.
#ifndef ARBOR_SERVER_CONTEXT_H_
#define ARBOR_SERVER_CONTEXT_H_

#include <cstdint>
#include <string>

#include "engine/launch_config.h"
#include "kernels/backend.h"
#include "server/serving_state.h"

namespace arbor::server {

struct ServerContext {
  engine::LaunchConfig config;
  std::string backend_name;  // "cpu" or "cuda"; empty while loading
  kernels::DeviceInfo device;
  std::string model_architecture;  // empty while loading
  int64_t max_model_len = 0;
  int64_t created_unix_s = 0;  // reported as `created` of the models
  ServingState state;
};

}  // namespace arbor::server

#endif  // ARBOR_SERVER_CONTEXT_H_
