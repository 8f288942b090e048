#include "memory/block_manager.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "memory/unified_pool.h"

namespace arbor::memory {
namespace {

// A pool and a manager over it; the page contents are not used here (see the stress test).
struct Fixture {
  Fixture(int64_t num_pages, int64_t block_size, bool caching = true) {
    auto p = UnifiedPool::Create(backend, 64, num_pages);
    REQUIRE(p.ok());
    pool = std::move(*p);
    bm = std::make_unique<BlockManager>(*pool, block_size, caching);
  }
  // Every test ends here: with all sequences freed and the cache dropped, the pool is all free.
  void EndAllFree(const std::vector<SeqId>& seqs) {
    for (SeqId s : seqs) bm->Free(s);
    REQUIRE(bm->CheckInvariants().ok());
    bm->EvictAllCached();
    REQUIRE(bm->CheckInvariants().ok());
    CHECK(bm->stats().kv_pages_in_use == 0);
    CHECK(bm->stats().cached_evictable_pages == 0);
    CHECK(pool->free_pages() == pool->num_pages());
    CHECK(pool->pages_of(PageKind::kKv) == 0);
  }
  void Check() const {
    const absl::Status s = bm->CheckInvariants();
    INFO(s.ToString());
    REQUIRE(s.ok());
  }

  kernels::CpuBackend backend;
  std::unique_ptr<UnifiedPool> pool;
  std::unique_ptr<BlockManager> bm;
};

std::vector<int32_t> Tokens(int32_t first, int64_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST_CASE("BlocksFor rounds up to whole blocks", "[memory][block_manager]") {
  Fixture f(4, 16);
  CHECK(f.bm->block_size() == 16);
  CHECK(f.bm->BlocksFor(0) == 0);
  CHECK(f.bm->BlocksFor(1) == 1);
  CHECK(f.bm->BlocksFor(16) == 1);
  CHECK(f.bm->BlocksFor(17) == 2);
  CHECK(f.bm->BlocksFor(1000) == 63);
  f.EndAllFree({});
}

TEST_CASE("a shared 1,000-token prefix is computed once", "[memory][block_manager]") {
  Fixture f(200, 16);
  const auto prefix = Tokens(1000, 1000);
  const auto a = Concat(prefix, Tokens(50'000, 20));  // 1,020 tokens: 64 blocks, 63 full
  const auto b = Concat(prefix, Tokens(60'000, 30));  // 1,030 tokens: 65 blocks

  auto ca = f.bm->AllocatePrompt(1, a, 0);
  REQUIRE(ca.ok());
  CHECK(*ca == 0);
  CHECK(f.bm->BlockTable(1).size() == 64);
  CHECK(f.bm->CachedPrefixTokens(b, 0) == 0);  // nothing is cached before it is computed
  f.bm->MarkComputed(1, a, 1020);
  f.Check();
  CHECK(f.bm->CachedPrefixTokens(b, 0) == 992);

  auto cb = f.bm->AllocatePrompt(2, b, 0);
  REQUIRE(cb.ok());
  // 62 full blocks (992 tokens) are pure prefix; block 62 (tokens 992..1007) mixes in a's suffix.
  CHECK(*cb == 992);
  const auto& ta = f.bm->BlockTable(1);
  const auto& tb = f.bm->BlockTable(2);
  REQUIRE(tb.size() == 65);
  for (size_t i = 0; i < 62; ++i) CHECK(tb[i] == ta[i]);
  const std::set<int32_t> a_pages(ta.begin(), ta.end());
  for (size_t i = 62; i < tb.size(); ++i) CHECK(a_pages.count(tb[i]) == 0);
  const auto st = f.bm->stats();
  CHECK(st.kv_pages_in_use == 64 + 3);
  CHECK(st.prefix_queries_tokens == 1020 + 1030);
  CHECK(st.prefix_hit_tokens == 992);
  CHECK(f.pool->pages_of(PageKind::kKv) == 67);
  f.Check();

  // Once both finish, a's 63 computed full blocks stay cached (b never marked its own).
  f.bm->Free(1);
  f.bm->Free(2);
  f.Check();
  CHECK(f.bm->stats().kv_pages_in_use == 0);
  CHECK(f.bm->stats().cached_evictable_pages == 63);
  CHECK(f.bm->AvailablePages() == 200);
  CHECK(f.pool->free_pages() == 200 - 63);

  // The same prompt again: everything but the last token's block comes from the cache; the
  // cap keeps at least one token to recompute even when the whole prompt is cached.
  const auto exact = Tokens(1000, 1024);
  auto c1 = f.bm->AllocatePrompt(3, exact, 0);
  REQUIRE(c1.ok());
  CHECK(*c1 == 992);  // only the 1,000-token prefix's full blocks were cached
  f.bm->MarkComputed(3, exact, 1024);
  f.bm->Free(3);
  auto c2 = f.bm->AllocatePrompt(4, exact, 0);
  REQUIRE(c2.ok());
  CHECK(*c2 == 1008);  // 64 full blocks cached, capped at ((1024 - 1) / 16) * 16
  f.Check();
  f.EndAllFree({4});
}

TEST_CASE("sequences under different cache salts never share blocks", "[memory][block_manager]") {
  Fixture f(40, 4);
  const auto prompt = Tokens(7, 33);
  auto c1 = f.bm->AllocatePrompt(1, prompt, /*cache_salt=*/11);
  REQUIRE(c1.ok());
  f.bm->MarkComputed(1, prompt, 33);
  CHECK(f.bm->CachedPrefixTokens(prompt, 11) == 32);
  CHECK(f.bm->CachedPrefixTokens(prompt, 12) == 0);
  CHECK(f.bm->CachedPrefixTokens(prompt, 0) == 0);

  auto c2 = f.bm->AllocatePrompt(2, prompt, /*cache_salt=*/12);
  REQUIRE(c2.ok());
  CHECK(*c2 == 0);
  const auto& t1 = f.bm->BlockTable(1);
  const std::set<int32_t> p1(t1.begin(), t1.end());
  for (int32_t p : f.bm->BlockTable(2)) CHECK(p1.count(p) == 0);
  f.bm->MarkComputed(2, prompt, 33);
  f.Check();

  // Each salt hits only its own blocks.
  auto c3 = f.bm->AllocatePrompt(3, prompt, 12);
  REQUIRE(c3.ok());
  CHECK(*c3 == 32);
  for (size_t i = 0; i < 8; ++i) CHECK(f.bm->BlockTable(3)[i] == f.bm->BlockTable(2)[i]);
  f.EndAllFree({1, 2, 3});
}

TEST_CASE("a prompt allocated without reading the cache is computed in full, then cached",
          "[memory][block_manager]") {
  // Prompt log-probs need every position's logits: no block may come from the cache.
  Fixture f(40, 4);
  const auto prompt = Tokens(7, 33);  // 9 blocks, 8 full
  REQUIRE(f.bm->AllocatePrompt(1, prompt, 0).ok());
  f.bm->MarkComputed(1, prompt, 33);
  f.bm->Free(1);
  CHECK(f.bm->stats().cached_evictable_pages == 8);
  const auto queried = f.bm->stats().prefix_queries_tokens;

  auto c2 = f.bm->AllocatePrompt(2, prompt, 0, /*read_cache=*/false);
  REQUIRE(c2.ok());
  CHECK(*c2 == 0);
  CHECK(f.bm->stats().prefix_queries_tokens == queried);  // no lookup, no stats
  CHECK(f.bm->stats().cached_evictable_pages == 8);       // the cached blocks stay unreferenced
  CHECK(f.bm->BlockTable(2).size() == 9);
  // Its blocks duplicate cached keys: they stay private and go back to the pool when freed.
  f.bm->MarkComputed(2, prompt, 33);
  f.Check();
  f.bm->Free(2);
  CHECK(f.bm->stats().cached_evictable_pages == 8);

  // A prompt nobody cached yet is registered as it is computed, for later readers.
  const auto other = Tokens(100, 9);
  REQUIRE(f.bm->AllocatePrompt(3, other, 0, /*read_cache=*/false).ok());
  f.bm->MarkComputed(3, other, 9);
  CHECK(f.bm->CachedPrefixTokens(other, 0) == 8);
  f.Check();
  f.EndAllFree({3});
}

TEST_CASE("a block's key names its whole prefix, not just its own tokens",
          "[memory][block_manager]") {
  // KV depends on every earlier token: block y computed after x is not block y after z.
  Fixture f(16, 4);
  const auto x = Tokens(10, 4), y = Tokens(20, 4), z = Tokens(30, 4), w = Tokens(40, 4);
  const auto xy = Concat(Concat(x, y), {1});
  const auto zw = Concat(Concat(z, w), {1});
  REQUIRE(f.bm->AllocatePrompt(1, xy, 0).ok());
  f.bm->MarkComputed(1, xy, 9);
  REQUIRE(f.bm->AllocatePrompt(2, zw, 0).ok());
  f.bm->MarkComputed(2, zw, 9);
  // z is cached (from zw) and y is cached (after x), but y after z is not.
  auto zy = f.bm->AllocatePrompt(3, Concat(Concat(z, y), {1}), 0);
  REQUIRE(zy.ok());
  CHECK(*zy == 4);
  CHECK(f.bm->BlockTable(3)[0] == f.bm->BlockTable(2)[0]);
  CHECK(f.bm->BlockTable(3)[1] != f.bm->BlockTable(1)[1]);
  // Nor is y alone at the start.
  CHECK(f.bm->CachedPrefixTokens(Concat(y, {1}), 0) == 0);
  f.Check();
  f.EndAllFree({1, 2, 3});
}

TEST_CASE("with prefix caching off nothing is shared or kept", "[memory][block_manager]") {
  Fixture f(20, 4, /*caching=*/false);
  CHECK_FALSE(f.bm->prefix_caching());
  const auto prompt = Tokens(0, 17);
  REQUIRE(f.bm->AllocatePrompt(1, prompt, 0).ok());
  f.bm->MarkComputed(1, prompt, 17);
  auto c2 = f.bm->AllocatePrompt(2, prompt, 0);
  REQUIRE(c2.ok());
  CHECK(*c2 == 0);
  f.bm->Free(1);
  CHECK(f.bm->stats().cached_evictable_pages == 0);
  CHECK(f.bm->stats().prefix_queries_tokens == 0);
  CHECK(f.pool->free_pages() == 15);
  f.EndAllFree({2});
}

TEST_CASE("fork shares blocks; append copies a shared partial last block",
          "[memory][block_manager]") {
  Fixture f(16, 4);
  const auto prompt = Tokens(0, 6);  // blocks: [0..3] full, [4..5] partial
  REQUIRE(f.bm->AllocatePrompt(1, prompt, 0).ok());
  f.bm->MarkComputed(1, prompt, 6);
  REQUIRE(f.bm->Fork(1, 2).ok());
  CHECK(f.bm->BlockTable(2) == f.bm->BlockTable(1));
  CHECK(f.bm->NumTokens(2) == 6);
  CHECK(f.bm->stats().kv_pages_in_use == 2);
  f.Check();

  const int32_t shared_last = f.bm->BlockTable(1)[1];
  std::vector<CopyOp> copies;
  REQUIRE(f.bm->Append(2, 7, &copies).ok());
  REQUIRE(copies.size() == 1);
  CHECK(copies[0].src_page == shared_last);
  CHECK(copies[0].dst_page == f.bm->BlockTable(2)[1]);
  CHECK(copies[0].dst_page != shared_last);
  CHECK(f.bm->BlockTable(2)[0] == f.bm->BlockTable(1)[0]);  // the full block stays shared
  CHECK(f.bm->BlockTable(1)[1] == shared_last);
  f.Check();

  // The parent's last block is now its own: no copy.
  copies.clear();
  REQUIRE(f.bm->Append(1, 7, &copies).ok());
  CHECK(copies.empty());
  CHECK(f.bm->BlockTable(1)[1] == shared_last);
  // Growing into a new block never copies.
  REQUIRE(f.bm->Append(1, 9, &copies).ok());
  CHECK(copies.empty());
  CHECK(f.bm->BlockTable(1).size() == 3);
  CHECK(f.bm->Append(1, 9, &copies).ok());  // no growth: no-op
  f.Check();

  // A fork at a block boundary shares only full blocks: appends need no copy.
  const auto eight = Tokens(100, 8);
  REQUIRE(f.bm->AllocatePrompt(3, eight, 0).ok());
  REQUIRE(f.bm->Fork(3, 4).ok());
  REQUIRE(f.bm->Append(4, 9, &copies).ok());
  REQUIRE(f.bm->Append(3, 10, &copies).ok());
  CHECK(copies.empty());
  CHECK(f.bm->BlockTable(3)[2] != f.bm->BlockTable(4)[2]);
  f.Check();

  // Errors.
  CHECK(f.bm->Append(1, 10, nullptr).code() == absl::StatusCode::kInvalidArgument);
  // A count already held is a no-op (a later chunk of a prompt allocated in full).
  const auto held = f.bm->BlockTable(1);
  CHECK(f.bm->Append(1, 3, &copies).ok());
  CHECK(f.bm->BlockTable(1) == held);
  CHECK(f.bm->NumTokens(1) == 9);
  CHECK(copies.empty());
  CHECK(f.bm->Append(99, 3, &copies).code() == absl::StatusCode::kNotFound);
  CHECK(f.bm->Fork(99, 100).code() == absl::StatusCode::kNotFound);
  CHECK(f.bm->Fork(1, 2).code() == absl::StatusCode::kAlreadyExists);
  CHECK(f.bm->Fork(1, 1).code() == absl::StatusCode::kAlreadyExists);
  CHECK_FALSE(f.bm->Has(100));
  f.Check();
  f.EndAllFree({1, 2, 3, 4});
}

TEST_CASE("MarkComputed caches full blocks only, as they complete", "[memory][block_manager]") {
  Fixture f(32, 4);
  auto tokens = Tokens(500, 10);
  auto c = f.bm->AllocatePrompt(1, tokens, 0);
  REQUIRE(c.ok());
  CHECK(*c == 0);
  CHECK(f.bm->CachedPrefixTokens(tokens, 0) == 0);
  f.bm->MarkComputed(1, tokens, 5);  // block 0 complete
  CHECK(f.bm->CachedPrefixTokens(tokens, 0) == 4);
  f.bm->MarkComputed(1, tokens, 10);  // block 1 complete; block 2 partial
  CHECK(f.bm->CachedPrefixTokens(tokens, 0) == 8);
  f.bm->MarkComputed(1, tokens, 10);  // idempotent
  f.Check();

  // Decode two tokens: block 2 becomes full and is cached too (generated tokens included).
  std::vector<CopyOp> copies;
  tokens.push_back(7);
  tokens.push_back(8);
  REQUIRE(f.bm->Append(1, 12, &copies).ok());
  f.bm->MarkComputed(1, tokens, 12);
  auto longer = tokens;
  longer.push_back(9);
  CHECK(f.bm->CachedPrefixTokens(longer, 0) == 12);
  // A computed count past the tokens given, or past the sequence, is clamped.
  f.bm->MarkComputed(1, absl::MakeConstSpan(tokens).subspan(0, 11), 12);
  f.bm->MarkComputed(1, longer, 13);
  f.bm->MarkComputed(77, tokens, 12);  // unknown: no-op
  f.Check();

  // Two sequences computing the same prompt at once: the first registered keeps the cache
  // entry; the second keeps its own pages, which go back to the pool when it ends.
  const auto p = Tokens(900, 8);
  REQUIRE(f.bm->AllocatePrompt(2, p, 0).ok());
  REQUIRE(f.bm->AllocatePrompt(3, p, 0).ok());
  f.bm->MarkComputed(2, p, 8);
  f.bm->MarkComputed(3, p, 8);
  f.Check();
  const int64_t cached_before = f.bm->stats().cached_evictable_pages;
  const int64_t free_before = f.pool->free_pages();
  f.bm->Free(3);
  CHECK(f.bm->stats().cached_evictable_pages == cached_before);
  CHECK(f.pool->free_pages() == free_before + 2);
  f.bm->Free(2);
  CHECK(f.bm->stats().cached_evictable_pages == cached_before + 2);
  auto again = f.bm->AllocatePrompt(4, Concat(p, {1}), 0);
  REQUIRE(again.ok());
  CHECK(*again == 8);
  f.Check();
  f.EndAllFree({1, 4});
}

TEST_CASE("eviction takes the least recently released blocks, tail first",
          "[memory][block_manager]") {
  Fixture f(8, 4);
  // Three prompts of 9 tokens: 2 full blocks (cached once computed) and 1 partial.
  const auto a = Tokens(100, 9), b = Tokens(200, 9), c = Tokens(300, 9);
  SeqId id = 1;
  for (const auto* t : {&a, &b, &c}) {
    REQUIRE(f.bm->AllocatePrompt(id, *t, 0).ok());
    f.bm->MarkComputed(id, *t, 9);
    f.bm->Free(id);
    ++id;
  }
  CHECK(f.bm->stats().cached_evictable_pages == 6);
  CHECK(f.pool->free_pages() == 2);
  CHECK(f.bm->AvailablePages() == 8);

  // 3 pages needed, 2 free: a's tail block goes first, a's first block survives.
  REQUIRE(f.bm->AllocatePrompt(10, Tokens(1000, 12), 0).ok());
  CHECK(f.bm->stats().evictions == 1);
  CHECK(f.bm->CachedPrefixTokens(a, 0) == 4);
  CHECK(f.bm->CachedPrefixTokens(b, 0) == 8);
  CHECK(f.bm->CachedPrefixTokens(c, 0) == 8);
  f.Check();

  // Reusing b takes its blocks off the LRU; the one page it needs now comes from a.
  auto hit = f.bm->AllocatePrompt(11, b, 0);
  REQUIRE(hit.ok());
  CHECK(*hit == 8);
  CHECK(f.bm->stats().evictions == 2);
  CHECK(f.bm->CachedPrefixTokens(a, 0) == 0);
  CHECK(f.bm->CachedPrefixTokens(c, 0) == 8);
  // b was released before c but is in use again, so c is next: its tail first.
  REQUIRE(f.bm->AllocatePrompt(12, Tokens(2000, 1), 0).ok());
  CHECK(f.bm->stats().evictions == 3);
  CHECK(f.bm->CachedPrefixTokens(c, 0) == 4);
  CHECK(f.bm->CachedPrefixTokens(b, 0) == 8);
  f.Check();
  f.EndAllFree({10, 11, 12});
  CHECK(f.bm->stats().evictions == 4 + 2);  // EvictAllCached: c's first block, b's two
}

TEST_CASE("EvictCached gives back up to n cached blocks, least recently released first",
          "[memory][block_manager]") {
  Fixture f(16, 4);
  const auto a = Tokens(0, 13), b = Tokens(100, 13);  // 3 full blocks each (+ 1 partial)
  for (SeqId id : {1, 2}) {
    const auto& t = id == 1 ? a : b;
    REQUIRE(f.bm->AllocatePrompt(id, t, 0).ok());
    f.bm->MarkComputed(id, t, 13);
  }
  f.bm->Free(1);
  f.bm->Free(2);
  REQUIRE(f.bm->stats().cached_evictable_pages == 6);
  CHECK(f.bm->EvictCached(0) == 0);
  const int64_t free_before = f.pool->free_pages();
  CHECK(f.bm->EvictCached(2) == 2);  // a's deepest blocks (released first, tail first)
  CHECK(f.pool->free_pages() == free_before + 2);
  CHECK(f.bm->CachedPrefixTokens(a, 0) == 4);
  CHECK(f.bm->CachedPrefixTokens(b, 0) == 12);
  CHECK(f.bm->EvictCached(100) == 4);  // all that is left
  CHECK(f.bm->stats().cached_evictable_pages == 0);
  CHECK(f.bm->stats().evictions == 6);
  f.Check();
  f.EndAllFree({});
}

TEST_CASE("FreeOutOfWindow releases blocks wholly before the window", "[memory][block_manager]") {
  Fixture f(16, 4);
  const auto t = Tokens(0, 20);  // 5 full blocks
  REQUIRE(f.bm->AllocatePrompt(1, t, 0).ok());
  f.bm->MarkComputed(1, t, 20);
  const std::vector<int32_t> before = f.bm->BlockTable(1);

  f.bm->FreeOutOfWindow(1, 20, 20);  // window covers everything
  f.bm->FreeOutOfWindow(1, 20, 0);   // no window: no-op
  CHECK(f.bm->BlockTable(1) == before);

  f.bm->FreeOutOfWindow(1, 20, 8);  // start 12: blocks 0..2 end at or before 12
  std::vector<int32_t> expect = before;
  expect[0] = expect[1] = expect[2] = -1;
  CHECK(f.bm->BlockTable(1) == expect);
  CHECK(f.bm->stats().kv_pages_in_use == 2);
  CHECK(f.bm->stats().cached_evictable_pages == 3);  // computed full blocks stay cached
  f.bm->FreeOutOfWindow(1, 20, 8);                   // idempotent
  f.Check();

  // num_tokens past the sequence is clamped: window 1 keeps the block of the last token.
  f.bm->FreeOutOfWindow(1, 1000, 1);
  expect[3] = -1;
  CHECK(f.bm->BlockTable(1) == expect);
  CHECK(f.bm->NumTokens(1) == 20);

  // A windowed sequence still grows, forks (sharing only live blocks) and frees.
  std::vector<CopyOp> copies;
  REQUIRE(f.bm->Append(1, 22, &copies).ok());
  CHECK(f.bm->BlockTable(1).size() == 6);
  REQUIRE(f.bm->Fork(1, 2).ok());
  CHECK(f.bm->BlockTable(2) == f.bm->BlockTable(1));
  REQUIRE(f.bm->Append(2, 23, &copies).ok());
  CHECK(copies.size() == 1);  // the shared partial block 5
  f.Check();

  // Without caching, windowed blocks go straight back to the pool.
  Fixture g(8, 4, /*caching=*/false);
  REQUIRE(g.bm->AllocatePrompt(1, t, 0).ok());
  g.bm->FreeOutOfWindow(1, 20, 5);  // start 15: blocks 0..2
  CHECK(g.pool->free_pages() == 8 - 5 + 3);
  g.Check();
  g.EndAllFree({1});
  f.EndAllFree({1, 2});
}

TEST_CASE("ResourceExhausted leaves no trace", "[memory][block_manager]") {
  Fixture f(6, 4);
  const auto a = Tokens(10, 9);  // 3 blocks
  REQUIRE(f.bm->AllocatePrompt(1, a, 0).ok());
  f.bm->MarkComputed(1, a, 9);
  const auto b = Tokens(40, 5);  // 2 blocks
  REQUIRE(f.bm->AllocatePrompt(2, b, 0).ok());
  f.bm->MarkComputed(2, b, 5);
  f.bm->Free(2);  // b's full block cached and evictable; its partial block free
  // 3 pages in use by seq 1, 1 cached, 2 free.

  struct Snapshot {
    std::vector<int32_t> table;
    int64_t tokens, free, available, in_use, cached, queries, hits, evictions;
    bool operator==(const Snapshot& o) const {
      return table == o.table && tokens == o.tokens && free == o.free && available == o.available &&
             in_use == o.in_use && cached == o.cached && queries == o.queries && hits == o.hits &&
             evictions == o.evictions;
    }
  };
  auto snap = [&] {
    const auto s = f.bm->stats();
    return Snapshot{f.bm->BlockTable(1),     f.bm->NumTokens(1),  f.pool->free_pages(),
                    f.bm->AvailablePages(),  s.kv_pages_in_use,   s.cached_evictable_pages,
                    s.prefix_queries_tokens, s.prefix_hit_tokens, s.evictions};
  };
  const Snapshot before = snap();
  CHECK(before.available == 3);

  // A prompt needing 4 pages.
  auto big = f.bm->AllocatePrompt(3, Tokens(1000, 13), 0);
  REQUIRE_FALSE(big.ok());
  CHECK(big.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(big.status().message()), Catch::Contains("need 4 KV pages, 3 available"));
  CHECK_FALSE(f.bm->Has(3));
  CHECK(snap() == before);

  // A prompt that hits a's cached blocks... a is still running, so its 2 full blocks are
  // shared, but the other 4 pages it needs are not there.
  auto hitting = f.bm->AllocatePrompt(4, Concat(Tokens(10, 8), Tokens(0, 13)), 0);
  REQUIRE_FALSE(hitting.ok());
  CHECK(hitting.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(snap() == before);
  // One that would hit b's evictable block cannot count that block as room for its others.
  auto b_hit = f.bm->AllocatePrompt(5, Concat(b, Tokens(70, 9)), 0);  // 14 tokens: 1 hit + 3 new
  REQUIRE_FALSE(b_hit.ok());
  CHECK_THAT(std::string(b_hit.status().message()),
             Catch::Contains("need 3 KV pages, 2 available"));
  CHECK(snap() == before);
  CHECK(f.bm->CachedPrefixTokens(Concat(b, {1}), 0) == 4);

  // Growth past the pool, and a copy-on-write that cannot get its page.
  std::vector<CopyOp> copies;
  auto grow = f.bm->Append(1, 25, &copies);
  CHECK(grow.code() == absl::StatusCode::kResourceExhausted);
  CHECK(copies.empty());
  CHECK(snap() == before);
  REQUIRE(f.bm->Fork(1, 6).ok());
  REQUIRE(f.bm->AllocatePrompt(7, Tokens(500, 12), 0).ok());  // takes the last 3 pages
  CHECK(f.bm->AvailablePages() == 0);
  const auto table6 = f.bm->BlockTable(6);
  auto cow = f.bm->Append(6, 10, &copies);
  CHECK(cow.code() == absl::StatusCode::kResourceExhausted);
  CHECK(copies.empty());
  CHECK(f.bm->BlockTable(6) == table6);
  CHECK(f.bm->NumTokens(6) == 9);
  f.Check();

  // AllocatePrompt's other refusals.
  CHECK(f.bm->AllocatePrompt(1, a, 0).status().code() == absl::StatusCode::kAlreadyExists);
  CHECK(f.bm->AllocatePrompt(8, {}, 0).status().code() == absl::StatusCode::kInvalidArgument);
  f.Check();
  f.EndAllFree({1, 6, 7});
}

TEST_CASE("the destructor returns every page it holds", "[memory][block_manager]") {
  kernels::CpuBackend backend;
  auto pool = UnifiedPool::Create(backend, 64, 12);
  REQUIRE(pool.ok());
  auto adapter = (*pool)->Allocate(2, PageKind::kAdapter);
  REQUIRE(adapter.ok());
  {
    BlockManager bm(**pool, 4, true);
    const auto t = Tokens(3, 14);
    REQUIRE(bm.AllocatePrompt(1, t, 0).ok());
    bm.MarkComputed(1, t, 14);
    REQUIRE(bm.Fork(1, 2).ok());
    REQUIRE(bm.AllocatePrompt(3, Tokens(3, 9), 0).ok());
    bm.Free(3);
    CHECK((*pool)->pages_of(PageKind::kKv) > 0);
    REQUIRE(bm.CheckInvariants().ok());
  }
  CHECK((*pool)->pages_of(PageKind::kKv) == 0);
  CHECK((*pool)->pages_of(PageKind::kAdapter) == 2);  // not its pages
  REQUIRE((*pool)->Free(*adapter).ok());
  CHECK((*pool)->free_pages() == 12);
}

}  // namespace
}  // namespace arbor::memory
