#include "engine/sampling/stop_string_matcher.h"

#include <algorithm>
#include <utility>

namespace arbor::engine {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

StopStringMatcher::Result StopStringMatcher::Feed(std::string_view delta) {
  Result result;
  if (stopped_) {
    result.stopped = true;
    result.matched = matched_;
    return result;
  }
  // `pending_` holds no complete stop string, so any match ends inside `delta`.
  pending_.append(delta.data(), delta.size());

  const std::string* best = nullptr;
  size_t best_start = 0;
  size_t best_end = std::string::npos;
  for (const auto& s : stops_) {
    const size_t pos = pending_.find(s);  // the first occurrence also ends first
    if (pos == std::string::npos) continue;
    const size_t end = pos + s.size();
    if (end < best_end || (end == best_end && pos < best_start)) {
      best = &s;
      best_start = pos;
      best_end = end;
    }
  }
  if (best != nullptr) {
    result.emit = pending_.substr(0, best_start);
    result.stopped = true;
    result.matched = *best;
    stopped_ = true;
    matched_ = *best;
    pending_.clear();
    return result;
  }

  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_) {
    for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len) {
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  result.emit = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return result;
}

std::string StopStringMatcher::Flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  pending_.clear();
  return out;
}

}  // namespace arbor::engine
