// A Backend that forwards to a real one until told to fail: then, like a CUDA device after a
// sticky error, every op and Health() return the failure. Tests use it to check what the engine
// and the server do when the device dies mid-run (robustness case 17).
#ifndef ARBOR_TESTS_FAULTY_BACKEND_H_
#define ARBOR_TESTS_FAULTY_BACKEND_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <utility>

#include "kernels/backend.h"

namespace arbor::testing {

class FaultyBackend : public kernels::Backend {
 public:
  explicit FaultyBackend(std::unique_ptr<kernels::Backend> inner) : inner_(std::move(inner)) {}

  // From now on every op fails with `why` (sticky). With `health_reports_it` false, Health()
  // stays ok: a failure only the engine sees.
  void Fail(absl::Status why, bool health_reports_it = true) {
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = std::move(why);
    health_reports_.store(health_reports_it);
    failed_.store(true);
  }
  // While set, only CopyOnDevice fails (not sticky): a copy-on-write that does not happen.
  void FailCopiesOnDevice(bool fail) { fail_copies_.store(fail); }
  // Ops that reached the device since construction (counted before forwarding).
  int64_t ops() const { return ops_.load(); }
  // Device and host buffers allocated since construction.
  int64_t allocations() const { return allocations_.load(); }
  // Copies to the host since construction (each one waits for the device on CUDA).
  int64_t host_copies() const { return host_copies_.load(); }

  kernels::DeviceKind kind() const override { return inner_->kind(); }
  absl::StatusOr<kernels::DeviceInfo> Info() const override { return inner_->Info(); }
  absl::Status Health() override {
    if (failed_.load() && health_reports_.load()) return failure();
    return inner_->Health();
  }
  // Buffers are the inner backend's (it frees them), so they outlive a failure cleanly.
  absl::StatusOr<kernels::DeviceBuffer> Allocate(size_t bytes) override {
    if (failed_.load()) return failure();
    allocations_.fetch_add(1);
    return inner_->Allocate(bytes);
  }
  absl::StatusOr<kernels::HostBuffer> AllocateHost(size_t bytes) override {
    if (failed_.load()) return failure();
    allocations_.fetch_add(1);
    return inner_->AllocateHost(bytes);
  }
  absl::Status CopyToDevice(void* dst, const void* src, size_t n, kernels::Stream& s) override {
    return Op([&] { return inner_->CopyToDevice(dst, src, n, s); });
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t n, kernels::Stream& s) override {
    host_copies_.fetch_add(1);
    return Op([&] { return inner_->CopyToHost(dst, src, n, s); });
  }
  absl::Status CopyOnDevice(void* dst, const void* src, size_t n, kernels::Stream& s) override {
    if (fail_copies_.load()) return absl::InternalError("injected: device copy failed");
    return Op([&] { return inner_->CopyOnDevice(dst, src, n, s); });
  }
  absl::Status Fill(void* dst, uint8_t v, size_t n, kernels::Stream& s) override {
    return Op([&] { return inner_->Fill(dst, v, n, s); });
  }
  absl::StatusOr<std::unique_ptr<kernels::Stream>> CreateStream() override {
    return inner_->CreateStream();
  }
  absl::StatusOr<std::unique_ptr<kernels::Event>> CreateEvent() override {
    return inner_->CreateEvent();
  }
  kernels::Stream& default_stream() override { return inner_->default_stream(); }

#define ARBOR_FAULTY_OP(Name)                                                    \
  absl::Status Name(const kernels::Name##Args& a, kernels::Stream& s) override { \
    return Op([&] { return inner_->Name(a, s); });                               \
  }
  ARBOR_FAULTY_OP(Linear)
  ARBOR_FAULTY_OP(AddRmsNorm)
  ARBOR_FAULTY_OP(SiluMul)
  ARBOR_FAULTY_OP(Embedding)
  ARBOR_FAULTY_OP(RopeKvWrite)
  ARBOR_FAULTY_OP(PagedAttention)
  ARBOR_FAULTY_OP(TopKSoftmax)
  ARBOR_FAULTY_OP(GatherRows)
  ARBOR_FAULTY_OP(ScatterAddRows)
  ARBOR_FAULTY_OP(MoeCombine)
  ARBOR_FAULTY_OP(MoePermute)
  ARBOR_FAULTY_OP(GroupedLinear)
  ARBOR_FAULTY_OP(RandomFill)
  ARBOR_FAULTY_OP(Convert)
  ARBOR_FAULTY_OP(TargetLogprobs)
  ARBOR_FAULTY_OP(Lora)
  ARBOR_FAULTY_OP(Sample)
  absl::Status UpdatePenaltyState(const kernels::PenaltyUpdateArgs& a,
                                  kernels::Stream& s) override {
    return Op([&] { return inner_->UpdatePenaltyState(a, s); });
  }
  absl::Status ResetPenaltySlots(const kernels::PenaltyResetArgs& a, kernels::Stream& s) override {
    return Op([&] { return inner_->ResetPenaltySlots(a, s); });
  }
#undef ARBOR_FAULTY_OP

 protected:
  // Never reached: every buffer handed out belongs to the inner backend.
  void Free(void*) override {}
  void FreeHost(void*) override {}

 private:
  absl::Status failure() const {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_;
  }
  template <typename F>
  absl::Status Op(F&& f) {
    if (failed_.load()) return failure();
    ops_.fetch_add(1);
    return f();
  }

  std::unique_ptr<kernels::Backend> inner_;
  mutable std::mutex mu_;
  absl::Status failure_;
  std::atomic<bool> failed_{false};
  std::atomic<bool> health_reports_{true};
  std::atomic<bool> fail_copies_{false};
  std::atomic<int64_t> ops_{0};
  std::atomic<int64_t> allocations_{0};
  std::atomic<int64_t> host_copies_{0};
};

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_FAULTY_BACKEND_H_
