// Stop strings on streamed text. The detokenizer produces text a delta at a time; a stop string
// may straddle several deltas (and tokens), and no byte of it may reach the client. The matcher
// holds back any tail of the text that could still grow into a stop string, and releases it as
// soon as it cannot (or at Flush).
#ifndef ARBOR_ENGINE_SAMPLING_STOP_STRING_MATCHER_H_
#define ARBOR_ENGINE_SAMPLING_STOP_STRING_MATCHER_H_

#include <string>
#include <string_view>
#include <vector>

namespace arbor::engine {

// When several stop strings occur, the one that is complete first in the text wins (smallest
// end offset; at equal ends, the longer one). That is the match a byte-at-a-time stream would
// see first, so the result does not depend on how the text was cut into deltas.
//
// Matching is on bytes. With valid UTF-8 text and stop strings (ValidateSamplingParams checks
// the latter) a match and the held-back tail both start on a character boundary, so emitted
// text never ends inside a multi-byte character.
class StopStringMatcher {
 public:
  // Empty strings are ignored (they would match everywhere).
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string emit;      // text safe to send now
    bool stopped = false;  // a stop string completed; `emit` ends right before it
    std::string matched;   // the stop string, when stopped
  };

  // Feeds the next piece of generated text. After a stop, further calls emit nothing and
  // report the same stop.
  Result Feed(std::string_view delta);

  // End of generation without a stop string: the held-back text. Empty after a stop (text
  // after the stop string is dropped).
  std::string Flush();

  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // held back: a suffix of the text that is a proper prefix of a stop
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_SAMPLING_STOP_STRING_MATCHER_H_
