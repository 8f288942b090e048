// The weights of a Hugging Face model directory: model.safetensors, or the shards listed by
// model.safetensors.index.json, mmapped read-only and validated before any tensor is handed out.
// Pickle checkpoints (pytorch_model.bin, *.pt) are refused: loading them can run code.
#ifndef ARBOR_ENGINE_CHECKPOINT_CHECKPOINT_H_
#define ARBOR_ENGINE_CHECKPOINT_CHECKPOINT_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/checkpoint/safetensors.h"

namespace arbor::engine {

class MappedFile;

// One tensor of a loaded checkpoint. `data` points into a read-only mapping owned by the
// Checkpoint and is valid as long as it is; it has no alignment guarantee (safetensors aligns
// nothing), so read it with memcpy or ReadAsF32. Bytes are little-endian, row-major.
struct TensorView {
  std::string name;
  StDtype dtype = StDtype::kF32;
  std::vector<int64_t> shape;     // [] is a scalar (one element)
  const uint8_t* data = nullptr;  // nbytes bytes
  size_t nbytes = 0;              // == numel() * StDtypeSize(dtype)
  std::string file;               // path of the file holding it (model_dir/shard name)

  // Product of the shape (1 for a scalar); -1 if it overflows int64 (never for a view that came
  // from a Checkpoint).
  int64_t numel() const;
};

class Checkpoint {
 public:
  // Loads `model_dir`/model.safetensors if present, else the shards named by
  // `model_dir`/model.safetensors.index.json (the order transformers uses). Errors:
  //   NotFound            the directory, or any safetensors weights in it, or a listed shard;
  //   FailedPrecondition  only pickle weights (pytorch_model.bin, *.pt, ...) are present;
  //   InvalidArgument     a malformed file; the message names the file and the tensor.
  // Index checks: "weight_map" is an object of tensor name -> shard file name; a shard name is
  // a plain name inside the directory (not empty, ".", "..", nor holding '/', '\' or NUL); every
  // shard opens and parses; every mapped tensor is in the shard it is mapped to; no tensor is in
  // two shards. Tensors a shard holds beyond its weight_map entries are kept, with a warning.
  // Logs, with spdlog, each file indexed and a summary (tensors, MB, MB/s of indexing; tensor
  // bytes are paged in on first read).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(
      const std::string& model_dir);

  // One safetensors file by path (a PEFT adapter's adapter_model.safetensors). Errors as Open.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Checkpoint>> OpenFile(
      const std::string& path);

  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  // nullptr if absent.
  const TensorView* Find(const std::string& name) const;
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  // Sum of nbytes over all tensors.
  size_t total_bytes() const { return total_bytes_; }

 private:
  Checkpoint() = default;
  // Maps and parses one safetensors file, adding its tensors; a name already present (from
  // another shard) is an error.
  absl::Status AddFile(const std::string& path);
  absl::Status LoadIndex(const std::string& dir, const std::string& index_path);

  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorView> tensors_;
  size_t total_bytes_ = 0;
};

// Converts a F32, F16 or BF16 tensor to fp32 into out[0, count). `count` must equal numel().
// F16 is exact (subnormals, infinities, NaN payloads kept); BF16 is its 16 bits shifted up.
// Any other dtype is InvalidArgument naming the tensor and its file.
[[nodiscard]] absl::Status ReadAsF32(const TensorView& t, float* out, size_t count);

// The element conversions ReadAsF32 uses are kernels/dtype.h's F16ToFloat and Bf16ToFloat, the
// ones the backends use.

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_CHECKPOINT_CHECKPOINT_H_
