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
  ASSIGN_OR_RETURN(m->inv_freq_, backend.Allocate(sizeof(float) * size_t(m->spec_.head_dim / 2)));
  const std::vector<float> inv = RopeInvFreq(m->spec_.rope, m->spec_.head_dim);
  RETURN_IF_ERROR(backend.CopyToDevice(m->inv_freq_.data(), inv.data(), inv.size() * sizeof(float),
                                       backend.default_stream()));
  return m;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Dummy(const ModelSpec& spec, uint64_t seed,
                                                    kernels::Backend& backend) {
  ASSIGN_OR_RETURN(ModelWeights w, DummyWeights(spec, seed, backend));
  std::unique_ptr<Model> m(new Model(spec, std::move(w), backend));
  ASSIGN_OR_RETURN(m->inv_freq_, backend.Allocate(sizeof(float) * size_t(spec.head_dim / 2)));
  const std::vector<float> inv = RopeInvFreq(spec.rope, spec.head_dim);
  RETURN_IF_ERROR(backend.CopyToDevice(m->inv_freq_.data(), inv.data(), inv.size() * sizeof(float),
                                       backend.default_stream()));
  return m;
}

Model::Model(ModelSpec spec, ModelWeights weights, kernels::Backend& backend)
    : spec_(std::move(spec)), w_(std::move(weights)), be_(backend) {}

absl::StatusOr<SequenceKv> Model::NewSequence(int64_t capacity) {
  if (capacity <= 0 || capacity > spec_.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence capacity ", capacity,
                     " outside [1, max_position_embeddings=", spec_.max_position_embeddings, "]"));
  }
  SequenceKv kv;
  kv.capacity = capacity;
  const size_t bytes = size_t(capacity * spec_.num_kv_heads * spec_.head_dim) * sizeof(float);
  for (int64_t l = 0; l < spec_.num_layers; ++l) {
    ASSIGN_OR_RETURN(DeviceBuffer k, be_.Allocate(bytes));
    ASSIGN_OR_RETURN(DeviceBuffer v, be_.Allocate(bytes));
    kv.k.push_back(std::move(k));
    kv.v.push_back(std::move(v));
  }
  return kv;
}

absl::StatusOr<std::vector<float>> Model::Forward(absl::Span<const int32_t> tokens, SequenceKv& kv,
                                                  bool all_positions) {
  const ModelSpec& s = spec_;
  const int64_t n = int64_t(tokens.size());
  if (n == 0) return absl::InvalidArgumentError("Forward: no tokens");
  if (kv.length + n > kv.capacity) {
    return absl::OutOfRangeError(absl::StrCat("Forward: ", kv.length, " cached + ", n,
                                              " new tokens exceed the capacity ", kv.capacity));
  }
  for (int32_t id : tokens) {
    if (id < 0 || id >= s.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " outside the vocabulary [0, ", s.vocab_size, ")"));
    }
  }
  kernels::Stream& st = be_.default_stream();
  const int64_t h = s.hidden_size, d = s.head_dim, q_dim = s.num_heads * d,
                kv_dim = s.num_kv_heads * d;
  const int64_t mlp_cols = std::max(s.intermediate_size, s.num_experts);
  // Workspace: x, h [n, hidden]; q, attn [n, q_dim]; k, v [n, kv_dim]; MLP scratch
  // 3 * [n, intermediate] + gathered rows [n, hidden]; positions and ids.
  const int64_t floats =
      2 * n * h + 2 * n * q_dim + 2 * n * kv_dim + 3 * n * mlp_cols + n * h + 4 * n;
  ASSIGN_OR_RETURN(DeviceBuffer ws, be_.Allocate(size_t(floats) * sizeof(float)));
  float* x = ws.as<float>();
  float* hb = x + n * h;
  float* q = hb + n * h;
  float* attn = q + n * q_dim;
  float* k = attn + n * q_dim;
  float* v = k + n * kv_dim;
  float* scratch = v + n * kv_dim;
  int32_t* ids = reinterpret_cast<int32_t*>(scratch + 3 * n * mlp_cols + n * h);
  int32_t* positions = ids + n;

  std::vector<int32_t> pos_host(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos_host[size_t(i)] = int32_t(kv.length + i);
  RETURN_IF_ERROR(be_.CopyToDevice(ids, tokens.data(), size_t(n) * sizeof(int32_t), st));
  RETURN_IF_ERROR(be_.CopyToDevice(positions, pos_host.data(), size_t(n) * sizeof(int32_t), st));
  RETURN_IF_ERROR(be_.Embedding({ids, w_.embed.as<float>(), x, n, s.vocab_size, h}, st));

  const float scale = 1.0f / std::sqrt(float(d));
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    RETURN_IF_ERROR(
        be_.RmsNorm({x, L.input_norm.as<float>(), hb, n, h, float(s.rms_norm_eps)}, st));
    RETURN_IF_ERROR(be_.Gemm({hb, L.q.as<float>(), q, n, q_dim, h, 0.0f}, st));
    RETURN_IF_ERROR(be_.Gemm({hb, L.k.as<float>(), k, n, kv_dim, h, 0.0f}, st));
    RETURN_IF_ERROR(be_.Gemm({hb, L.v.as<float>(), v, n, kv_dim, h, 0.0f}, st));
    if (s.qkv_bias) {
      RETURN_IF_ERROR(be_.BiasAdd({q, L.q_bias.as<float>(), n, q_dim}, st));
      RETURN_IF_ERROR(be_.BiasAdd({k, L.k_bias.as<float>(), n, kv_dim}, st));
      RETURN_IF_ERROR(be_.BiasAdd({v, L.v_bias.as<float>(), n, kv_dim}, st));
    }
    RETURN_IF_ERROR(
        be_.Rope({q, k, positions, inv_freq_.as<float>(), n, s.num_heads, s.num_kv_heads, d}, st));
    const size_t offset = size_t(kv.length * kv_dim);
    RETURN_IF_ERROR(be_.CopyOnDevice(kv.k[size_t(l)].as<float>() + offset, k,
                                     size_t(n * kv_dim) * sizeof(float), st));
    RETURN_IF_ERROR(be_.CopyOnDevice(kv.v[size_t(l)].as<float>() + offset, v,
                                     size_t(n * kv_dim) * sizeof(float), st));
    RETURN_IF_ERROR(
        be_.Attention({q, kv.k[size_t(l)].as<float>(), kv.v[size_t(l)].as<float>(), attn, positions,
                       n, kv.length + n, s.num_heads, s.num_kv_heads, d, s.sliding_window, scale},
                      st));
    RETURN_IF_ERROR(be_.Gemm({attn, L.o.as<float>(), hb, n, h, q_dim, 0.0f}, st));
    if (s.o_bias) RETURN_IF_ERROR(be_.BiasAdd({hb, L.o_bias.as<float>(), n, h}, st));
    RETURN_IF_ERROR(be_.Axpy({hb, x, n * h, 1.0f}, st));
    RETURN_IF_ERROR(be_.RmsNorm({x, L.post_norm.as<float>(), hb, n, h, float(s.rms_norm_eps)}, st));
    if (s.num_experts > 0) {
      RETURN_IF_ERROR(Moe(L, hb, x, n, scratch));
    } else {
      RETURN_IF_ERROR(Mlp(L, hb, x, n, scratch));
    }
  }
  kv.length += n;

  // Final norm and LM head over every position or only the last.
  const int64_t rows = all_positions ? n : 1;
  const float* last = x + (n - rows) * h;
  RETURN_IF_ERROR(
      be_.RmsNorm({last, w_.final_norm.as<float>(), hb, rows, h, float(s.rms_norm_eps)}, st));
  ASSIGN_OR_RETURN(DeviceBuffer logits_dev,
                   be_.Allocate(size_t(rows * s.vocab_size) * sizeof(float)));
  RETURN_IF_ERROR(be_.Gemm(
      {hb, w_.head().as<float>(), logits_dev.as<float>(), rows, s.vocab_size, h, 0.0f}, st));
  std::vector<float> logits(size_t(rows * s.vocab_size));
  RETURN_IF_ERROR(
      be_.CopyToHost(logits.data(), logits_dev.data(), logits.size() * sizeof(float), st));
  RETURN_IF_ERROR(st.Synchronize());
  return logits;
}

// x += down(silu(gate(h)) * up(h)); h: [n, hidden].
absl::Status Model::Mlp(const LayerWeights& L, float* h, float* x, int64_t n, float* scratch) {
  kernels::Stream& st = be_.default_stream();
  const int64_t hid = spec_.hidden_size, inter = spec_.intermediate_size;
  float* g = scratch;
  float* u = g + n * inter;
  float* out = u + n * inter;
  RETURN_IF_ERROR(be_.Gemm({h, L.gate.as<float>(), g, n, inter, hid, 0.0f}, st));
  RETURN_IF_ERROR(be_.Gemm({h, L.up.as<float>(), u, n, inter, hid, 0.0f}, st));
  RETURN_IF_ERROR(be_.SiluMul({g, u, g, n * inter}, st));
  RETURN_IF_ERROR(be_.Gemm({g, L.down.as<float>(), out, n, hid, inter, 0.0f}, st));
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
  ASSIGN_OR_RETURN(DeviceBuffer route, be_.Allocate(size_t(2 * n * k) * sizeof(float)));
  float* weights = route.as<float>();
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
  ASSIGN_OR_RETURN(DeviceBuffer plan, be_.Allocate(size_t(2 * total) * sizeof(float)));
  int32_t* idx_dev = plan.as<int32_t>();
  float* w_dev = plan.as<float>() + total;
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
