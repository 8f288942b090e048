#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/lt_linear.h"
#include "kernels/cuda/sampling.h"
#include "kernels/cuda_status.h"

namespace arbor::kernels {
namespace {

class CudaStream final : public Stream {
 public:
  explicit CudaStream(cudaStream_t s, bool owned) : stream_(s), owned_(owned) {}
  ~CudaStream() override {
    if (owned_) cudaStreamDestroy(stream_);
  }
  absl::Status Synchronize() override {
    return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  void* native() const override { return stream_; }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_;
  bool owned_;
};

cudaStream_t Native(Stream& s) { return static_cast<cudaStream_t>(s.native()); }

class CudaEvent final : public Event {
 public:
  explicit CudaEvent(cudaEvent_t e) : event_(e) {}
  ~CudaEvent() override { cudaEventDestroy(event_); }
  absl::Status Record(Stream& s) override {
    return CudaStatus(cudaEventRecord(event_, Native(s)), "cudaEventRecord");
  }
  absl::Status Wait(Stream& s) override {
    return CudaStatus(cudaStreamWaitEvent(Native(s), event_, 0), "cudaStreamWaitEvent");
  }
  absl::Status Synchronize() override {
    return CudaStatus(cudaEventSynchronize(event_), "cudaEventSynchronize");
  }
  absl::StatusOr<float> ElapsedMsSince(const Event& start) const override {
    const auto* s = dynamic_cast<const CudaEvent*>(&start);
    if (s == nullptr)
      return absl::InvalidArgumentError("ElapsedMsSince: start is not a CUDA event");
    float ms = 0.0f;
    if (auto st = CudaStatus(cudaEventElapsedTime(&ms, s->event_, event_), "cudaEventElapsedTime");
        !st.ok()) {
      return st;
    }
    return ms;
  }

 private:
  cudaEvent_t event_;
};

class CudaGraph final : public Graph {
 public:
  explicit CudaGraph(cudaGraphExec_t exec) : exec_(exec) {}
  ~CudaGraph() override { cudaGraphExecDestroy(exec_); }
  absl::Status Launch(Stream& s) override {
    return CudaStatus(cudaGraphLaunch(exec_, Native(s)), "cudaGraphLaunch");
  }

 private:
  cudaGraphExec_t exec_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int ordinal, cudaStream_t stream, std::unique_ptr<LtLinear> linear)
      : ordinal_(ordinal), default_stream_(stream, /*owned=*/true), linear_(std::move(linear)) {}
  ~CudaBackend() override {
    cudaSetDevice(ordinal_);
    linear_.reset();
  }

  DeviceKind kind() const override { return DeviceKind::kCuda; }

  absl::StatusOr<DeviceInfo> Info() const override {
    cudaDeviceProp prop{};
    if (auto s = CudaStatus(cudaGetDeviceProperties(&prop, ordinal_), "cudaGetDeviceProperties");
        !s.ok()) {
      return s;
    }
    DeviceInfo info;
    info.name = prop.name;
    info.compute_capability = prop.major * 10 + prop.minor;
    size_t free_b = 0, total_b = 0;
    cudaSetDevice(ordinal_);
    if (auto s = CudaStatus(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo"); !s.ok()) return s;
    info.free_memory = free_b;
    info.total_memory = total_b;
    return info;
  }

  absl::Status Health() override {
    // A sticky error (an illegal address, say) makes every later call fail, this one included.
    const cudaError_t err = cudaStreamQuery(default_stream_.get());
    if (err == cudaErrorNotReady) return absl::OkStatus();
    return CudaStatus(err, "device health");
  }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override {
    if (bytes == 0) return absl::InvalidArgumentError("Allocate: bytes must be > 0");
    void* p = nullptr;
    cudaSetDevice(ordinal_);
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it
      return absl::ResourceExhaustedError(absl::StrCat("cuda: cannot allocate ", bytes, " bytes"));
    }
    if (auto s = CudaStatus(err, "cudaMalloc"); !s.ok()) return s;
    return DeviceBuffer(this, p, bytes);
  }

  absl::StatusOr<HostBuffer> AllocateHost(size_t bytes) override {
    if (bytes == 0) return absl::InvalidArgumentError("AllocateHost: bytes must be > 0");
    void* p = nullptr;
    cudaSetDevice(ordinal_);
    const cudaError_t err = cudaHostAlloc(&p, bytes, cudaHostAllocDefault);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          absl::StrCat("cuda: cannot allocate ", bytes, " bytes of pinned host memory"));
    }
    if (auto s = CudaStatus(err, "cudaHostAlloc"); !s.ok()) return s;
    return HostBuffer(this, p, bytes);
  }

  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes, Stream& s) override {
    return CudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, Native(s)),
                      "cudaMemcpyAsync(H2D)");
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes, Stream& s) override {
    // Pageable host memory: synchronize so the caller may read `dst` when this returns.
    if (auto st = CudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, Native(s)),
                             "cudaMemcpyAsync(D2H)");
        !st.ok()) {
      return st;
    }
    return s.Synchronize();
  }
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes, Stream& s) override {
    return CudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, Native(s)),
                      "cudaMemcpyAsync(D2D)");
  }
  absl::Status Fill(void* dst, uint8_t value, size_t bytes, Stream& s) override {
    return CudaStatus(cudaMemsetAsync(dst, value, bytes, Native(s)), "cudaMemsetAsync");
  }

  absl::StatusOr<std::unique_ptr<Stream>> CreateStream() override {
    cudaStream_t s = nullptr;
    cudaSetDevice(ordinal_);
    if (auto st =
            CudaStatus(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
        !st.ok()) {
      return st;
    }
    return std::unique_ptr<Stream>(std::make_unique<CudaStream>(s, /*owned=*/true));
  }
  absl::StatusOr<std::unique_ptr<Event>> CreateEvent() override {
    cudaEvent_t e = nullptr;
    cudaSetDevice(ordinal_);
    if (auto st = CudaStatus(cudaEventCreate(&e), "cudaEventCreate"); !st.ok()) return st;
    return std::unique_ptr<Event>(std::make_unique<CudaEvent>(e));
  }
  Stream& default_stream() override { return default_stream_; }

  absl::Status BeginCapture(Stream& s) override {
    // Thread-local: only this thread's unsafe calls (a cudaMalloc, a synchronising copy) break
    // the capture; other threads (adapter uploads, say) go on undisturbed.
    return CudaStatus(cudaStreamBeginCapture(Native(s), cudaStreamCaptureModeThreadLocal),
                      "cudaStreamBeginCapture");
  }
  absl::StatusOr<std::unique_ptr<Graph>> EndCapture(Stream& s) override {
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(Native(s), &graph);
    if (end != cudaSuccess) {
      cudaGetLastError();  // an invalidated capture is not a sticky error
      if (graph != nullptr) cudaGraphDestroy(graph);
      return CudaStatus(end, "cudaStreamEndCapture");
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (auto st = CudaStatus(inst, "cudaGraphInstantiate"); !st.ok()) return st;
    return std::unique_ptr<Graph>(std::make_unique<CudaGraph>(exec));
  }

  void SetDeterministic(bool on) override {
    deterministic_ = on;
    linear_->set_deterministic(on);
  }

  absl::Status AddRmsNorm(const AddRmsNormArgs& a, Stream& s) override {
    if (auto st = ValidateAddRmsNorm(a); !st.ok()) return st;
    return CudaStatus(LaunchAddRmsNorm(a, Native(s)), "AddRmsNorm");
  }
  absl::Status SiluMul(const SiluMulArgs& a, Stream& s) override {
    if (auto st = ValidateSiluMul(a); !st.ok()) return st;
    return CudaStatus(LaunchSiluMul(a, Native(s)), "SiluMul");
  }
  absl::Status Embedding(const EmbeddingArgs& a, Stream& s) override {
    if (auto st = ValidateEmbedding(a); !st.ok()) return st;
    return CudaStatus(LaunchEmbedding(a, Native(s)), "Embedding");
  }
  absl::Status RopeKvWrite(const RopeKvWriteArgs& a, Stream& s) override {
    if (auto st = ValidateRopeKvWrite(a); !st.ok()) return st;
    return CudaStatus(LaunchRopeKvWrite(a, Native(s)), "RopeKvWrite");
  }
  absl::Status PagedAttention(const PagedAttentionArgs& a, Stream& s) override {
    if (auto st = ValidatePagedAttention(a); !st.ok()) return st;
    if (deterministic_ && (a.num_prefill_tiles > 0 || a.split_workspace != nullptr)) {
      // One kernel for every row, unsplit: a row's bits then do not depend on how its prompt
      // was chunked or batched (the tensor-core kernel rounds P; the per-token one does not; a
      // split merges in another order).
      PagedAttentionArgs per_token = a;
      per_token.num_prefill_tiles = 0;
      per_token.split_workspace = nullptr;
      return CudaStatus(LaunchPagedAttention(per_token, Native(s)), "PagedAttention");
    }
    return CudaStatus(LaunchPagedAttention(a, Native(s)), "PagedAttention");
  }
  absl::Status TopKSoftmax(const TopKSoftmaxArgs& a, Stream& s) override {
    if (auto st = ValidateTopKSoftmax(a); !st.ok()) return st;
    return CudaStatus(LaunchTopKSoftmax(a, Native(s)), "TopKSoftmax");
  }
  absl::Status GatherRows(const GatherRowsArgs& a, Stream& s) override {
    if (auto st = ValidateGatherRows(a); !st.ok()) return st;
    return CudaStatus(LaunchGatherRows(a, Native(s)), "GatherRows");
  }
  absl::Status ScatterAddRows(const ScatterAddRowsArgs& a, Stream& s) override {
    if (auto st = ValidateScatterAddRows(a); !st.ok()) return st;
    return CudaStatus(LaunchScatterAddRows(a, Native(s)), "ScatterAddRows");
  }
  absl::Status MoeCombine(const MoeCombineArgs& a, Stream& s) override {
    if (auto st = ValidateMoeCombine(a); !st.ok()) return st;
    return CudaStatus(LaunchMoeCombine(a, Native(s)), "MoeCombine");
  }
  absl::Status MoePermute(const MoePermuteArgs& a, Stream& s) override {
    if (auto st = ValidateMoePermute(a); !st.ok()) return st;
    return CudaStatus(LaunchMoePermute(a, Native(s)), "MoePermute");
  }
  absl::Status GroupedLinear(const GroupedLinearArgs& a, Stream& s) override {
    if (auto st = ValidateGroupedLinear(a); !st.ok()) return st;
    return CudaStatus(LaunchGroupedLinear(a, Native(s)), "GroupedLinear");
  }
  absl::Status RandomFill(const RandomFillArgs& a, Stream& s) override {
    if (auto st = ValidateRandomFill(a); !st.ok()) return st;
    return CudaStatus(LaunchRandomFill(a, Native(s)), "RandomFill");
  }
  absl::Status Convert(const ConvertArgs& a, Stream& s) override {
    if (auto st = ValidateConvert(a); !st.ok()) return st;
    return CudaStatus(LaunchConvert(a, Native(s)), "Convert");
  }
  absl::Status TargetLogprobs(const TargetLogprobsArgs& a, Stream& s) override {
    if (auto st = ValidateTargetLogprobs(a); !st.ok()) return st;
    return CudaStatus(LaunchTargetLogprobs(a, Native(s)), "TargetLogprobs");
  }
  absl::Status Lora(const LoraArgs& a, Stream& s) override {
    if (auto st = ValidateLora(a); !st.ok()) return st;
    if (deterministic_ && a.schedule != LoraSchedule::kPerToken) {
      // The schedule depends on the batch; per token, a row's sums do not.
      LoraArgs per_token = a;
      per_token.schedule = LoraSchedule::kPerToken;
      return CudaStatus(LaunchLora(per_token, Native(s)), "Lora");
    }
    return CudaStatus(LaunchLora(a, Native(s)), "Lora");
  }
  absl::Status Sample(const SampleArgs& a, Stream& s) override {
    if (auto st = ValidateSampleShape(a); !st.ok()) return st;
    if (a.num_rows > 0 && a.workspace_bytes < SampleWorkspaceBytes(a.num_rows, a.vocab)) {
      return absl::InvalidArgumentError("Sample: workspace smaller than SampleWorkspaceBytes");
    }
    return CudaStatus(LaunchSample(a, Native(s)), "Sample");
  }
  absl::Status UpdatePenaltyState(const PenaltyUpdateArgs& a, Stream& s) override {
    return CudaStatus(LaunchUpdatePenaltyState(a, Native(s)), "UpdatePenaltyState");
  }
  absl::Status ResetPenaltySlots(const PenaltyResetArgs& a, Stream& s) override {
    return CudaStatus(LaunchResetPenaltySlots(a, Native(s)), "ResetPenaltySlots");
  }
  absl::Status Linear(const LinearArgs& a, Stream& s) override {
    if (auto st = ValidateLinear(a); !st.ok()) return st;
    // A few rows (small decode batches): the weight-streaming kernel. Not in deterministic
    // mode, where every m must run the one cuBLASLt algorithm of its shape (batch invariance).
    if (!deterministic_ && SkinnyLinearFits(a)) {
      return CudaStatus(LaunchSkinnyLinear(a, Native(s)), "Linear");
    }
    // cuBLASLt has no SwiGLU or RoPE epilogue: its GEMM, then the epilogue's own kernel.
    if (a.epilogue != LinearEpilogue::kNone) return LinearThenEpilogue(*this, a, s);
    absl::Status st = linear_->Run(a, Native(s));
    // A shape cuBLASLt has no algorithm for runs on the plain tiled kernel instead.
    if (absl::IsUnimplemented(st)) return CudaStatus(LaunchLinearFallback(a, Native(s)), "Linear");
    return st;
  }

 protected:
  void Free(void* data) override { cudaFree(data); }
  void FreeHost(void* data) override { cudaFreeHost(data); }

 private:
  int ordinal_;
  CudaStream default_stream_;
  std::unique_ptr<LtLinear> linear_;
  std::atomic<bool> deterministic_{false};
};

}  // namespace

bool CudaDeviceVisible() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int ordinal) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device visible (", cudaGetErrorString(err), ")"));
  }
  if (ordinal < 0 || ordinal >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", ordinal, " does not exist; ", count, " visible"));
  }
  if (auto s = CudaStatus(cudaSetDevice(ordinal), "cudaSetDevice"); !s.ok()) return s;
  cudaStream_t stream = nullptr;
  if (auto s =
          CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
      !s.ok()) {
    return s;
  }
  auto linear = LtLinear::Create();
  if (!linear.ok()) {
    cudaStreamDestroy(stream);
    return linear.status();
  }
  return std::unique_ptr<Backend>(
      std::make_unique<CudaBackend>(ordinal, stream, std::move(*linear)));
}

}  // namespace arbor::kernels
