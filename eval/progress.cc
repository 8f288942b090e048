#include "eval/progress.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace arbor::eval {
namespace {

constexpr int kBarWidth = 30;

std::string Clock(absl::Duration d) {
  const int64_t s = absl::ToInt64Seconds(d);
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

}  // namespace

Progress::Progress(std::ostream& out, bool tty, std::string unit, int64_t total)
    : out_(out),
      tty_(tty),
      unit_(std::move(unit)),
      total_(total),
      start_(absl::Now()),
      // A terminal shows the bar at once; a log gets its first line after one period.
      last_draw_(tty ? absl::InfinitePast() : start_) {}

std::string Progress::Line(int64_t done, int64_t tokens, absl::Duration elapsed) const {
  std::string line;
  if (tty_) {
    const int filled =
        total_ > 0 ? int(std::min<int64_t>(kBarWidth, done * kBarWidth / total_)) : kBarWidth;
    line = absl::StrCat("[", std::string(size_t(filled), '#'),
                        std::string(size_t(kBarWidth - filled), '-'), "] ");
  }
  absl::StrAppend(&line, done, "/", total_, " ", unit_);
  const double seconds = absl::ToDoubleSeconds(elapsed);
  if (seconds > 0) absl::StrAppendFormat(&line, "  %.0f tok/s", double(tokens) / seconds);
  if (done > 0 && done < total_) {
    absl::StrAppend(&line, "  ", Clock(elapsed * double(total_ - done) / double(done)), " left");
  } else {
    absl::StrAppend(&line, "  ", Clock(elapsed));
  }
  return line;
}

void Progress::Update(int64_t done, int64_t tokens) {
  done_ = done;
  tokens_ = tokens;
  const absl::Duration every = tty_ ? absl::Milliseconds(100) : absl::Seconds(10);
  if (absl::Now() - last_draw_ >= every) Draw();
}

void Progress::Finish() {
  if (finished_) return;
  finished_ = true;
  Draw();
  if (tty_) out_ << "\n";
  out_.flush();
}

void Progress::Draw() {
  last_draw_ = absl::Now();
  const std::string line = Line(done_, tokens_, last_draw_ - start_);
  if (tty_) {
    out_ << "\r" << line << "\x1b[K";  // erase what a longer earlier line left
  } else {
    out_ << line << "\n";
  }
  out_.flush();
}

}  // namespace arbor::eval
