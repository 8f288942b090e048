#include "engine/model/weights.h"

#include <spdlog/spdlog.h>

#include <functional>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/model/architectures.h"

namespace arbor::engine {
namespace {

using kernels::Backend;
using kernels::DeviceBuffer;

// Where each weight comes from: a name and its expected shape. The filler produces the values,
// so checkpoint loading and dummy weights share every name and shape.
using Filler = std::function<absl::StatusOr<std::vector<float>>(
    const std::string& name, const std::vector<int64_t>& shape, bool is_norm)>;

absl::StatusOr<DeviceBuffer> Upload(Backend& be, const std::vector<float>& host) {
  ASSIGN_OR_RETURN(DeviceBuffer buf, be.Allocate(host.size() * sizeof(float)));
  RETURN_IF_ERROR(
      be.CopyToDevice(buf.data(), host.data(), host.size() * sizeof(float), be.default_stream()));
  return buf;
}

absl::StatusOr<ModelWeights> Build(const ModelSpec& s, Backend& be, const Filler& fill) {
  const ArchitectureTraits* traits = FindArchitecture(s.architecture);
  if (traits == nullptr) return absl::InvalidArgumentError("unsupported architecture");
  auto get = [&](const std::string& name, std::vector<int64_t> shape,
                 bool is_norm = false) -> absl::StatusOr<DeviceBuffer> {
    ASSIGN_OR_RETURN(std::vector<float> host, fill(name, shape, is_norm));
    return Upload(be, host);
  };
  const int64_t h = s.hidden_size, q_dim = s.num_heads * s.head_dim,
                kv_dim = s.num_kv_heads * s.head_dim, inter = s.intermediate_size;
  ModelWeights w;
  ASSIGN_OR_RETURN(w.embed, get("model.embed_tokens.weight", {s.vocab_size, h}));
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    LayerWeights L;
    ASSIGN_OR_RETURN(L.input_norm, get(p + "input_layernorm.weight", {h}, true));
    ASSIGN_OR_RETURN(L.post_norm, get(p + "post_attention_layernorm.weight", {h}, true));
    ASSIGN_OR_RETURN(L.q, get(p + "self_attn.q_proj.weight", {q_dim, h}));
    ASSIGN_OR_RETURN(L.k, get(p + "self_attn.k_proj.weight", {kv_dim, h}));
    ASSIGN_OR_RETURN(L.v, get(p + "self_attn.v_proj.weight", {kv_dim, h}));
    ASSIGN_OR_RETURN(L.o, get(p + "self_attn.o_proj.weight", {h, q_dim}));
    if (s.qkv_bias) {
      ASSIGN_OR_RETURN(L.q_bias, get(p + "self_attn.q_proj.bias", {q_dim}));
      ASSIGN_OR_RETURN(L.k_bias, get(p + "self_attn.k_proj.bias", {kv_dim}));
      ASSIGN_OR_RETURN(L.v_bias, get(p + "self_attn.v_proj.bias", {kv_dim}));
    }
    if (s.o_bias) {
      ASSIGN_OR_RETURN(L.o_bias, get(p + "self_attn.o_proj.bias", {h}));
    }
    const std::string mlp = p + traits->mlp_prefix + ".";
    if (traits->moe) {
      ASSIGN_OR_RETURN(L.router, get(mlp + "gate.weight", {s.num_experts, h}));
      for (int64_t e = 0; e < s.num_experts; ++e) {
        const std::string ep = absl::StrCat(mlp, "experts.", e, ".");
        ExpertWeights E;
        ASSIGN_OR_RETURN(E.gate, get(ep + "w1.weight", {inter, h}));
        ASSIGN_OR_RETURN(E.down, get(ep + "w2.weight", {h, inter}));
        ASSIGN_OR_RETURN(E.up, get(ep + "w3.weight", {inter, h}));
        L.experts.push_back(std::move(E));
      }
    } else {
      ASSIGN_OR_RETURN(L.gate, get(mlp + "gate_proj.weight", {inter, h}));
      ASSIGN_OR_RETURN(L.up, get(mlp + "up_proj.weight", {inter, h}));
      ASSIGN_OR_RETURN(L.down, get(mlp + "down_proj.weight", {h, inter}));
    }
    w.layers.push_back(std::move(L));
  }
  ASSIGN_OR_RETURN(w.final_norm, get("model.norm.weight", {h}, true));
  if (!s.tie_word_embeddings) {
    ASSIGN_OR_RETURN(w.lm_head, get("lm_head.weight", {s.vocab_size, h}));
  }
  return w;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<ModelWeights> LoadWeights(const ModelSpec& spec, const Checkpoint& ckpt,
                                         Backend& backend) {
  std::set<std::string> used;
  size_t bytes = 0;
  const absl::Time start = absl::Now();
  absl::Time last_report = start;
  auto fill = [&](const std::string& name, const std::vector<int64_t>& shape,
                  bool) -> absl::StatusOr<std::vector<float>> {
    const TensorView* t = ckpt.Find(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint has no tensor \"", name, "\" (", spec.architecture, ")"));
    }
    if (t->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor \"", name, "\" has shape ",
                                                     ShapeString(t->shape),
                                                     ", config.json implies ", ShapeString(shape)));
    }
    std::vector<float> host(static_cast<size_t>(t->numel()));
    RETURN_IF_ERROR(ReadAsF32(*t, host.data(), host.size()));
    used.insert(name);
    bytes += t->nbytes;
    // Large checkpoints take a while: report progress every few seconds.
    if (absl::Now() - last_report > absl::Seconds(3)) {
      last_report = absl::Now();
      const double secs = absl::ToDoubleSeconds(last_report - start);
      spdlog::info("loading: {} of {} tensors, {:.2f} of {:.2f} GB ({:.0f} MB/s)", used.size(),
                   ckpt.names().size(), double(bytes) / 1e9, double(ckpt.total_bytes()) / 1e9,
                   double(bytes) / 1e6 / std::max(secs, 1e-9));
    }
    return host;
  };
  ASSIGN_OR_RETURN(ModelWeights w, Build(spec, backend, fill));
  // A tied model may still carry lm_head.weight; anything else unused is worth a warning (a
  // rotary cache, say), not an error: transformers ignores such tensors too.
  for (const auto& name : ckpt.names()) {
    if (!used.count(name) && name != "lm_head.weight") {
      spdlog::warn("checkpoint tensor \"{}\" is not used by {}", name, spec.architecture);
    }
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  spdlog::info("loaded {} tensors, {:.1f} MB in {:.2f}s ({:.0f} MB/s)", used.size(),
               double(bytes) / 1e6, secs, double(bytes) / 1e6 / std::max(secs, 1e-9));
  return w;
}

absl::StatusOr<ModelWeights> DummyWeights(const ModelSpec& spec, uint64_t seed, Backend& backend) {
  std::mt19937_64 rng(seed);
  auto fill = [&](const std::string&, const std::vector<int64_t>& shape,
                  bool is_norm) -> absl::StatusOr<std::vector<float>> {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> host(static_cast<size_t>(n));
    // Scaled like a trained model's weights so activations stay finite through many layers.
    const float stddev = shape.size() == 2 ? float(1.0 / std::sqrt(double(shape[1]))) : 0.02f;
    std::normal_distribution<float> normal(0.0f, stddev);
    std::uniform_real_distribution<float> near_one(0.9f, 1.1f);
    for (auto& x : host) x = is_norm ? near_one(rng) : normal(rng);
    return host;
  };
  return Build(spec, backend, fill);
}

}  // namespace arbor::engine
