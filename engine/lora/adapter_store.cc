#include "engine/lora/adapter_store.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace arbor::engine {
namespace {

using Digest = std::array<uint8_t, 32>;

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

bool Sha256(const uint8_t* data, size_t bytes, Digest* out) {
  static const EVP_MD* const md = [] {
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched != nullptr ? fetched : EVP_sha256();
  }();
  unsigned int len = 0;
  return EVP_Digest(data, bytes, out->data(), &len, md, nullptr) == 1 && len == out->size();
}

}  // namespace

// One live adapter: registered, or unregistered but still held by a request.
struct AdapterEntry {
  uint64_t id = 0;
  std::string name;
  std::string dir;  // resolved
  int64_t rank = 0;
  float scale = 1.0f;
  bool pinned = false;
  LoraAdapter* adapter = nullptr;  // owned by the shared_ptrs requests hold
  LoraPackLayout layout;
  Digest digest{};
  // Host tier.
  kernels::HostBuffer host;  // empty when dropped for the budget
  uint64_t host_tick = 0;
  bool loading = false;         // queued for or being reread from disk (outside the lock)
  absl::Status load_error;      // the background reread's failure, for the next Acquire
  bool host_in_flight = false;  // a copy from `host` may still be running (until `ready`)
  // Device tier.
  std::vector<int32_t> pages;  // empty when not resident
  int64_t holds = 0;
  uint64_t gpu_tick = 0;
  bool prefetched = false;                // paged in by Prefetch and not admitted since
  bool fence_pending = false;             // the compute stream has not waited for `ready` yet
  std::unique_ptr<kernels::Event> ready;  // recorded after its latest copies
};

struct AdapterHold::State {
  State(memory::UnifiedPool& p, kernels::Backend& b, const ModelSpec& s, AdapterStoreOptions o)
      : pool(p), backend(b), spec(s), options(std::move(o)) {}

  memory::UnifiedPool& pool;
  kernels::Backend& backend;
  const ModelSpec& spec;
  const AdapterStoreOptions options;
  std::string root;  // realpath of options.root, "" when disabled
  std::atomic<uint64_t> next_id{1};

  // std::mutex for ThreadSanitizer's sake (see memory/unified_pool.h).
  mutable std::mutex mu;
  // Guarded by mu:
  std::map<std::string, std::shared_ptr<LoraAdapter>> by_name;
  std::map<uint64_t, std::unique_ptr<AdapterEntry>> entries;  // live adapters by id
  int64_t host_used = 0;  // bytes of host copies, and of reservations for copies being made
  uint64_t tick = 0;
  AdapterStoreStats counters;
  std::unique_ptr<kernels::Stream> copy_stream;   // made on first use
  std::unique_ptr<kernels::Event> compute_point;  // the compute stream's progress, for copies
  // The loader thread (background_reload): ids to reread, the one being read, and its wakeups.
  std::condition_variable load_cv;
  std::deque<uint64_t> load_queue;
  uint64_t reading = 0;
  bool loader_running = false;
  bool stop_loader = false;
  std::thread loader;

  AdapterEntry* Get(uint64_t id) {
    auto it = entries.find(id);
    return it == entries.end() ? nullptr : it->second.get();
  }

  // Frees e's host copy, after any copy still reading it.
  void DropHost(AdapterEntry& e) {
    if (e.host.data() == nullptr) return;
    if (e.host_in_flight && e.ready != nullptr) (void)e.ready->Synchronize();
    e.host_in_flight = false;
    host_used -= int64_t(e.layout.packed_bytes);
    e.host = kernels::HostBuffer();
  }

  // Makes room for `bytes` more of host copies within the budget, dropping the least recently
  // used copies (not `keep`'s, not one being loaded), and reserves them.
  absl::Status ReserveHost(int64_t bytes, uint64_t keep) {
    while (host_used + bytes > options.host_bytes) {
      AdapterEntry* lru = nullptr;
      for (auto& [id, e] : entries) {
        if (id == keep || e->loading || e->host.data() == nullptr) continue;
        if (lru == nullptr || e->host_tick < lru->host_tick) lru = e.get();
      }
      if (lru == nullptr) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "lora.host_bytes (", options.host_bytes, ") cannot hold ", bytes,
            " more bytes of adapters now: ", host_used, " are in use or being loaded"));
      }
      DropHost(*lru);
      ++counters.host_evictions;
    }
    host_used += bytes;
    return absl::OkStatus();
  }

  // Returns e's pages to the pool; the compute stream is first ordered after e's copies, so
  // nothing written into those pages later on it can be overtaken by them.
  void Evict(AdapterEntry& e) {
    if (e.pages.empty()) return;
    if (e.fence_pending && e.ready != nullptr) {
      (void)e.ready->Wait(backend.default_stream());
      e.fence_pending = false;
    }
    (void)pool.Free(e.pages);
    e.pages.clear();
    e.prefetched = false;
    e.adapter->pages.clear();
  }

  int64_t IdlePages() const {
    int64_t pages = 0;
    for (const auto& [id, e] : entries) {
      if (!e->pages.empty() && e->holds == 0 && !e->pinned) pages += int64_t(e->pages.size());
    }
    return pages;
  }

  AdapterEntry* LeastRecentIdle() {
    AdapterEntry* lru = nullptr;
    for (auto& [id, e] : entries) {
      if (e->pages.empty() || e->holds > 0 || e->pinned) continue;
      if (lru == nullptr || e->gpu_tick < lru->gpu_tick) lru = e.get();
    }
    return lru;
  }

  // Copies e's host copy into `pages` on the copy stream, after the compute stream's work so
  // far, and points e's matrices at them.
  absl::Status PageIn(AdapterEntry& e, std::vector<int32_t> pages) {
    if (copy_stream == nullptr) {
      ASSIGN_OR_RETURN(copy_stream, backend.CreateStream());
      ASSIGN_OR_RETURN(compute_point, backend.CreateEvent());
    }
    if (e.ready == nullptr) {
      ASSIGN_OR_RETURN(e.ready, backend.CreateEvent());
    }
    RETURN_IF_ERROR(compute_point->Record(backend.default_stream()));
    RETURN_IF_ERROR(compute_point->Wait(*copy_stream));
    const size_t page_bytes = pool.page_bytes();
    const uint8_t* src = e.host.as<uint8_t>();
    for (size_t i = 0; i < pages.size(); ++i) {
      const size_t begin = i * page_bytes;
      const size_t len = std::min(page_bytes, e.layout.packed_bytes - begin);
      RETURN_IF_ERROR(
          backend.CopyToDevice(pool.page_ptr(pages[i]), src + begin, len, *copy_stream));
    }
    RETURN_IF_ERROR(e.ready->Record(*copy_stream));
    e.host_in_flight = true;
    e.fence_pending = true;
    e.host_tick = ++tick;
    e.gpu_tick = ++tick;
    e.adapter->pool = pool.base();
    e.adapter->page_bytes = int64_t(page_bytes);
    e.adapter->pages = pages;
    e.pages = std::move(pages);
    ++counters.copies;
    counters.copy_bytes += int64_t(e.layout.packed_bytes);
    return absl::OkStatus();
  }

  // Reads e back from disk into a new host copy, checked against the registration's digest.
  // Called with `lock` held; releases it around the disk read.
  absl::Status Reload(AdapterEntry& e, std::unique_lock<std::mutex>& lock) {
    const int64_t bytes = int64_t(e.layout.packed_bytes);
    RETURN_IF_ERROR(ReserveHost(bytes, e.id));
    e.loading = true;
    lock.unlock();
    absl::StatusOr<kernels::HostBuffer> buf = [&]() -> absl::StatusOr<kernels::HostBuffer> {
      const std::string config = e.dir + "/adapter_config.json";
      const std::string weights = e.dir + "/adapter_model.safetensors";
      auto host = OpenPeftAdapter(e.dir, spec, options.max_rank);
      if (!host.ok()) {
        return absl::Status(
            host.status().code(),
            absl::StrCat("reloading adapter `", e.name, "` from disk: ", host.status().message()));
      }
      if (host->rank != e.rank || host->scale != e.scale) {
        return absl::DataLossError(absl::StrCat(config, ": adapter `", e.name,
                                                "` changed on disk since it was registered (r or "
                                                "lora_alpha differ); register it again"));
      }
      ASSIGN_OR_RETURN(kernels::HostBuffer out, backend.AllocateHost(e.layout.packed_bytes));
      Digest digest{};
      if (!PackLora(*host, e.layout, options.dtype, out.as<uint8_t>()) ||
          !Sha256(out.as<uint8_t>(), e.layout.packed_bytes, &digest) || digest != e.digest) {
        return absl::DataLossError(absl::StrCat(weights, ": adapter `", e.name,
                                                "` changed on disk since it was registered (the "
                                                "SHA-256 of its weights differs); register it "
                                                "again"));
      }
      return out;
    }();
    lock.lock();
    e.loading = false;
    if (!buf.ok()) {
      host_used -= bytes;
      return buf.status();
    }
    e.host = std::move(*buf);
    e.host_tick = ++tick;
    ++counters.disk_loads;
    return absl::OkStatus();
  }

  // Queues a background reread of e's host copy (lock held); no-op when one is queued or runs.
  void StartLoad(AdapterEntry& e) {
    if (e.loading || e.host.data() != nullptr) return;
    e.loading = true;
    load_queue.push_back(e.id);
    load_cv.notify_all();
  }

  void LoaderLoop() {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      load_cv.wait(lock, [&] { return stop_loader || !load_queue.empty(); });
      if (stop_loader) break;
      const uint64_t id = load_queue.front();
      load_queue.pop_front();
      AdapterEntry* e = Get(id);
      if (e == nullptr) continue;
      e->loading = false;  // Reload sets it again around the read
      reading = id;
      absl::Status s = Reload(*e, lock);
      reading = 0;
      if (!s.ok()) e->load_error = std::move(s);  // alive: Release waits while `reading`
      load_cv.notify_all();
    }
    for (uint64_t id : load_queue) {
      if (AdapterEntry* e = Get(id)) e->loading = false;
    }
    load_queue.clear();
  }

  // The last shared_ptr to an adapter went: its entry, host copy and pages go.
  void Release(uint64_t id) {
    std::unique_ptr<AdapterEntry> e;
    std::unique_lock<std::mutex> lock(mu);
    load_queue.erase(std::remove(load_queue.begin(), load_queue.end(), id), load_queue.end());
    load_cv.wait(lock, [&] { return reading != id; });
    auto it = entries.find(id);
    if (it == entries.end()) return;
    e = std::move(it->second);
    entries.erase(it);
    Evict(*e);
    DropHost(*e);
  }
};

AdapterHold::AdapterHold(AdapterHold&& other) noexcept
    : state_(std::move(other.state_)), id_(std::exchange(other.id_, 0)) {}

AdapterHold& AdapterHold::operator=(AdapterHold&& other) noexcept {
  if (this != &other) {
    Reset();
    state_ = std::move(other.state_);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

void AdapterHold::Reset() {
  if (state_ == nullptr) return;
  if (id_ != 0) {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (AdapterEntry* e = state_->Get(id_); e != nullptr && e->holds > 0) {
      --e->holds;
      e->gpu_tick = ++state_->tick;
    }
  }
  state_.reset();
  id_ = 0;
}

AdapterStore::AdapterStore(memory::UnifiedPool& pool, kernels::Backend& backend,
                           const ModelSpec& spec, AdapterStoreOptions options)
    : state_(std::make_shared<AdapterHold::State>(pool, backend, spec, std::move(options))) {
  state_->root = state_->options.root.empty() ? std::string() : RealPath(state_->options.root);
  if (state_->options.background_reload) {
    state_->loader_running = true;
    state_->loader = std::thread([state = state_.get()] { state->LoaderLoop(); });
  }
}

AdapterStore::~AdapterStore() {
  if (state_->loader.joinable()) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->stop_loader = true;
      state_->loader_running = false;
      state_->load_cv.notify_all();
    }
    state_->loader.join();
  }
  // Adapters still held elsewhere keep the state alive; the store's own references go now.
  std::map<std::string, std::shared_ptr<LoraAdapter>> names;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    names.swap(state_->by_name);
  }
}

absl::StatusOr<AdapterInfo> AdapterStore::Register(const std::string& name, const std::string& path,
                                                   bool pin) {
  AdapterHold::State& st = *state_;
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        "name: 1-128 characters of letters, digits, '-', '_' and '.' (not . or ..)");
  }
  if (st.root.empty()) {
    return absl::PermissionDeniedError("adapters are disabled: set server.adapter_root");
  }
  if (absl::StrContains(path, "://")) {
    return absl::PermissionDeniedError("path: URLs are refused; give a directory under the root");
  }
  // Relative paths are relative to the root; the resolved path (symlinks followed) must stay
  // inside it.
  const std::string joined = !path.empty() && path[0] == '/' ? path : st.root + "/" + path;
  const std::string real = RealPath(joined);
  if (real.empty()) return absl::NotFoundError(absl::StrCat("path: ", path, " does not exist"));
  if (real != st.root && !absl::StartsWith(real, st.root + "/")) {
    return absl::PermissionDeniedError(
        absl::StrCat("path: ", path, " resolves outside the adapter root"));
  }
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (st.by_name.count(name)) {
      return absl::AlreadyExistsError(absl::StrCat("adapter `", name, "` is already registered"));
    }
  }
  // Opened (mapped and checked), then packed straight from the mapping into the host copy, all
  // without the lock: registrations from several threads read, pack and hash in parallel.
  ASSIGN_OR_RETURN(PeftAdapter host, OpenPeftAdapter(real, st.spec, st.options.max_rank));
  const size_t page_bytes = st.pool.page_bytes();
  LoraPackLayout layout = PlanLoraPack(host, page_bytes, st.options.dtype);
  if (int64_t(layout.packed_bytes) > st.options.host_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        real, ": the adapter takes ", layout.packed_bytes,
        " bytes in host memory, more than lora.host_bytes (", st.options.host_bytes, ")"));
  }
  if (layout.num_pages > st.pool.num_pages()) {
    return absl::InvalidArgumentError(absl::StrCat(real, ": the adapter needs ", layout.num_pages,
                                                   " pool pages, the whole pool has ",
                                                   st.pool.num_pages()));
  }

  auto entry = std::make_unique<AdapterEntry>();
  entry->id = st.next_id.fetch_add(1);
  entry->name = name;
  entry->dir = real;
  entry->rank = host.rank;
  entry->scale = host.scale;
  entry->pinned = pin;
  entry->layout = std::move(layout);
  {
    std::lock_guard<std::mutex> lock(st.mu);
    RETURN_IF_ERROR(st.ReserveHost(int64_t(entry->layout.packed_bytes), 0));
  }
  auto unreserve = [&] {
    std::lock_guard<std::mutex> lock(st.mu);
    st.host_used -= int64_t(entry->layout.packed_bytes);
  };
  // Not cleared: PackLora writes every byte. (On CUDA this is cudaHostAlloc, which pins the
  // pages itself and is serialised by the driver.)
  auto buf = st.backend.AllocateHost(entry->layout.packed_bytes);
  if (!buf.ok()) {
    unreserve();
    return buf.status();
  }
  if (!PackLora(host, entry->layout, st.options.dtype, buf->as<uint8_t>()) ||
      !Sha256(buf->as<uint8_t>(), entry->layout.packed_bytes, &entry->digest)) {
    unreserve();
    return absl::InternalError(absl::StrCat(real, ": packing the adapter failed"));
  }
  entry->host = std::move(*buf);
  host = PeftAdapter();  // unmapped before the lock is taken

  auto* adapter = new LoraAdapter();
  adapter->id = entry->id;
  adapter->name = name;
  adapter->rank = entry->rank;
  adapter->scale = entry->scale;
  adapter->targets.resize(size_t(st.spec.num_layers));
  adapter->num_experts = st.spec.num_experts;
  for (const LoraPlacement& p : entry->layout.plan) {
    adapter->targets[size_t(p.layer)][size_t(p.target)] = true;
  }
  entry->adapter = adapter;
  const uint64_t id = entry->id;
  std::shared_ptr<LoraAdapter> shared;
  std::unique_lock<std::mutex> lock(st.mu);
  entry->host_tick = ++st.tick;
  AdapterEntry& e = *entry;
  st.entries[id] = std::move(entry);
  // From here the entry lives as long as the adapter: its deleter releases both.
  shared = std::shared_ptr<LoraAdapter>(adapter, [state = state_, id](LoraAdapter* a) {
    state->Release(id);
    delete a;
  });
  absl::Status status;
  if (st.by_name.count(name)) {
    status = absl::AlreadyExistsError(absl::StrCat("adapter `", name, "` is already registered"));
  } else if (pin) {
    // Pinned: resident from now on, in pages that are free now (pinning evicts nothing).
    auto pages = st.pool.Allocate(e.layout.num_pages, memory::PageKind::kAdapter);
    if (!pages.ok()) {
      status = absl::ResourceExhaustedError(absl::StrCat("pin: adapter `", name, "` needs ",
                                                         e.layout.num_pages, " free pool pages; ",
                                                         pages.status().message()));
    } else {
      const std::vector<int32_t> taken = *pages;
      status = st.PageIn(e, std::move(*pages));
      if (!status.ok() && e.pages.empty()) (void)st.pool.Free(taken);
    }
  }
  if (!status.ok()) {
    lock.unlock();
    shared.reset();  // the deleter frees what was taken
    return status;
  }
  AdapterInfo info{name, real, e.rank,          e.layout.num_pages, int64_t(e.layout.packed_bytes),
                   pin,  true, !e.pages.empty()};
  st.by_name[name] = std::move(shared);
  return info;
}

absl::Status AdapterStore::Unregister(const std::string& name) {
  std::shared_ptr<LoraAdapter> dropped;  // released after the lock (its deleter takes it)
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->by_name.find(name);
  if (it == state_->by_name.end()) {
    return absl::NotFoundError(absl::StrCat("adapter `", name, "` is not registered"));
  }
  dropped = std::move(it->second);
  state_->by_name.erase(it);
  return absl::OkStatus();
}

std::shared_ptr<const LoraAdapter> AdapterStore::Find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->by_name.find(name);
  return it == state_->by_name.end() ? nullptr : it->second;
}

std::vector<AdapterInfo> AdapterStore::List() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  std::vector<AdapterInfo> out;
  for (const auto& [name, adapter] : state_->by_name) {
    const AdapterEntry* e = state_->Get(adapter->id);
    out.push_back({name, e->dir, e->rank, e->layout.num_pages, int64_t(e->layout.packed_bytes),
                   e->pinned, e->host.data() != nullptr, !e->pages.empty()});
  }
  return out;
}

AdapterStoreStats AdapterStore::stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  AdapterStoreStats s = state_->counters;
  s.registered = int64_t(state_->by_name.size());
  s.host_bytes_used = state_->host_used;
  for (const auto& [id, e] : state_->entries) {
    s.host_resident += e->host.data() != nullptr ? 1 : 0;
    s.gpu_resident += e->pages.empty() ? 0 : 1;
  }
  return s;
}

int64_t AdapterStore::PagesOf(const LoraAdapter& adapter) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  const AdapterEntry* e = state_->Get(adapter.id);
  return e == nullptr ? 0 : e->layout.num_pages;
}

int64_t AdapterStore::PinnedPagesExcept(const LoraAdapter& adapter) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  int64_t pages = 0;
  for (const auto& [id, e] : state_->entries) {
    if (e->pinned && id != adapter.id) pages += int64_t(e->pages.size());
  }
  return pages;
}

bool AdapterStore::Resident(const LoraAdapter& adapter) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  const AdapterEntry* e = state_->Get(adapter.id);
  return e == nullptr || !e->pages.empty();
}

int64_t AdapterStore::IdlePages() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->IdlePages();
}

absl::StatusOr<AdapterHold> AdapterStore::Acquire(const LoraAdapter& adapter, const KvReclaim& kv) {
  AdapterHold::State& st = *state_;
  std::unique_lock<std::mutex> lock(st.mu);
  AdapterEntry* e = st.Get(adapter.id);
  if (e == nullptr) return AdapterHold(state_, 0);  // not ours: its layers are the caller's
  if (!e->pages.empty()) {
    ++e->holds;
    e->gpu_tick = ++st.tick;
    if (e->prefetched) {
      e->prefetched = false;
      ++st.counters.prefetch_hits;
    }
    return AdapterHold(state_, e->id);
  }
  if (e->host.data() == nullptr && st.loader_running) {
    // The loader rereads it; the caller tries again (a failed read is reported once).
    if (!e->load_error.ok()) return std::exchange(e->load_error, absl::OkStatus());
    st.StartLoad(*e);
    return absl::ResourceExhaustedError(
        absl::StrCat("adapter `", e->name, "` is being read from disk"));
  }
  const int64_t need = e->layout.num_pages;
  const int64_t idle = st.IdlePages();
  const int64_t free = st.pool.free_pages();
  const int64_t evictable = kv.evict ? kv.evictable : 0;
  if (free + idle + evictable < need) {
    return absl::ResourceExhaustedError(
        absl::StrCat("adapter `", e->name, "` needs ", need, " pool pages: ", free, " free, ", idle,
                     " in idle adapters, ", evictable, " in cached KV blocks"));
  }
  // The host copy first, so that a failed reload evicts nothing.
  if (e->host.data() == nullptr) RETURN_IF_ERROR(st.Reload(*e, lock));
  if (!e->pages.empty()) {  // cannot happen on the engine thread; kept exact anyway
    ++e->holds;
    return AdapterHold(state_, e->id);
  }
  while (st.pool.free_pages() < need) {
    AdapterEntry* victim = st.LeastRecentIdle();
    if (victim == nullptr) break;
    st.Evict(*victim);
    ++st.counters.gpu_evictions;
  }
  if (st.pool.free_pages() < need && kv.evict) kv.evict(need - st.pool.free_pages());
  ASSIGN_OR_RETURN(std::vector<int32_t> pages, st.pool.Allocate(need, memory::PageKind::kAdapter));
  const std::vector<int32_t> taken = pages;
  if (absl::Status s = st.PageIn(*e, std::move(pages)); !s.ok()) {
    if (e->pages.empty()) (void)st.pool.Free(taken);
    return s;
  }
  ++st.counters.prefetch_misses;
  e->holds = 1;
  return AdapterHold(state_, e->id);
}

bool AdapterStore::Prefetch(const LoraAdapter& adapter, int64_t reserve_pages) {
  AdapterHold::State& st = *state_;
  std::lock_guard<std::mutex> lock(st.mu);
  AdapterEntry* e = st.Get(adapter.id);
  if (e == nullptr || !e->pages.empty()) return true;
  // Only from host memory and into free pages: a prefetch never reads the disk on this thread
  // nor evicts; the loader rereads a dropped copy meanwhile.
  if (e->host.data() == nullptr) {
    if (st.loader_running && e->load_error.ok()) st.StartLoad(*e);
    return false;
  }
  if (st.pool.free_pages() - e->layout.num_pages < reserve_pages) return false;
  auto pages = st.pool.Allocate(e->layout.num_pages, memory::PageKind::kAdapter);
  if (!pages.ok()) return false;
  const std::vector<int32_t> taken = *pages;
  if (!st.PageIn(*e, std::move(*pages)).ok()) {
    if (e->pages.empty()) (void)st.pool.Free(taken);
    return false;
  }
  e->prefetched = true;
  return true;
}

bool AdapterStore::EvictOneIdle() {
  AdapterHold::State& st = *state_;
  std::lock_guard<std::mutex> lock(st.mu);
  AdapterEntry* victim = st.LeastRecentIdle();
  if (victim == nullptr) return false;
  st.Evict(*victim);
  ++st.counters.gpu_evictions;
  return true;
}

absl::Status AdapterStore::FenceForUse(const LoraAdapter& adapter) {
  AdapterHold::State& st = *state_;
  std::lock_guard<std::mutex> lock(st.mu);
  AdapterEntry* e = st.Get(adapter.id);
  if (e == nullptr || !e->fence_pending) return absl::OkStatus();
  RETURN_IF_ERROR(e->ready->Wait(st.backend.default_stream()));
  e->fence_pending = false;
  return absl::OkStatus();
}

}  // namespace arbor::engine
