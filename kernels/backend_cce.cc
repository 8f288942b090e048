// ValidateTargetLogprobs (kernels/backend.h): the checks both backends run before the op, so
// they refuse exactly the same inputs. Each error names the field.
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"

namespace arbor::kernels {
namespace {

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("TargetLogprobs: ", what));
}

absl::Status CheckMatrix(const char* field, const Tensor& t) {
  if (t.data == nullptr) return Bad(absl::StrCat(field, " is null"));
  if (!IsFloat(t.dtype)) return Bad(absl::StrCat(field, " must be f32, bf16 or f16"));
  if (t.rows <= 0 || t.cols <= 0) {
    return Bad(absl::StrCat(field, " must be non-empty, got [", t.rows, ", ", t.cols, "]"));
  }
  if (t.stride < t.cols) {
    return Bad(absl::StrCat(field, ".stride ", t.stride, " is below its cols ", t.cols));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTargetLogprobs(const TargetLogprobsArgs& a) {
  if (auto s = CheckMatrix("x", a.x); !s.ok()) return s;
  if (auto s = CheckMatrix("w", a.w); !s.ok()) return s;
  if (a.w.dtype != a.x.dtype) {
    return Bad(absl::StrCat("w is ", DTypeName(a.w.dtype), " but x is ", DTypeName(a.x.dtype)));
  }
  if (a.w.cols != a.x.cols) {
    return Bad(absl::StrCat("w has ", a.w.cols, " columns (hidden) but x has ", a.x.cols));
  }
  if (a.w.rows > kCceMaxSplits * kCceSplitVocab) {
    return Bad(absl::StrCat("w has ", a.w.rows, " rows (vocab); at most ",
                            kCceMaxSplits * kCceSplitVocab));
  }
  if (!(a.softcap >= 0.0f) || a.softcap == INFINITY) {
    return Bad(absl::StrCat("softcap must be finite and >= 0, got ", a.softcap));
  }
  if (a.targets == nullptr) return Bad("targets is null");
  if (a.logprobs == nullptr) return Bad("logprobs is null");
  if (a.lse == nullptr) return Bad("lse is null");
  if (a.top_k < 0 || a.top_k > kCceMaxTopK) {
    return Bad(absl::StrCat("top_k must be in [0, ", kCceMaxTopK, "], got ", a.top_k));
  }
  if (a.top_k > a.w.rows) {
    return Bad(absl::StrCat("top_k ", a.top_k, " exceeds the vocab ", a.w.rows));
  }
  if (a.top_k > 0 && (a.top_ids == nullptr || a.top_logprobs == nullptr)) {
    return Bad("top_ids and top_logprobs must be given when top_k > 0");
  }
  const size_t need = TargetLogprobsWorkspaceBytes(a.x.rows, a.w.rows, a.top_k);
  if (a.workspace == nullptr || a.workspace_bytes < need) {
    return Bad(absl::StrCat("workspace_bytes ", a.workspace == nullptr ? 0 : a.workspace_bytes,
                            " is below TargetLogprobsWorkspaceBytes = ", need));
  }
  return absl::OkStatus();
}

}  // namespace arbor::kernels
