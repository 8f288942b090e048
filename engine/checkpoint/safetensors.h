// The safetensors file format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON,
// then the data section. The JSON maps each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (offsets relative to the data section) plus an optional "__metadata__" object
// of strings. https://github.com/huggingface/safetensors
//
// ParseSafetensorsHeader is a pure function over the bytes of a whole file, so it is fuzzed
// directly (tests/checkpoint/safetensors_fuzz.cc). It validates everything a reader relies on
// before it touches tensor bytes: a tensor that comes back from it lies wholly inside the file.
#ifndef ARBOR_ENGINE_CHECKPOINT_SAFETENSORS_H_
#define ARBOR_ENGINE_CHECKPOINT_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace arbor::engine {

// Every dtype this reader accepts; any other dtype string in a file is an error.
enum class StDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2 };

// The name as it is spelled in safetensors headers ("F32", "BF16", "F8_E4M3").
const char* StDtypeName(StDtype dtype);
// Bytes per element.
size_t StDtypeSize(StDtype dtype);
// Inverse of StDtypeName; nullopt for a spelling not listed above.
std::optional<StDtype> StDtypeFromName(std::string_view name);

// One tensor of a parsed file. Offsets are from the start of the file, not of the data section.
struct SafetensorsEntry {
  std::string name;
  StDtype dtype = StDtype::kF32;
  std::vector<int64_t> shape;  // every dim >= 0; [] is a scalar
  uint64_t offset = 0;         // byte offset into the file
  uint64_t nbytes = 0;         // == numel(shape) * StDtypeSize(dtype)
};

struct SafetensorsIndex {
  uint64_t header_len = 0;                      // N, the JSON length
  uint64_t data_offset = 0;                     // 8 + N: where the data section starts in the file
  uint64_t data_len = 0;                        // file size - 8 - N
  std::map<std::string, std::string> metadata;  // "__metadata__", empty when absent
  std::vector<SafetensorsEntry> tensors;        // sorted by offset (file order)
};

// The largest JSON header accepted (the limit the reference implementation uses).
inline constexpr uint64_t kMaxSafetensorsHeaderLen = 100'000'000;

// Parses and validates the header of a whole safetensors file image. `file_name` only labels
// errors: every error is InvalidArgument and starts with "<file_name>: ", and names the tensor
// where one is at fault. Checks: file >= 8 bytes; 2 <= N <= 100 MB and 8 + N <= file size; the
// header is UTF-8 and a JSON object with no duplicate keys; "__metadata__" (optional) is an
// object of strings; every other entry is an object with a known "dtype", a "shape" of integers
// in [0, 2^63), and "data_offsets" [begin, end] with begin <= end <= data_len; shape x dtype size
// (overflow-checked) equals end - begin; sorted by begin, the spans tile [0, data_len) exactly.
// Keys of a tensor entry other than those three are ignored, as the reference reader does.
[[nodiscard]] absl::StatusOr<SafetensorsIndex> ParseSafetensorsHeader(
    absl::Span<const uint8_t> file_bytes, const std::string& file_name);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_CHECKPOINT_SAFETENSORS_H_
