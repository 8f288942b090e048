// libFuzzer target: any byte string, taken as a whole safetensors file image, must either be
// refused with an error naming the file, or come back as tensors that tile the data section and
// lie inside the buffer (read here, so ASan checks the bounds). Messages must be valid UTF-8.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/checkpoint/json_input.h"
#include "engine/checkpoint/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using arbor::engine::FirstInvalidUtf8;
  const std::string kName = "fuzz.safetensors";
  auto index = arbor::engine::ParseSafetensorsHeader(absl::MakeConstSpan(data, size), kName);
  if (!index.ok()) {
    const auto msg = index.status().message();
    if (index.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    if (msg.substr(0, kName.size() + 2) != kName + ": ") std::abort();
    if (FirstInvalidUtf8(std::string_view(msg.data(), msg.size())).has_value()) std::abort();
    return 0;
  }
  if (index->data_offset != 8 + index->header_len || index->data_offset > size) std::abort();
  if (index->data_len != size - index->data_offset) std::abort();
  uint64_t expected = index->data_offset;
  volatile uint8_t sink = 0;
  for (const auto& t : index->tensors) {
    if (t.offset != expected || t.nbytes > size - t.offset) std::abort();
    for (int64_t d : t.shape) {
      if (d < 0) std::abort();
    }
    if (t.nbytes % arbor::engine::StDtypeSize(t.dtype) != 0) std::abort();
    if (t.nbytes > 0) sink = sink ^ data[t.offset] ^ data[t.offset + t.nbytes - 1];
    expected += t.nbytes;
  }
  if (expected != size) std::abort();
  return 0;
}
