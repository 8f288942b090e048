#include "engine/checkpoint/safetensors.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/json_input.h"
#include "tests/checkpoint/safetensors_writer.h"

namespace arbor::engine {
namespace {

using arbor::testing::Bytes;
using arbor::testing::MakeRaw;
using arbor::testing::MakeSafetensors;
using arbor::testing::StTensor;
using arbor::testing::WithHeaderLen;

absl::Span<const uint8_t> Span(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// A header of one F32 tensor "w" with the given shape and offsets, as JSON text.
std::string OneTensor(const std::string& shape, const std::string& offsets,
                      const std::string& dtype = "\"F32\"") {
  return "{\"w\":{\"dtype\":" + dtype + ",\"shape\":" + shape + ",\"data_offsets\":" + offsets +
         "}}";
}

TEST_CASE("a well-formed file parses: dtypes, shapes, file offsets, metadata", "[safetensors]") {
  const std::vector<StTensor> tensors = {
      {"b.bias", "F16", {3}, std::string(6, '\x01')},
      {"a.weight", "F32", {2, 3}, std::string(24, '\x02')},
      {"scalar", "BF16", {}, std::string(2, '\x03')},
  };
  const std::string file = MakeSafetensors(tensors, {{"format", "pt"}});
  auto index = ParseSafetensorsHeader(Span(file), "ok.safetensors");
  REQUIRE(index.ok());
  CHECK(index->header_len % 8 == 0);
  CHECK(index->data_offset == 8 + index->header_len);
  CHECK(index->data_len == 32);
  CHECK(index->metadata == std::map<std::string, std::string>{{"format", "pt"}});
  REQUIRE(index->tensors.size() == 3);
  // In file order, whatever the JSON order (nlohmann sorts keys).
  CHECK(index->tensors[0].name == "b.bias");
  CHECK(index->tensors[0].dtype == StDtype::kF16);
  CHECK(index->tensors[0].shape == std::vector<int64_t>{3});
  CHECK(index->tensors[0].offset == index->data_offset);
  CHECK(index->tensors[0].nbytes == 6);
  CHECK(index->tensors[1].name == "a.weight");
  CHECK(index->tensors[1].shape == std::vector<int64_t>{2, 3});
  CHECK(index->tensors[1].offset == index->data_offset + 6);
  CHECK(index->tensors[1].nbytes == 24);
  CHECK(index->tensors[2].name == "scalar");
  CHECK(index->tensors[2].shape.empty());
  CHECK(index->tensors[2].nbytes == 2);
  CHECK(file[index->tensors[2].offset] == '\x03');
}

TEST_CASE("every listed dtype is accepted with its size", "[safetensors]") {
  const std::vector<std::pair<const char*, size_t>> dtypes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},     {"I32", 4},
      {"I16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
  };
  std::vector<StTensor> tensors;
  for (const auto& [name, size] : dtypes) {
    tensors.push_back({std::string("t_") + name, name, {5}, std::string(5 * size, '\0')});
  }
  auto index = ParseSafetensorsHeader(Span(MakeSafetensors(tensors)), "all.safetensors");
  REQUIRE(index.ok());
  REQUIRE(index->tensors.size() == dtypes.size());
  for (size_t i = 0; i < dtypes.size(); ++i) {
    INFO(dtypes[i].first);
    CHECK(std::string(StDtypeName(index->tensors[i].dtype)) == dtypes[i].first);
    CHECK(StDtypeSize(index->tensors[i].dtype) == dtypes[i].second);
    CHECK(StDtypeFromName(dtypes[i].first) == index->tensors[i].dtype);
  }
  CHECK_FALSE(StDtypeFromName("f32").has_value());
  CHECK_FALSE(StDtypeFromName("U16").has_value());
}

TEST_CASE("zero-element tensors are accepted, between others and at the end", "[safetensors]") {
  const std::string file = MakeRaw(
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"empty\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
      "\"empty2d\":{\"dtype\":\"BF16\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
      "\"huge_but_empty\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904,0,"
      "4611686018427387904],\"data_offsets\":[8,8]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[8,11]},"
      "\"tail\":{\"dtype\":\"I32\",\"shape\":[7,0],\"data_offsets\":[11,11]}}",
      11);
  auto index = ParseSafetensorsHeader(Span(file), "zero.safetensors");
  REQUIRE(index.ok());
  REQUIRE(index->tensors.size() == 6);
  for (const auto& t : index->tensors) {
    if (t.name == "a" || t.name == "b") continue;
    INFO(t.name);
    CHECK(t.nbytes == 0);
  }
  CHECK(index->tensors.back().name == "tail");
}

TEST_CASE("an empty header with no data is a valid (empty) file", "[safetensors]") {
  auto index = ParseSafetensorsHeader(Span(MakeRaw("{}", 0)), "empty.safetensors");
  REQUIRE(index.ok());
  CHECK(index->tensors.empty());
  auto padded = ParseSafetensorsHeader(Span(MakeRaw("{}      ", 0)), "empty.safetensors");
  CHECK(padded.ok());
}

TEST_CASE("keys of a tensor entry beyond dtype, shape and data_offsets are ignored",
          "[safetensors]") {
  const std::string file =
      MakeRaw("{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2],\"note\":[1]}}", 2);
  CHECK(ParseSafetensorsHeader(Span(file), "x.safetensors").ok());
}

struct BadFile {
  const char* what;
  std::string bytes;
  std::vector<std::string> must_mention;  // besides the file name
};

std::vector<BadFile> BadFiles() {
  const std::string kName = "model.layers.0.mlp.up_proj.weight";
  std::vector<BadFile> cases = {
      {"empty file", "", {"0 bytes", "too short"}},
      {"file shorter than 8 bytes", std::string(7, '\x02'), {"7 bytes", "too short"}},
      {"header length 0", WithHeaderLen(0, "{}"), {"header length 0", "too small"}},
      {"header length 1", WithHeaderLen(1, "{}"), {"header length 1", "too small"}},
      {"header length over 100 MB",
       WithHeaderLen(100'000'001, "{}"),
       {"header length 100000001", "limit"}},
      {"header length 2^64-1", WithHeaderLen(~uint64_t{0}, "{}"), {"limit"}},
      {"header length past the file",
       WithHeaderLen(100, "{\"a\":1}"),
       {"header length 100", "past the end of the file"}},
      {"header length one past the file", WithHeaderLen(3, "{}"), {"past the end of the file"}},
      {"non-UTF-8 byte in the header", MakeRaw("{\"w\xff\":1}", 0), {"not valid UTF-8", "0xff"}},
      {"overlong UTF-8 in the header", MakeRaw("{\"\xc0\xaf\":1}", 0), {"not valid UTF-8"}},
      {"UTF-8 surrogate in the header", MakeRaw("{\"\xed\xa0\x80\":1}", 0), {"not valid UTF-8"}},
      {"truncated UTF-8 at the header end", MakeRaw("{}\xe2\x82", 0), {"not valid UTF-8"}},
      {"header is not JSON", MakeRaw("{\"w\": ", 0), {"not valid JSON"}},
      {"header has trailing garbage", MakeRaw("{} x", 0), {"not valid JSON"}},
      {"header is a JSON array", MakeRaw("[1, 2]", 0), {"must be a JSON object", "an array"}},
      {"header is a JSON string", MakeRaw("\"abc\"", 0), {"must be a JSON object", "a string"}},
      {"entry is not an object", MakeRaw("{\"w\":5}", 0), {"tensor \"w\"", "an integer"}},
      {"missing dtype",
       MakeRaw("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
       {"tensor \"w\"", "missing \"dtype\""}},
      {"missing shape",
       MakeRaw("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4),
       {"tensor \"w\"", "missing \"shape\""}},
      {"missing data_offsets",
       MakeRaw("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4),
       {"tensor \"w\"", "missing \"data_offsets\""}},
      {"dtype not a string",
       MakeRaw(OneTensor("[1]", "[0,4]", "4"), 4),
       {"tensor \"w\"", "\"dtype\" must be a string"}},
      {"unknown dtype",
       MakeRaw(OneTensor("[1]", "[0,4]", "\"Q4_K\""), 4),
       {"tensor \"w\"", "unknown dtype \"Q4_K\"", "BF16"}},
      {"lower-case dtype",
       MakeRaw(OneTensor("[1]", "[0,4]", "\"f32\""), 4),
       {"tensor \"w\"", "unknown dtype \"f32\""}},
      {"shape not an array",
       MakeRaw(OneTensor("\"3\"", "[0,12]"), 12),
       {"tensor \"w\"", "\"shape\" must be an array"}},
      {"negative shape",
       MakeRaw(OneTensor("[-3,4]", "[0,48]"), 48),
       {"tensor \"w\"", "shape[0] is -3"}},
      {"fractional shape",
       MakeRaw(OneTensor("[3,4.5]", "[0,48]"), 48),
       {"tensor \"w\"", "shape[1] is 4.5"}},
      {"shape dimension 2^64-1",
       MakeRaw(OneTensor("[18446744073709551615]", "[0,4]"), 4),
       {"tensor \"w\"", "shape[0] is 18446744073709551615", "2^63"}},
      {"shape dimension a string",
       MakeRaw(OneTensor("[\"3\"]", "[0,12]"), 12),
       {"tensor \"w\"", "shape[0] is \"3\""}},
      {"shape x dtype overflows",
       MakeRaw(OneTensor("[1099511627776,1099511627776]", "[0,4]"), 4),
       {"tensor \"w\"", "shape [1099511627776, 1099511627776] x F32 overflows"}},
      {"shape x dtype size overflows only through the dtype size",
       MakeRaw(OneTensor("[4611686018427387904]", "[0,4]", "\"F64\""), 4),
       {"tensor \"w\"", "overflows"}},
      {"data_offsets not an array",
       MakeRaw(OneTensor("[1]", "4"), 4),
       {"tensor \"w\"", "\"data_offsets\" must be [begin, end]"}},
      {"data_offsets of one number",
       MakeRaw(OneTensor("[1]", "[4]"), 4),
       {"tensor \"w\"", "an array of 1"}},
      {"data_offsets of three numbers",
       MakeRaw(OneTensor("[1]", "[0,2,4]"), 4),
       {"tensor \"w\"", "an array of 3"}},
      {"negative data offset",
       MakeRaw(OneTensor("[1]", "[-4,0]"), 4),
       {"tensor \"w\"", "[-4, 0] must be two non-negative integers"}},
      {"data offset a string",
       MakeRaw(OneTensor("[1]", "[0,\"4\"]"), 4),
       {"tensor \"w\"", "must be two non-negative integers"}},
      {"data offset a huge float",
       MakeRaw(OneTensor("[1]", "[0,1e30]"), 4),
       {"tensor \"w\"", "must be two non-negative integers"}},
      {"end before begin",
       MakeRaw(OneTensor("[1]", "[4,0]"), 4),
       {"tensor \"w\"", "[4, 0] end before they begin"}},
      {"span differs from shape bytes",
       MakeRaw("{\"" + kName + "\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,10]}}",
               10),
       {"tensor \"" + kName +
        "\": data_offsets [0, 10] span 10 bytes but shape [3, 4] x F32 "
        "needs 48"}},
      {"offsets past the data section",
       MakeRaw(OneTensor("[3,4]", "[0,48]"), 40),
       {"tensor \"w\"", "run past the end of the data section (40 bytes)"}},
      {"offsets past the data section by far",
       MakeRaw(OneTensor("[1]", "[18446744073709551611,18446744073709551615]"), 4),
       {"tensor \"w\"", "past the end of the data section"}},
      {"offsets not starting at 0",
       MakeRaw(OneTensor("[3,4]", "[4,52]"), 52),
       {"tensor \"w\"", "do not start at 0"}},
      {"gap between tensors",
       MakeRaw("{\"a\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[52,100]}}",
               100),
       {"tensor \"b\"", "gap after tensor \"a\"", "bytes [48, 52)"}},
      {"overlapping tensors",
       MakeRaw("{\"a\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[40,88]}}",
               88),
       {"tensor \"b\"", "overlap tensor \"a\" [0, 48]"}},
      {"two tensors on the same bytes",
       MakeRaw("{\"a\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]},"
               "\"b\":{\"dtype\":\"I32\",\"shape\":[12],\"data_offsets\":[0,48]}}",
               48),
       {"tensor \"b\"", "overlap tensor \"a\""}},
      {"zero-element tensor inside another",
       MakeRaw("{\"a\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[0,48]},"
               "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}",
               48),
       {"overlap"}},
      {"trailing bytes after the last tensor",
       MakeRaw(OneTensor("[3,4]", "[0,48]"), 50),
       {"tensor \"w\"", "ends at data offset 48", "data section is 50 bytes"}},
      {"no tensors but data bytes", MakeRaw("{}", 4), {"no tensors", "4 bytes"}},
      {"duplicate tensor key",
       MakeRaw("{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
               "\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}",
               4),
       {"tensor \"w\"", "defined twice"}},
      {"duplicate key inside an entry",
       MakeRaw("{\"w\":{\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,2]}}",
               2),
       {"tensor \"w\"", "key \"dtype\" appears twice"}},
      {"metadata not an object",
       MakeRaw("{\"__metadata__\":[\"a\"]}", 0),
       {"\"__metadata__\" must be an object of strings", "an array"}},
      {"metadata value not a string",
       MakeRaw("{\"__metadata__\":{\"format\":1}}", 0),
       {"\"__metadata__\"", "key \"format\" holds an integer"}},
      {"control bytes in a tensor name are escaped in the error",
       MakeRaw("{\"w\\u0001\\n\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}", 0),
       {"tensor \"w\\x01\\x0a\"", "unknown dtype \"X\""}},
  };
  return cases;
}

TEST_CASE("bad files are refused with an error naming the file and the tensor", "[safetensors]") {
  const auto cases = BadFiles();
  CHECK(cases.size() >= 20);
  for (const auto& c : cases) {
    INFO(c.what);
    auto index = ParseSafetensorsHeader(Span(c.bytes), "bad.safetensors");
    REQUIRE_FALSE(index.ok());
    const std::string msg(index.status().message());
    INFO(msg);
    CHECK(index.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(msg, Catch::StartsWith("bad.safetensors: "));
    for (const auto& m : c.must_mention) CHECK_THAT(msg, Catch::Contains(m));
    CHECK_FALSE(FirstInvalidUtf8(msg).has_value());
  }
}

TEST_CASE("a long tensor name is cut in errors on a UTF-8 boundary", "[safetensors]") {
  std::string name;
  for (int i = 0; i < 200; ++i) name += "\xc3\xa9";  // "é" x 200
  const std::string file =
      MakeRaw("{\"" + name + "\":{\"dtype\":\"Q\",\"shape\":[],\"data_offsets\":[0,0]}}", 0);
  auto index = ParseSafetensorsHeader(Span(file), "long.safetensors");
  REQUIRE_FALSE(index.ok());
  const std::string msg(index.status().message());
  CHECK_THAT(msg, Catch::Contains("...\""));
  CHECK(msg.size() < 400);
  CHECK_FALSE(FirstInvalidUtf8(msg).has_value());
}

TEST_CASE("errors quoting raw header bytes stay valid UTF-8", "[safetensors]") {
  // The JSON error quotes what it read; a lone lead byte of a multi-byte sequence must not leak
  // into the message (the header as a whole is valid UTF-8, the excerpt need not be).
  const std::string file = MakeRaw("{\"a\": \xc3\xa9}", 0);
  auto index = ParseSafetensorsHeader(Span(file), "j.safetensors");
  REQUIRE_FALSE(index.ok());
  CHECK_FALSE(FirstInvalidUtf8(std::string(index.status().message())).has_value());
  CHECK(EscapeForError("a\xc3") == "a\\xc3");
  CHECK(EscapeForError("\xc3\xa9\"\\\x7f") == "\xc3\xa9\\\"\\\\\\x7f");
}

}  // namespace
}  // namespace arbor::engine
