#include "tools/bench/serve/load_runner.h"

#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/bench/serve/arrivals.h"
#include "tools/bench/serve/stream_request.h"

namespace arbor::bench {
namespace {

constexpr int kMaxEvents = 256;
constexpr double kProgressEvery_s = 1.0;
constexpr double kTimeoutCheckEvery_s = 0.05;

// One socket per stream: lift the soft descriptor limit to the hard one.
void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

class Epoll {
 public:
  Epoll() : fd_(epoll_create1(EPOLL_CLOEXEC)) {}
  ~Epoll() {
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

LoadPoint LoadPoint::ClosedLoop(int32_t concurrency) {
  LoadPoint p;
  p.closed_loop = true;
  p.concurrency = concurrency;
  return p;
}

std::string LoadPoint::Label() const {
  if (closed_loop) return absl::StrCat("concurrency=", concurrency);
  std::string label = std::isinf(rate) ? "rate=inf" : absl::StrFormat("rate=%g", rate);
  if (gamma_shape != 1) absl::StrAppendFormat(&label, " gamma=%g", gamma_shape);
  return label;
}

std::string ProgressLine(const LoadPoint& point, double now_s, size_t sent, size_t planned,
                         size_t ended, size_t in_flight, size_t failed, int64_t output_tokens) {
  return absl::StrFormat("[%s] %.1fs sent %d/%d done %d in-flight %d errors %d out-tok/s %.1f",
                         point.Label(), now_s, sent, planned, ended, in_flight, failed,
                         now_s > 0 ? double(output_tokens) / now_s : 0.0);
}

absl::StatusOr<PointResult> RunPoint(const RunOptions& options, const LoadPoint& point,
                                     const std::vector<PlannedRequest>& requests) {
  RaiseFileLimit();
  Epoll epoll;
  if (epoll.fd() < 0) return absl::InternalError(absl::StrCat("epoll: ", std::strerror(errno)));
  const auto origin = std::chrono::steady_clock::now();
  auto Now = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - origin).count();
  };

  const size_t n = requests.size();
  PointResult result;
  result.records.resize(n);
  // In-flight streams by socket; index: the request's place in the plan.
  struct InFlight {
    std::unique_ptr<StreamRequest> stream;
    size_t index;
  };
  std::unordered_map<int, InFlight> in_flight;
  size_t sent = 0, ended = 0, failed = 0;
  int64_t output_tokens = 0;

  auto End = [&](InFlight& f) {
    RequestRecord& r = result.records[f.index];
    r = std::move(f.stream->record());
    ++ended;
    if (!r.ok()) ++failed;
    output_tokens += r.output_tokens;
  };
  auto Launch = [&](double now) {
    const PlannedRequest& p = requests[sent];
    InFlight f{std::make_unique<StreamRequest>(
                   PostRequest(options.target, options.path, options.api_key, p.body), p.model),
               sent};
    ++sent;
    if (!f.stream->Start(options.target, now)) return End(f);
    epoll_event ev{};
    ev.events = f.stream->WantedEvents();
    ev.data.fd = f.stream->fd();
    if (epoll_ctl(epoll.fd(), EPOLL_CTL_ADD, f.stream->fd(), &ev) != 0) {
      f.stream->TimeOut(now);  // cannot be watched: ends at once
      f.stream->record().error = ErrorKind::kConnect;
      f.stream->record().error_detail = absl::StrCat("epoll_ctl: ", std::strerror(errno));
      return End(f);
    }
    const int fd = f.stream->fd();
    in_flight.emplace(fd, std::move(f));
  };

  ArrivalProcess arrivals(point.rate, point.gamma_shape, options.seed);
  double next_arrival = 0;
  double next_progress = kProgressEvery_s;
  double next_timeout_check = kTimeoutCheckEvery_s;
  auto Progress = [&](double now) {
    if (!options.progress) return;
    options.progress(
        ProgressLine(point, now, sent, n, ended, in_flight.size(), failed, output_tokens));
  };

  epoll_event events[kMaxEvents];
  while (ended < n) {
    double now = Now();
    if (point.closed_loop) {
      while (sent < n && in_flight.size() < size_t(point.concurrency)) Launch(now);
    } else {
      while (sent < n && next_arrival <= now) {
        Launch(now);
        next_arrival += arrivals.NextGap();
      }
    }
    if (now >= next_timeout_check) {
      next_timeout_check = now + kTimeoutCheckEvery_s;
      for (auto it = in_flight.begin(); it != in_flight.end();) {
        if (now - it->second.stream->record().sent_s < options.timeout_s) {
          ++it;
          continue;
        }
        it->second.stream->TimeOut(now);
        End(it->second);
        it = in_flight.erase(it);
      }
    }
    if (now >= next_progress) {
      next_progress = now + kProgressEvery_s;
      Progress(now);
    }
    if (ended >= n) break;
    double wake = std::min(next_progress, next_timeout_check);
    if (!point.closed_loop && sent < n) wake = std::min(wake, next_arrival);
    const int wait_ms = int(std::ceil(std::max(0.0, wake - now) * 1000));
    const int got = epoll_wait(epoll.fd(), events, kMaxEvents, wait_ms);
    if (got < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("epoll_wait: ", std::strerror(errno)));
    }
    now = Now();
    for (int i = 0; i < got; ++i) {
      auto it = in_flight.find(events[i].data.fd);
      if (it == in_flight.end()) continue;
      StreamRequest& s = *it->second.stream;
      const uint32_t before = s.WantedEvents();
      if (s.OnReady(events[i].events, now)) {
        End(it->second);  // its socket is closed, which also removed it from epoll
        in_flight.erase(it);
        continue;
      }
      if (s.WantedEvents() != before) {
        epoll_event ev{};
        ev.events = s.WantedEvents();
        ev.data.fd = s.fd();
        epoll_ctl(epoll.fd(), EPOLL_CTL_MOD, s.fd(), &ev);
      }
    }
  }
  for (const RequestRecord& r : result.records) {
    result.duration_s = std::max(result.duration_s, r.end_s);
  }
  Progress(Now());
  return result;
}

}  // namespace arbor::bench
