// AdapterStore: the registered LoRA adapters in two tiers, as S-LoRA keeps them.
//
// Host tier. Registration opens the PEFT directory (OpenPeftAdapter: the weights memory-mapped
// and checked), packs its matrices straight from the mapping, converted in one pass from the
// file's dtype to the model's, exactly as they will lie in pool pages (PackLora: the stream of
// kernels/lora.h, a directory, then the matrices, which may span pages; page i of the adapter is
// bytes [i * page_bytes, (i + 1) * page_bytes) of the packed copy), into its host copy from
// Backend::AllocateHost (page-locked on CUDA, so host->device copies are asynchronous) and
// records the SHA-256 of the packed bytes; the store's lock is taken only to check the name, to
// reserve host bytes and to insert (and page a pinned adapter in), so registrations on several
// threads read, pack and hash in parallel (on CUDA, cudaHostAlloc itself is slow and serialised
// by the driver). Registration costs host memory only. The host copies share a budget
// (lora.host_bytes): past it, the least recently used copies are dropped, and an adapter whose
// copy was dropped is read from disk again, the same way, when it is next paged in (on a loader
// thread with background_reload); the reread bytes must hash to the registration's SHA-256, else
// the page-in fails with DataLoss naming the file (the adapter changed on disk).
//
// Device tier. An adapter's weights live in unified-pool pages (PageKind::kAdapter) next to the
// KV blocks only while it is resident. The engine thread pages adapters in (Acquire, Prefetch)
// and holds them (AdapterHold) while a running sequence uses them; an adapter nobody holds
// stays resident, evictable least recently used first, until its pages are wanted by another
// adapter or by KV blocks (EvictOneIdle). A pinned adapter (`pin` at registration) is paged in
// at registration and stays resident until unregistered.
//
// Host->device copies run on a copy stream of their own, each batch of them after an event
// recorded on the compute stream (the backend's default stream), so that a page freed while a
// queued forward pass may still use it is not overwritten early; they are fenced before use:
// FenceForUse makes the compute stream wait for an adapter's copies. Pages of an adapter are
// freed only once the compute stream is ordered after its copies.
//
// Lifetime. A request holds its adapter by shared_ptr: unregistering mid-flight lets it finish
// on the same weights, and the host copy and pages are released when the last holder lets go.
// The store's state outlives the store itself while any adapter or hold refers to it; the pool
// and the backend must outlive every adapter.
//
// Thread-safety: Register, Unregister, Find, List and stats from any thread. Acquire, Prefetch,
// EvictOneIdle and FenceForUse from the engine thread only (the one that runs forward passes);
// LoraAdapter's pool, page_bytes and pages are written and read on that thread alone.
#ifndef ARBOR_ENGINE_LORA_ADAPTER_STORE_H_
#define ARBOR_ENGINE_LORA_ADAPTER_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/lora/adapter.h"
#include "kernels/backend.h"
#include "memory/unified_pool.h"

namespace arbor::engine {

// lora.host_bytes by default: 8 GiB of packed host copies.
inline constexpr int64_t kDefaultLoraHostBytes = int64_t(8) << 30;

struct AdapterStoreOptions {
  std::string root;       // adapters must resolve under it; empty: registration refused
  int64_t max_rank = 64;  // engine.max_lora_rank
  kernels::DType dtype = kernels::DType::kF32;  // the model's: adapters are packed in it
  int64_t host_bytes = kDefaultLoraHostBytes;   // lora.host_bytes: budget of the host copies
  // Reread dropped host copies on a loader thread of the store's, so the engine thread never
  // waits for the disk: Acquire then answers ResourceExhausted ("being read from disk") until
  // the copy is back (or the read's error once, then starts again), and Prefetch starts reads
  // for queued requests. Off: Acquire rereads in place.
  bool background_reload = false;
};

struct AdapterInfo {
  std::string name;
  std::string path;  // the resolved directory
  int64_t rank = 0;
  int64_t pages = 0;       // pool pages it takes when resident
  int64_t host_bytes = 0;  // bytes of its packed host copy
  bool pinned = false;
  bool host_resident = false;  // its packed copy is in host memory
  bool gpu_resident = false;   // its weights are in pool pages
};

// Counters since the store was made, and the current tiers.
struct AdapterStoreStats {
  int64_t registered = 0;     // adapters servable by name
  int64_t host_resident = 0;  // live adapters (registered or still in use) with a host copy
  int64_t gpu_resident = 0;   // live adapters in pool pages
  int64_t host_bytes_used = 0;
  int64_t disk_loads = 0;       // host copies read back from disk after an eviction
  int64_t copies = 0;           // host->device page-ins
  int64_t copy_bytes = 0;       // bytes they moved
  int64_t host_evictions = 0;   // host copies dropped for the budget
  int64_t gpu_evictions = 0;    // resident adapters evicted for pages
  int64_t prefetch_hits = 0;    // admissions that found their adapter resident by a prefetch
  int64_t prefetch_misses = 0;  // admissions that had to page their adapter in themselves
};

class AdapterStore;

// Keeps one adapter resident while alive (move-only). Empty: holds nothing.
class AdapterHold {
 public:
  AdapterHold() = default;
  ~AdapterHold() { Reset(); }
  AdapterHold(AdapterHold&& other) noexcept;
  AdapterHold& operator=(AdapterHold&& other) noexcept;
  AdapterHold(const AdapterHold&) = delete;
  AdapterHold& operator=(const AdapterHold&) = delete;
  bool held() const { return state_ != nullptr; }
  void Reset();

 private:
  friend class AdapterStore;
  struct State;
  AdapterHold(std::shared_ptr<State> state, uint64_t id) : state_(std::move(state)), id_(id) {}
  std::shared_ptr<State> state_;
  uint64_t id_ = 0;
};

// Pool pages the engine's KV cache can give back on request (prefix-cache blocks no sequence
// references): how many now, and a call that frees up to n of them and returns how many it
// freed. Empty: none.
struct KvReclaim {
  int64_t evictable = 0;
  std::function<int64_t(int64_t)> evict;
};

class AdapterStore {
 public:
  AdapterStore(memory::UnifiedPool& pool, kernels::Backend& backend, const ModelSpec& spec,
               AdapterStoreOptions options);
  ~AdapterStore();

  // PermissionDenied: path outside the root (or adapters disabled, or a URL); NotFound: no such
  // directory; AlreadyExists: the name is taken; InvalidArgument: a bad name or adapter, or one
  // larger than lora.host_bytes or than the whole pool; ResourceExhausted: `pin` and the pool
  // has not the free pages for it now (pinning never evicts anything).
  absl::StatusOr<AdapterInfo> Register(const std::string& name, const std::string& path,
                                       bool pin = false);
  absl::Status Unregister(const std::string& name);  // NotFound when absent
  std::shared_ptr<const LoraAdapter> Find(const std::string& name) const;
  std::vector<AdapterInfo> List() const;
  AdapterStoreStats stats() const;

  // --- Engine thread only. ---

  // Pool pages `adapter` takes when resident; 0 for an adapter this store did not make.
  int64_t PagesOf(const LoraAdapter& adapter) const;
  // Pages of pinned adapters other than `adapter` (never available to it or to KV).
  int64_t PinnedPagesExcept(const LoraAdapter& adapter) const;
  // Resident in pool pages (true for an adapter this store did not make).
  bool Resident(const LoraAdapter& adapter) const;
  // Pages of resident adapters that nobody holds and are not pinned: what EvictOneIdle frees.
  int64_t IdlePages() const;
  // Makes `adapter` resident and holds it. Paging in takes free pool pages, then evicts idle
  // adapters (least recently used first), then cached KV through `kv`, but only when all of
  // them together can give the pages (else nothing is evicted). ResourceExhausted when the
  // pages cannot be had now (try again later); a reload from disk that fails (file gone,
  // changed, or corrupt) gives that error, naming the file. An adapter this store did not make
  // (its layers set by the caller) is held trivially.
  absl::StatusOr<AdapterHold> Acquire(const LoraAdapter& adapter, const KvReclaim& kv = {});
  // Pages `adapter` in ahead of use, into free pool pages only and keeping `reserve_pages` free,
  // unheld (evictable, most recently used). True when it is resident afterwards. An adapter
  // whose host copy was dropped is not paged in; with background_reload its reread is started.
  // A reload failure is left for Acquire to report.
  bool Prefetch(const LoraAdapter& adapter, int64_t reserve_pages);
  // Evicts the least recently used resident adapter that nobody holds and is not pinned. False
  // when there is none.
  bool EvictOneIdle();
  // The compute stream (the backend's default stream, where forward passes run) waits for
  // `adapter`'s host->device copies; a no-op once it has.
  absl::Status FenceForUse(const LoraAdapter& adapter);

 private:
  std::shared_ptr<AdapterHold::State> state_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_LORA_ADAPTER_STORE_H_
