// Hands one request's events from the engine thread to the front-end thread serving it. The
// engine's callback only queues (never blocks); the front end waits on the queue.
#ifndef ARBOR_SERVER_REQUEST_CHANNEL_H_
#define ARBOR_SERVER_REQUEST_CHANNEL_H_

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>

#include "absl/time/time.h"
#include "engine/request.h"

namespace arbor::server {

// One channel may carry several engine requests (a completions call with a list of prompts):
// each one's callback shifts its event indexes, so that they number the client's choices.
class RequestChannel : public std::enable_shared_from_this<RequestChannel> {
 public:
  // `n`: how many sequences (over every request) will finish.
  explicit RequestChannel(int n) : n_(n) {}

  // The engine callback; holds the channel alive while the engine may still call it. Events
  // come out with `index_offset` added to their index.
  engine::StreamCallback Callback(int32_t index_offset = 0) {
    auto self = shared_from_this();
    return [self, index_offset](const engine::StreamEvent& ev) {
      std::lock_guard<std::mutex> lock(self->mu_);
      if (ev.finish) ++self->finished_;
      self->events_.push_back(ev);
      self->events_.back().index += index_offset;
      self->cv_.notify_all();
    };
  }

  // `sequences` of the n will never finish here (their request was never submitted).
  void Forget(int sequences) {
    std::lock_guard<std::mutex> lock(mu_);
    n_ -= sequences;
    cv_.notify_all();
  }

  // Pops the next event, waiting up to `timeout`; false if none came.
  bool Pop(engine::StreamEvent* out, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, absl::ToChronoMilliseconds(timeout),
                      [this] { return !events_.empty(); })) {
      return false;
    }
    *out = std::move(events_.front());
    events_.pop_front();
    return true;
  }

  // Every sequence has finished and every event was popped.
  bool Drained() {
    std::lock_guard<std::mutex> lock(mu_);
    return finished_ >= n_ && events_.empty();
  }
  bool Finished() {
    std::lock_guard<std::mutex> lock(mu_);
    return finished_ >= n_;
  }

 private:
  int n_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<engine::StreamEvent> events_;
  int finished_ = 0;
};

}  // namespace arbor::server

#endif  // ARBOR_SERVER_REQUEST_CHANNEL_H_
