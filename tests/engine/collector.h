// Collects one engine request's events from its callback (which runs on the engine thread), for
// the engine tests.
#ifndef ARBOR_TESTS_ENGINE_COLLECTOR_H_
#define ARBOR_TESTS_ENGINE_COLLECTOR_H_

#include <condition_variable>
#include <mutex>
#include <optional>
#include <vector>

#include "engine/request.h"

namespace arbor::engine {

// One request's events: its prompt log-probs (index 0's, in arrival order), the size of each
// event that carried some, generated tokens per index, finish reasons and metrics. Wait()
// returns once every sequence has finished.
class Collector {
 public:
  explicit Collector(int n = 1) : tokens_(size_t(n)), finish_(size_t(n)) {}
  StreamCallback Callback() {
    return [this](const StreamEvent& ev) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ev.prompt_logprobs.empty()) {
        if (ev.index != 0) ++prompt_logprobs_off_index0_;
        event_sizes_.push_back(ev.prompt_logprobs.size());
        entries_.insert(entries_.end(), ev.prompt_logprobs.begin(), ev.prompt_logprobs.end());
      }
      auto& t = tokens_[size_t(ev.index)];
      t.insert(t.end(), ev.token_ids.begin(), ev.token_ids.end());
      if (ev.finish) {
        finish_[size_t(ev.index)] = *ev.finish;
        ++finished_;
      }
      if (ev.metrics) metrics_ = *ev.metrics;
      cv_.notify_all();
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return finished_ == int(tokens_.size()); });
  }
  // Waits until at least `n` prompt log-probs have arrived.
  void WaitForEntries(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return entries_.size() >= n; });
  }
  std::vector<PromptLogprob> entries() {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_;
  }
  std::vector<size_t> event_sizes() {
    std::lock_guard<std::mutex> lock(mu_);
    return event_sizes_;
  }
  int prompt_logprobs_off_index0() {
    std::lock_guard<std::mutex> lock(mu_);
    return prompt_logprobs_off_index0_;
  }
  std::vector<std::vector<int32_t>> tokens() {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_;
  }
  std::vector<std::optional<FinishReason>> finish() {
    std::lock_guard<std::mutex> lock(mu_);
    return finish_;
  }
  RequestMetrics metrics() {
    std::lock_guard<std::mutex> lock(mu_);
    return metrics_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<PromptLogprob> entries_;
  std::vector<size_t> event_sizes_;
  int prompt_logprobs_off_index0_ = 0;
  std::vector<std::vector<int32_t>> tokens_;
  std::vector<std::optional<FinishReason>> finish_;
  int finished_ = 0;
  RequestMetrics metrics_;
};

}  // namespace arbor::engine

#endif  // ARBOR_TESTS_ENGINE_COLLECTOR_H_
