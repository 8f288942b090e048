// kernels::Backend: device memory, streams/events and the ops the model needs, behind one
// interface with a CPU reference (kernels/cpu) and a CUDA implementation (kernels/cuda).
// engine::Model is written once against this interface.
#ifndef ARBOR_KERNELS_BACKEND_H_
#define ARBOR_KERNELS_BACKEND_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cce.h"
#include "kernels/lora.h"
#include "kernels/ops.h"
#include "kernels/sampling.h"

namespace arbor::kernels {

enum class DeviceKind { kCpu, kCuda };

const char* DeviceKindName(DeviceKind kind);

class Backend;

// Memory owned through one backend and freed through it when destroyed: device memory
// (DeviceBuffer), or host memory the device can copy to and from asynchronously (HostBuffer:
// page-locked on CUDA, ordinary memory on the CPU), where a step's small arrays are written
// before they go up and where sampled tokens come back.
enum class MemoryKind { kDevice, kHost };

template <MemoryKind kKind>
class OwnedBuffer {
 public:
  OwnedBuffer() = default;
  OwnedBuffer(Backend* owner, void* data, size_t bytes)
      : owner_(owner), data_(data), bytes_(bytes) {}
  ~OwnedBuffer() { Release(); }
  OwnedBuffer(OwnedBuffer&& other) noexcept
      : owner_(std::exchange(other.owner_, nullptr)),
        data_(std::exchange(other.data_, nullptr)),
        bytes_(std::exchange(other.bytes_, 0)) {}
  OwnedBuffer& operator=(OwnedBuffer&& other) noexcept {
    if (this != &other) {
      Release();
      owner_ = std::exchange(other.owner_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  OwnedBuffer(const OwnedBuffer&) = delete;
  OwnedBuffer& operator=(const OwnedBuffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void Release();  // defined after Backend
  Backend* owner_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

using DeviceBuffer = OwnedBuffer<MemoryKind::kDevice>;
using HostBuffer = OwnedBuffer<MemoryKind::kHost>;

// An ordered queue of device work. The CPU backend runs work at once, so its streams are
// trivially ordered; the CUDA backend wraps a cudaStream_t.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual absl::Status Synchronize() = 0;
  // The native handle (cudaStream_t) or nullptr on the CPU.
  virtual void* native() const = 0;
};

// A marker in a stream: lets another stream or the host wait, and measures elapsed time.
class Event {
 public:
  virtual ~Event() = default;
  virtual absl::Status Record(Stream& stream) = 0;
  virtual absl::Status Wait(Stream& stream) = 0;  // stream waits for this event
  virtual absl::Status Synchronize() = 0;         // host waits for this event
  // Milliseconds between `start` (recorded earlier) and this event, both completed.
  virtual absl::StatusOr<float> ElapsedMsSince(const Event& start) const = 0;
};

// Device work recorded once and replayed with one launch (a CUDA graph): the kernels of a decode
// step, whose launch overhead otherwise dominates a small batch. Every replay runs the same
// kernels on the same buffers; only the buffers' contents change between replays.
class Graph {
 public:
  virtual ~Graph() = default;
  virtual absl::Status Launch(Stream& stream) = 0;
};

struct DeviceInfo {
  std::string name;            // "cpu" or the GPU's name
  size_t total_memory = 0;     // bytes
  size_t free_memory = 0;      // bytes
  int compute_capability = 0;  // 90 for Hopper; 0 on the CPU
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind kind() const = 0;
  virtual absl::StatusOr<DeviceInfo> Info() const = 0;
  // Ok while the device works; Internal after an unrecoverable (sticky) device error.
  virtual absl::Status Health() = 0;

  // Memory. Copies are ordered on `stream`; host pointers are ordinary pageable memory.
  virtual absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) = 0;
  // Host memory for asynchronous copies (HostBuffer).
  virtual absl::StatusOr<HostBuffer> AllocateHost(size_t bytes) = 0;
  virtual absl::Status CopyToDevice(void* dst, const void* src, size_t bytes, Stream& stream) = 0;
  virtual absl::Status CopyToHost(void* dst, const void* src, size_t bytes, Stream& stream) = 0;
  virtual absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes, Stream& stream) = 0;
  // Sets every byte of [dst, dst + bytes) to `value` (tests poison outputs with 0xFF = NaN).
  virtual absl::Status Fill(void* dst, uint8_t value, size_t bytes, Stream& stream) = 0;

  virtual absl::StatusOr<std::unique_ptr<Stream>> CreateStream() = 0;
  virtual absl::StatusOr<std::unique_ptr<Event>> CreateEvent() = 0;
  // The stream ops run on when the caller has no other.
  virtual Stream& default_stream() = 0;

  // Graph capture: work issued on `stream` between BeginCapture and EndCapture is recorded, not
  // run, and EndCapture returns it ready to launch. A capture that began must be ended, even
  // after an op failed inside it. Backends without graphs (the CPU) return Unimplemented.
  virtual absl::Status BeginCapture(Stream& stream);
  virtual absl::StatusOr<std::unique_ptr<Graph>> EndCapture(Stream& stream);

  // Deterministic mode (engine.deterministic): a row's result must not depend on the other rows
  // of its batch. On CUDA every GEMM shape (n, k) gets one algorithm without split-K, whatever
  // the number of rows m; the CPU references are row-by-row already.
  virtual void SetDeterministic(bool on) { (void)on; }

  // Ops (kernels/ops.h). Each checks its arguments and returns InvalidArgument on bad shapes
  // or dtypes.
  virtual absl::Status Linear(const LinearArgs& args, Stream& stream) = 0;
  virtual absl::Status AddRmsNorm(const AddRmsNormArgs& args, Stream& stream) = 0;
  virtual absl::Status SiluMul(const SiluMulArgs& args, Stream& stream) = 0;
  virtual absl::Status Embedding(const EmbeddingArgs& args, Stream& stream) = 0;
  virtual absl::Status RopeKvWrite(const RopeKvWriteArgs& args, Stream& stream) = 0;
  virtual absl::Status PagedAttention(const PagedAttentionArgs& args, Stream& stream) = 0;
  virtual absl::Status TopKSoftmax(const TopKSoftmaxArgs& args, Stream& stream) = 0;
  virtual absl::Status GatherRows(const GatherRowsArgs& args, Stream& stream) = 0;
  virtual absl::Status ScatterAddRows(const ScatterAddRowsArgs& args, Stream& stream) = 0;
  virtual absl::Status MoeCombine(const MoeCombineArgs& args, Stream& stream) = 0;
  virtual absl::Status MoePermute(const MoePermuteArgs& args, Stream& stream) = 0;
  virtual absl::Status GroupedLinear(const GroupedLinearArgs& args, Stream& stream) = 0;
  virtual absl::Status RandomFill(const RandomFillArgs& args, Stream& stream) = 0;
  virtual absl::Status Convert(const ConvertArgs& args, Stream& stream) = 0;
  // Log-probs of given targets through the LM head without materialised logits (kernels/cce.h).
  virtual absl::Status TargetLogprobs(const TargetLogprobsArgs& args, Stream& stream) = 0;
  // Every adapter of a batch at once: y += scale * (x A^T) B^T per token (kernels/lora.h).
  virtual absl::Status Lora(const LoraArgs& args, Stream& stream) = 0;
  // Sampling (kernels/sampling.h): one token per logits row, and the penalty state it reads.
  virtual absl::Status Sample(const SampleArgs& args, Stream& stream) = 0;
  virtual absl::Status UpdatePenaltyState(const PenaltyUpdateArgs& args, Stream& stream) = 0;
  virtual absl::Status ResetPenaltySlots(const PenaltyResetArgs& args, Stream& stream) = 0;

 protected:
  template <MemoryKind>
  friend class OwnedBuffer;
  virtual void Free(void* data) = 0;
  virtual void FreeHost(void* data) = 0;
};

template <MemoryKind kKind>
void OwnedBuffer<kKind>::Release() {
  if (owner_ != nullptr && data_ != nullptr) {
    if constexpr (kKind == MemoryKind::kHost) {
      owner_->FreeHost(data_);
    } else {
      owner_->Free(data_);
    }
  }
  owner_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

// Argument checks shared by both backends, so they reject exactly the same inputs.
absl::Status ValidateLinear(const LinearArgs& args);
// A Linear with an epilogue run as two ops, the reference composition a backend without a
// fused kernel uses: kSiluMul, a plain Linear into args.scratch then SiluMul into args.y;
// kRopeKvWrite, a plain Linear into args.y then RopeKvWrite(args.rope).
absl::Status LinearThenEpilogue(Backend& be, const LinearArgs& args, Stream& stream);
absl::Status ValidateAddRmsNorm(const AddRmsNormArgs& args);
absl::Status ValidateSiluMul(const SiluMulArgs& args);
absl::Status ValidateEmbedding(const EmbeddingArgs& args);
absl::Status ValidateRopeKvWrite(const RopeKvWriteArgs& args);
absl::Status ValidatePagedAttention(const PagedAttentionArgs& args);
absl::Status ValidateTopKSoftmax(const TopKSoftmaxArgs& args);
absl::Status ValidateGatherRows(const GatherRowsArgs& args);
absl::Status ValidateScatterAddRows(const ScatterAddRowsArgs& args);
absl::Status ValidateMoeCombine(const MoeCombineArgs& args);
absl::Status ValidateMoePermute(const MoePermuteArgs& args);
absl::Status ValidateGroupedLinear(const GroupedLinearArgs& args);
absl::Status ValidateRandomFill(const RandomFillArgs& args);
absl::Status ValidateConvert(const ConvertArgs& args);
// Shapes, dtypes, pointers, top_k and the workspace size (kernels/backend_cce.cc); the targets
// live on the device and are not read.
absl::Status ValidateTargetLogprobs(const TargetLogprobsArgs& args);
// Shapes, targets, max_rank and pointers; the slot arrays (on the device) are not read.
absl::Status ValidateLora(const LoraArgs& args);
// What can be checked without reading the arrays (which live on the device): shapes, the
// pointers every call needs, and the workspace size. The CPU reference checks the rest.
absl::Status ValidateSampleShape(const SampleArgs& args);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_BACKEND_H_
