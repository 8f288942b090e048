// Test-only: builds safetensors file images (well-formed or deliberately broken) and writes them
// under TEST_TMPDIR, so checkpoint tests need no committed binaries.
#ifndef ARBOR_TESTS_CHECKPOINT_SAFETENSORS_WRITER_H_
#define ARBOR_TESTS_CHECKPOINT_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace arbor::testing {

// One tensor to write: its dtype spelled as in the file ("F32"), its shape and raw bytes.
struct StTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// A well-formed file image, as the Python writer lays it out: tensors in the given order, data
// contiguous from offset 0, the header padded with spaces to a multiple of 8 bytes.
std::string MakeSafetensors(const std::vector<StTensor>& tensors,
                            const std::map<std::string, std::string>& metadata = {});

// The 8-byte little-endian `header_len` followed by `rest` verbatim (lengths may disagree).
std::string WithHeaderLen(uint64_t header_len, const std::string& rest);

// A file image with `header` as its JSON text verbatim (its true length in the prefix) followed
// by `data_len` data bytes.
std::string MakeRaw(const std::string& header, size_t data_len);

// The raw bytes of a vector of trivially copyable values.
template <typename T>
std::string Bytes(const std::vector<T>& v) {
  std::string out(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// A new empty directory under $TEST_TMPDIR (or /tmp), unique within the process.
std::string FreshDir(const std::string& label);

// Writes `bytes` to `path`; false on any I/O error.
bool WriteFile(const std::string& path, const std::string& bytes);

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_CHECKPOINT_SAFETENSORS_WRITER_H_
