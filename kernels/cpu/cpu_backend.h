// The CPU backend: the reference every CUDA op is tested against, and the backend CI and the
// embedded default config run on. Plain loops with fp32 math (rounding to 16-bit dtypes where
// kernels/ops.h says); OpenBLAS for GEMM.
#ifndef ARBOR_KERNELS_CPU_CPU_BACKEND_H_
#define ARBOR_KERNELS_CPU_CPU_BACKEND_H_

#include <memory>

#include "kernels/backend.h"

namespace arbor::kernels {

class CpuBackend final : public Backend {
 public:
  CpuBackend();
  ~CpuBackend() override;

  DeviceKind kind() const override { return DeviceKind::kCpu; }
  absl::StatusOr<DeviceInfo> Info() const override;
  absl::Status Health() override { return absl::OkStatus(); }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override;
  absl::StatusOr<HostBuffer> AllocateHost(size_t bytes) override;
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes, Stream& stream) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes, Stream& stream) override;
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes, Stream& stream) override;
  absl::Status Fill(void* dst, uint8_t value, size_t bytes, Stream& stream) override;

  absl::StatusOr<std::unique_ptr<Stream>> CreateStream() override;
  absl::StatusOr<std::unique_ptr<Event>> CreateEvent() override;
  Stream& default_stream() override { return *default_stream_; }

  absl::Status Linear(const LinearArgs& args, Stream& stream) override;
  absl::Status AddRmsNorm(const AddRmsNormArgs& args, Stream& stream) override;
  absl::Status SiluMul(const SiluMulArgs& args, Stream& stream) override;
  absl::Status Embedding(const EmbeddingArgs& args, Stream& stream) override;
  absl::Status RopeKvWrite(const RopeKvWriteArgs& args, Stream& stream) override;
  absl::Status PagedAttention(const PagedAttentionArgs& args, Stream& stream) override;
  absl::Status TopKSoftmax(const TopKSoftmaxArgs& args, Stream& stream) override;
  absl::Status GatherRows(const GatherRowsArgs& args, Stream& stream) override;
  absl::Status ScatterAddRows(const ScatterAddRowsArgs& args, Stream& stream) override;
  absl::Status MoeCombine(const MoeCombineArgs& args, Stream& stream) override;
  absl::Status MoePermute(const MoePermuteArgs& args, Stream& stream) override;
  absl::Status GroupedLinear(const GroupedLinearArgs& args, Stream& stream) override;
  absl::Status RandomFill(const RandomFillArgs& args, Stream& stream) override;
  absl::Status Convert(const ConvertArgs& args, Stream& stream) override;
  absl::Status TargetLogprobs(const TargetLogprobsArgs& args, Stream& stream) override;
  absl::Status Lora(const LoraArgs& args, Stream& stream) override;
  absl::Status Sample(const SampleArgs& args, Stream& stream) override;
  absl::Status UpdatePenaltyState(const PenaltyUpdateArgs& args, Stream& stream) override;
  absl::Status ResetPenaltySlots(const PenaltyResetArgs& args, Stream& stream) override;

 protected:
  void Free(void* data) override;
  void FreeHost(void* data) override;

 private:
  std::unique_ptr<Stream> default_stream_;
};

// The reference implementations, callable without a backend object (tests, tools).
void CpuLinear(const LinearArgs& args);
void CpuAddRmsNorm(const AddRmsNormArgs& args);
void CpuSiluMul(const SiluMulArgs& args);
void CpuEmbedding(const EmbeddingArgs& args);
void CpuRopeKvWrite(const RopeKvWriteArgs& args);
void CpuPagedAttention(const PagedAttentionArgs& args);
void CpuTopKSoftmax(const TopKSoftmaxArgs& args);
void CpuGatherRows(const GatherRowsArgs& args);
void CpuScatterAddRows(const ScatterAddRowsArgs& args);
void CpuMoeCombine(const MoeCombineArgs& args);
void CpuMoePermute(const MoePermuteArgs& args);
void CpuGroupedLinear(const GroupedLinearArgs& args);
void CpuRandomFill(const RandomFillArgs& args);
void CpuConvert(const ConvertArgs& args);
void CpuTargetLogprobs(const TargetLogprobsArgs& args);  // kernels/cpu/cce.cc
void CpuLora(const LoraArgs& args);                      // kernels/cpu/lora.cc

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CPU_CPU_BACKEND_H_
