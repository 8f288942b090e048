#include "engine/lora/adapter.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/json_input.h"
#include "kernels/lora.h"

namespace arbor::engine {
namespace {

using nlohmann::json;

constexpr const char* kTargetNames[kNumLoraTargets] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                       "gate_proj", "up_proj", "down_proj"};

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

absl::Status Bad(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

}  // namespace

const char* LoraTargetName(int target) { return kTargetNames[target]; }

std::pair<int64_t, int64_t> LoraTargetShape(const ModelSpec& s, int target) {
  const int64_t q = s.num_heads * s.head_dim, kv = s.num_kv_heads * s.head_dim;
  switch (target) {
    case kLoraQ:
      return {s.hidden_size, q};
    case kLoraK:
    case kLoraV:
      return {s.hidden_size, kv};
    case kLoraO:
      return {q, s.hidden_size};
    case kLoraGate:
    case kLoraUp:
      return {s.hidden_size, s.intermediate_size};
    default:
      return {s.intermediate_size, s.hidden_size};
  }
}

absl::StatusOr<PeftAdapter> OpenPeftAdapter(const std::string& dir, const ModelSpec& spec,
                                            int64_t max_rank) {
  const std::string config_path = dir + "/adapter_config.json";
  const std::string weights_path = dir + "/adapter_model.safetensors";
  if (!Exists(weights_path)) {
    for (const char* pickle : {"adapter_model.bin", "adapter_model.pt", "adapter_model.pth"}) {
      if (Exists(dir + "/" + pickle)) {
        return Bad(dir + "/" + pickle,
                   "pickle weights are refused (they can run code when loaded); save the "
                   "adapter with safe_serialization=True");
      }
    }
    return absl::NotFoundError(absl::StrCat(weights_path, ": not found"));
  }
  std::ifstream in(config_path);
  if (!in) return absl::NotFoundError(absl::StrCat(config_path, ": not found"));
  std::stringstream ss;
  ss << in.rdbuf();
  json c = json::parse(ss.str(), nullptr, false);
  if (c.is_discarded() || !c.is_object()) return Bad(config_path, "not a JSON object");

  auto get = [&](const char* key) -> const json* {
    auto it = c.find(key);
    return it == c.end() || it->is_null() ? nullptr : &*it;
  };
  if (const json* t = get("peft_type"); t == nullptr || *t != "LORA") {
    return Bad(config_path, "peft_type: only LORA adapters are supported");
  }
  for (const char* key : {"use_dora", "fan_in_fan_out"}) {
    if (const json* v = get(key); v != nullptr && v->is_boolean() && v->get<bool>()) {
      return Bad(config_path, absl::StrCat(key, ": not supported"));
    }
  }
  if (const json* v = get("bias"); v != nullptr && *v != "none") {
    return Bad(config_path, "bias: only \"none\" is supported");
  }
  for (const char* key : {"modules_to_save", "layers_to_transform"}) {
    if (const json* v = get(key); v != nullptr && !(v->is_array() && v->empty())) {
      return Bad(config_path, absl::StrCat(key, ": not supported"));
    }
  }
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (const json* v = get(key); v != nullptr && !(v->is_object() && v->empty())) {
      return Bad(config_path, absl::StrCat(key, ": per-module ranks are not supported"));
    }
  }
  const json* r = get("r");
  if (r == nullptr || !r->is_number_integer() || r->get<int64_t>() < 1) {
    return Bad(config_path, "r: must be an integer >= 1");
  }
  PeftAdapter out;
  out.weights_path = weights_path;
  out.rank = r->get<int64_t>();
  if (out.rank > max_rank) {
    return Bad(config_path, absl::StrCat("r: ", out.rank, " exceeds the maximum rank ", max_rank,
                                         " (engine.max_lora_rank)"));
  }
  const json* alpha = get("lora_alpha");
  if (alpha == nullptr || !alpha->is_number() || !std::isfinite(alpha->get<double>())) {
    return Bad(config_path, "lora_alpha: must be a number");
  }
  const bool rslora = get("use_rslora") != nullptr && get("use_rslora")->is_boolean() &&
                      get("use_rslora")->get<bool>();
  out.scale =
      float(alpha->get<double>() / (rslora ? std::sqrt(double(out.rank)) : double(out.rank)));

  const json* targets = get("target_modules");
  if (targets == nullptr || !targets->is_array() || targets->empty()) {
    return Bad(config_path, "target_modules: must be a non-empty list of module names");
  }
  std::array<bool, kNumLoraTargets> wanted{};
  for (const auto& t : *targets) {
    int found = -1;
    for (int i = 0; i < kNumLoraTargets; ++i) {
      if (t.is_string() && t.get<std::string>() == kTargetNames[i]) found = i;
    }
    if (found < 0 || (spec.num_experts > 0 && found >= kLoraGate)) {
      return Bad(config_path,
                 absl::StrCat("target_modules: unknown or unsupported module ", t.dump(),
                              spec.num_experts > 0 ? " (MoE models: attention modules only)" : ""));
    }
    wanted[size_t(found)] = true;
  }

  ASSIGN_OR_RETURN(out.file, Checkpoint::OpenFile(weights_path));
  const Checkpoint& ckpt = *out.file;
  out.layers.resize(size_t(spec.num_layers));
  size_t used = 0;
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      if (!wanted[size_t(t)]) continue;
      const auto [in_f, out_f] = LoraTargetShape(spec, t);
      const std::string prefix =
          absl::StrCat("base_model.model.model.layers.", l, t < kLoraGate ? ".self_attn." : ".mlp.",
                       kTargetNames[t], ".");
      for (int ab = 0; ab < 2; ++ab) {
        const std::string name = prefix + (ab == 0 ? "lora_A.weight" : "lora_B.weight");
        const std::vector<int64_t> shape =
            ab == 0 ? std::vector<int64_t>{out.rank, in_f} : std::vector<int64_t>{out_f, out.rank};
        const TensorView* v = ckpt.Find(name);
        if (v == nullptr) return Bad(weights_path, absl::StrCat("missing tensor \"", name, "\""));
        if (v->shape != shape) {
          return Bad(
              weights_path,
              absl::StrCat("tensor \"", name, "\" has shape [", absl::StrJoin(v->shape, ", "),
                           "], the base model and r imply [", absl::StrJoin(shape, ", "), "]"));
        }
        // The message ReadAsF32 gave when the weights were read through fp32.
        if (v->dtype != StDtype::kF32 && v->dtype != StDtype::kF16 && v->dtype != StDtype::kBF16) {
          return absl::InvalidArgumentError(absl::StrCat(
              v->file, ": tensor ", QuoteForError(v->name), ": dtype ", StDtypeName(v->dtype),
              " cannot be read as F32 (only F32, F16 and BF16 can)"));
        }
        out.layers[size_t(l)][size_t(t)][size_t(ab)] = v;
        ++used;
      }
    }
  }
  if (used != ckpt.names().size()) {
    return Bad(weights_path, absl::StrCat("holds ", ckpt.names().size(), " tensors, the config's ",
                                          "target modules explain ", used));
  }
  return out;
}

namespace {

size_t Align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// dst[i] = f(src[i]) for n elements, src unaligned (safetensors aligns nothing).
template <typename Src, typename Dst, typename F>
void Map(const uint8_t* src, size_t n, uint8_t* dst, F f) {
  for (size_t i = 0; i < n; ++i) {
    Src x;
    std::memcpy(&x, src + i * sizeof(Src), sizeof(Src));
    const Dst y = f(x);
    std::memcpy(dst + i * sizeof(Dst), &y, sizeof(Dst));
  }
}

// The 16-bit identities four lanes at a time (the common case: the file in the model's dtype):
// each 16-bit lane of `x` unchanged but NaNs, which become what `quiet` makes of them.
template <typename F>
void Map16x4(const uint8_t* src, size_t n, uint8_t* dst, F quiet) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint64_t x;
    std::memcpy(&x, src + 2 * i, 8);
    const uint64_t y = quiet(x);
    std::memcpy(dst + 2 * i, &y, 8);
  }
  Map<uint16_t, uint16_t>(src + 2 * i, n - i, dst + 2 * i,
                          [&](uint16_t x) { return uint16_t(quiet(x)); });
}

constexpr uint64_t kLanes = 0x0001000100010001ull;  // 1 in each 16-bit lane

// Bit 15 of each lane whose magnitude (bits 0-14) exceeds `inf` (the lane is a NaN); other bits
// zero. The sum stays below 2^16 in every lane, so no lane carries into the next.
constexpr uint64_t NanLanes(uint64_t x, uint64_t inf) {
  return ((x & 0x7fff * kLanes) + (0x7fff - inf) * kLanes) & 0x8000 * kLanes;
}

// FloatToBf16(Bf16ToFloat(x)) per lane: the quiet bit (0x40) set in NaNs.
constexpr uint64_t QuietBf16(uint64_t x) { return x | NanLanes(x, 0x7f80) >> 9; }

// FloatToF16(F16ToFloat(x)) per lane: NaNs become 0x7e00 with their sign.
constexpr uint64_t QuietF16(uint64_t x) {
  const uint64_t nan = (NanLanes(x, 0x7c00) >> 15) * 0xffff;  // all ones in NaN lanes
  return (x & ~nan) | (nan & ((x & 0x8000 * kLanes) | 0x7e00 * kLanes));
}

}  // namespace

void ConvertElements(const uint8_t* src, StDtype src_dtype, size_t n, kernels::DType dtype,
                     void* dst_bytes) {
  auto* dst = static_cast<uint8_t*>(dst_bytes);
  using kernels::Bf16ToFloat;
  using kernels::BitsFloat;
  using kernels::DType;
  using kernels::F16ToFloat;
  using kernels::FloatBits;
  using kernels::FloatToBf16;
  using kernels::FloatToF16;
  // Each case is StoreFromFloat(dtype, <the file's value read as fp32>); the two 16-bit
  // identities are that composition in closed form (tests/engine/adapter_pack_test.cc checks
  // every 16-bit pattern).
  switch (src_dtype) {
    case StDtype::kF32:
      if (dtype == DType::kBF16) {
        Map<uint32_t, uint16_t>(src, n, dst, [](uint32_t x) { return FloatToBf16(BitsFloat(x)); });
      } else if (dtype == DType::kF16) {
        Map<uint32_t, uint16_t>(src, n, dst, [](uint32_t x) { return FloatToF16(BitsFloat(x)); });
      } else {
        std::memcpy(dst, src, n * 4);
      }
      return;
    case StDtype::kBF16:
      if (dtype == DType::kBF16) {
        Map16x4(src, n, dst, QuietBf16);
      } else if (dtype == DType::kF16) {
        Map<uint16_t, uint16_t>(src, n, dst, [](uint16_t x) { return FloatToF16(Bf16ToFloat(x)); });
      } else {
        Map<uint16_t, uint32_t>(src, n, dst, [](uint16_t x) { return uint32_t(x) << 16; });
      }
      return;
    default:  // kF16
      if (dtype == DType::kF16) {
        Map16x4(src, n, dst, QuietF16);
      } else if (dtype == DType::kBF16) {
        Map<uint16_t, uint16_t>(src, n, dst, [](uint16_t x) { return FloatToBf16(F16ToFloat(x)); });
      } else {
        Map<uint16_t, uint32_t>(src, n, dst, [](uint16_t x) { return FloatBits(F16ToFloat(x)); });
      }
      return;
  }
}

LoraPackLayout PlanLoraPack(const PeftAdapter& adapter, size_t page_bytes, kernels::DType dtype) {
  LoraPackLayout out;
  out.num_layers = int64_t(adapter.layers.size());
  size_t used = Align256(size_t(out.num_layers * kNumLoraTargets) *
                         size_t(kernels::kLoraDirectoryEntryBytes));
  for (size_t l = 0; l < adapter.layers.size(); ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto& ab_views = adapter.layers[l][size_t(t)];
      if (ab_views[0] == nullptr || ab_views[0]->numel() == 0) continue;
      for (int ab = 0; ab < 2; ++ab) {
        const size_t elems = size_t(ab_views[size_t(ab)]->numel());
        out.plan.push_back({int32_t(l), t, ab, int64_t(used), elems});
        used += Align256(elems * kernels::DTypeSize(dtype));
      }
    }
  }
  out.num_pages = int64_t((used + page_bytes - 1) / page_bytes);
  out.packed_bytes = used;
  return out;
}

bool PackLora(const PeftAdapter& adapter, const LoraPackLayout& layout, kernels::DType dtype,
              uint8_t* dst) {
  static_assert(kernels::kLoraDirectoryEntryBytes == 2 * sizeof(int64_t), "(A, B) offsets");
  if (int64_t(adapter.layers.size()) != layout.num_layers) return false;
  std::vector<int64_t> directory(size_t(layout.num_layers * kNumLoraTargets) * 2, -1);
  const size_t directory_bytes = directory.size() * sizeof(int64_t);
  // The plan tiles the stream: each matrix starts where the previous one's padding ends.
  size_t end = Align256(directory_bytes);
  for (const LoraPlacement& p : layout.plan) {
    const TensorView* v = adapter.layers[size_t(p.layer)][size_t(p.target)][size_t(p.ab)];
    if (v == nullptr || v->numel() != int64_t(p.elems) || size_t(p.offset) != end) return false;
    if (v->dtype != StDtype::kF32 && v->dtype != StDtype::kF16 && v->dtype != StDtype::kBF16) {
      return false;
    }
    const size_t bytes = p.elems * kernels::DTypeSize(dtype);
    end = size_t(p.offset) + Align256(bytes);
    if (end > layout.packed_bytes) return false;
    ConvertElements(v->data, v->dtype, p.elems, dtype, dst + p.offset);
    std::memset(dst + p.offset + bytes, 0, end - size_t(p.offset) - bytes);
    directory[size_t(LoraMatrixId(p.layer, p.target) * 2 + p.ab)] = p.offset;
  }
  if (end != layout.packed_bytes) return false;
  std::memcpy(dst, directory.data(), directory_bytes);
  std::memset(dst + directory_bytes, 0, Align256(directory_bytes) - directory_bytes);
  return true;
}

}  // namespace arbor::engine
