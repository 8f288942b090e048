#include "engine/checkpoint/checkpoint.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "engine/checkpoint/mapped_file.h"
#include "kernels/dtype.h"
#include "tests/checkpoint/safetensors_writer.h"

namespace arbor::engine {
namespace {

using arbor::testing::Bytes;
using arbor::testing::FreshDir;
using arbor::testing::MakeRaw;
using arbor::testing::MakeSafetensors;
using arbor::testing::StTensor;
using arbor::testing::WithHeaderLen;
using arbor::testing::WriteFile;

uint32_t BitsOf(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// A directory holding `files` (name -> bytes).
std::string DirWith(const std::string& label, const std::map<std::string, std::string>& files) {
  const std::string dir = FreshDir(label);
  for (const auto& [name, bytes] : files) REQUIRE(WriteFile(dir + "/" + name, bytes));
  return dir;
}

std::unique_ptr<Checkpoint> OpenOk(const std::string& dir) {
  auto ckpt = Checkpoint::Open(dir);
  INFO(ckpt.status().ToString());
  REQUIRE(ckpt.ok());
  return std::move(*ckpt);
}

std::vector<float> ReadF32(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()), -12345.0f);
  const absl::Status s = ReadAsF32(t, out.data(), out.size());
  INFO(s.ToString());
  REQUIRE(s.ok());
  return out;
}

// fp16 -> fp32 by the definition: (-1)^s x 2^(e-15) x 1.m, subnormals 2^-14 x 0.m.
double HalfByDefinition(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1F;
  const int mant = h & 0x3FF;
  if (exp == 0x1F) return mant == 0 ? sign * HUGE_VAL : std::nan("");
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}

TEST_CASE("F32 tensors round-trip exactly through a file", "[checkpoint]") {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  std::vector<float> a(3 * 7), b(1);
  for (float& v : a) {
    const uint32_t x = bits(rng);
    std::memcpy(&v, &x, sizeof v);  // any bit pattern, NaNs included
  }
  b[0] = -0.0f;
  const std::string dir = DirWith(
      "f32", {{"model.safetensors",
               MakeSafetensors({{"a", "F32", {3, 7}, Bytes(a)}, {"b", "F32", {}, Bytes(b)}})}});
  auto ckpt = OpenOk(dir);
  const TensorView* ta = ckpt->Find("a");
  REQUIRE(ta != nullptr);
  CHECK(ta->dtype == StDtype::kF32);
  CHECK(ta->shape == std::vector<int64_t>{3, 7});
  CHECK(ta->numel() == 21);
  CHECK(ta->nbytes == 84);
  CHECK(ta->file == dir + "/model.safetensors");
  CHECK(std::memcmp(ta->data, a.data(), 84) == 0);
  const std::vector<float> got = ReadF32(*ta);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(i);
    CHECK(BitsOf(got[i]) == BitsOf(a[i]));
  }
  const TensorView* tb = ckpt->Find("b");
  REQUIRE(tb != nullptr);
  CHECK(tb->numel() == 1);
  CHECK(BitsOf(ReadF32(*tb)[0]) == BitsOf(-0.0f));
  CHECK(ckpt->names() == std::vector<std::string>{"a", "b"});
  CHECK(ckpt->total_bytes() == 88);
  CHECK(ckpt->Find("c") == nullptr);
}

TEST_CASE("F16 reads exactly: every one of the 65536 values", "[checkpoint]") {
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  auto ckpt = OpenOk(DirWith(
      "f16", {{"model.safetensors", MakeSafetensors({{"h", "F16", {256, 256}, Bytes(all)}})}}));
  const std::vector<float> got = ReadF32(*ckpt->Find("h"));
  int mismatches = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const double want = HalfByDefinition(static_cast<uint16_t>(h));
    const float g = got[h];
    bool ok;
    if (std::isnan(want)) {
      // NaN keeps its sign and payload.
      ok = std::isnan(g) && (BitsOf(g) >> 31) == (h >> 15) &&
           ((BitsOf(g) >> 13) & 0x3FF) == (h & 0x3FF) && (BitsOf(g) & 0x1FFF) == 0;
    } else {
      ok = static_cast<double>(g) == want && std::signbit(g) == static_cast<bool>(h >> 15);
    }
    if (!ok && ++mismatches <= 5) {
      FAIL_CHECK("f16 0x" << std::hex << h << " read as " << g << ", want " << want);
    }
  }
  CHECK(mismatches == 0);
  // Named landmarks, for a readable failure.
  CHECK(kernels::F16ToFloat(0x0001) == std::ldexp(1.0f, -24));     // smallest subnormal
  CHECK(kernels::F16ToFloat(0x03FF) == std::ldexp(1023.0f, -24));  // largest subnormal
  CHECK(kernels::F16ToFloat(0x0400) == std::ldexp(1.0f, -14));     // smallest normal
  CHECK(kernels::F16ToFloat(0x8001) == -std::ldexp(1.0f, -24));    // negative subnormal
  CHECK(kernels::F16ToFloat(0x7BFF) == 65504.0f);                  // largest finite
  CHECK(kernels::F16ToFloat(0x3C00) == 1.0f);
  CHECK(kernels::F16ToFloat(0xC000) == -2.0f);
  CHECK(kernels::F16ToFloat(0x7C00) == INFINITY);
  CHECK(kernels::F16ToFloat(0xFC00) == -INFINITY);
  CHECK(std::isnan(kernels::F16ToFloat(0x7E00)));
  CHECK(std::isnan(kernels::F16ToFloat(0x7C01)));  // signalling-NaN pattern stays NaN, not inf
  CHECK(BitsOf(kernels::F16ToFloat(0x8000)) == 0x80000000u);  // -0
}

TEST_CASE("BF16 reads exactly: the 16 bits shifted up", "[checkpoint]") {
  std::mt19937 rng(11);
  std::uniform_int_distribution<uint32_t> dist(0, 0xFFFF);
  std::vector<uint16_t> b = {0x0000, 0x8000, 0x0001, 0x807F, 0x3F80, 0xC000,
                             0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0x7F7F};
  for (int i = 0; i < 1000; ++i) b.push_back(static_cast<uint16_t>(dist(rng)));
  auto ckpt = OpenOk(DirWith(
      "bf16", {{"model.safetensors",
                MakeSafetensors({{"x", "BF16", {static_cast<int64_t>(b.size())}, Bytes(b)}})}}));
  const std::vector<float> got = ReadF32(*ckpt->Find("x"));
  for (size_t i = 0; i < b.size(); ++i) {
    INFO(i << " bf16 0x" << std::hex << b[i]);
    CHECK(BitsOf(got[i]) == static_cast<uint32_t>(b[i]) << 16);
  }
  CHECK(got[4] == 1.0f);
  CHECK(got[5] == -2.0f);
  CHECK(got[6] == INFINITY);
  CHECK(std::isnan(got[8]));
}

TEST_CASE("tensor data at odd offsets reads correctly (no alignment assumed)", "[checkpoint]") {
  const std::vector<float> f = {1.5f, -2.25f, 3.0f};
  auto ckpt = OpenOk(DirWith(
      "odd", {{"model.safetensors",
               MakeSafetensors({{"pad", "U8", {3}, "abc"}, {"f", "F32", {3}, Bytes(f)}})}}));
  const TensorView* t = ckpt->Find("f");
  REQUIRE(t != nullptr);
  CHECK(ReadF32(*t) == f);
  CHECK(std::string(reinterpret_cast<const char*>(ckpt->Find("pad")->data), 3) == "abc");
}

TEST_CASE("ReadAsF32 refuses other dtypes and a wrong count, naming the tensor", "[checkpoint]") {
  const std::vector<int32_t> ints = {1, 2, 3, 4};
  const std::vector<float> f = {1, 2};
  const std::string dir = DirWith(
      "ints", {{"model.safetensors", MakeSafetensors({{"layer.ids", "I32", {2, 2}, Bytes(ints)},
                                                      {"w", "F32", {2}, Bytes(f)}})}});
  auto ckpt = OpenOk(dir);
  const TensorView* ids = ckpt->Find("layer.ids");
  REQUIRE(ids != nullptr);
  CHECK(std::memcmp(ids->data, ints.data(), 16) == 0);
  std::vector<float> out(4);
  absl::Status s = ReadAsF32(*ids, out.data(), out.size());
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(s.message()), Catch::Contains("model.safetensors: tensor \"layer.ids\""));
  CHECK_THAT(std::string(s.message()), Catch::Contains("dtype I32 cannot be read as F32"));
  s = ReadAsF32(*ckpt->Find("w"), out.data(), 3);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(s.message()), Catch::Contains("tensor \"w\": asked for 3 elements"));
}

TEST_CASE("zero-element tensors load, and read as nothing", "[checkpoint]") {
  const std::vector<float> f = {1, 2};
  const std::string file = MakeRaw(
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[8,8]}}",
      0);
  auto ckpt = OpenOk(DirWith("zero", {{"model.safetensors", file + Bytes(f)}}));
  const TensorView* e = ckpt->Find("e");
  REQUIRE(e != nullptr);
  CHECK(e->numel() == 0);
  CHECK(e->nbytes == 0);
  CHECK(ReadAsF32(*e, nullptr, 0).ok());
  CHECK(ckpt->Find("b")->numel() == 0);
  CHECK(ReadF32(*ckpt->Find("a")) == f);
  CHECK(ckpt->total_bytes() == 8);
}

TEST_CASE("metadata and header padding written by the Python writer are accepted", "[checkpoint]") {
  const std::vector<float> f = {4};
  auto ckpt = OpenOk(DirWith(
      "meta", {{"model.safetensors",
                MakeSafetensors({{"w", "F32", {1}, Bytes(f)}}, {{"format", "pt"}, {"x", "y"}})}}));
  CHECK(ckpt->names() == std::vector<std::string>{"w"});
}

// Two shards and an index mapping four tensors across them.
std::map<std::string, std::string> ShardedFiles() {
  const std::vector<float> a = {1, 2, 3}, b = {4};
  const std::vector<uint16_t> c = {0x3C00, 0x4000};  // F16 1, 2
  const std::vector<uint16_t> d = {0x4040};          // BF16 3
  return {
      {"model-00001-of-00002.safetensors",
       MakeSafetensors({{"a", "F32", {3}, Bytes(a)}, {"b", "F32", {1, 1}, Bytes(b)}})},
      {"model-00002-of-00002.safetensors",
       MakeSafetensors({{"c", "F16", {2}, Bytes(c)}, {"d", "BF16", {1}, Bytes(d)}})},
      {"model.safetensors.index.json",
       R"({"metadata": {"total_size": 22}, "weight_map": {
            "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
            "c": "model-00002-of-00002.safetensors", "d": "model-00002-of-00002.safetensors"}})"},
  };
}

TEST_CASE("a sharded checkpoint loads through its index", "[checkpoint]") {
  const std::string dir = DirWith("sharded", ShardedFiles());
  auto ckpt = OpenOk(dir);
  CHECK(ckpt->names() == std::vector<std::string>{"a", "b", "c", "d"});
  CHECK(ckpt->total_bytes() == 12 + 4 + 4 + 2);
  CHECK(ckpt->Find("a")->file == dir + "/model-00001-of-00002.safetensors");
  CHECK(ckpt->Find("d")->file == dir + "/model-00002-of-00002.safetensors");
  CHECK(ReadF32(*ckpt->Find("a")) == std::vector<float>{1, 2, 3});
  CHECK(ReadF32(*ckpt->Find("b")) == std::vector<float>{4});
  CHECK(ReadF32(*ckpt->Find("c")) == std::vector<float>{1, 2});
  CHECK(ReadF32(*ckpt->Find("d")) == std::vector<float>{3});
  // The model directory may be given with a trailing slash.
  CHECK(Checkpoint::Open(dir + "/").ok());
}

TEST_CASE("a shard's tensors missing from weight_map are kept", "[checkpoint]") {
  auto files = ShardedFiles();
  files["model.safetensors.index.json"] =
      R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                         "c": "model-00002-of-00002.safetensors"}})";
  auto ckpt = OpenOk(DirWith("extra", files));
  CHECK(ckpt->names().size() == 4);
}

TEST_CASE("model.safetensors wins over an index, as in transformers", "[checkpoint]") {
  auto files = ShardedFiles();
  const std::vector<float> z = {9};
  files["model.safetensors"] = MakeSafetensors({{"z", "F32", {1}, Bytes(z)}});
  auto ckpt = OpenOk(DirWith("both", files));
  CHECK(ckpt->names() == std::vector<std::string>{"z"});
}

struct BadIndex {
  const char* what;
  std::map<std::string, std::string> replace;  // files replaced (or added) in ShardedFiles()
  std::vector<std::string> remove;             // files removed
  absl::StatusCode code;
  std::vector<std::string> must_mention;  // besides the index file name
};

TEST_CASE("bad sharded checkpoints are refused, naming the index, shard and tensor",
          "[checkpoint]") {
  const std::string kShard1 = "model-00001-of-00002.safetensors";
  const std::string kShard2 = "model-00002-of-00002.safetensors";
  const std::vector<float> one = {1};
  const std::vector<BadIndex> cases = {
      {"shard path with ../",
       {{"model.safetensors.index.json", R"({"weight_map": {"a": "../evil.safetensors"}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"tensor \"a\"", "\"../evil.safetensors\"", "not a plain file name", "'/'"}},
      {"shard path ..",
       {{"model.safetensors.index.json", R"({"weight_map": {"a": ".."}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"tensor \"a\"", "not a plain file name"}},
      {"shard in a subdirectory",
       {{"model.safetensors.index.json", R"({"weight_map": {"a": "sub/x.safetensors"}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"\"sub/x.safetensors\"", "'/'"}},
      {"absolute shard path",
       {{"model.safetensors.index.json", R"({"weight_map": {"a": "/etc/passwd"}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"\"/etc/passwd\"", "not a plain file name"}},
      {"empty shard name",
       {{"model.safetensors.index.json", R"({"weight_map": {"a": ""}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"tensor \"a\"", "empty"}},
      {"missing shard",
       {},
       {kShard2},
       absl::StatusCode::kNotFound,
       {"shard \"" + kShard2 + "\"", "No such file or directory"}},
      {"tensor missing from its shard",
       {{"model.safetensors.index.json",
         R"({"weight_map": {"a": ")" + kShard1 + R"(", "q": ")" + kShard1 + R"("}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"tensor \"q\"", "shard \"" + kShard1 + "\"", "has no such tensor"}},
      {"tensor mapped to the wrong shard",
       {{"model.safetensors.index.json", R"({"weight_map": {"a": ")" + kShard2 + R"(", "b": ")" +
                                             kShard1 + R"(", "c": ")" + kShard2 + R"("}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"tensor \"a\"", "has no such tensor", "(it is in "}},
      {"tensor in two shards",
       {{kShard2, MakeSafetensors({{"a", "F32", {1}, Bytes(one)}, {"c", "F32", {1}, Bytes(one)}})}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"tensor \"a\"", "is also in", kShard1, "only one shard"}},
      {"tensor mapped twice",
       {{"model.safetensors.index.json",
         R"({"weight_map": {"a": ")" + kShard1 + R"(", "a": ")" + kShard2 + R"("}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"tensor \"a\" is mapped twice"}},
      {"corrupt shard",
       {{kShard2, MakeRaw(R"({"c":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4)}},
       {},
       absl::StatusCode::kInvalidArgument,
       {kShard2 + ": tensor \"c\"", "needs 8"}},
      {"index not JSON",
       {{"model.safetensors.index.json", "{\"weight_map\": "}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"not valid JSON"}},
      {"index not an object",
       {{"model.safetensors.index.json", "[]"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"must be a JSON object"}},
      {"no weight_map",
       {{"model.safetensors.index.json", R"({"metadata": {}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"missing \"weight_map\""}},
      {"weight_map not an object",
       {{"model.safetensors.index.json", R"({"weight_map": ["a"]})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"\"weight_map\" must be an object"}},
      {"empty weight_map",
       {{"model.safetensors.index.json", R"({"weight_map": {}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"\"weight_map\" is empty"}},
      {"shard name not a string",
       {{"model.safetensors.index.json", R"({"weight_map": {"a": 1}})"}},
       {},
       absl::StatusCode::kInvalidArgument,
       {"tensor \"a\" maps to an integer"}},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auto files = ShardedFiles();
    for (const auto& [name, bytes] : c.replace) files[name] = bytes;
    for (const auto& name : c.remove) files.erase(name);
    auto ckpt = Checkpoint::Open(DirWith("badindex", files));
    REQUIRE_FALSE(ckpt.ok());
    const std::string msg(ckpt.status().message());
    INFO(msg);
    CHECK(ckpt.status().code() == c.code);
    CHECK_THAT(msg, Catch::Contains("model.safetensors.index.json: "));
    for (const auto& m : c.must_mention) CHECK_THAT(msg, Catch::Contains(m));
  }
}

TEST_CASE("bad single files are refused through Checkpoint::Open too", "[checkpoint]") {
  struct Bad {
    std::string bytes;
    std::string must_mention;
  };
  const std::vector<Bad> cases = {
      {"", "too short"},
      {WithHeaderLen(5000, "{}"), "past the end of the file"},
      {MakeRaw(R"({"w":{"dtype":"F32","shape":[3,4],"data_offsets":[0,10]}})", 10),
       "tensor \"w\": data_offsets [0, 10] span 10 bytes but shape [3, 4] x F32 needs 48"},
  };
  for (const auto& c : cases) {
    INFO(c.must_mention);
    const std::string dir = DirWith("badsingle", {{"model.safetensors", c.bytes}});
    auto ckpt = Checkpoint::Open(dir);
    REQUIRE_FALSE(ckpt.ok());
    CHECK(ckpt.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(ckpt.status().message()),
               Catch::StartsWith(dir + "/model.safetensors: "));
    CHECK_THAT(std::string(ckpt.status().message()), Catch::Contains(c.must_mention));
  }
}

TEST_CASE("pickle-only checkpoints are refused with a clear error", "[checkpoint]") {
  for (const char* name : {"pytorch_model.bin", "model.pt", "weights.pth"}) {
    INFO(name);
    const std::string dir = DirWith("pickle", {{name, "\x80\x02}q\x00."}, {"config.json", "{}"}});
    auto ckpt = Checkpoint::Open(dir);
    REQUIRE_FALSE(ckpt.ok());
    CHECK(ckpt.status().code() == absl::StatusCode::kFailedPrecondition);
    const std::string msg(ckpt.status().message());
    CHECK_THAT(msg, Catch::Contains(name));
    CHECK_THAT(msg, Catch::Contains("pickle"));
    CHECK_THAT(msg, Catch::Contains("safetensors"));
  }
  // With safetensors beside it, the pickle file is simply not read.
  const std::vector<float> f = {1};
  const std::string dir =
      DirWith("both", {{"pytorch_model.bin", "\x80\x02."},
                       {"model.safetensors", MakeSafetensors({{"w", "F32", {1}, Bytes(f)}})}});
  CHECK(Checkpoint::Open(dir).ok());
}

TEST_CASE("a directory without weights, or no directory, is NotFound naming the path",
          "[checkpoint]") {
  const std::string empty = DirWith("noweights", {{"config.json", "{}"}});
  auto a = Checkpoint::Open(empty);
  CHECK(a.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(a.status().message()), Catch::Contains(empty));
  CHECK_THAT(std::string(a.status().message()), Catch::Contains("model.safetensors"));

  auto b = Checkpoint::Open(empty + "/nope");
  CHECK(b.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(b.status().message()), Catch::Contains(empty + "/nope"));
  CHECK_THAT(std::string(b.status().message()), Catch::Contains("No such file or directory"));

  auto c = Checkpoint::Open(empty + "/config.json");
  CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(c.status().message()), Catch::Contains("not a directory"));
}

TEST_CASE("MappedFile maps files and names the path and errno in errors", "[checkpoint]") {
  const std::string dir = DirWith("mapped", {{"x.bin", "hello"}, {"empty", ""}});
  auto f = MappedFile::Open(dir + "/x.bin");
  REQUIRE(f.ok());
  CHECK((*f)->size() == 5);
  CHECK(std::string(reinterpret_cast<const char*>((*f)->data()), 5) == "hello");
  CHECK((*f)->path() == dir + "/x.bin");

  auto e = MappedFile::Open(dir + "/empty");
  REQUIRE(e.ok());
  CHECK((*e)->bytes().empty());

  auto missing = MappedFile::Open(dir + "/missing.safetensors");
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(missing.status().message()),
             Catch::Contains(dir + "/missing.safetensors"));
  CHECK_THAT(std::string(missing.status().message()), Catch::Contains("No such file or directory"));

  auto d = MappedFile::Open(dir);
  CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(d.status().message()), Catch::Contains("not a regular file"));
}

}  // namespace
}  // namespace arbor::engine
