// Bounds on one render of a chat template (robustness case 11: model templates render with
// bounded time and output size). Exceeding any of them is ResourceExhausted, never a hang.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_LIMITS_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_LIMITS_H_

#include <cstdint>

namespace arbor::engine {

struct ChatTemplateLimits {
  // Evaluation steps: one per statement, expression and loop iteration. Real templates take a
  // few dozen per message; a million is about a tenth of a second.
  int64_t max_steps = 2'000'000;
  // Size of the rendered prompt, and of any one string the template builds.
  int64_t max_output_bytes = 4 << 20;
  // Bytes and items built or scanned by string and list operations, summed over the render:
  // bounds the work of quadratic patterns such as repeated concatenation.
  int64_t max_work_bytes = int64_t{256} << 20;
  // Items in any one list the template builds (range(), [x] * n, list + list).
  int64_t max_list_items = 1'000'000;
  // range() length; Jinja's sandbox refuses ranges over 100000 as well.
  int64_t max_range = 100'000;
  // Macro calls in progress at once (recursion depth).
  int max_call_depth = 32;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_LIMITS_H_
