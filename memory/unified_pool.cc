#include "memory/unified_pool.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace arbor::memory {
namespace {

constexpr size_t kSizeMax = std::numeric_limits<size_t>::max();

// a * b, or 0 when either is 0 or the product overflows.
size_t CheckedMul(size_t a, size_t b) {
  if (a == 0 || b == 0 || a > kSizeMax / b) return 0;
  return a * b;
}

int Index(PageKind kind) { return static_cast<int>(kind); }

}  // namespace

const char* PageKindName(PageKind kind) {
  switch (kind) {
    case PageKind::kFree:
      return "free";
    case PageKind::kKv:
      return "kv";
    case PageKind::kAdapter:
      return "adapter";
  }
  return "?";
}

size_t KvBlockBytes(int64_t block_size, int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
                    size_t dtype_bytes) {
  if (block_size <= 0 || num_layers <= 0 || num_kv_heads <= 0 || head_dim <= 0) return 0;
  size_t bytes = CheckedMul(size_t(block_size), size_t(num_layers));
  bytes = CheckedMul(bytes, 2);  // K and V
  bytes = CheckedMul(bytes, size_t(num_kv_heads));
  bytes = CheckedMul(bytes, size_t(head_dim));
  return CheckedMul(bytes, dtype_bytes);
}

int64_t AdapterPagesFor(int64_t rank, int64_t total_rank_row_elems, size_t page_bytes,
                        size_t dtype_bytes) {
  if (rank <= 0 || total_rank_row_elems <= 0 || page_bytes == 0) return 0;
  const size_t bytes =
      CheckedMul(CheckedMul(size_t(rank), size_t(total_rank_row_elems)), dtype_bytes);
  if (bytes == 0) return 0;
  const size_t pages = bytes / page_bytes + (bytes % page_bytes != 0 ? 1 : 0);
  if (pages > size_t(std::numeric_limits<int64_t>::max())) return 0;
  return int64_t(pages);
}

absl::StatusOr<std::unique_ptr<UnifiedPool>> UnifiedPool::Create(kernels::Backend& backend,
                                                                 size_t page_bytes,
                                                                 int64_t num_pages) {
  if (page_bytes == 0) return absl::InvalidArgumentError("UnifiedPool: page_bytes must be > 0");
  if (num_pages <= 0 || num_pages > kMaxPages) {
    return absl::InvalidArgumentError(
        absl::StrCat("UnifiedPool: num_pages must be in [1, ", kMaxPages, "], got ", num_pages));
  }
  const size_t bytes = CheckedMul(page_bytes, size_t(num_pages));
  if (bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat("UnifiedPool: ", num_pages, " pages of ",
                                                   page_bytes, " bytes overflow size_t"));
  }
  auto buffer = backend.Allocate(bytes);
  if (!buffer.ok()) {
    return absl::Status(buffer.status().code(),
                        absl::StrCat("UnifiedPool: cannot allocate ", num_pages, " pages of ",
                                     page_bytes, " bytes: ", buffer.status().message()));
  }
  return std::unique_ptr<UnifiedPool>(new UnifiedPool(std::move(*buffer), page_bytes, num_pages));
}

absl::StatusOr<int64_t> UnifiedPool::PagesFor(kernels::Backend& backend, size_t page_bytes,
                                              size_t bytes, double fraction) {
  if (page_bytes == 0) return absl::InvalidArgumentError("PagesFor: page_bytes must be > 0");
  size_t budget = bytes;
  if (bytes == 0) {
    if (!(fraction > 0.0 && fraction <= 1.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("PagesFor: fraction must be in (0, 1], got ", fraction));
    }
    ASSIGN_OR_RETURN(const kernels::DeviceInfo info, backend.Info());
    // long double keeps a 64-bit byte count exact enough; floor so we never overshoot.
    budget = size_t(std::floor(static_cast<long double>(info.free_memory) * fraction));
  }
  const size_t pages = budget / page_bytes;
  if (pages == 0) {
    return absl::InvalidArgumentError(absl::StrCat("PagesFor: ", budget, " bytes hold no page of ",
                                                   page_bytes, " bytes",
                                                   bytes == 0 ? " (fraction of free memory)" : ""));
  }
  return int64_t(std::min<size_t>(pages, size_t(kMaxPages)));
}

UnifiedPool::UnifiedPool(kernels::DeviceBuffer buffer, size_t page_bytes, int64_t num_pages)
    : buffer_(std::move(buffer)), page_bytes_(page_bytes), num_pages_(num_pages) {
  std::lock_guard<std::mutex> lock(mu_);
  kind_.assign(size_t(num_pages), PageKind::kFree);
  free_list_.resize(size_t(num_pages));
  // A stack popped from the back: page 0 is handed out first.
  for (int64_t i = 0; i < num_pages; ++i) free_list_[size_t(i)] = int32_t(num_pages - 1 - i);
  count_[Index(PageKind::kFree)] = num_pages;
}

absl::StatusOr<std::vector<int32_t>> UnifiedPool::Allocate(int64_t n, PageKind kind) {
  if (kind == PageKind::kFree) {
    return absl::InvalidArgumentError("UnifiedPool::Allocate: kind must be kv or adapter");
  }
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("UnifiedPool::Allocate: page count must be >= 0, got ", n));
  }
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t free = int64_t(free_list_.size());
  if (n > free) {
    return absl::ResourceExhaustedError(absl::StrCat("UnifiedPool: asked for ", n, " ",
                                                     PageKindName(kind), " pages, ", free, " of ",
                                                     num_pages_, " free"));
  }
  std::vector<int32_t> pages(free_list_.end() - n, free_list_.end());
  std::reverse(pages.begin(), pages.end());
  free_list_.resize(size_t(free - n));
  for (int32_t p : pages) kind_[size_t(p)] = kind;
  count_[Index(PageKind::kFree)] -= n;
  count_[Index(kind)] += n;
  return pages;
}

absl::Status UnifiedPool::Free(absl::Span<const int32_t> pages) {
  std::lock_guard<std::mutex> lock(mu_);
  // Validate everything first so a bad list changes nothing; a page listed twice is found by
  // sorting a copy of the list.
  std::vector<int32_t> seen;
  seen.reserve(pages.size());
  for (int32_t p : pages) {
    if (p < 0 || p >= num_pages_) {
      return absl::InvalidArgumentError(
          absl::StrCat("UnifiedPool::Free: page id ", p, " out of range [0, ", num_pages_, ")"));
    }
    if (kind_[size_t(p)] == PageKind::kFree) {
      return absl::FailedPreconditionError(
          absl::StrCat("UnifiedPool::Free: page ", p, " is already free (double free)"));
    }
    seen.push_back(p);
  }
  std::sort(seen.begin(), seen.end());
  const auto dup = std::adjacent_find(seen.begin(), seen.end());
  if (dup != seen.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("UnifiedPool::Free: page ", *dup, " listed twice (double free)"));
  }
  for (int32_t p : pages) {
    --count_[Index(kind_[size_t(p)])];
    kind_[size_t(p)] = PageKind::kFree;
    free_list_.push_back(p);
  }
  count_[Index(PageKind::kFree)] += int64_t(pages.size());
  return absl::OkStatus();
}

int64_t UnifiedPool::free_pages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_[Index(PageKind::kFree)];
}

int64_t UnifiedPool::pages_of(PageKind kind) const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_[Index(kind)];
}

PageKind UnifiedPool::kind(int32_t id) const {
  if (id < 0 || id >= num_pages_) return PageKind::kFree;
  std::lock_guard<std::mutex> lock(mu_);
  return kind_[size_t(id)];
}

void* UnifiedPool::page_ptr(int32_t id) const {
  if (id < 0 || id >= num_pages_) return nullptr;
  return static_cast<char*>(buffer_.data()) + size_t(id) * page_bytes_;
}

}  // namespace arbor::memory
