// AdapterStore: the registered LoRA adapters, their weights carved from the unified pool's pages
// (PageKind::kAdapter) next to the KV blocks. Registration checks the path (it must resolve,
// symlinks followed, under the configured root) and the adapter (ReadPeftAdapter). A request
// holds its adapter by shared_ptr: unregistering mid-flight lets it finish on the old weights,
// and the pages return to the pool when the last holder lets go. Thread-safe.
#ifndef ARBOR_ENGINE_LORA_ADAPTER_STORE_H_
#define ARBOR_ENGINE_LORA_ADAPTER_STORE_H_

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/lora/adapter.h"
#include "kernels/backend.h"
#include "memory/unified_pool.h"

namespace arbor::engine {

struct AdapterInfo {
  std::string name;
  std::string path;  // the resolved directory
  int64_t rank = 0;
  int64_t pages = 0;
};

class AdapterStore {
 public:
  // `root`: adapters must live under it (empty: registration refused). `max_rank` caps r.
  // Adapters are stored in `dtype`, the model's.
  AdapterStore(memory::UnifiedPool& pool, kernels::Backend& backend, const ModelSpec& spec,
               std::string root, int64_t max_rank, kernels::DType dtype = kernels::DType::kF32);

  // PermissionDenied: path outside the root (or adapters disabled, or a URL); NotFound: no such
  // directory; AlreadyExists: the name is taken (or names the base model); InvalidArgument: a
  // bad name or adapter; ResourceExhausted: no pool pages for it.
  absl::StatusOr<AdapterInfo> Register(const std::string& name, const std::string& path);
  absl::Status Unregister(const std::string& name);  // NotFound when absent
  std::shared_ptr<const LoraAdapter> Find(const std::string& name) const;
  std::vector<AdapterInfo> List() const;

 private:
  memory::UnifiedPool& pool_;
  kernels::Backend& backend_;
  const ModelSpec& spec_;
  const std::string root_;  // realpath of the configured root, "" when disabled
  const int64_t max_rank_;
  const kernels::DType dtype_;
  std::atomic<uint64_t> next_id_{1};
  mutable std::mutex mu_;
  std::map<std::string, std::pair<std::shared_ptr<const LoraAdapter>, AdapterInfo>> adapters_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_LORA_ADAPTER_STORE_H_
