#include "engine/lora/adapter_store.h"

#include <climits>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace arbor::engine {
namespace {

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) != nullptr ? std::string(buf) : std::string();
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  // "." and ".." would name the directory itself or its parent in /v1/adapters/{name}.
  if (name == "." || name == "..") return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return false;
    }
  }
  return true;
}

}  // namespace

AdapterStore::AdapterStore(memory::UnifiedPool& pool, kernels::Backend& backend,
                           const ModelSpec& spec, std::string root, int64_t max_rank,
                           kernels::DType dtype)
    : pool_(pool),
      backend_(backend),
      spec_(spec),
      root_(root.empty() ? std::string() : RealPath(root)),
      max_rank_(max_rank),
      dtype_(dtype) {}

absl::StatusOr<AdapterInfo> AdapterStore::Register(const std::string& name,
                                                   const std::string& path) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        "name: 1-128 characters of letters, digits, '-', '_' and '.' (not . or ..)");
  }
  if (root_.empty()) {
    return absl::PermissionDeniedError("adapters are disabled: set server.adapter_root");
  }
  if (absl::StrContains(path, "://")) {
    return absl::PermissionDeniedError("path: URLs are refused; give a directory under the root");
  }
  // Relative paths are relative to the root; the resolved path (symlinks followed) must stay
  // inside it.
  const std::string joined = !path.empty() && path[0] == '/' ? path : root_ + "/" + path;
  const std::string real = RealPath(joined);
  if (real.empty()) return absl::NotFoundError(absl::StrCat("path: ", path, " does not exist"));
  if (real != root_ && !absl::StartsWith(real, root_ + "/")) {
    return absl::PermissionDeniedError(
        absl::StrCat("path: ", path, " resolves outside the adapter root"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (adapters_.count(name)) {
      return absl::AlreadyExistsError(absl::StrCat("adapter `", name, "` is already registered"));
    }
  }
  ASSIGN_OR_RETURN(HostLora host, ReadPeftAdapter(real, spec_, max_rank_));

  // Layout: matrices packed into pages in order; a matrix never straddles two pages (the GEMM
  // reads it contiguously), so one larger than a page is refused.
  // Each placement says where its matrix goes, so the copy below needs no second walk that
  // must visit the matrices in the same order.
  struct Placement {
    size_t layer;
    int target;
    int ab;  // 0: A, 1: B
    int64_t page_index;
    size_t offset;
  };
  std::vector<Placement> plan;
  const size_t page_bytes = pool_.page_bytes();
  int64_t page_index = -1;
  size_t used = page_bytes;
  for (size_t l = 0; l < host.layers.size(); ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto& [a, b] = host.layers[l][size_t(t)];
      if (a.empty()) continue;
      for (int ab = 0; ab < 2; ++ab) {
        const size_t bytes =
            ((ab == 0 ? a : b).size() * kernels::DTypeSize(dtype_) + 255) / 256 * 256;
        if (bytes > page_bytes) {
          return absl::InvalidArgumentError(absl::StrCat(real, ": a ", bytes,
                                                         "-byte LoRA matrix exceeds a pool page (",
                                                         page_bytes, " bytes)"));
        }
        if (used + bytes > page_bytes) {
          ++page_index;
          used = 0;
        }
        plan.push_back({l, t, ab, page_index, used});
        used += bytes;
      }
    }
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> pages,
                   pool_.Allocate(page_index + 1, memory::PageKind::kAdapter));
  auto release = [pool = &pool_, pages](LoraAdapter* a) {
    (void)pool->Free(pages);
    delete a;
  };
  std::shared_ptr<LoraAdapter> adapter(new LoraAdapter(), release);
  adapter->id = next_id_.fetch_add(1);
  adapter->name = name;
  adapter->rank = host.rank;
  adapter->scale = host.scale;
  adapter->layers.resize(host.layers.size());
  std::vector<uint8_t> narrow;
  for (const Placement& p : plan) {
    const auto& [a, b] = host.layers[p.layer][size_t(p.target)];
    const std::vector<float>& src = p.ab == 0 ? a : b;
    void* dst = static_cast<char*>(pool_.page_ptr(pages[size_t(p.page_index)])) + p.offset;
    // PEFT's fp32 (or bf16) matrices, rounded to the model's dtype as PEFT casts them.
    narrow.resize(src.size() * kernels::DTypeSize(dtype_));
    kernels::StoreFloats(src.data(), src.size(), dtype_, narrow.data());
    RETURN_IF_ERROR(
        backend_.CopyToDevice(dst, narrow.data(), narrow.size(), backend_.default_stream()));
    RETURN_IF_ERROR(backend_.default_stream().Synchronize());  // `narrow` is reused
    LoraMatrix& m = adapter->layers[p.layer][size_t(p.target)];
    (p.ab == 0 ? m.a : m.b) = dst;
  }
  RETURN_IF_ERROR(backend_.default_stream().Synchronize());
  AdapterInfo info{name, real, host.rank, int64_t(pages.size())};
  std::lock_guard<std::mutex> lock(mu_);
  if (adapters_.count(name)) {
    return absl::AlreadyExistsError(absl::StrCat("adapter `", name, "` is already registered"));
  }
  adapters_[name] = {std::move(adapter), info};
  return info;
}

absl::Status AdapterStore::Unregister(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  if (adapters_.erase(name) == 0) {
    return absl::NotFoundError(absl::StrCat("adapter `", name, "` is not registered"));
  }
  return absl::OkStatus();
}

std::shared_ptr<const LoraAdapter> AdapterStore::Find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = adapters_.find(name);
  return it == adapters_.end() ? nullptr : it->second.first;
}

std::vector<AdapterInfo> AdapterStore::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<AdapterInfo> out;
  for (const auto& [name, entry] : adapters_) out.push_back(entry.second);
  return out;
}

}  // namespace arbor::engine
