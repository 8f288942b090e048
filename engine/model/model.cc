#include "engine/model/model.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/rope.h"

namespace arbor::engine {

using kernels::DeviceBuffer;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& model_dir,
                                                   kernels::Backend& backend) {
  ASSIGN_OR_RETURN(ModelSpec spec, LoadHfConfig(model_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(model_dir));
  ASSIGN_OR_RETURN(ModelWeights w, LoadWeights(spec, *ckpt, backend));
  std::unique_ptr<Model> m(new Model(std::move(spec), std::move(w), backend));
  RETURN_IF_ERROR(m->UploadRopeTable());
  return m;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Dummy(const ModelSpec& spec, uint64_t seed,
                                                    kernels::Backend& backend) {
  ASSIGN_OR_RETURN(ModelWeights w, DummyWeights(spec, seed, backend));
  std::unique_ptr<Model> m(new Model(spec, std::move(w), backend));
  RETURN_IF_ERROR(m->UploadRopeTable());
  return m;
}

Model::Model(ModelSpec spec, ModelWeights weights, kernels::Backend& backend)
    : spec_(std::move(spec)), w_(std::move(weights)), be_(backend) {}

absl::Status Model::UploadRopeTable() {
  const std::vector<float> inv = RopeInvFreq(spec_.rope, spec_.head_dim);
  ASSIGN_OR_RETURN(inv_freq_, be_.Allocate(inv.size() * sizeof(float)));
  return be_.CopyToDevice(inv_freq_.data(), inv.data(), inv.size() * sizeof(float),
                          be_.default_stream());
}

size_t Model::KvPageBytes(int64_t block_size) const {
  return size_t(spec_.num_layers * 2 * block_size * spec_.num_kv_heads * spec_.head_dim) *
         sizeof(float);
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
                   Forward({&chunk, 1}, KvCacheView{seq.pages.as<float>(), seq.block_size}));
  seq.length += int64_t(tokens.size());
  return logits;
}

absl::StatusOr<std::vector<float>> Model::Forward(absl::Span<const SequenceChunk> chunks,
                                                  const KvCacheView& kv_view) {
  const ModelSpec& s = spec_;
  if (chunks.empty()) return absl::InvalidArgumentError("Forward: empty batch");
  std::lock_guard<std::mutex> lock(forward_mu_);
  if (kv_view.pages == nullptr || kv_view.block_size <= 0) {
    return absl::InvalidArgumentError("Forward: no KV pages");
  }
  const int64_t bs = kv_view.block_size;
  // Host-side plan: per token its id, position, sequence and KV slot; per sequence its block
  // table (padded to the longest); the rows whose logits are wanted.
  std::vector<int32_t> ids, positions, token_seq, slots, logit_rows;
  int64_t max_blocks = 1;
  for (const auto& c : chunks) max_blocks = std::max<int64_t>(max_blocks, c.block_table.size());
  std::vector<int32_t> tables(chunks.size() * size_t(max_blocks), -1);
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
    std::copy(c.block_table.begin(), c.block_table.end(), tables.begin() + i * max_blocks);
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
        logit_rows.push_back(int32_t(ids.size()));
      }
      ids.push_back(id);
      positions.push_back(int32_t(pos));
      token_seq.push_back(int32_t(i));
      slots.push_back(int32_t(page * bs + pos % bs));
    }
  }
  const int64_t n = int64_t(ids.size());
  const int64_t rows = int64_t(logit_rows.size());

  // LoRA: the batch's tokens grouped by adapter, uploaded once for every layer.
  std::vector<const LoraAdapter*> adapters;
  std::vector<std::vector<int32_t>> adapter_rows;
  {
    int32_t token = 0;
    for (const auto& c : chunks) {
      if (c.adapter != nullptr) {
        auto it = std::find(adapters.begin(), adapters.end(), c.adapter);
        if (it == adapters.end()) {
          adapters.push_back(c.adapter);
          adapter_rows.emplace_back();
          it = adapters.end() - 1;
        }
        auto& rows_of = adapter_rows[size_t(it - adapters.begin())];
        for (size_t j = 0; j < c.tokens.size(); ++j) rows_of.push_back(token + int32_t(j));
      }
      token += int32_t(c.tokens.size());
    }
  }
  LoraPass lora;
  if (!adapters.empty()) {
    int64_t max_rank = 0;
    for (const auto* a : adapters) max_rank = std::max(max_rank, a->rank);
    const int64_t max_features =
        std::max({s.hidden_size, s.intermediate_size, s.num_heads * s.head_dim});
    const int64_t lora_floats = n * (2 * max_features + max_rank) + 2 * n;
    ASSIGN_OR_RETURN(void* lora_ws, lora_.Get(be_, size_t(lora_floats) * sizeof(float)));
    lora.n = n;
    lora.gathered = static_cast<float*>(lora_ws);
    lora.mid = lora.gathered + n * max_features;
    lora.out = lora.mid + n * max_rank;
    int32_t* d_rows = reinterpret_cast<int32_t*>(lora.out + n * max_features);
    float* d_scales = reinterpret_cast<float*>(d_rows + n);
    std::vector<int32_t> all_rows;
    std::vector<float> all_scales;
    for (size_t i = 0; i < adapters.size(); ++i) {
      lora.groups.push_back({adapters[i], d_rows + all_rows.size(), d_scales + all_rows.size(),
                             int64_t(adapter_rows[i].size())});
      all_rows.insert(all_rows.end(), adapter_rows[i].begin(), adapter_rows[i].end());
      all_scales.insert(all_scales.end(), adapter_rows[i].size(), adapters[i]->scale);
    }
    RETURN_IF_ERROR(
        be_.CopyToDevice(d_rows, all_rows.data(), all_rows.size() * 4, be_.default_stream()));
    RETURN_IF_ERROR(
        be_.CopyToDevice(d_scales, all_scales.data(), all_scales.size() * 4, be_.default_stream()));
  }

  kernels::Stream& st = be_.default_stream();
  const int64_t h = s.hidden_size, d = s.head_dim, q_dim = s.num_heads * d,
                kv_dim = s.num_kv_heads * d;
  const int64_t mlp_cols = std::max(s.intermediate_size, s.num_experts);
  // Workspace (floats): x, hb [n, hidden]; q, attn [n, q_dim]; k, v [n, kv_dim]; MLP scratch
  // 3 * [n, mlp_cols] + gathered rows [n, hidden]; then the int32 plan.
  const int64_t floats = 2 * n * h + 2 * n * q_dim + 2 * n * kv_dim + 3 * n * mlp_cols + n * h;
  const int64_t ints = 4 * n + int64_t(tables.size()) + std::max<int64_t>(rows, 1);
  ASSIGN_OR_RETURN(void* ws, workspace_.Get(be_, size_t(floats + ints) * sizeof(float)));
  float* x = static_cast<float*>(ws);
  float* hb = x + n * h;
  float* q = hb + n * h;
  float* attn = q + n * q_dim;
  float* k = attn + n * q_dim;
  float* v = k + n * kv_dim;
  float* scratch = v + n * kv_dim;
  int32_t* d_ids = reinterpret_cast<int32_t*>(x + floats);
  int32_t* d_pos = d_ids + n;
  int32_t* d_seq = d_pos + n;
  int32_t* d_slots = d_seq + n;
  int32_t* d_tables = d_slots + n;
  int32_t* d_rows = d_tables + tables.size();
  std::vector<int32_t> plan;
  plan.reserve(size_t(ints));
  for (const auto* part : {&ids, &positions, &token_seq, &slots, &tables, &logit_rows}) {
    plan.insert(plan.end(), part->begin(), part->end());
  }
  RETURN_IF_ERROR(be_.CopyToDevice(d_ids, plan.data(), plan.size() * sizeof(int32_t), st));
  RETURN_IF_ERROR(be_.Embedding({d_ids, w_.embed.as<float>(), x, n, s.vocab_size, h}, st));

  const float scale = 1.0f / std::sqrt(float(d));
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    const kernels::PagedKv kv{kv_view.pages, bs, s.num_layers, kv_dim, l};
    RETURN_IF_ERROR(
        be_.RmsNorm({x, L.input_norm.as<float>(), hb, n, h, float(s.rms_norm_eps)}, st));
    RETURN_IF_ERROR(be_.Gemm({hb, L.q.as<float>(), q, n, q_dim, h, 0.0f}, st));
    RETURN_IF_ERROR(be_.Gemm({hb, L.k.as<float>(), k, n, kv_dim, h, 0.0f}, st));
    RETURN_IF_ERROR(be_.Gemm({hb, L.v.as<float>(), v, n, kv_dim, h, 0.0f}, st));
    RETURN_IF_ERROR(ApplyLora(lora, l, kLoraQ, hb, h, q, q_dim));
    RETURN_IF_ERROR(ApplyLora(lora, l, kLoraK, hb, h, k, kv_dim));
    RETURN_IF_ERROR(ApplyLora(lora, l, kLoraV, hb, h, v, kv_dim));
    if (s.qkv_bias) {
      RETURN_IF_ERROR(be_.BiasAdd({q, L.q_bias.as<float>(), n, q_dim}, st));
      RETURN_IF_ERROR(be_.BiasAdd({k, L.k_bias.as<float>(), n, kv_dim}, st));
      RETURN_IF_ERROR(be_.BiasAdd({v, L.v_bias.as<float>(), n, kv_dim}, st));
    }
    RETURN_IF_ERROR(
        be_.Rope({q, k, d_pos, inv_freq_.as<float>(), n, s.num_heads, s.num_kv_heads, d}, st));
    RETURN_IF_ERROR(be_.KvWrite({k, v, d_slots, kv, n}, st));
    RETURN_IF_ERROR(
        be_.PagedAttention({q, attn, kv, d_tables, d_seq, d_pos, n, int64_t(chunks.size()),
                            max_blocks, s.num_heads, s.num_kv_heads, d, s.sliding_window, scale},
                           st));
    RETURN_IF_ERROR(be_.Gemm({attn, L.o.as<float>(), hb, n, h, q_dim, 0.0f}, st));
    RETURN_IF_ERROR(ApplyLora(lora, l, kLoraO, attn, q_dim, hb, h));
    if (s.o_bias) RETURN_IF_ERROR(be_.BiasAdd({hb, L.o_bias.as<float>(), n, h}, st));
    RETURN_IF_ERROR(be_.Axpy({hb, x, n * h, 1.0f}, st));
    RETURN_IF_ERROR(be_.RmsNorm({x, L.post_norm.as<float>(), hb, n, h, float(s.rms_norm_eps)}, st));
    if (s.num_experts > 0) {
      RETURN_IF_ERROR(Moe(L, hb, x, n, scratch));
    } else {
      RETURN_IF_ERROR(Mlp(L, hb, x, n, scratch, lora, l));
    }
  }
  if (rows == 0) {
    RETURN_IF_ERROR(st.Synchronize());
    return std::vector<float>();
  }

  // The LM head only where logits are wanted: gather those rows, final norm, project.
  float* gathered = scratch + 3 * n * mlp_cols;  // [rows, hidden], rows <= n
  RETURN_IF_ERROR(be_.GatherRows({x, d_rows, gathered, rows, n, h}, st));
  RETURN_IF_ERROR(
      be_.RmsNorm({gathered, w_.final_norm.as<float>(), hb, rows, h, float(s.rms_norm_eps)}, st));
  ASSIGN_OR_RETURN(void* logits_dev, logits_.Get(be_, size_t(rows * s.vocab_size) * sizeof(float)));
  RETURN_IF_ERROR(be_.Gemm(
      {hb, w_.head().as<float>(), static_cast<float*>(logits_dev), rows, s.vocab_size, h, 0.0f},
      st));
  std::vector<float> logits(size_t(rows * s.vocab_size));
  RETURN_IF_ERROR(be_.CopyToHost(logits.data(), logits_dev, logits.size() * sizeof(float), st));
  RETURN_IF_ERROR(st.Synchronize());
  return logits;
}

// x += down(silu(gate(h)) * up(h)); h: [n, hidden].
absl::Status Model::ApplyLora(const LoraPass& pass, int64_t layer, int target, const float* x,
                              int64_t in_features, float* y, int64_t out_features) {
  kernels::Stream& st = be_.default_stream();
  for (const LoraGroup& g : pass.groups) {
    const LoraMatrix& m = g.adapter->layers[size_t(layer)][size_t(target)];
    if (m.a == nullptr) continue;
    const int64_t r = g.adapter->rank;
    RETURN_IF_ERROR(be_.GatherRows({x, g.rows, pass.gathered, g.count, pass.n, in_features}, st));
    RETURN_IF_ERROR(be_.Gemm({pass.gathered, m.a, pass.mid, g.count, r, in_features, 0.0f}, st));
    RETURN_IF_ERROR(be_.Gemm({pass.mid, m.b, pass.out, g.count, out_features, r, 0.0f}, st));
    RETURN_IF_ERROR(
        be_.ScatterAddRows({pass.out, g.rows, g.scales, y, g.count, pass.n, out_features}, st));
  }
  return absl::OkStatus();
}

absl::Status Model::Mlp(const LayerWeights& L, float* h, float* x, int64_t n, float* scratch,
                        const LoraPass& lora, int64_t layer) {
  kernels::Stream& st = be_.default_stream();
  const int64_t hid = spec_.hidden_size, inter = spec_.intermediate_size;
  float* g = scratch;
  float* u = g + n * inter;
  float* out = u + n * inter;
  RETURN_IF_ERROR(be_.Gemm({h, L.gate.as<float>(), g, n, inter, hid, 0.0f}, st));
  RETURN_IF_ERROR(be_.Gemm({h, L.up.as<float>(), u, n, inter, hid, 0.0f}, st));
  RETURN_IF_ERROR(ApplyLora(lora, layer, kLoraGate, h, hid, g, inter));
  RETURN_IF_ERROR(ApplyLora(lora, layer, kLoraUp, h, hid, u, inter));
  RETURN_IF_ERROR(be_.SiluMul({g, u, g, n * inter}, st));
  RETURN_IF_ERROR(be_.Gemm({g, L.down.as<float>(), out, n, hid, inter, 0.0f}, st));
  RETURN_IF_ERROR(ApplyLora(lora, layer, kLoraDown, g, inter, out, hid));
  return be_.Axpy({out, x, n * hid, 1.0f}, st);
}

// Mixtral's sparse MLP: route each token to its top-k experts (softmax, renormalised), run
// each expert on the tokens routed to it, and add the weighted outputs back.
absl::Status Model::Moe(const LayerWeights& L, float* h, float* x, int64_t n, float* scratch) {
  kernels::Stream& st = be_.default_stream();
  const int64_t hid = spec_.hidden_size, inter = spec_.intermediate_size,
                experts = spec_.num_experts, k = spec_.num_experts_per_tok;
  float* router_logits = scratch;  // [n, experts] (reuses the first MLP scratch block)
  RETURN_IF_ERROR(be_.Gemm({h, L.router.as<float>(), router_logits, n, experts, hid, 0.0f}, st));
  ASSIGN_OR_RETURN(void* route, route_.Get(be_, size_t(2 * n * k) * sizeof(float)));
  float* weights = static_cast<float*>(route);
  int32_t* chosen = reinterpret_cast<int32_t*>(weights + n * k);
  RETURN_IF_ERROR(be_.TopKSoftmax({router_logits, weights, chosen, n, experts, k, true}, st));
  std::vector<float> w_host(size_t(n * k));
  std::vector<int32_t> e_host(size_t(n * k));
  RETURN_IF_ERROR(be_.CopyToHost(w_host.data(), weights, w_host.size() * sizeof(float), st));
  RETURN_IF_ERROR(be_.CopyToHost(e_host.data(), chosen, e_host.size() * sizeof(int32_t), st));

  // Per expert: the tokens routed to it and their weights, uploaded once for all experts.
  std::vector<int32_t> tokens_by_expert;
  std::vector<float> weight_by_expert;
  std::vector<int64_t> begin(size_t(experts + 1), 0);
  for (int64_t e = 0; e < experts; ++e) {
    begin[size_t(e)] = int64_t(tokens_by_expert.size());
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < k; ++i) {
        if (e_host[size_t(t * k + i)] == e) {
          tokens_by_expert.push_back(int32_t(t));
          weight_by_expert.push_back(w_host[size_t(t * k + i)]);
        }
      }
    }
  }
  begin[size_t(experts)] = int64_t(tokens_by_expert.size());
  const int64_t total = begin[size_t(experts)];
  ASSIGN_OR_RETURN(void* plan, plan_.Get(be_, size_t(2 * total) * sizeof(float)));
  int32_t* idx_dev = static_cast<int32_t*>(plan);
  float* w_dev = static_cast<float*>(plan) + total;
  RETURN_IF_ERROR(be_.CopyToDevice(idx_dev, tokens_by_expert.data(), size_t(total) * 4, st));
  RETURN_IF_ERROR(be_.CopyToDevice(w_dev, weight_by_expert.data(), size_t(total) * 4, st));

  // scratch: g, u [n, inter], out [n, hidden], gathered rows [n, hidden] (a token appears at
  // most once per expert, so n rows suffice).
  float* g = scratch;
  float* u = g + n * inter;
  float* out = u + n * inter;
  float* rows = out + n * std::max(inter, experts);
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t m = begin[size_t(e + 1)] - begin[size_t(e)];
    if (m == 0) continue;
    const ExpertWeights& E = L.experts[size_t(e)];
    const int32_t* idx = idx_dev + begin[size_t(e)];
    RETURN_IF_ERROR(be_.GatherRows({h, idx, rows, m, n, hid}, st));
    RETURN_IF_ERROR(be_.Gemm({rows, E.gate.as<float>(), g, m, inter, hid, 0.0f}, st));
    RETURN_IF_ERROR(be_.Gemm({rows, E.up.as<float>(), u, m, inter, hid, 0.0f}, st));
    RETURN_IF_ERROR(be_.SiluMul({g, u, g, m * inter}, st));
    RETURN_IF_ERROR(be_.Gemm({g, E.down.as<float>(), out, m, hid, inter, 0.0f}, st));
    RETURN_IF_ERROR(be_.ScatterAddRows({out, idx, w_dev + begin[size_t(e)], x, m, n, hid}, st));
  }
  return absl::OkStatus();
}

}  // namespace arbor::engine
