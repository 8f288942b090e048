// Packing an opened adapter into the stream the kernels read (engine/lora/adapter.h): the plan
// of where each matrix goes, and the element conversions from the file's dtype.
#include <cstring>

#include "engine/lora/adapter.h"
#include "kernels/lora.h"

namespace arbor::engine {

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
  out.num_experts = adapter.num_experts;
  size_t used = Align256(size_t(LoraNumMatrixIds(out.num_layers, out.num_experts)) *
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
  for (size_t l = 0; l < adapter.experts.size(); ++l) {
    for (size_t e = 0; e < adapter.experts[l].size(); ++e) {
      for (int x = 0; x < kNumLoraExpertTargets; ++x) {
        const auto& ab_views = adapter.experts[l][e][size_t(x)];
        if (ab_views[0] == nullptr || ab_views[0]->numel() == 0) continue;
        for (int ab = 0; ab < 2; ++ab) {
          const size_t elems = size_t(ab_views[size_t(ab)]->numel());
          out.plan.push_back({int32_t(l), kLoraGate + x, ab, int64_t(used), elems, int32_t(e)});
          used += Align256(elems * kernels::DTypeSize(dtype));
        }
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
  if (int64_t(adapter.layers.size()) != layout.num_layers ||
      adapter.num_experts != layout.num_experts) {
    return false;
  }
  std::vector<int64_t> directory(
      size_t(LoraNumMatrixIds(layout.num_layers, layout.num_experts)) * 2, -1);
  const size_t directory_bytes = directory.size() * sizeof(int64_t);
  // The plan tiles the stream: each matrix starts where the previous one's padding ends.
  size_t end = Align256(directory_bytes);
  for (const LoraPlacement& p : layout.plan) {
    const bool expert = p.expert >= 0;
    if (expert && (p.expert >= adapter.num_experts || p.target < kLoraGate ||
                   size_t(p.layer) >= adapter.experts.size())) {
      return false;
    }
    const TensorView* v = expert ? adapter.experts[size_t(p.layer)][size_t(p.expert)]
                                                  [size_t(p.target - kLoraGate)][size_t(p.ab)]
                                 : adapter.layers[size_t(p.layer)][size_t(p.target)][size_t(p.ab)];
    if (v == nullptr || v->numel() != int64_t(p.elems) || size_t(p.offset) != end) return false;
    if (v->dtype != StDtype::kF32 && v->dtype != StDtype::kF16 && v->dtype != StDtype::kBF16) {
      return false;
    }
    const size_t bytes = p.elems * kernels::DTypeSize(dtype);
    end = size_t(p.offset) + Align256(bytes);
    if (end > layout.packed_bytes) return false;
    ConvertElements(v->data, v->dtype, p.elems, dtype, dst + p.offset);
    std::memset(dst + p.offset + bytes, 0, end - size_t(p.offset) - bytes);
    const int64_t id = expert ? LoraExpertMatrixId(layout.num_layers, layout.num_experts, p.layer,
                                                   p.expert, p.target)
                              : LoraMatrixId(p.layer, p.target);
    directory[size_t(id * 2 + p.ab)] = p.offset;
  }
  if (end != layout.packed_bytes) return false;
  std::memcpy(dst, directory.data(), directory_bytes);
  std::memset(dst + directory_bytes, 0, Align256(directory_bytes) - directory_bytes);
  return true;
}

}  // namespace arbor::engine
