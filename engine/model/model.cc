#include "engine/model/model.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/rope.h"
#include "kernels/attention_plan.h"

namespace arbor::engine {

// Decode rows a pass splits over their keys at most (batches of more decode rows fill the GPU
// without splitting): the split-KV workspace is sized for them.
constexpr int64_t kAttentionSplitRows = 64;

using kernels::DeviceBuffer;
using kernels::DType;
using kernels::Tensor;

namespace {

// Bump allocation of a pass's buffers from one workspace, each 256-byte aligned (cuBLASLt's
// fastest kernels want aligned operands). A dry run (base null) only adds up the bytes.
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  void* Take(size_t bytes) {
    void* p = base_ == nullptr ? nullptr : base_ + used_;
    used_ += (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
    return p;
  }
  Tensor Take(DType dtype, int64_t rows, int64_t cols) {
    return kernels::View(Take(size_t(rows * cols) * kernels::DTypeSize(dtype)), dtype, rows, cols);
  }
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& model_dir,
                                                   kernels::Backend& backend,
                                                   ModelOptions options) {
  ASSIGN_OR_RETURN(ModelSpec spec, LoadHfConfig(model_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(model_dir));
  ASSIGN_OR_RETURN(ModelWeights w, LoadWeights(spec, *ckpt, options.dtype, backend));
  std::unique_ptr<Model> m(new Model(std::move(spec), std::move(w), options, backend));
  RETURN_IF_ERROR(m->UploadRopeTable());
  return m;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Dummy(const ModelSpec& spec, uint64_t seed,
                                                    kernels::Backend& backend,
                                                    ModelOptions options) {
  ASSIGN_OR_RETURN(ModelWeights w, DummyWeights(spec, seed, options.dtype, backend));
  std::unique_ptr<Model> m(new Model(spec, std::move(w), options, backend));
  RETURN_IF_ERROR(m->UploadRopeTable());
  return m;
}

Model::Model(ModelSpec spec, ModelWeights weights, ModelOptions options, kernels::Backend& backend)
    : spec_(std::move(spec)), w_(std::move(weights)), options_(options), be_(backend) {}

absl::Status Model::UploadRopeTable() {
  const std::vector<float> inv = RopeInvFreq(spec_.rope, spec_.head_dim);
  ASSIGN_OR_RETURN(inv_freq_, be_.Allocate(inv.size() * sizeof(float)));
  RETURN_IF_ERROR(be_.CopyToDevice(inv_freq_.data(), inv.data(), inv.size() * sizeof(float),
                                   be_.default_stream()));
  return be_.default_stream().Synchronize();
}

size_t Model::KvPageBytes(int64_t block_size) const {
  return size_t(spec_.num_layers * 2 * block_size * spec_.num_kv_heads * spec_.head_dim) *
         kernels::DTypeSize(options_.kv_dtype);
}

absl::StatusOr<SequenceKv> Model::NewSequence(int64_t capacity, int64_t block_size) {
  if (capacity <= 0 || capacity > spec_.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence capacity ", capacity,
                     " outside [1, max_position_embeddings=", spec_.max_position_embeddings, "]"));
  }
  if (block_size <= 0) return absl::InvalidArgumentError("block_size must be > 0");
  SequenceKv seq;
  seq.capacity = capacity;
  seq.block_size = block_size;
  const int64_t blocks = (capacity + block_size - 1) / block_size;
  ASSIGN_OR_RETURN(seq.pages, be_.Allocate(size_t(blocks) * KvPageBytes(block_size)));
  for (int64_t b = 0; b < blocks; ++b) seq.block_table.push_back(int32_t(b));
  return seq;
}

absl::StatusOr<std::vector<float>> Model::Forward(absl::Span<const int32_t> tokens, SequenceKv& seq,
                                                  bool all_positions, const LoraAdapter* adapter) {
  if (seq.length + int64_t(tokens.size()) > seq.capacity) {
    return absl::OutOfRangeError(absl::StrCat("Forward: ", seq.length, " cached + ", tokens.size(),
                                              " new tokens exceed the capacity ", seq.capacity));
  }
  SequenceChunk chunk;
  chunk.tokens = tokens;
  chunk.start = seq.length;
  chunk.block_table = seq.block_table;
  chunk.logits = all_positions ? SequenceChunk::Logits::kAll : SequenceChunk::Logits::kLast;
  chunk.adapter = adapter;
  ASSIGN_OR_RETURN(std::vector<float> logits,
                   Forward({&chunk, 1}, KvCacheView{seq.pages.data(), seq.block_size}));
  seq.length += int64_t(tokens.size());
  return logits;
}

absl::StatusOr<std::vector<float>> Model::Forward(absl::Span<const SequenceChunk> chunks,
                                                  const KvCacheView& kv_view) {
  std::lock_guard<std::mutex> lock(forward_mu_);
  ASSIGN_OR_RETURN(const Tensor logits, ForwardLocked(chunks, kv_view));
  kernels::Stream& st = be_.default_stream();
  std::vector<float> host(size_t(logits.rows * logits.cols));
  if (!host.empty()) {
    RETURN_IF_ERROR(be_.CopyToHost(host.data(), logits.data, host.size() * sizeof(float), st));
  }
  RETURN_IF_ERROR(st.Synchronize());
  return host;
}

absl::StatusOr<Tensor> Model::ForwardOnDevice(absl::Span<const SequenceChunk> chunks,
                                              const KvCacheView& kv_view,
                                              absl::Span<const ChunkScore> scores) {
  std::lock_guard<std::mutex> lock(forward_mu_);
  return ForwardLocked(chunks, kv_view, scores);
}

absl::Status Model::PlanScores(absl::Span<const SequenceChunk> chunks,
                               absl::Span<const ChunkScore> scores, PassPlan* p) const {
  if (scores.empty()) return absl::OkStatus();
  if (scores.size() != chunks.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Forward: ", scores.size(), " scores for ", chunks.size(), " chunks"));
  }
  int32_t row = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const ChunkScore& sc = scores[i];
    const int32_t n = int32_t(chunks[i].tokens.size());
    if (!sc.targets.empty()) {
      if (int32_t(sc.targets.size()) != n) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Forward: chunk ", i, " has ", sc.targets.size(), " score targets for ", n, " tokens"));
      }
      if (sc.top_k < 0 || sc.top_k > kernels::kCceMaxTopK || sc.top_k > spec_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("Forward: chunk ", i, "'s score top_k ", sc.top_k, " is outside [0, ",
                         std::min<int64_t>(kernels::kCceMaxTopK, spec_.vocab_size), "]"));
      }
      for (int32_t j = 0; j < n; ++j) {
        const int32_t t = sc.targets[size_t(j)];
        if (t < -1 || t >= spec_.vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat("Forward: chunk ", i, "'s score target ",
                                                         t, " is outside [-1, ", spec_.vocab_size,
                                                         ")"));
        }
        p->score_rows.push_back(row + j);
        p->score_targets.push_back(t);
      }
      p->score_top_k = std::max<int64_t>(p->score_top_k, sc.top_k);
    }
    row += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<Model::PassPlan> Model::PlanPass(absl::Span<const SequenceChunk> chunks,
                                                const KvCacheView& kv_view,
                                                int64_t min_blocks) const {
  const ModelSpec& s = spec_;
  if (chunks.empty()) return absl::InvalidArgumentError("Forward: empty batch");
  if (kv_view.pages == nullptr || kv_view.block_size <= 0) {
    return absl::InvalidArgumentError("Forward: no KV pages");
  }
  const int64_t bs = kv_view.block_size;
  PassPlan p;
  p.num_seqs = int64_t(chunks.size());
  p.max_blocks = std::max<int64_t>(1, min_blocks);
  for (const auto& c : chunks) p.max_blocks = std::max<int64_t>(p.max_blocks, c.block_table.size());
  p.tables.assign(chunks.size() * size_t(p.max_blocks), -1);
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SequenceChunk& c = chunks[i];
    const int64_t n = int64_t(c.tokens.size()), end = c.start + n;
    if (n == 0 || c.start < 0) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: chunk ", i, " is empty"));
    }
    if (end > s.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: chunk ", i, " reaches position ",
                                                     end, " > max_position_embeddings ",
                                                     s.max_position_embeddings));
    }
    if (int64_t(c.block_table.size()) * bs < end) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: chunk ", i, "'s block table (",
                                                     c.block_table.size(), " blocks) cannot hold ",
                                                     end, " tokens"));
    }
    std::copy(c.block_table.begin(), c.block_table.end(), p.tables.begin() + i * p.max_blocks);
    for (int64_t j = 0; j < n; ++j) {
      const int32_t id = c.tokens[size_t(j)];
      if (id < 0 || id >= s.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " outside the vocabulary [0, ", s.vocab_size, ")"));
      }
      const int64_t pos = c.start + j;
      const int32_t page = c.block_table[size_t(pos / bs)];
      if (page < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("Forward: chunk ", i, " writes position ", pos, " to a freed block"));
      }
      if (c.logits == SequenceChunk::Logits::kAll ||
          (c.logits == SequenceChunk::Logits::kLast && j == n - 1)) {
        p.logit_rows.push_back(int32_t(p.ids.size()));
      }
      p.ids.push_back(id);
      p.positions.push_back(int32_t(pos));
      p.token_seq.push_back(int32_t(i));
      p.slots.push_back(int32_t(page * bs + pos % bs));
    }
  }
  // Attention: each chunk of several tokens goes to the tensor-core prefill kernel in tiles.
  std::vector<kernels::RowRun> runs;
  int32_t row = 0;
  for (const auto& c : chunks) {
    runs.push_back({row, int32_t(c.tokens.size())});
    row += int32_t(c.tokens.size());
  }
  const kernels::AttentionPlan attention = kernels::PlanAttention(
      runs, kernels::PrefillTileTokens(options_.dtype, options_.kv_dtype, s.head_dim,
                                       s.num_heads / s.num_kv_heads));
  p.prefill_tiles = attention.prefill_tiles;
  p.decode_rows = attention.decode_rows;
  // LoRA: the batch's adapters are its slots (in order of appearance); each token's slot.
  if (std::any_of(chunks.begin(), chunks.end(),
                  [](const SequenceChunk& c) { return c.adapter != nullptr; })) {
    int32_t previous = -1;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const LoraAdapter* ad = chunks[i].adapter;
      int32_t slot = -1;
      if (ad != nullptr) {
        if (ad->pages.empty() || ad->rank < 1 || ad->rank > kernels::kLoraMaxRank ||
            int64_t(ad->targets.size()) != s.num_layers) {
          return absl::FailedPreconditionError(absl::StrCat(
              "Forward: chunk ", i, "'s adapter `", ad->name, "` is not resident in pool pages"));
        }
        const LoraAdapter* first = p.adapters.empty() ? ad : p.adapters[0];
        if (ad->pool != first->pool || ad->page_bytes != first->page_bytes) {
          return absl::InvalidArgumentError(absl::StrCat("Forward: chunk ", i, "'s adapter `",
                                                         ad->name, "` lies in another pool"));
        }
        auto it = std::find(p.adapters.begin(), p.adapters.end(), ad);
        if (it == p.adapters.end()) it = p.adapters.insert(p.adapters.end(), ad);
        slot = int32_t(it - p.adapters.begin());
        p.adapter_tokens += int64_t(chunks[i].tokens.size());
        if (slot != previous) ++p.adapter_runs;
      }
      previous = slot;
      p.token_slot.insert(p.token_slot.end(), chunks[i].tokens.size(), slot);
    }
  }
  return p;
}

void Model::PadPlan(int64_t batch, PassPlan* p) {
  // A padding row is one more sequence of one token at position -1: attention gives it no key
  // and a zero output, its K/V are not written (slot -1), and its logits row is computed and
  // left unread. Nothing it does touches a page.
  for (int64_t i = p->num_seqs; i < batch; ++i) {
    p->logit_rows.push_back(int32_t(p->ids.size()));
    p->ids.push_back(0);
    p->positions.push_back(-1);
    p->token_seq.push_back(int32_t(i));
    p->slots.push_back(-1);
  }
  p->tables.resize(size_t(batch * p->max_blocks), -1);
  p->num_seqs = std::max(p->num_seqs, batch);
}

absl::StatusOr<Model::DevicePlan> Model::UploadPlan(const PassPlan& p, Activations* a,
                                                    LoraPass* lora) {
  kernels::Stream& st = be_.default_stream();
  const int64_t n = p.n();
  DevicePlan d;
  d.n = n;
  d.num_seqs = p.num_seqs;
  d.max_blocks = p.max_blocks;
  d.rows = int64_t(p.logit_rows.size());
  if (lora != nullptr && !p.adapters.empty()) {
    const int64_t slots = int64_t(p.adapters.size());
    int64_t max_rank = 0, num_pages = 0;
    for (const LoraAdapter* ad : p.adapters) {
      max_rank = std::max(max_rank, ad->rank);
      num_pages += int64_t(ad->pages.size());
    }
    int32_t* ints = nullptr;
    ASSIGN_OR_RETURN(void* lora_ws, lora_.Get(be_, LayoutLora(nullptr, n, max_rank, slots,
                                                              num_pages, lora, &ints)));
    LayoutLora(lora_ws, n, max_rank, slots, num_pages, lora, &ints);
    // One upload: token_slot, slot_pages, slot_rank, slot_scale (as bits), page_table.
    std::vector<int32_t> host(p.token_slot);
    host.resize(size_t(n + 3 * slots));
    int32_t pages = 0;
    lora->targets.assign(size_t(spec_.num_layers), {});
    for (int64_t i = 0; i < slots; ++i) {
      const LoraAdapter* ad = p.adapters[size_t(i)];
      host[size_t(n + i)] = pages;
      host[size_t(n + slots + i)] = int32_t(ad->rank);
      std::memcpy(&host[size_t(n + 2 * slots + i)], &ad->scale, sizeof(float));
      host.insert(host.end(), ad->pages.begin(), ad->pages.end());
      pages += int32_t(ad->pages.size());
      for (size_t l = 0; l < lora->targets.size(); ++l) {
        for (int t = 0; t < kNumLoraTargets; ++t) lora->targets[l][t] |= ad->targets[l][t];
      }
    }
    RETURN_IF_ERROR(be_.CopyToDevice(ints, host.data(), host.size() * sizeof(int32_t), st));
    lora->w.pool = p.adapters[0]->pool;
    lora->w.page_bytes = p.adapters[0]->page_bytes;
    lora->w.num_slots = slots;
    lora->max_rank = max_rank;
    lora->schedule = kernels::PickLoraSchedule(p.adapter_tokens, p.adapter_runs);
  }
  // The workspace: the activations (model dtype), then the int32 plan.
  const size_t plan_ints = 4 * size_t(n) + p.tables.size() + size_t(std::max<int64_t>(d.rows, 1)) +
                           p.prefill_tiles.size() + p.decode_rows.size();
  ASSIGN_OR_RETURN(void* ws, workspace_.Get(be_, LayoutActivations(nullptr, n, plan_ints, a)));
  LayoutActivations(ws, n, plan_ints, a);
  d.ids = a->plan;
  d.positions = d.ids + n;
  d.token_seq = d.positions + n;
  d.slots = d.token_seq + n;
  d.tables = d.slots + n;
  d.logit_rows = d.tables + p.tables.size();
  d.prefill_tiles = d.logit_rows + std::max<size_t>(p.logit_rows.size(), 1);
  d.decode_rows = d.prefill_tiles + p.prefill_tiles.size();
  d.num_prefill_tiles = int64_t(p.prefill_tiles.size() / 2);
  d.num_decode_rows = int64_t(p.decode_rows.size());
  // The plan goes up from the pinned mirror Reserve made (an asynchronous copy on CUDA; the
  // engine's step ends with a synchronising copy, so the mirror is free again by the next
  // pass), or from a host vector when the pass is larger than reserved.
  std::vector<int32_t> unpinned;
  int32_t* plan = nullptr;
  if (plan_mirror_.bytes() >= plan_ints * sizeof(int32_t)) {
    plan = plan_mirror_.as<int32_t>();
  } else {
    unpinned.resize(plan_ints);
    plan = unpinned.data();
  }
  size_t at = 0;
  for (const auto* part : {&p.ids, &p.positions, &p.token_seq, &p.slots, &p.tables, &p.logit_rows,
                           &p.prefill_tiles, &p.decode_rows}) {
    std::copy(part->begin(), part->end(), plan + at);
    at += part->size();
    if (part == &p.logit_rows && part->empty()) ++at;  // the layout keeps one int for it
  }
  RETURN_IF_ERROR(be_.CopyToDevice(a->plan, plan, at * sizeof(int32_t), st));
  return d;
}

absl::StatusOr<Tensor> Model::ForwardLocked(absl::Span<const SequenceChunk> chunks,
                                            const KvCacheView& kv_view,
                                            absl::Span<const ChunkScore> scores) {
  scorer_.Clear();
  const bool scoring = std::any_of(scores.begin(), scores.end(),
                                   [](const ChunkScore& sc) { return !sc.targets.empty(); });
  if (const DecodeGraph* g = scoring ? nullptr : GraphFor(chunks, kv_view); g != nullptr) {
    ASSIGN_OR_RETURN(PassPlan p, PlanPass(chunks, kv_view, graph_max_blocks_));
    PadPlan(g->batch, &p);
    bool replay = true;
    if (g->lora) {
      ASSIGN_OR_RETURN(replay, UploadGraphLora(p));
    }
    if (replay) {
      Activations a;
      ASSIGN_OR_RETURN(const DevicePlan d, UploadPlan(p, &a, nullptr));
      RETURN_IF_ERROR(g->graph->Launch(be_.default_stream()));
      ++graph_launches_;
      if (g->lora) ++lora_graph_launches_;
      ASSIGN_OR_RETURN(void* logits_dev, logits_.Get(be_, size_t(d.rows * spec_.vocab_size) * 4));
      return kernels::View(logits_dev, DType::kF32, int64_t(chunks.size()), spec_.vocab_size);
    }
    // The adapters' page tables outgrow the region (not while they are distinct pool pages):
    // the pass runs eagerly.
  }
  ASSIGN_OR_RETURN(PassPlan p, PlanPass(chunks, kv_view, 1));
  RETURN_IF_ERROR(PlanScores(chunks, scores, &p));
  Activations a;
  LoraPass lora;
  ASSIGN_OR_RETURN(const DevicePlan d, UploadPlan(p, &a, &lora));
  ASSIGN_OR_RETURN(const Tensor logits, RunPass(d, a, lora, kv_view));
  // Scored rows after the pass, in stream order: hb still holds the final norm's output, and x
  // (whose first rows the LM head's gather used) is free again for the scored rows' gather.
  const Tensor head =
      kernels::View(w_.head().data(), options_.dtype, spec_.vocab_size, spec_.hidden_size);
  RETURN_IF_ERROR(scorer_.Run(be_, a.hb, head, a.x, p.score_rows, p.score_targets, p.score_top_k));
  return logits;
}

const Model::DecodeGraph* Model::GraphFor(absl::Span<const SequenceChunk> chunks,
                                          const KvCacheView& kv) const {
  if (graphs_.empty() || int64_t(chunks.size()) > graphs_.back().batch) return nullptr;
  if (kv.pages != graph_kv_.pages || kv.block_size != graph_kv_.block_size) return nullptr;
  bool adapters = false;
  for (const SequenceChunk& c : chunks) {
    if (c.tokens.size() != 1 || c.logits != SequenceChunk::Logits::kLast ||
        int64_t(c.block_table.size()) > graph_max_blocks_) {
      return nullptr;
    }
    if (c.adapter != nullptr) {
      // The graphs read adapters from the pool they were captured over, up to the reserved rank.
      if (lora_graphs_.empty() || c.adapter->pool != lora_graph_pass_.w.pool ||
          c.adapter->page_bytes != lora_graph_pass_.w.page_bytes ||
          c.adapter->rank > lora_graph_pass_.max_rank) {
        return nullptr;
      }
      adapters = true;
    }
  }
  for (const DecodeGraph& g : adapters ? lora_graphs_ : graphs_) {
    if (g.batch >= int64_t(chunks.size())) return &g;
  }
  return nullptr;
}

absl::StatusOr<Tensor> Model::RunPass(const DevicePlan& d, const Activations& a,
                                      const LoraPass& lora, const KvCacheView& kv_view) {
  const ModelSpec& s = spec_;
  const DType dt = options_.dtype;
  kernels::Stream& st = be_.default_stream();
  const int64_t h = s.hidden_size, hd = s.head_dim, q_dim = s.num_heads * hd,
                kv_dim = s.num_kv_heads * hd;
  const bool moe = s.num_experts > 0;
  RETURN_IF_ERROR(
      be_.Embedding({d.ids, kernels::View(w_.embed.data(), dt, s.vocab_size, h), a.x}, st));

  auto weight = [&](const DeviceBuffer& buf, int64_t out, int64_t in) {
    return kernels::View(buf.data(), dt, out, in);
  };
  const float scale = 1.0f / std::sqrt(float(hd));
  const float eps = float(s.rms_norm_eps);
  // Split-KV runs for this pass's decode rows (the rows the per-token kernel takes: all of them
  // without prefill tiles); a decode graph's pass has its bucket's rows, so the runs are fixed.
  const int64_t split_keys = kernels::AttentionSplitKeys(
      s.max_position_embeddings, d.num_prefill_tiles > 0 ? d.num_decode_rows : d.n);
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    const kernels::PagedKv kv{
        kv_view.pages, options_.kv_dtype, kv_view.block_size, s.num_layers, kv_dim, l};
    // The previous layer's MLP output joins the residual stream here (none before layer 0).
    RETURN_IF_ERROR(
        be_.AddRmsNorm({a.x, l == 0 ? Tensor{} : a.delta, L.input_norm.data(), a.hb, eps}, st));
    kernels::RopeKvWriteArgs rope;
    rope.qkv = a.qkv;
    rope.positions = d.positions;
    rope.inv_freq = inv_freq_.as<float>();
    rope.slots = d.slots;
    rope.kv = kv;
    rope.num_q_heads = s.num_heads;
    rope.num_kv_heads = s.num_kv_heads;
    rope.head_dim = hd;
    kernels::LinearArgs qkv{a.hb, weight(L.qkv, q_dim + 2 * kv_dim, h), L.qkv_bias.data(), a.qkv};
    if (!LoraTargets(lora, l, kLoraQ) && !LoraTargets(lora, l, kLoraK) &&
        !LoraTargets(lora, l, kLoraV)) {
      // RoPE and the KV write in the projection's epilogue: a backend with a fused kernel (the
      // few-row Linear) rotates and caches from registers; the others run both ops, as below.
      qkv.epilogue = kernels::LinearEpilogue::kRopeKvWrite;
      qkv.rope = rope;
      RETURN_IF_ERROR(be_.Linear(qkv, st));
    } else {
      RETURN_IF_ERROR(be_.Linear(qkv, st));
      RETURN_IF_ERROR(ApplyLora(lora, l, {kLoraQ, kLoraK, kLoraV}, a.hb, a.qkv));
      RETURN_IF_ERROR(be_.RopeKvWrite(rope, st));
    }
    kernels::PagedAttentionArgs attn;
    attn.q = kernels::Columns(a.qkv, 0, q_dim);
    attn.out = a.attn;
    attn.kv = kv;
    attn.block_tables = d.tables;
    attn.token_seq = d.token_seq;
    attn.q_positions = d.positions;
    attn.num_seqs = d.num_seqs;
    attn.max_blocks = d.max_blocks;
    attn.num_q_heads = s.num_heads;
    attn.num_kv_heads = s.num_kv_heads;
    attn.head_dim = hd;
    attn.sliding_window = s.layer_windows[size_t(l)];  // this layer's (0: full attention)
    attn.scale = scale;
    attn.prefill_tiles = d.prefill_tiles;
    attn.num_prefill_tiles = d.num_prefill_tiles;
    attn.decode_rows = d.decode_rows;
    attn.num_decode_rows = d.num_decode_rows;
    attn.split_workspace = a.attn_split;
    attn.split_workspace_floats = a.attn_split_floats;
    attn.split_keys = split_keys;
    attn.max_context = d.max_blocks * kv_view.block_size;
    RETURN_IF_ERROR(be_.PagedAttention(attn, st));
    RETURN_IF_ERROR(
        be_.Linear({a.attn, weight(L.o, h, q_dim), L.o_bias.data(), a.delta, false}, st));
    RETURN_IF_ERROR(ApplyLora(lora, l, {kLoraO}, a.attn, a.delta));
    RETURN_IF_ERROR(be_.AddRmsNorm({a.x, a.delta, L.post_norm.data(), a.hb, eps}, st));
    if (moe) {
      RETURN_IF_ERROR(Moe(L, a, lora, l));
    } else {
      RETURN_IF_ERROR(Mlp(L, a, lora, l));
    }
  }
  // The last MLP output joins the stream; the final norm of every row (cheap next to the LM
  // head), then the LM head only where logits are wanted.
  RETURN_IF_ERROR(be_.AddRmsNorm({a.x, a.delta, w_.final_norm.data(), a.hb, eps}, st));
  if (d.rows == 0) return Tensor{nullptr, DType::kF32, 0, s.vocab_size, s.vocab_size};
  const Tensor gathered = kernels::Rows(a.x, 0, d.rows);  // x is no longer needed
  RETURN_IF_ERROR(be_.GatherRows({a.hb, d.logit_rows, gathered}, st));
  ASSIGN_OR_RETURN(void* logits_dev, logits_.Get(be_, size_t(d.rows * s.vocab_size) * 4));
  const Tensor logits_view = kernels::View(logits_dev, DType::kF32, d.rows, s.vocab_size);
  RETURN_IF_ERROR(
      be_.Linear({gathered, weight(w_.head(), s.vocab_size, h), nullptr, logits_view, false}, st));
  return logits_view;
}

absl::StatusOr<int64_t> Model::CaptureDecodeGraphs(const KvCacheView& kv, int64_t max_batch,
                                                   const LoraGraphPool& lora_pool) {
  std::lock_guard<std::mutex> lock(forward_mu_);
  graphs_.clear();
  lora_graphs_.clear();
  if (reserved_.max_tokens <= 0) {
    return absl::FailedPreconditionError("decode graphs: Reserve the workspace first");
  }
  if (kv.pages == nullptr || kv.block_size <= 0) {
    return absl::InvalidArgumentError("decode graphs: no KV pages");
  }
  max_batch =
      std::min({max_batch, reserved_.max_seqs, reserved_.max_tokens, reserved_.max_logit_rows});
  if (max_batch <= 0) return absl::InvalidArgumentError("decode graphs: max_batch must be > 0");
  const bool with_lora = lora_pool.base != nullptr && reserved_.max_lora_rank > 0;
  if (with_lora && (lora_pool.page_bytes <= 0 || lora_pool.num_pages <= 0 ||
                    lora_pool.num_pages > int64_t(INT32_MAX))) {
    return absl::InvalidArgumentError("decode graphs: the adapters' pool has no pages");
  }
  // Batch-size buckets 1, 2, 4, ... and max_batch itself: a step of b sequences replays the
  // smallest bucket >= b, padded (PadPlan).
  std::vector<int64_t> buckets;
  for (int64_t b = 1; b < max_batch; b *= 2) buckets.push_back(b);
  buckets.push_back(max_batch);
  ASSIGN_OR_RETURN(std::vector<DecodeGraph> graphs, CaptureBuckets(buckets, LoraPass{}, kv));
  std::vector<DecodeGraph> lora_graphs;
  if (with_lora) {
    // One LoRA region for every bucket: slot arrays for max_batch tokens and slots, a page
    // table as long as the pool, shrink rows at the reserved rank (LayoutLora: room for the MoE
    // pair rows too). Every target the model can adapt is launched in every layer (MoE models:
    // the experts' gate, up and down, whose calls read the pair rows' tokens and expert offsets
    // from the MoE scratch, which the graphs hold too).
    LoraPass& lp = lora_graph_pass_;
    lp = LoraPass{};
    int32_t* ints = nullptr;
    const size_t bytes = LayoutLora(nullptr, max_batch, reserved_.max_lora_rank, max_batch,
                                    lora_pool.num_pages, &lp, &ints);
    ASSIGN_OR_RETURN(void* base, lora_graph_.Get(be_, bytes));
    LayoutLora(base, max_batch, reserved_.max_lora_rank, max_batch, lora_pool.num_pages, &lp,
               &lora_graph_ints_);
    lp.w.pool = lora_pool.base;
    lp.w.page_bytes = lora_pool.page_bytes;
    lp.w.num_slots = max_batch;
    lp.max_rank = reserved_.max_lora_rank;
    lp.schedule = kernels::LoraSchedule::kPerToken;
    std::array<bool, kNumLoraTargets> all{};
    all.fill(true);
    lp.targets.assign(size_t(spec_.num_layers), all);
    lora_graph_pages_ = lora_pool.num_pages;
    RETURN_IF_ERROR(UploadGraphLora(PassPlan{}).status());  // every token base-only
    ASSIGN_OR_RETURN(lora_graphs, CaptureBuckets(buckets, lp, kv));
    for (DecodeGraph& g : lora_graphs) g.lora = true;
  }
  // The graphs hold the workspaces' addresses: from now on they may not move (a pass that
  // needs more than was reserved fails instead of reallocating under the graphs). The eager
  // passes' LoRA workspace is not in any graph: it may still grow.
  for (Scratch* scratch : {&workspace_, &logits_, &moe_, &lora_graph_}) scratch->Freeze();
  graphs_ = std::move(graphs);
  lora_graphs_ = std::move(lora_graphs);
  graph_kv_ = kv;
  graph_max_blocks_ = reserved_.max_blocks;
  return int64_t(graphs_.size() + lora_graphs_.size());
}

absl::StatusOr<std::vector<Model::DecodeGraph>> Model::CaptureBuckets(
    absl::Span<const int64_t> buckets, const LoraPass& lora, const KvCacheView& kv) {
  kernels::Stream& st = be_.default_stream();
  std::vector<DecodeGraph> graphs;
  for (int64_t b : buckets) {
    // An all-padding batch: it runs every kernel of a decode step of b sequences and touches
    // no page, so capturing it (and the warm-up before, which makes cuBLASLt pick its
    // algorithms and loads every kernel outside the capture) leaves the pool as it was. Its
    // LoRA slots are all -1: the LoRA kernels run and add nothing.
    PassPlan p;
    p.max_blocks = reserved_.max_blocks;
    PadPlan(b, &p);
    Activations a;
    ASSIGN_OR_RETURN(const DevicePlan d, UploadPlan(p, &a, nullptr));
    RETURN_IF_ERROR(RunPass(d, a, lora, kv).status());
    RETURN_IF_ERROR(st.Synchronize());
    RETURN_IF_ERROR(be_.BeginCapture(st));
    const absl::Status ran = RunPass(d, a, lora, kv).status();
    auto graph = be_.EndCapture(st);  // always ends the capture, even after a failed op
    RETURN_IF_ERROR(ran);
    if (!graph.ok()) return graph.status();
    graphs.push_back({b, std::move(*graph), false});
  }
  return graphs;
}

absl::StatusOr<bool> Model::UploadGraphLora(const PassPlan& p) {
  const LoraPass& lp = lora_graph_pass_;
  const int64_t cap = lp.w.num_slots;  // max_batch: tokens and slots
  // LayoutLora's order: token_slot [cap], slot_pages [cap], slot_rank [cap], slot_scale [cap]
  // (float bits), then the page table; only the part in use goes up.
  std::vector<int32_t> host(size_t(4 * cap), 0);
  std::fill(host.begin(), host.begin() + cap, -1);
  if (!p.adapters.empty()) {
    if (int64_t(p.token_slot.size()) > cap || int64_t(p.adapters.size()) > cap) return false;
    std::copy(p.token_slot.begin(), p.token_slot.end(), host.begin());
    int64_t pages = 0;
    for (size_t i = 0; i < p.adapters.size(); ++i) {
      const LoraAdapter* ad = p.adapters[i];
      if (pages + int64_t(ad->pages.size()) > lora_graph_pages_) return false;
      host[size_t(cap) + i] = int32_t(pages);
      host[size_t(2 * cap) + i] = int32_t(ad->rank);
      std::memcpy(&host[size_t(3 * cap) + i], &ad->scale, sizeof(float));
      host.insert(host.end(), ad->pages.begin(), ad->pages.end());
      pages += int64_t(ad->pages.size());
    }
  }
  RETURN_IF_ERROR(be_.CopyToDevice(lora_graph_ints_, host.data(), host.size() * sizeof(int32_t),
                                   be_.default_stream()));
  return true;
}

size_t Model::LayoutActivations(void* base, int64_t n, size_t plan_ints, Activations* a) const {
  const ModelSpec& s = spec_;
  const DType dt = options_.dtype;
  const int64_t h = s.hidden_size, q_dim = s.num_heads * s.head_dim,
                kv_dim = s.num_kv_heads * s.head_dim, inter = s.intermediate_size;
  Carver c(base);
  a->x = c.Take(dt, n, h);
  a->hb = c.Take(dt, n, h);
  a->qkv = c.Take(dt, n, q_dim + 2 * kv_dim);
  a->attn = c.Take(dt, n, q_dim);
  a->delta = c.Take(dt, n, h);
  // A dense MLP runs on the n tokens; a mixture's experts on its n * k (token, expert) pairs.
  const int64_t mlp_rows = s.num_experts > 0 ? n * s.num_experts_per_tok : n;
  a->gate_up = c.Take(dt, mlp_rows, 2 * inter);
  a->act = c.Take(dt, mlp_rows, inter);
  if (s.num_experts > 0) {
    a->router = c.Take(dt, n, s.num_experts);
    a->pairs = c.Take(dt, mlp_rows, h);
  }
  a->plan = static_cast<int32_t*>(c.Take(plan_ints * sizeof(int32_t)));
  if (be_.kind() == kernels::DeviceKind::kCuda) {
    // Split-KV room for kAttentionSplitRows decode rows over the model's whole context: the
    // same size in every pass, so a frozen workspace never has to grow for it.
    a->attn_split_floats = kernels::AttentionSplitFloats(kAttentionSplitRows, s.num_heads,
                                                         s.head_dim, s.max_position_embeddings);
    a->attn_split = static_cast<float*>(c.Take(size_t(a->attn_split_floats) * sizeof(float)));
  }
  return c.used();
}

size_t Model::LayoutLora(void* base, int64_t n, int64_t max_rank, int64_t num_slots,
                         int64_t num_pages, LoraPass* pass, int32_t** ints) const {
  Carver c(base);
  *ints = static_cast<int32_t*>(c.Take(size_t(n + 3 * num_slots + num_pages) * 4));
  pass->token_slot = *ints;
  pass->w.slot_pages = *ints + n;
  pass->w.slot_rank = *ints + n + num_slots;
  pass->w.slot_scale = reinterpret_cast<const float*>(*ints + n + 2 * num_slots);
  pass->w.page_table = *ints + n + 3 * num_slots;
  // MoE: the experts' calls run on n * top_k pair rows with gate and up as two targets.
  const int64_t shrink = std::max(
      kernels::LoraShrinkFloats(n, kernels::kLoraMaxTargets, max_rank),
      spec_.num_experts > 0 ? kernels::LoraShrinkFloats(n * spec_.num_experts_per_tok, 2, max_rank)
                            : 0);
  pass->shrink = static_cast<float*>(c.Take(size_t(shrink) * 4));
  return c.used();
}

absl::Status Model::Reserve(const ForwardLimits& limits) {
  std::lock_guard<std::mutex> lock(forward_mu_);
  const ModelSpec& s = spec_;
  const int64_t n = limits.max_tokens;
  if (n <= 0 || limits.max_seqs <= 0 || limits.max_blocks <= 0 || limits.max_logit_rows < 0) {
    return absl::InvalidArgumentError("Reserve: limits must be positive");
  }
  // Captured graphs hold the workspaces' addresses (they are frozen). A Reserve within what was
  // reserved keeps them; one that grows the workspaces (a new engine with larger limits) drops
  // them first, and that engine captures its own.
  if (!graphs_.empty() &&
      (limits.max_tokens > reserved_.max_tokens || limits.max_seqs > reserved_.max_seqs ||
       limits.max_blocks > reserved_.max_blocks ||
       limits.max_logit_rows > reserved_.max_logit_rows)) {
    graphs_.clear();
    lora_graphs_.clear();
    for (Scratch* scratch : {&workspace_, &logits_, &moe_, &lora_graph_}) scratch->Thaw();
  }
  Activations a;
  const size_t plan_ints = 4 * size_t(n) + size_t(limits.max_seqs * limits.max_blocks) +
                           size_t(std::max<int64_t>(limits.max_logit_rows, 1)) +
                           size_t(kernels::AttentionPlanMaxInts(n, std::min(n, limits.max_seqs)));
  RETURN_IF_ERROR(workspace_.Get(be_, LayoutActivations(nullptr, n, plan_ints, &a)).status());
  if (plan_mirror_.bytes() < plan_ints * sizeof(int32_t)) {
    ASSIGN_OR_RETURN(plan_mirror_, be_.AllocateHost(plan_ints * sizeof(int32_t)));
  }
  if (limits.max_lora_rank > 0) {
    // Room for a slot per token; the page tables grow the workspace when they need more.
    LoraPass pass;
    int32_t* ints = nullptr;
    RETURN_IF_ERROR(
        lora_.Get(be_, LayoutLora(nullptr, n, limits.max_lora_rank, n, 0, &pass, &ints)).status());
  }
  RETURN_IF_ERROR(
      logits_.Get(be_, size_t(std::max<int64_t>(limits.max_logit_rows, 1) * s.vocab_size) * 4)
          .status());
  if (s.num_experts > 0) RETURN_IF_ERROR(moe_.Get(be_, MoeScratchBytes(MoeShape(), n)).status());
  RETURN_IF_ERROR(scorer_.Reserve(be_, std::min(limits.max_scored_rows, n), s.vocab_size));
  reserved_.max_tokens = std::max(reserved_.max_tokens, limits.max_tokens);
  reserved_.max_seqs = std::max(reserved_.max_seqs, limits.max_seqs);
  reserved_.max_blocks = std::max(reserved_.max_blocks, limits.max_blocks);
  reserved_.max_logit_rows = std::max(reserved_.max_logit_rows, limits.max_logit_rows);
  reserved_.max_lora_rank = std::max(reserved_.max_lora_rank, limits.max_lora_rank);
  return absl::OkStatus();
}

size_t Model::workspace_bytes() const {
  return workspace_.bytes() + lora_.bytes() + logits_.bytes() + moe_.bytes() + scorer_.bytes();
}

absl::Status Model::ApplyLora(const LoraPass& pass, int64_t layer,
                              std::initializer_list<int> targets, const Tensor& x,
                              const Tensor& y) {
  kernels::LoraArgs args;
  args.x = x;
  args.y = y;
  args.token_slot = pass.token_slot;
  args.w = pass.w;
  args.max_rank = pass.max_rank;
  args.shrink = pass.shrink;
  args.schedule = pass.schedule;
  int64_t col = 0;
  for (int target : targets) {
    const int64_t out = LoraTargetShape(spec_, target).second;
    if (LoraTargets(pass, layer, target)) {
      args.targets[args.num_targets++] = {LoraMatrixId(layer, target), col, out};
    }
    col += out;
  }
  if (args.num_targets == 0) return absl::OkStatus();
  return be_.Lora(args, be_.default_stream());
}

// Whether any adapter of the pass adapts `target` in `layer`.
bool Model::LoraTargets(const LoraPass& pass, int64_t layer, int target) const {
  return pass.w.num_slots > 0 && pass.targets[size_t(layer)][size_t(target)];
}

// delta = down(silu(gate(hb)) * up(hb)), gate and up one fused projection.
absl::Status Model::Mlp(const LayerWeights& L, const Activations& a, const LoraPass& lora,
                        int64_t layer) {
  kernels::Stream& st = be_.default_stream();
  const DType dt = options_.dtype;
  const int64_t hid = spec_.hidden_size, inter = spec_.intermediate_size;
  const Tensor gate_up_w = kernels::View(L.gate_up.data(), dt, 2 * inter, hid);
  if (!LoraTargets(lora, layer, kLoraGate) && !LoraTargets(lora, layer, kLoraUp)) {
    // SiLU in the projection's epilogue: a backend with a fused kernel (the few-row Linear)
    // never writes gate_up; the others run Linear + SiluMul through it, as below.
    kernels::LinearArgs args{a.hb, gate_up_w, nullptr, a.act};
    args.epilogue = kernels::LinearEpilogue::kSiluMul;
    args.scratch = a.gate_up;
    RETURN_IF_ERROR(be_.Linear(args, st));
  } else {
    RETURN_IF_ERROR(be_.Linear({a.hb, gate_up_w, nullptr, a.gate_up}, st));
    RETURN_IF_ERROR(ApplyLora(lora, layer, {kLoraGate, kLoraUp}, a.hb, a.gate_up));
    RETURN_IF_ERROR(be_.SiluMul({a.gate_up, a.act}, st));
  }
  RETURN_IF_ERROR(
      be_.Linear({a.act, kernels::View(L.down.data(), dt, hid, inter), nullptr, a.delta}, st));
  return ApplyLora(lora, layer, {kLoraDown}, a.act, a.delta);
}

// Mixtral's sparse MLP, delta = MoE(hb): softmax top-k routing, the (token, expert) pairs
// grouped by expert, every expert's gate_up and down as one grouped GEMM each, and the weighted
// sum per token in expert order. All on the device: no copy to the host, no synchronisation,
// and launch shapes that depend on n only, not on the routing (engine/model/moe_layer.h). Its
// buffers were reserved with the workspace (Reserve), so a pass allocates nothing.
// Adapters on the experts apply on the pair rows (MoeLayerLora): each row under its token's slot
// and its expert's matrices (LoraExpertMatrixId).
absl::Status Model::Moe(const LayerWeights& L, const Activations& a, const LoraPass& lora,
                        int64_t layer) {
  const MoeLayerShape shape = MoeShape();
  ASSIGN_OR_RETURN(void* scratch, moe_.Get(be_, MoeScratchBytes(shape, a.hb.rows)));
  const MoeLayerWeights w{L.router.data(), L.experts_gate_up.data(), L.experts_down.data()};
  const MoeLayerBuffers buf{a.router, a.gate_up, a.act, a.pairs, scratch};
  if (!LoraTargets(lora, layer, kLoraGate) && !LoraTargets(lora, layer, kLoraUp) &&
      !LoraTargets(lora, layer, kLoraDown)) {
    return RunMoeLayer(be_, be_.default_stream(), shape, w, a.hb, buf, a.delta);
  }
  MoeLayerLora moe_lora;
  for (kernels::LoraArgs* args : {&moe_lora.gate_up, &moe_lora.down}) {
    args->token_slot = lora.token_slot;
    args->w = lora.w;
    args->max_rank = lora.max_rank;
    args->shrink = lora.shrink;
    args->schedule = lora.schedule;
    args->expert_matrix_stride = kNumLoraExpertTargets;
  }
  const int64_t layers = spec_.num_layers, experts = spec_.num_experts;
  const int64_t inter = spec_.intermediate_size;
  for (int target : {kLoraGate, kLoraUp, kLoraDown}) {
    if (!LoraTargets(lora, layer, target)) continue;
    kernels::LoraArgs& args = target == kLoraDown ? moe_lora.down : moe_lora.gate_up;
    args.targets[args.num_targets++] = {LoraExpertMatrixId(layers, experts, layer, 0, target),
                                        target == kLoraUp ? inter : 0,
                                        LoraTargetShape(spec_, target).second};
  }
  return RunMoeLayer(be_, be_.default_stream(), shape, w, a.hb, buf, a.delta, &moe_lora);
}

MoeLayerShape Model::MoeShape() const {
  return MoeLayerShape{spec_.hidden_size, spec_.intermediate_size, spec_.num_experts,
                       spec_.num_experts_per_tok, options_.dtype};
}

}  // namespace arbor::engine
