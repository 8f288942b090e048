// Packing PEFT adapters straight from the mapped safetensors file into the stream the LoRA
// kernels read (engine/lora/adapter.h): every element conversion gives the bits of the old path
// (ReadAsF32 to fp32, then kernels::StoreFloats), a BF16, an F16 and an F32 file of the same
// adapter pack to the same, independently laid out bytes for each model dtype, every byte of the
// host copy is written (it is not cleared first), broken files are refused naming the file, and
// registrations from several threads all land.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/checkpoint/checkpoint.h"
#include "engine/lora/adapter.h"
#include "engine/lora/adapter_store.h"
#include "engine/model/hf_config.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/dtype.h"
#include "memory/unified_pool.h"
#include "tests/checkpoint/safetensors_writer.h"

namespace arbor::engine {
namespace {

namespace fs = std::filesystem;
using kernels::DType;

constexpr DType kModelDtypes[] = {DType::kF32, DType::kF16, DType::kBF16};
constexpr StDtype kFileDtypes[] = {StDtype::kF32, StDtype::kF16, StDtype::kBF16};

size_t Align256(size_t n) { return (n + 255) / 256 * 256; }

// What registration did before it read straight from the mapping: the tensor read as fp32
// (ReadAsF32), then rounded to the model's dtype (kernels::StoreFloats).
std::vector<uint8_t> OldPath(const uint8_t* src, StDtype from, size_t n, DType to) {
  TensorView v;
  v.name = "t";
  v.file = "f";
  v.dtype = from;
  v.shape = {int64_t(n)};
  v.data = src;
  v.nbytes = n * StDtypeSize(from);
  std::vector<float> f32(n);
  REQUIRE(ReadAsF32(v, f32.data(), n).ok());
  std::vector<uint8_t> out(n * kernels::DTypeSize(to));
  kernels::StoreFloats(f32.data(), n, to, out.data());
  return out;
}

std::vector<uint8_t> NewPath(const uint8_t* src, StDtype from, size_t n, DType to) {
  std::vector<uint8_t> out(n * kernels::DTypeSize(to), 0xAB);
  ConvertElements(src, from, n, to, out.data());
  return out;
}

TEST_CASE("every 16-bit pattern converts to the bits of the fp32 path", "[lora]") {
  // Shifted by one byte (safetensors aligns nothing) and sliced at odd lengths (the four-lane
  // loop's tail).
  std::vector<uint8_t> bytes(1 + 2 * 65536);
  for (uint32_t i = 0; i < 65536; ++i) {
    bytes[1 + 2 * i] = uint8_t(i & 0xff);
    bytes[2 + 2 * i] = uint8_t(i >> 8);
  }
  for (StDtype from : {StDtype::kBF16, StDtype::kF16}) {
    for (DType to : kModelDtypes) {
      INFO(StDtypeName(from) << " -> " << kernels::DTypeName(to));
      CHECK(NewPath(bytes.data() + 1, from, 65536, to) ==
            OldPath(bytes.data() + 1, from, 65536, to));
      for (size_t start : {size_t(0), size_t(3)}) {
        for (size_t n : {size_t(0), size_t(1), size_t(3), size_t(5), size_t(4099)}) {
          const uint8_t* p = bytes.data() + 1 + 2 * (start * 4099 % 60000);
          CHECK(NewPath(p, from, n, to) == OldPath(p, from, n, to));
        }
      }
    }
  }
}

TEST_CASE("fp32 values, special ones included, convert to the bits of the fp32 path", "[lora]") {
  std::vector<uint32_t> bits = {
      0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001,
      0x7f800001,  // signalling NaN
      0x7fbfffff, 0x00000001, 0x807fffff, 0x33000000, 0x33000001, 0x38800000, 0x387fffff,
      0x477fefff, 0x477ff000, 0x3f808000, 0x3f818000, 0x3f800fff, 0x3f801000, 0x3f803000};
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> any;
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (int i = 0; i < 20000; ++i) bits.push_back(any(rng));
  for (int i = 0; i < 20000; ++i) bits.push_back(kernels::FloatBits(normal(rng)));
  std::vector<uint8_t> bytes(1 + 4 * bits.size());
  std::memcpy(bytes.data() + 1, bits.data(), 4 * bits.size());
  for (DType to : kModelDtypes) {
    INFO("F32 -> " << kernels::DTypeName(to));
    CHECK(NewPath(bytes.data() + 1, StDtype::kF32, bits.size(), to) ==
          OldPath(bytes.data() + 1, StDtype::kF32, bits.size(), to));
  }
}

// The test model's shapes (hidden 64, q 64, k/v 32, intermediate 96, 2 layers).
ModelSpec Spec() {
  auto spec = LoadHfConfig("tests/data/models/llama");
  REQUIRE(spec.ok());
  return *spec;
}

// Odd, so that matrices end off the 256-byte grid and the stream has padding to write.
constexpr int64_t kRank = 5;

std::string TensorName(int64_t layer, int target, int ab) {
  return "base_model.model.model.layers." + std::to_string(layer) +
         (target < kLoraGate ? ".self_attn." : ".mlp.") + LoraTargetName(target) +
         (ab == 0 ? ".lora_A.weight" : ".lora_B.weight");
}

// Element i of matrix (layer, target, ab): a multiple of 2^-10 below 1/8 in magnitude, exact in
// BF16, F16 and F32 alike.
float Value(int64_t layer, int target, int ab, size_t i) {
  const int64_t m =
      int64_t((i * 37 + size_t(layer) * 11 + size_t(target) * 5 + size_t(ab) * 3) % 255) - 127;
  return float(m) / 1024.0f;
}

std::vector<int64_t> Shape(const ModelSpec& spec, int target, int ab) {
  const auto [in, out] = LoraTargetShape(spec, target);
  return ab == 0 ? std::vector<int64_t>{kRank, in} : std::vector<int64_t>{out, kRank};
}

std::string Encode(const std::vector<float>& values, StDtype dtype) {
  const DType as = dtype == StDtype::kF32   ? DType::kF32
                   : dtype == StDtype::kF16 ? DType::kF16
                                            : DType::kBF16;
  std::string out(values.size() * kernels::DTypeSize(as), '\0');
  kernels::StoreFloats(values.data(), values.size(), as, out.data());
  return out;
}

// The tensors of an adapter on every target of every layer, in `dtype`.
std::vector<testing::StTensor> Tensors(const ModelSpec& spec, StDtype dtype) {
  std::vector<testing::StTensor> tensors;
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      for (int ab = 0; ab < 2; ++ab) {
        const std::vector<int64_t> shape = Shape(spec, t, ab);
        std::vector<float> v(size_t(shape[0] * shape[1]));
        for (size_t i = 0; i < v.size(); ++i) v[i] = Value(l, t, ab, i);
        tensors.push_back({TensorName(l, t, ab), StDtypeName(dtype), shape, Encode(v, dtype)});
      }
    }
  }
  return tensors;
}

std::string WriteAdapter(const std::string& dir, const std::vector<testing::StTensor>& tensors) {
  fs::create_directories(dir);
  REQUIRE(testing::WriteFile(
      dir + "/adapter_config.json",
      "{\"peft_type\": \"LORA\", \"r\": " + std::to_string(kRank) +
          ", \"lora_alpha\": 16, \"bias\": \"none\", "
          "\"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", "
          "\"up_proj\", \"down_proj\"]}"));
  const std::string weights = dir + "/adapter_model.safetensors";
  REQUIRE(testing::WriteFile(weights, testing::MakeSafetensors(tensors)));
  return weights;
}

// The stream kernels/lora.h reads, laid out here from its description: a directory of
// (A offset, B offset) int64 pairs by LoraMatrixId (-1: none), then each matrix in (layer,
// target, A then B) order at the next 256-byte boundary, zero padding throughout.
std::vector<uint8_t> ExpectedStream(const ModelSpec& spec, DType dtype) {
  const size_t entries = size_t(spec.num_layers * kNumLoraTargets);
  std::vector<int64_t> directory(2 * entries, -1);
  std::vector<uint8_t> out(Align256(entries * 16), 0);
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      for (int ab = 0; ab < 2; ++ab) {
        const std::vector<int64_t> shape = Shape(spec, t, ab);
        const size_t n = size_t(shape[0] * shape[1]);
        directory[size_t(LoraMatrixId(l, t) * 2 + ab)] = int64_t(out.size());
        const size_t at = out.size();
        out.resize(at + Align256(n * kernels::DTypeSize(dtype)), 0);
        for (size_t i = 0; i < n; ++i) {
          kernels::StoreFromFloat(out.data() + at, dtype, int64_t(i), Value(l, t, ab, i));
        }
      }
    }
  }
  std::memcpy(out.data(), directory.data(), directory.size() * 8);
  return out;
}

std::string Root(const std::string& label) { return testing::FreshDir("adapter_pack_" + label); }

TEST_CASE("a BF16, an F16 and an F32 file of one adapter pack to the same bytes", "[lora]") {
  const ModelSpec spec = Spec();
  const std::string root = Root("dtypes");
  for (DType model : kModelDtypes) {
    const std::vector<uint8_t> want = ExpectedStream(spec, model);
    for (StDtype file : kFileDtypes) {
      INFO(StDtypeName(file) << " file, " << kernels::DTypeName(model) << " model");
      const std::string dir = root + "/" + StDtypeName(file);
      if (!fs::exists(dir)) WriteAdapter(dir, Tensors(spec, file));
      auto adapter = OpenPeftAdapter(dir, spec, kRank);
      REQUIRE(adapter.ok());
      CHECK(adapter->rank == kRank);
      CHECK(adapter->scale == float(16.0 / kRank));
      const LoraPackLayout layout = PlanLoraPack(*adapter, 4096, model);
      REQUIRE(layout.packed_bytes == want.size());
      CHECK(layout.num_pages == int64_t((want.size() + 4095) / 4096));
      CHECK(layout.plan.size() == size_t(spec.num_layers * kNumLoraTargets * 2));
      // Poisoned, not cleared: the pack writes every byte, padding included.
      std::vector<uint8_t> got(layout.packed_bytes, 0xAB);
      REQUIRE(PackLora(*adapter, layout, model, got.data()));
      CHECK(got == want);
    }
  }
}

TEST_CASE("a pack whose file no longer matches the layout is refused", "[lora]") {
  const ModelSpec spec = Spec();
  const std::string root = Root("mismatch");
  WriteAdapter(root + "/a", Tensors(spec, StDtype::kBF16));
  auto adapter = OpenPeftAdapter(root + "/a", spec, kRank);
  REQUIRE(adapter.ok());
  const LoraPackLayout layout = PlanLoraPack(*adapter, 4096, DType::kBF16);
  std::vector<uint8_t> dst(layout.packed_bytes);
  PeftAdapter fewer = std::move(*adapter);
  fewer.layers[1][kLoraV][1] = nullptr;
  CHECK_FALSE(PackLora(fewer, layout, DType::kBF16, dst.data()));
  fewer.layers.pop_back();
  CHECK_FALSE(PackLora(fewer, layout, DType::kBF16, dst.data()));
}

struct Store {
  kernels::CpuBackend cpu;
  std::unique_ptr<memory::UnifiedPool> pool;
  std::unique_ptr<AdapterStore> store;
  Store(const std::string& root, const ModelSpec& spec, DType dtype) {
    auto p = memory::UnifiedPool::Create(cpu, 4096, 64);
    REQUIRE(p.ok());
    pool = std::move(*p);
    AdapterStoreOptions o;
    o.root = root;
    o.max_rank = kRank;
    o.dtype = dtype;
    store = std::make_unique<AdapterStore>(*pool, cpu, spec, o);
  }
};

// `mutate` applied to the BF16 adapter's file image; the error of opening and of registering it.
void ExpectRefused(const std::string& label, const std::function<void(std::string&)>& mutate,
                   const std::string& want) {
  const ModelSpec spec = Spec();
  const std::string root = Root(label);
  const std::string weights = WriteAdapter(root + "/a", Tensors(spec, StDtype::kBF16));
  std::string image = testing::MakeSafetensors(Tensors(spec, StDtype::kBF16));
  mutate(image);
  REQUIRE(testing::WriteFile(weights, image));
  auto opened = OpenPeftAdapter(root + "/a", spec, kRank);
  REQUIRE_FALSE(opened.ok());
  INFO(opened.status().ToString());
  CHECK(opened.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(opened.status().message()), Catch::StartsWith(weights + ": "));
  CHECK_THAT(std::string(opened.status().message()), Catch::Contains(want));
  Store s(root, spec, DType::kBF16);
  auto registered = s.store->Register("a", "a");
  REQUIRE_FALSE(registered.ok());
  CHECK(registered.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(registered.status().message()), Catch::Contains("a/adapter_model"));
  CHECK_THAT(std::string(registered.status().message()), Catch::Contains(want));
  CHECK(s.store->stats().host_bytes_used == 0);
}

TEST_CASE("a truncated or corrupt file is refused, naming the file", "[lora]") {
  SECTION("truncated in the data") {
    ExpectRefused(
        "truncated", [](std::string& f) { f.resize(f.size() / 2); },
        "run past the end of the data section");
  }
  SECTION("truncated in the header") {
    ExpectRefused(
        "truncated_header", [](std::string& f) { f.resize(40); }, "header length");
  }
  SECTION("a corrupt header") {
    ExpectRefused(
        "corrupt_header", [](std::string& f) { f[8] = 'x'; }, "header is not valid JSON");
  }
}

TEST_CASE("tensors of the wrong dtype or shape are refused, naming the file and tensor", "[lora]") {
  const ModelSpec spec = Spec();
  SECTION("dtype") {
    std::vector<testing::StTensor> tensors = Tensors(spec, StDtype::kBF16);
    tensors[3].dtype = "I16";  // same size: the file is well formed
    const std::string root = Root("int16");
    const std::string weights = WriteAdapter(root + "/a", tensors);
    auto opened = OpenPeftAdapter(root + "/a", spec, kRank);
    REQUIRE_FALSE(opened.ok());
    CHECK(std::string(opened.status().message()) ==
          weights + ": tensor \"" + tensors[3].name +
              "\": dtype I16 cannot be read as F32 (only F32, F16 and BF16 can)");
  }
  SECTION("shape") {
    std::vector<testing::StTensor> tensors = Tensors(spec, StDtype::kF32);
    tensors[0].shape = {kRank * 2, spec.hidden_size / 2};
    const std::string root = Root("shape");
    const std::string weights = WriteAdapter(root + "/a", tensors);
    auto opened = OpenPeftAdapter(root + "/a", spec, kRank);
    REQUIRE_FALSE(opened.ok());
    CHECK(std::string(opened.status().message()) ==
          weights + ": tensor \"" + tensors[0].name +
              "\" has shape [10, 32], the base model and r imply [5, 64]");
  }
}

TEST_CASE("registrations from several threads all land", "[lora]") {
  const ModelSpec spec = Spec();
  const std::string root = Root("threads");
  for (StDtype file : kFileDtypes)
    WriteAdapter(root + "/" + StDtypeName(file), Tensors(spec, file));
  Store s(root, spec, DType::kBF16);
  constexpr int kThreads = 4, kPerThread = 6;
  std::vector<std::thread> threads;
  std::vector<absl::Status> errors(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int k = t * kPerThread + i;
        auto info = s.store->Register("n" + std::to_string(k), StDtypeName(kFileDtypes[k % 3]));
        if (!info.ok()) errors[size_t(t)] = info.status();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& e : errors) CHECK(e.ok());
  const int64_t bytes = int64_t(ExpectedStream(spec, DType::kBF16).size());
  const AdapterStoreStats stats = s.store->stats();
  CHECK(stats.registered == kThreads * kPerThread);
  CHECK(stats.host_bytes_used == kThreads * kPerThread * bytes);
  for (const AdapterInfo& info : s.store->List()) CHECK(info.host_bytes == bytes);
}

}  // namespace
}  // namespace arbor::engine
