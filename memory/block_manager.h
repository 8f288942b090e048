// BlockManager: per-sequence KV block tables on top of the UnifiedPool (one block == one page),
// with reference-counted blocks shared by forks (copy-on-write of a shared last partial block),
// automatic prefix caching with LRU eviction, and sliding-window freeing.
//
// Prefix cache. A full block's key is SHA-256(parent key || cache_salt || the block's token ids),
// the first block's parent key being 32 zero bytes; all fields are fixed-width (little-endian
// uint64 salt, int32 tokens), so the encoding is unambiguous. Chaining the parent makes a key
// name the whole prefix, not just one block; the salt (the adapter id) keeps sequences under
// different adapters from ever sharing KV; SHA-256 makes a crafted collision infeasible (vLLM
// CVE-2025-25183 was a predictable hash; robustness.md case 22). Only full blocks whose KV has
// been written (MarkComputed) are cached. A block whose last reference goes keeps its place in
// the cache and becomes evictable; allocation evicts least recently released blocks first, and
// a sequence's blocks are released tail first, so a prefix loses its deepest blocks first.
//
// Ownership. The manager owns every page it takes from the pool (PageKind::kKv) until it
// returns it; its destructor returns them all, so the pool must outlive it. It assumes it is
// the only one allocating kKv pages from its pool (CheckInvariants relies on it).
//
// NOT thread-safe: the engine thread alone calls it. (The pool itself is thread-safe, so
// adapters may be loaded from other threads meanwhile; see TakePages for what that means for
// all-or-nothing.)
#ifndef ARBOR_MEMORY_BLOCK_MANAGER_H_
#define ARBOR_MEMORY_BLOCK_MANAGER_H_

#include <array>
#include <cstdint>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "memory/unified_pool.h"

namespace arbor::memory {

using SeqId = int64_t;

// A whole-page copy the engine performs before the next forward pass (copy-on-write).
struct CopyOp {
  int32_t src_page;
  int32_t dst_page;
};

class BlockManager {
 public:
  struct Stats {
    int64_t kv_pages_in_use = 0;         // pages referenced by at least one sequence
    int64_t cached_evictable_pages = 0;  // cached pages no sequence references (LRU)
    int64_t prefix_queries_tokens = 0;   // prompt tokens looked up (caching enabled only)
    int64_t prefix_hit_tokens = 0;       // of which found computed in the cache
    int64_t evictions = 0;               // cached pages returned to the pool
  };

  // block_size >= 1 tokens per block; each block is one page of `pool`, which must outlive the
  // manager. A block_size < 1 is a programming error and aborts.
  BlockManager(UnifiedPool& pool, int64_t block_size, bool enable_prefix_caching);
  ~BlockManager();  // returns every page it holds to the pool
  BlockManager(const BlockManager&) = delete;
  BlockManager& operator=(const BlockManager&) = delete;

  int64_t block_size() const { return block_size_; }
  bool prefix_caching() const { return prefix_caching_; }

  // Blocks a sequence of `num_tokens` needs in total: ceil(num_tokens / block_size).
  int64_t BlocksFor(int64_t num_tokens) const;

  // Free pages + evictable cached pages: what admission may count on.
  int64_t AvailablePages() const;

  // New sequence `seq` holding `tokens` (at least one). Finds the longest cached prefix of full
  // blocks of `tokens` under `cache_salt` (the adapter id; 0 for the base model), takes
  // references on those blocks and allocates blocks for the rest. Returns the number of leading
  // tokens whose KV is already computed: a multiple of block_size, at most
  // ((n - 1) / block_size) * block_size so that at least one token is recomputed and the model
  // yields logits. All or nothing: ResourceExhausted (not enough free + evictable pages) leaves
  // no trace; AlreadyExists if `seq` is known; InvalidArgument for no tokens.
  // `read_cache` false skips the lookup (and its stats): every block is fresh and 0 is returned,
  // for a prompt whose every position's logits are wanted (prompt log-probs). Its blocks are
  // still registered by MarkComputed as they are written.
  [[nodiscard]] absl::StatusOr<int64_t> AllocatePrompt(SeqId seq, absl::Span<const int32_t> tokens,
                                                       uint64_t cache_salt, bool read_cache = true);

  // Grows `seq` to hold `new_total_tokens`; a count it already holds is a no-op (the chunks of
  // a prompt that AllocatePrompt sized in full). If its last block is partial and shared (after
  // Fork), the write would reach other sequences, so it is replaced by a private copy first:
  // {shared page, new page} is appended to `copies` (must not be null), and the engine copies
  // the page before the next forward. All or nothing: ResourceExhausted leaves no trace.
  // NotFound for an unknown seq.
  [[nodiscard]] absl::Status Append(SeqId seq, int64_t new_total_tokens,
                                    std::vector<CopyOp>* copies);

  // After a forward pass wrote the KV of tokens [0, computed) of `seq`, whose ids are `tokens`
  // (the sequence's ids from its start; at least `computed` of them): registers the newly
  // completed full blocks in the prefix cache. `computed` is clamped to tokens.size() and to the
  // sequence's token count. A block whose key is already cached on another page (two sequences
  // computed the same prefix at once) keeps its own page and is not cached. No-op when caching
  // is off or `seq` is unknown.
  void MarkComputed(SeqId seq, absl::Span<const int32_t> tokens, int64_t computed);

  // `child` (new) shares every block of `parent` (reference counts up); it inherits the token
  // count, cache salt and block keys. Fork a sequence whose tokens are all computed (the engine
  // forks after the prompt's forward pass): Append's copy-on-write protects what is written
  // after the fork, not held-but-unwritten slots. NotFound / AlreadyExists; never allocates.
  [[nodiscard]] absl::Status Fork(SeqId parent, SeqId child);

  // Releases seq's references, tail block first. Cached blocks whose count drops to 0 stay in
  // the prefix cache (evictable, LRU); others return to the pool. No-op for an unknown seq.
  void Free(SeqId seq);

  // Sliding window: releases the blocks of seq lying entirely before position
  // (num_tokens - window), i.e. blocks i with (i + 1) * block_size <= num_tokens - window; their
  // table entries become -1. num_tokens is clamped to the sequence's token count and window must
  // be >= 1 (else no-op), so the block holding the last token is never released.
  void FreeOutOfWindow(SeqId seq, int64_t num_tokens, int64_t window);

  // Page ids of seq's blocks in order, -1 for a block released by the window; an empty table for
  // an unknown seq. The reference stays valid until seq is freed (its contents change with
  // Append and FreeOutOfWindow).
  const std::vector<int32_t>& BlockTable(SeqId seq) const;
  bool Has(SeqId seq) const;
  // Tokens `seq` holds (0 for an unknown seq).
  int64_t NumTokens(SeqId seq) const;

  // Read-only lookup: how many leading tokens of `tokens` AllocatePrompt would find computed
  // right now (same cap). Takes no references and counts in no stats (admission estimates).
  int64_t CachedPrefixTokens(absl::Span<const int32_t> tokens, uint64_t cache_salt) const;

  Stats stats() const;

  // Returns every evictable cached block to the pool (counted as evictions). After every
  // sequence is freed this leaves the pool with no kKv pages.
  void EvictAllCached();
  // Returns up to n evictable cached blocks to the pool, least recently released first (counted
  // as evictions), for other users of the pool (LoRA adapters). Returns how many it freed.
  int64_t EvictCached(int64_t n);

  // Cross-checks every internal structure against the others and against the pool: reference
  // counts equal the references in the block tables, no referenced or cached page is free in the
  // pool, the pool's kKv count equals the pages held here, the cache map and the LRU agree.
  // O(pages + table entries): for tests and debugging.
  absl::Status CheckInvariants() const;

 private:
  using Digest = std::array<uint8_t, 32>;

  struct PageState {
    int32_t refs = 0;
    bool cached = false;  // registered in cache_ under `hash`
    bool in_lru = false;  // refs == 0 and cached: evictable
    bool pinned = false;  // a prefix hit of the AllocatePrompt in progress: not evictable
    Digest hash{};
    std::list<int32_t>::iterator lru_it;
  };

  struct Sequence {
    std::vector<int32_t> blocks;  // page ids, -1 once released by the window
    int64_t num_tokens = 0;
    uint64_t salt = 0;
    std::vector<Digest> keys;  // prefix-cache keys of its first keys.size() full blocks
  };

  // Keys of the cached prefix of `tokens` (stops at the first miss or at the cap), with pages.
  void LookupPrefix(absl::Span<const int32_t> tokens, uint64_t salt, std::vector<Digest>* keys,
                    std::vector<int32_t>* pages) const;
  // Takes n pages from the pool, evicting unpinned LRU blocks first when the pool has too few
  // free; `pinned_in_lru` of the LRU's pages are pinned. ResourceExhausted, with nothing
  // evicted, when free + unpinned evictable < n. Single-threaded
  // that check is exact; if another thread (adapter loading) takes pool pages between the check
  // and the allocation, the allocation fails after evicting, which loses cached KV but leaves
  // every sequence as it was.
  absl::StatusOr<std::vector<int32_t>> TakePages(int64_t n, int64_t pinned_in_lru);
  // Drops one reference; a page reaching 0 goes to the LRU if cached, else to `to_pool`.
  void Release(int32_t page, std::vector<int32_t>* to_pool);
  // Removes an evictable page from the cache and the LRU and appends it to `to_pool`.
  void Evict(int32_t page, std::vector<int32_t>* to_pool);
  void ReturnToPool(const std::vector<int32_t>& pages);
  absl::Status Missing(SeqId seq) const;

  UnifiedPool& pool_;
  const int64_t block_size_;
  const bool prefix_caching_;

  std::vector<PageState> pages_;                // [pool.num_pages()]
  absl::node_hash_map<SeqId, Sequence> seqs_;   // node map: BlockTable references stay valid
  absl::flat_hash_map<Digest, int32_t> cache_;  // key -> page
  std::list<int32_t> lru_;                      // evictable pages, least recently released first
  Stats stats_;
};

}  // namespace arbor::memory

#endif  // ARBOR_MEMORY_BLOCK_MANAGER_H_
