// The progress display of `arbor eval` on stderr: a bar redrawn in place when stderr is a
// terminal, otherwise a plain line every few seconds (logs and CI stay readable).
#ifndef ARBOR_EVAL_PROGRESS_H_
#define ARBOR_EVAL_PROGRESS_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/time/time.h"

namespace arbor::eval {

class Progress {
 public:
  // `unit` names what is counted ("documents", "problems"); `total` of them are to be done.
  Progress(std::ostream& out, bool tty, std::string unit, int64_t total);

  // `done` of the total finished, `tokens` processed so far. Draws at most every 0.1 s on a
  // terminal, and every 10 s otherwise (the first line 10 s after the start).
  void Update(int64_t done, int64_t tokens);
  // The last state, drawn once more and ended with a newline.
  void Finish();

  // One display line: "[#####-----] 12/40 documents  345 tok/s  0:03 left" (the bar only on a
  // terminal).
  std::string Line(int64_t done, int64_t tokens, absl::Duration elapsed) const;

 private:
  void Draw();

  std::ostream& out_;
  bool tty_;
  std::string unit_;
  int64_t total_;
  int64_t done_ = 0, tokens_ = 0;
  absl::Time start_;
  absl::Time last_draw_;
  bool finished_ = false;
};

}  // namespace arbor::eval

#endif  // ARBOR_EVAL_PROGRESS_H_
