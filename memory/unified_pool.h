// UnifiedPool: S-LoRA's Unified Paging for Arbor. ONE device allocation, made once through
// kernels::Backend::Allocate (one cudaMalloc on a GPU, one aligned buffer on the CPU), divided
// into fixed-size pages. KV blocks and LoRA adapter weights are both carved from these pages;
// nothing else on the device grows with traffic.
//
// Page size. A page is exactly one KV block: block_size tokens across all layers, K and V
// (KvBlockBytes). S-LoRA's own unit (one hidden-size row, i.e. one token of one layer) does not
// line up with a KV token under GQA, where a token's K width (num_kv_heads * head_dim) is
// smaller than the hidden size; and a per-token unit would make the page table block_size *
// num_layers times longer. With page == block the block table *is* the page table, and every
// KV allocation is exactly one page, so KV pages waste nothing. LoRA adapter weights are stored
// as whole pages of packed rank-rows (AdapterPagesFor): an adapter of rank r needs
// r * sum over its target matrices of (in_features + out_features) elements (A's row k and B's
// column k for every layer and projection, MLP ones included), written densely as one logical
// byte stream over its pages; the only waste is the tail of its last page (measured in
// tests/memory/unified_pool_test.cc: 7.7% for a rank-8 q,k,v,o Llama-3-8B adapter, 0% for
// ranks 16 and 64).
//
// KV page layout (the attention kernels index it this way; see KvPageElementOffset):
//   page p, layer l, kv (0 = K, 1 = V), token t in the block (0 <= t < block_size),
//   kv head h, dim d: element offset
//     ((l * 2 + kv) * block_size + t) * (num_kv_heads * head_dim) + h * head_dim + d
//   from page_ptr(p), in elements of the KV dtype. So, per layer, K is a
//   [block_size, num_kv_heads, head_dim] tile followed by V of the same shape.
//
// Thread-safe: adapters are loaded from admin threads while the engine thread allocates KV.
#ifndef ARBOR_MEMORY_UNIFIED_POOL_H_
#define ARBOR_MEMORY_UNIFIED_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/backend.h"

namespace arbor::memory {

// Who a page belongs to.
enum class PageKind : uint8_t { kFree, kKv, kAdapter };

const char* PageKindName(PageKind kind);

// Bytes of one KV block, which is one page: block_size tokens x num_layers x {K, V} x
// num_kv_heads x head_dim x dtype_bytes. 0 when an argument is not positive or the product
// overflows size_t (UnifiedPool::Create rejects a 0 page size).
size_t KvBlockBytes(int64_t block_size, int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
                    size_t dtype_bytes);

// Element offset inside a KV page of (layer, kv, token_in_block, head, d); kv is 0 for K and 1
// for V. The one definition of the layout documented above.
constexpr int64_t KvPageElementOffset(int64_t layer, int64_t kv, int64_t token_in_block,
                                      int64_t head, int64_t d, int64_t block_size,
                                      int64_t num_kv_heads, int64_t head_dim) {
  return ((layer * 2 + kv) * block_size + token_in_block) * (num_kv_heads * head_dim) +
         head * head_dim + d;
}

// Pages one adapter takes: rank rank-rows of total_rank_row_elems elements each (the sum, over
// every adapted matrix of every layer, of in_features + out_features), packed densely at
// dtype_bytes per element and rounded up to whole pages. 0 when an argument is not positive or
// the size overflows.
int64_t AdapterPagesFor(int64_t rank, int64_t total_rank_row_elems, size_t page_bytes,
                        size_t dtype_bytes);

class UnifiedPool {
 public:
  // Page ids are int32_t (they go to the kernels in int32 page tables).
  static constexpr int64_t kMaxPages = INT32_MAX;

  // Makes the one allocation of num_pages * page_bytes bytes. InvalidArgument for a
  // non-positive size or more than kMaxPages pages; the backend's error (ResourceExhausted)
  // when the device cannot hold it.
  static absl::StatusOr<std::unique_ptr<UnifiedPool>> Create(kernels::Backend& backend,
                                                             size_t page_bytes, int64_t num_pages);

  // Sizing helper: the number of whole pages in `bytes`, or, when bytes == 0, in `fraction`
  // (0 < fraction <= 1) of the backend's free memory (Backend::Info()). Capped at kMaxPages.
  // InvalidArgument when that is not even one page.
  static absl::StatusOr<int64_t> PagesFor(kernels::Backend& backend, size_t page_bytes,
                                          size_t bytes, double fraction);

  UnifiedPool(const UnifiedPool&) = delete;
  UnifiedPool& operator=(const UnifiedPool&) = delete;

  // Takes n free pages for `kind` (kKv or kAdapter), all or nothing: ResourceExhausted, naming
  // how many were asked and how many are free, leaves the pool unchanged. Pages need not be
  // contiguous. n == 0 gives an empty list.
  [[nodiscard]] absl::StatusOr<std::vector<int32_t>> Allocate(int64_t n, PageKind kind);

  // Returns pages to the pool, all or nothing: an id out of range (InvalidArgument), a page
  // already free or listed twice (FailedPrecondition: a double free) leaves the pool unchanged.
  [[nodiscard]] absl::Status Free(absl::Span<const int32_t> pages);

  int64_t num_pages() const { return num_pages_; }
  size_t page_bytes() const { return page_bytes_; }
  int64_t free_pages() const;
  int64_t pages_of(PageKind kind) const;
  // The owner of one page (kFree for an id out of range).
  PageKind kind(int32_t id) const;

  // Device pointers: the start of the allocation and of page `id` (nullptr when out of range).
  // Page p starts at base() + p * page_bytes(); base() is aligned as the backend aligns (256
  // bytes on both backends).
  void* base() const { return buffer_.data(); }
  void* page_ptr(int32_t id) const;

 private:
  UnifiedPool(kernels::DeviceBuffer buffer, size_t page_bytes, int64_t num_pages);

  const kernels::DeviceBuffer buffer_;
  const size_t page_bytes_;
  const int64_t num_pages_;

  // std::mutex rather than absl::Mutex: Debian's Abseil is not built for ThreadSanitizer, which
  // then cannot see absl::Mutex's ordering; std::mutex it sees.
  mutable std::mutex mu_;
  // Guarded by mu_:
  std::vector<PageKind> kind_;      // [num_pages]
  std::vector<int32_t> free_list_;  // a stack; lowest ids on top first
  int64_t count_[3] = {0, 0, 0};    // pages by PageKind
};

}  // namespace arbor::memory

#endif  // ARBOR_MEMORY_UNIFIED_POOL_H_
