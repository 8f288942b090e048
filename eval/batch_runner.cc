#include "eval/batch_runner.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"

namespace arbor::eval {
namespace {

// What the engine thread hands over: (request, event) pairs, queued without blocking.
struct Inbox {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int64_t, engine::StreamEvent>> events;
};

}  // namespace

absl::Status RunBatch(engine::Engine& engine, const BatchRun& run) {
  auto inbox = std::make_shared<Inbox>();
  std::map<int64_t, engine::Engine::Handle> in_flight;
  auto stop = [&](absl::Status why) {
    for (const auto& [i, handle] : in_flight) engine.Cancel(handle);
    return why;
  };
  int64_t next = 0, done = 0;
  while (done < run.count) {
    while (next < run.count && int64_t(in_flight.size()) < run.max_in_flight) {
      absl::StatusOr<engine::Request> request = run.make(next);
      if (!request.ok()) return stop(request.status());
      request->callback = [inbox, i = next](const engine::StreamEvent& event) {
        std::lock_guard<std::mutex> lock(inbox->mu);
        inbox->events.emplace_back(i, event);
        inbox->cv.notify_one();
      };
      absl::StatusOr<engine::Engine::Handle> handle = engine.Submit(std::move(*request));
      if (!handle.ok()) {
        return stop(absl::Status(handle.status().code(),
                                 absl::StrCat(run.name(next), ": ", handle.status().message())));
      }
      in_flight[next++] = *handle;
    }
    std::deque<std::pair<int64_t, engine::StreamEvent>> events;
    {
      std::unique_lock<std::mutex> lock(inbox->mu);
      inbox->cv.wait_for(lock, std::chrono::milliseconds(250),
                         [&] { return !inbox->events.empty(); });
      events.swap(inbox->events);
    }
    for (const auto& [i, event] : events) {
      if (absl::Status s = run.on_event(i, event); !s.ok()) return stop(s);
      if (event.finish && in_flight.erase(i) > 0) ++done;
    }
    if (run.on_progress) run.on_progress(done);
  }
  return absl::OkStatus();
}

}  // namespace arbor::eval
