// Randomized stress of BlockManager over a tiny pool, with a simulated engine that really writes
// each token's "KV" into its slot of the CPU pool and performs the copy-on-write copies. Like
// real KV, a slot's value depends on the token, everything before it and the adapter (cache
// salt): a running hash of them. After every operation the test checks the manager's own
// invariants and, independently through the public API, that every sequence still reads back
// exactly its own values: a prefix hit on the wrong page or in the wrong context (another prefix,
// another adapter), a write into a block another sequence shares, or a page handed out twice
// all show up as a wrong value.
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "memory/block_manager.h"
#include "memory/unified_pool.h"

namespace arbor::memory {
namespace {

struct Config {
  int64_t block_size;
  int64_t num_pages;
  bool caching;
  uint32_t seed;
};

// The simulated KV of every position: FNV-1a over the salt and tokens [0, t].
std::vector<int32_t> KvValues(const std::vector<int32_t>& tokens, uint64_t salt) {
  std::vector<int32_t> out(tokens.size());
  uint32_t h = 2166136261u ^ static_cast<uint32_t>(salt * 0x9E3779B97F4A7C15ull >> 32);
  for (size_t t = 0; t < tokens.size(); ++t) {
    h = (h ^ static_cast<uint32_t>(tokens[t])) * 16777619u;
    out[t] = static_cast<int32_t>(h);
  }
  return out;
}

// What the engine knows about a sequence.
struct SimSeq {
  std::vector<int32_t> tokens;
  int64_t computed = 0;  // KV written for tokens [0, computed)
  uint64_t salt = 0;
};

class Sim {
 public:
  explicit Sim(const Config& c) : cfg_(c), rng_(c.seed) {
    // A slot holds one token id: page bytes = block_size * 4.
    auto p = UnifiedPool::Create(backend_, size_t(c.block_size) * sizeof(int32_t), c.num_pages);
    REQUIRE(p.ok());
    pool_ = std::move(*p);
    bm_ = std::make_unique<BlockManager>(*pool_, c.block_size, c.caching);
    // A few shared prompt prefixes, over a small vocabulary so blocks often look alike.
    for (int i = 0; i < 4; ++i) {
      std::vector<int32_t> prefix(size_t(Uniform(0, 3 * c.block_size)));
      for (auto& t : prefix) t = int32_t(Uniform(0, 5));
      prefixes_.push_back(prefix);
    }
  }

  void Run(int steps) {
    for (int step = 0; step < steps; ++step) {
      INFO("seed " << cfg_.seed << " step " << step);
      const int64_t op = Uniform(0, 99);
      if (op < 30) {
        NewPrompt();
      } else if (op < 50) {
        Compute(PickSeq());
      } else if (op < 68) {
        AppendTokens(PickSeq());
      } else if (op < 78) {
        Fork(PickSeq());
      } else if (op < 92) {
        FreeSeq(PickSeq());
      } else if (op < 96) {
        Window(PickSeq());
      } else if (op < 99) {
        AdapterTraffic();
      } else {
        bm_->EvictAllCached();
      }
      CheckAll();
    }
    // Drain: after freeing everything and dropping the cache, the pool is all free.
    while (!seqs_.empty()) FreeSeq(seqs_.begin()->first);
    REQUIRE(pool_->Free(adapter_pages_).ok());
    adapter_pages_.clear();
    CheckAll();
    bm_->EvictAllCached();
    CheckAll();
    CHECK(pool_->free_pages() == pool_->num_pages());
    CHECK(pool_->pages_of(PageKind::kKv) == 0);
    CHECK(bm_->stats().cached_evictable_pages == 0);
    CHECK(bm_->stats().kv_pages_in_use == 0);
    std::printf(
        "stress block_size %lld pages %lld caching %d seed %u: %lld ok, %lld refused, %lld "
        "copies, %lld prefix-hit tokens, %lld evictions\n",
        static_cast<long long>(cfg_.block_size), static_cast<long long>(cfg_.num_pages),
        int(cfg_.caching), cfg_.seed, static_cast<long long>(ok_ops_),
        static_cast<long long>(refused_ops_), static_cast<long long>(copies_),
        static_cast<long long>(hit_tokens_), static_cast<long long>(bm_->stats().evictions));
    CHECK(ok_ops_ > 0);
    CHECK(refused_ops_ > 0);  // the pool is tiny: refusals must have been exercised
    if (cfg_.caching) CHECK(hit_tokens_ > 0);
  }

 private:
  int64_t Uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }

  SeqId PickSeq() {
    if (seqs_.empty()) return -1;
    auto it = seqs_.begin();
    std::advance(it, Uniform(0, int64_t(seqs_.size()) - 1));
    return it->first;
  }

  int32_t* Slot(int32_t page, int64_t token) {
    return static_cast<int32_t*>(pool_->page_ptr(page)) + token % cfg_.block_size;
  }

  // Everything an all-or-nothing refusal must leave as it was.
  std::string Snapshot() const {
    std::string s;
    for (const auto& [id, seq] : seqs_) {
      s += std::to_string(id) + ":" + std::to_string(bm_->NumTokens(id)) + "[";
      for (int32_t p : bm_->BlockTable(id)) s += std::to_string(p) + ",";
      s += "]";
    }
    const auto st = bm_->stats();
    s += " free " + std::to_string(pool_->free_pages()) + " in_use " +
         std::to_string(st.kv_pages_in_use) + " cached " +
         std::to_string(st.cached_evictable_pages) + " q " +
         std::to_string(st.prefix_queries_tokens) + " h " + std::to_string(st.prefix_hit_tokens) +
         " ev " + std::to_string(st.evictions);
    return s;
  }

  void NewPrompt() {
    std::vector<int32_t> tokens;
    if (!seqs_.empty() && Uniform(0, 4) == 0) {
      tokens = seqs_.at(PickSeq()).tokens;  // a running sequence's text, generated part included
      tokens.resize(size_t(Uniform(1, int64_t(tokens.size()))));
    } else {
      tokens = prefixes_[size_t(Uniform(0, int64_t(prefixes_.size()) - 1))];
    }
    const int64_t extra = Uniform(tokens.empty() ? 1 : 0, 2 * cfg_.block_size);
    for (int64_t i = 0; i < extra; ++i) tokens.push_back(int32_t(Uniform(0, 5)));
    const uint64_t salt = Uniform(0, 4) == 0 ? 1 : 0;
    const SeqId id = next_id_++;
    const std::string before = Snapshot();
    auto computed = bm_->AllocatePrompt(id, tokens, salt);
    if (!computed.ok()) {
      REQUIRE(computed.status().code() == absl::StatusCode::kResourceExhausted);
      REQUIRE_FALSE(bm_->Has(id));
      REQUIRE(Snapshot() == before);
      ++refused_ops_;
      return;
    }
    ++ok_ops_;
    const int64_t n = int64_t(tokens.size());
    REQUIRE(*computed % cfg_.block_size == 0);
    REQUIRE(*computed <= (n - 1) / cfg_.block_size * cfg_.block_size);
    if (!cfg_.caching) REQUIRE(*computed == 0);
    hit_tokens_ += *computed;
    seqs_[id] = SimSeq{tokens, *computed, salt};
    // CheckAll verifies that the hit blocks already hold these tokens.
  }

  // The forward pass: write tokens [computed, n) into their slots, then MarkComputed. Nobody
  // else may be reading those blocks.
  void Compute(SeqId id) {
    if (id < 0) return;
    SimSeq& s = seqs_.at(id);
    const auto& table = bm_->BlockTable(id);
    // Chunked prefill: sometimes only part of what is left.
    const int64_t n = int64_t(s.tokens.size());
    const int64_t upto = Uniform(0, 2) == 0 ? Uniform(s.computed, n) : n;
    const std::vector<int32_t> kv = KvValues(s.tokens, s.salt);
    // The scheduler asks for room for each chunk; what the sequence holds already is a no-op.
    std::vector<CopyOp> copies;
    REQUIRE(bm_->Append(id, upto, &copies).ok());
    REQUIRE(copies.empty());
    for (int64_t t = s.computed; t < upto; ++t) {
      const int32_t page = table[size_t(t / cfg_.block_size)];
      REQUIRE(page >= 0);
      RequireExclusive(id, page);
      *Slot(page, t) = kv[size_t(t)];
    }
    s.computed = upto;
    bm_->MarkComputed(id, s.tokens, s.computed);
  }

  void RequireExclusive(SeqId writer, int32_t page) {
    for (const auto& [id, seq] : seqs_) {
      if (id == writer) continue;
      for (int32_t p : bm_->BlockTable(id)) {
        INFO("seq " << writer << " writes page " << page << " that seq " << id << " holds");
        REQUIRE(p != page);
      }
    }
  }

  // Decode: only a fully computed sequence grows; the engine copies pages, then computes.
  void AppendTokens(SeqId id) {
    if (id < 0 || seqs_.at(id).computed < int64_t(seqs_.at(id).tokens.size())) return;
    SimSeq& s = seqs_.at(id);
    const int64_t more = Uniform(1, cfg_.block_size + 1);
    std::vector<CopyOp> copies;
    const std::string before = Snapshot();
    const absl::Status st = bm_->Append(id, int64_t(s.tokens.size()) + more, &copies);
    if (!st.ok()) {
      REQUIRE(st.code() == absl::StatusCode::kResourceExhausted);
      REQUIRE(copies.empty());
      REQUIRE(Snapshot() == before);
      ++refused_ops_;
      return;
    }
    ++ok_ops_;
    REQUIRE(copies.size() <= 1);
    for (const CopyOp& c : copies) {
      // The source is the shared block, still held by someone else; the copy is ours alone.
      const int64_t last_block = (int64_t(s.tokens.size()) - 1) / cfg_.block_size;
      REQUIRE(bm_->BlockTable(id)[size_t(last_block)] == c.dst_page);
      RequireExclusive(id, c.dst_page);
      std::memcpy(pool_->page_ptr(c.dst_page), pool_->page_ptr(c.src_page), pool_->page_bytes());
      ++copies_;
    }
    for (int64_t i = 0; i < more; ++i) s.tokens.push_back(int32_t(Uniform(0, 5)));
    Compute(id);
  }

  void Fork(SeqId parent) {
    if (parent < 0 || seqs_.at(parent).computed < int64_t(seqs_.at(parent).tokens.size())) return;
    const SeqId child = next_id_++;
    REQUIRE(bm_->Fork(parent, child).ok());
    seqs_[child] = seqs_.at(parent);
    ++ok_ops_;
  }

  void FreeSeq(SeqId id) {
    if (id < 0) return;
    bm_->Free(id);
    REQUIRE_FALSE(bm_->Has(id));
    seqs_.erase(id);
  }

  void Window(SeqId id) {
    if (id < 0) return;
    // Relative to what is computed, as the engine does: only computed KV leaves the window.
    bm_->FreeOutOfWindow(id, seqs_.at(id).computed, Uniform(1, 3 * cfg_.block_size));
  }

  // Adapters share the pool: take or return a few pages of it directly.
  void AdapterTraffic() {
    if (!adapter_pages_.empty() && Uniform(0, 1) == 0) {
      REQUIRE(pool_->Free(adapter_pages_).ok());
      adapter_pages_.clear();
      return;
    }
    auto got = pool_->Allocate(Uniform(1, 2), PageKind::kAdapter);
    if (got.ok()) adapter_pages_.insert(adapter_pages_.end(), got->begin(), got->end());
  }

  void CheckAll() {
    const absl::Status inv = bm_->CheckInvariants();
    INFO(inv.ToString());
    REQUIRE(inv.ok());
    std::map<int32_t, int64_t> refs;      // page -> references from all tables
    std::map<int32_t, uint64_t> salt_of;  // page -> salt of the sequences holding it
    for (const auto& [id, s] : seqs_) {
      const auto& table = bm_->BlockTable(id);
      REQUIRE(bm_->NumTokens(id) == int64_t(s.tokens.size()));
      REQUIRE(int64_t(table.size()) == bm_->BlocksFor(int64_t(s.tokens.size())));
      for (size_t b = 0; b < table.size(); ++b) {
        const int32_t p = table[b];
        if (p < 0) continue;
        ++refs[p];
        // A page both referenced and free, or an adapter's, is a double hand-out.
        REQUIRE(pool_->kind(p) == PageKind::kKv);
        const auto [it, fresh] = salt_of.emplace(p, s.salt);
        INFO("page " << p << " shared across cache salts");
        REQUIRE((fresh || it->second == s.salt));
      }
      // Every computed token reads back its own KV from its slot.
      const std::vector<int32_t> kv = KvValues(s.tokens, s.salt);
      for (int64_t t = 0; t < s.computed; ++t) {
        const int32_t p = table[size_t(t / cfg_.block_size)];
        if (p < 0) continue;
        INFO("seq " << id << " token " << t << " page " << p);
        REQUIRE(*Slot(p, t) == kv[size_t(t)]);
      }
    }
    const auto st = bm_->stats();
    REQUIRE(st.kv_pages_in_use == int64_t(refs.size()));
    REQUIRE(pool_->pages_of(PageKind::kKv) == st.kv_pages_in_use + st.cached_evictable_pages);
    REQUIRE(pool_->pages_of(PageKind::kAdapter) == int64_t(adapter_pages_.size()));
    REQUIRE(bm_->AvailablePages() == pool_->free_pages() + st.cached_evictable_pages);
    REQUIRE(st.prefix_hit_tokens <= st.prefix_queries_tokens);
  }

  Config cfg_;
  std::mt19937_64 rng_;
  kernels::CpuBackend backend_;
  std::unique_ptr<UnifiedPool> pool_;
  std::unique_ptr<BlockManager> bm_;
  std::vector<std::vector<int32_t>> prefixes_;
  std::map<SeqId, SimSeq> seqs_;
  std::vector<int32_t> adapter_pages_;
  SeqId next_id_ = 0;
  int64_t ok_ops_ = 0, refused_ops_ = 0, copies_ = 0, hit_tokens_ = 0;
};

TEST_CASE("random operations keep every invariant and every sequence's tokens",
          "[memory][block_manager][stress]") {
  const std::vector<Config> configs = {
      {4, 24, true, 1},  {4, 24, true, 2},  {1, 16, true, 3},
      {16, 12, true, 4}, {4, 24, false, 5}, {2, 10, true, 6},
  };
  for (const Config& c : configs) {
    INFO("block_size " << c.block_size << " pages " << c.num_pages << " caching " << c.caching
                       << " seed " << c.seed);
    Sim sim(c);
    sim.Run(4000);
  }
}

}  // namespace
}  // namespace arbor::memory
