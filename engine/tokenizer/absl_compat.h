// Debian's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW is
// 0), which does not convert to or from std::string_view. The tokenizer speaks
// std::string_view and converts where it calls Abseil.
#ifndef ARBOR_ENGINE_TOKENIZER_ABSL_COMPAT_H_
#define ARBOR_ENGINE_TOKENIZER_ABSL_COMPAT_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace arbor::engine {

inline absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}
inline std::string_view ToStd(absl::string_view s) { return std::string_view(s.data(), s.size()); }

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_ABSL_COMPAT_H_
