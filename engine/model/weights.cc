#include "engine/model/weights.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/model/architectures.h"

namespace arbor::engine {
namespace {

using kernels::Backend;
using kernels::DeviceBuffer;
using kernels::DType;
using kernels::Tensor;

enum class WeightKind { kMatrix, kNorm, kBias };

// Where each weight comes from: given its Hugging Face name and shape, a source writes its
// values into `dst` (a contiguous device view of exactly that many elements, inside a fused
// buffer). Checkpoint loading and dummy weights share every name, shape and place.
using Source =
    std::function<absl::Status(const std::string& name, const std::vector<int64_t>& shape,
                               WeightKind kind, const Tensor& dst)>;

class Builder {
 public:
  Builder(Backend& be, DType dtype, const Source& source)
      : be_(be), dtype_(dtype), source_(source) {}

  // A buffer of `rows` x `cols` elements.
  absl::StatusOr<DeviceBuffer> Alloc(int64_t rows, int64_t cols) {
    const size_t bytes = size_t(rows * cols) * kernels::DTypeSize(dtype_);
    bytes_ += bytes;
    return be_.Allocate(bytes);
  }
  // Rows [row, row + shape rows) of `buf` (a [*, cols] matrix, cols = the shape's last
  // dimension) from the weight `name`.
  absl::Status Fill(const DeviceBuffer& buf, int64_t row, const std::string& name,
                    const std::vector<int64_t>& shape, WeightKind kind) {
    const int64_t rows = shape.size() == 2 ? shape[0] : 1;
    const int64_t cols = shape.back();
    char* at = static_cast<char*>(buf.data()) + size_t(row * cols) * kernels::DTypeSize(dtype_);
    return source_(name, shape, kind, kernels::View(static_cast<void*>(at), dtype_, rows, cols));
  }
  // A buffer holding just the weight `name`.
  absl::StatusOr<DeviceBuffer> One(const std::string& name, const std::vector<int64_t>& shape,
                                   WeightKind kind = WeightKind::kMatrix) {
    ASSIGN_OR_RETURN(DeviceBuffer buf, Alloc(shape.size() == 2 ? shape[0] : 1, shape.back()));
    RETURN_IF_ERROR(Fill(buf, 0, name, shape, kind));
    return buf;
  }
  size_t bytes() const { return bytes_; }

 private:
  Backend& be_;
  DType dtype_;
  const Source& source_;
  size_t bytes_ = 0;
};

absl::StatusOr<ModelWeights> Build(const ModelSpec& s, DType dtype, Backend& be,
                                   const Source& source) {
  const ArchitectureTraits* traits = FindArchitecture(s.architecture);
  if (traits == nullptr) return absl::InvalidArgumentError("unsupported architecture");
  Builder b(be, dtype, source);
  const int64_t h = s.hidden_size, q_dim = s.num_heads * s.head_dim,
                kv_dim = s.num_kv_heads * s.head_dim, inter = s.intermediate_size,
                qkv_rows = q_dim + 2 * kv_dim;
  constexpr WeightKind kNorm = WeightKind::kNorm, kBias = WeightKind::kBias,
                       kMatrix = WeightKind::kMatrix;
  ModelWeights w;
  w.dtype = dtype;
  ASSIGN_OR_RETURN(w.embed, b.One("model.embed_tokens.weight", {s.vocab_size, h}));
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    LayerWeights L;
    ASSIGN_OR_RETURN(L.input_norm, b.One(p + "input_layernorm.weight", {h}, kNorm));
    ASSIGN_OR_RETURN(L.post_norm, b.One(p + "post_attention_layernorm.weight", {h}, kNorm));
    ASSIGN_OR_RETURN(L.qkv, b.Alloc(qkv_rows, h));
    RETURN_IF_ERROR(b.Fill(L.qkv, 0, p + "self_attn.q_proj.weight", {q_dim, h}, kMatrix));
    RETURN_IF_ERROR(b.Fill(L.qkv, q_dim, p + "self_attn.k_proj.weight", {kv_dim, h}, kMatrix));
    RETURN_IF_ERROR(
        b.Fill(L.qkv, q_dim + kv_dim, p + "self_attn.v_proj.weight", {kv_dim, h}, kMatrix));
    if (s.qkv_bias) {
      // One row of qkv_rows: the biases side by side (column offsets of a [1, n] matrix).
      ASSIGN_OR_RETURN(L.qkv_bias, b.Alloc(1, qkv_rows));
      const size_t elem = kernels::DTypeSize(dtype);
      auto part = [&](int64_t col, const std::string& name, int64_t n) {
        char* at = static_cast<char*>(L.qkv_bias.data()) + size_t(col) * elem;
        return source(name, {n}, kBias, kernels::View(static_cast<void*>(at), dtype, 1, n));
      };
      RETURN_IF_ERROR(part(0, p + "self_attn.q_proj.bias", q_dim));
      RETURN_IF_ERROR(part(q_dim, p + "self_attn.k_proj.bias", kv_dim));
      RETURN_IF_ERROR(part(q_dim + kv_dim, p + "self_attn.v_proj.bias", kv_dim));
    }
    ASSIGN_OR_RETURN(L.o, b.One(p + "self_attn.o_proj.weight", {h, q_dim}));
    if (s.o_bias) {
      ASSIGN_OR_RETURN(L.o_bias, b.One(p + "self_attn.o_proj.bias", {h}, kBias));
    }
    const std::string mlp = p + traits->mlp_prefix + ".";
    if (traits->moe) {
      ASSIGN_OR_RETURN(L.router, b.One(mlp + "gate.weight", {s.num_experts, h}));
      ASSIGN_OR_RETURN(L.experts_gate_up, b.Alloc(s.num_experts * 2 * inter, h));
      ASSIGN_OR_RETURN(L.experts_down, b.Alloc(s.num_experts * h, inter));
      for (int64_t e = 0; e < s.num_experts; ++e) {
        const std::string ep = absl::StrCat(mlp, "experts.", e, ".");
        RETURN_IF_ERROR(
            b.Fill(L.experts_gate_up, e * 2 * inter, ep + "w1.weight", {inter, h}, kMatrix));
        RETURN_IF_ERROR(b.Fill(L.experts_gate_up, e * 2 * inter + inter, ep + "w3.weight",
                               {inter, h}, kMatrix));
        RETURN_IF_ERROR(b.Fill(L.experts_down, e * h, ep + "w2.weight", {h, inter}, kMatrix));
      }
    } else {
      ASSIGN_OR_RETURN(L.gate_up, b.Alloc(2 * inter, h));
      RETURN_IF_ERROR(b.Fill(L.gate_up, 0, mlp + "gate_proj.weight", {inter, h}, kMatrix));
      RETURN_IF_ERROR(b.Fill(L.gate_up, inter, mlp + "up_proj.weight", {inter, h}, kMatrix));
      ASSIGN_OR_RETURN(L.down, b.One(mlp + "down_proj.weight", {h, inter}));
    }
    w.layers.push_back(std::move(L));
  }
  ASSIGN_OR_RETURN(w.final_norm, b.One("model.norm.weight", {h}, kNorm));
  if (!s.tie_word_embeddings) {
    ASSIGN_OR_RETURN(w.lm_head, b.One("lm_head.weight", {s.vocab_size, h}));
  }
  RETURN_IF_ERROR(be.default_stream().Synchronize());
  w.bytes = b.bytes();
  return w;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::optional<DType> AsDType(StDtype t) {
  switch (t) {
    case StDtype::kF32:
      return DType::kF32;
    case StDtype::kF16:
      return DType::kF16;
    case StDtype::kBF16:
      return DType::kBF16;
    default:
      return std::nullopt;
  }
}

}  // namespace

absl::StatusOr<ModelWeights> LoadWeights(const ModelSpec& spec, const Checkpoint& ckpt, DType dtype,
                                         Backend& backend) {
  std::set<std::string> used;
  size_t bytes = 0;
  const absl::Time start = absl::Now();
  absl::Time last_report = start;
  std::vector<float> wide;
  std::vector<uint8_t> narrow;
  auto source = [&](const std::string& name, const std::vector<int64_t>& shape, WeightKind,
                    const Tensor& dst) -> absl::Status {
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
    kernels::Stream& st = backend.default_stream();
    if (AsDType(t->dtype) == dtype) {
      // Already in the layout's dtype: straight from the mapping to the device.
      RETURN_IF_ERROR(backend.CopyToDevice(dst.data, t->data, t->nbytes, st));
    } else {
      wide.resize(static_cast<size_t>(t->numel()));
      RETURN_IF_ERROR(ReadAsF32(*t, wide.data(), wide.size()));
      narrow.resize(wide.size() * kernels::DTypeSize(dtype));
      kernels::StoreFloats(wide.data(), wide.size(), dtype, narrow.data());
      RETURN_IF_ERROR(backend.CopyToDevice(dst.data, narrow.data(), narrow.size(), st));
      // The staging buffers are reused for the next tensor: the copy must be done with them.
      RETURN_IF_ERROR(st.Synchronize());
    }
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
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(ModelWeights w, Build(spec, dtype, backend, source));
  // A tied model may still carry lm_head.weight; anything else unused is worth a warning (a
  // rotary cache, say), not an error: transformers ignores such tensors too.
  for (const auto& name : ckpt.names()) {
    if (!used.count(name) && name != "lm_head.weight") {
      spdlog::warn("checkpoint tensor \"{}\" is not used by {}", name, spec.architecture);
    }
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  spdlog::info("loaded {} tensors, {:.1f} MB in {:.2f}s ({:.0f} MB/s) as {}", used.size(),
               double(bytes) / 1e6, secs, double(bytes) / 1e6 / std::max(secs, 1e-9),
               kernels::DTypeName(dtype));
  return w;
}

absl::StatusOr<ModelWeights> DummyWeights(const ModelSpec& spec, uint64_t seed, DType dtype,
                                          Backend& backend) {
  uint64_t stream = 0;  // one Philox stream per weight, in Build's order
  auto source = [&](const std::string&, const std::vector<int64_t>& shape, WeightKind kind,
                    const Tensor& dst) -> absl::Status {
    float lo = -0.035f, hi = 0.035f;
    if (kind == WeightKind::kNorm) {
      lo = 0.9f;
      hi = 1.1f;
    } else if (kind == WeightKind::kMatrix) {
      hi = float(std::sqrt(3.0 / double(shape.back())));
      lo = -hi;
    }
    return backend.RandomFill({dst, seed, stream++, lo, hi}, backend.default_stream());
  };
  return Build(spec, dtype, backend, source);
}

}  // namespace arbor::engine
