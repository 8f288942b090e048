#include "kernels/cpu/cpu_backend.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/sampling.h"

namespace arbor::kernels {
namespace {

// Work on the CPU runs at once, so a stream is only an ordering token.
class CpuStream final : public Stream {
 public:
  absl::Status Synchronize() override { return absl::OkStatus(); }
  void* native() const override { return nullptr; }
};

class CpuEvent final : public Event {
 public:
  absl::Status Record(Stream&) override {
    time_ = std::chrono::steady_clock::now();
    recorded_ = true;
    return absl::OkStatus();
  }
  absl::Status Wait(Stream&) override { return absl::OkStatus(); }
  absl::Status Synchronize() override { return absl::OkStatus(); }
  absl::StatusOr<float> ElapsedMsSince(const Event& start) const override {
    const auto* s = dynamic_cast<const CpuEvent*>(&start);
    if (s == nullptr || !s->recorded_ || !recorded_) {
      return absl::FailedPreconditionError(
          "ElapsedMsSince: both events must be recorded CPU events");
    }
    return std::chrono::duration<float, std::milli>(time_ - s->time_).count();
  }

 private:
  std::chrono::steady_clock::time_point time_;
  bool recorded_ = false;
};

// Allocations are 256-byte aligned, like cudaMalloc, so layouts tuned for the GPU fit here too.
constexpr size_t kAlignment = 256;

}  // namespace

CpuBackend::CpuBackend() : default_stream_(std::make_unique<CpuStream>()) {}
CpuBackend::~CpuBackend() = default;

absl::StatusOr<DeviceInfo> CpuBackend::Info() const {
  DeviceInfo info;
  info.name = "cpu";
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long avail = sysconf(_SC_AVPHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) info.total_memory = size_t(pages) * size_t(page_size);
  if (avail > 0 && page_size > 0) info.free_memory = size_t(avail) * size_t(page_size);
  return info;
}

absl::StatusOr<DeviceBuffer> CpuBackend::Allocate(size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("Allocate: bytes must be > 0");
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cpu: cannot allocate ", bytes, " bytes"));
  }
  return DeviceBuffer(this, p, bytes);
}

void CpuBackend::Free(void* data) { std::free(data); }

absl::StatusOr<HostBuffer> CpuBackend::AllocateHost(size_t bytes) {
  // The host is the device here: the same aligned memory as Allocate.
  if (bytes == 0) return absl::InvalidArgumentError("AllocateHost: bytes must be > 0");
  void* p = std::aligned_alloc(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cpu: cannot allocate ", bytes, " bytes"));
  }
  return HostBuffer(this, p, bytes);
}

void CpuBackend::FreeHost(void* data) { std::free(data); }

absl::Status CpuBackend::Sample(const SampleArgs& args, Stream&) {
  if (auto s = ValidateSampleShape(args); !s.ok()) return s;
  return SampleCpu(args);
}

absl::Status CpuBackend::UpdatePenaltyState(const PenaltyUpdateArgs& args, Stream&) {
  return UpdatePenaltyStateCpu(args);
}

absl::Status CpuBackend::ResetPenaltySlots(const PenaltyResetArgs& args, Stream&) {
  return ResetPenaltySlotsCpu(args);
}

absl::Status CpuBackend::CopyToDevice(void* dst, const void* src, size_t bytes, Stream&) {
  std::memcpy(dst, src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(void* dst, const void* src, size_t bytes, Stream&) {
  std::memcpy(dst, src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyOnDevice(void* dst, const void* src, size_t bytes, Stream&) {
  std::memmove(dst, src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::Fill(void* dst, uint8_t value, size_t bytes, Stream&) {
  std::memset(dst, value, bytes);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Stream>> CpuBackend::CreateStream() {
  return std::unique_ptr<Stream>(std::make_unique<CpuStream>());
}

absl::StatusOr<std::unique_ptr<Event>> CpuBackend::CreateEvent() {
  return std::unique_ptr<Event>(std::make_unique<CpuEvent>());
}

absl::Status CpuBackend::Linear(const LinearArgs& args, Stream& stream) {
  if (auto s = ValidateLinear(args); !s.ok()) return s;
  if (args.epilogue != LinearEpilogue::kNone) return LinearThenEpilogue(*this, args, stream);
  CpuLinear(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::AddRmsNorm(const AddRmsNormArgs& args, Stream&) {
  if (auto s = ValidateAddRmsNorm(args); !s.ok()) return s;
  CpuAddRmsNorm(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::SiluMul(const SiluMulArgs& args, Stream&) {
  if (auto s = ValidateSiluMul(args); !s.ok()) return s;
  CpuSiluMul(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::Embedding(const EmbeddingArgs& args, Stream&) {
  if (auto s = ValidateEmbedding(args); !s.ok()) return s;
  CpuEmbedding(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::RopeKvWrite(const RopeKvWriteArgs& args, Stream&) {
  if (auto s = ValidateRopeKvWrite(args); !s.ok()) return s;
  CpuRopeKvWrite(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::PagedAttention(const PagedAttentionArgs& args, Stream&) {
  if (auto s = ValidatePagedAttention(args); !s.ok()) return s;
  CpuPagedAttention(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::TopKSoftmax(const TopKSoftmaxArgs& args, Stream&) {
  if (auto s = ValidateTopKSoftmax(args); !s.ok()) return s;
  CpuTopKSoftmax(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::GatherRows(const GatherRowsArgs& args, Stream&) {
  if (auto s = ValidateGatherRows(args); !s.ok()) return s;
  CpuGatherRows(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::ScatterAddRows(const ScatterAddRowsArgs& args, Stream&) {
  if (auto s = ValidateScatterAddRows(args); !s.ok()) return s;
  CpuScatterAddRows(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::MoeCombine(const MoeCombineArgs& args, Stream&) {
  if (auto s = ValidateMoeCombine(args); !s.ok()) return s;
  CpuMoeCombine(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::MoePermute(const MoePermuteArgs& args, Stream&) {
  if (auto s = ValidateMoePermute(args); !s.ok()) return s;
  CpuMoePermute(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::GroupedLinear(const GroupedLinearArgs& args, Stream&) {
  if (auto s = ValidateGroupedLinear(args); !s.ok()) return s;
  CpuGroupedLinear(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::RandomFill(const RandomFillArgs& args, Stream&) {
  if (auto s = ValidateRandomFill(args); !s.ok()) return s;
  CpuRandomFill(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::Convert(const ConvertArgs& args, Stream&) {
  if (auto s = ValidateConvert(args); !s.ok()) return s;
  CpuConvert(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::TargetLogprobs(const TargetLogprobsArgs& args, Stream&) {
  if (auto s = ValidateTargetLogprobs(args); !s.ok()) return s;
  CpuTargetLogprobs(args);
  return absl::OkStatus();
}

absl::Status CpuBackend::Lora(const LoraArgs& args, Stream&) {
  if (auto s = ValidateLora(args); !s.ok()) return s;
  CpuLora(args);
  return absl::OkStatus();
}

}  // namespace arbor::kernels
