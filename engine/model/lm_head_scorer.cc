#include "engine/model/lm_head_scorer.h"

#include "common/status_macros.h"

namespace arbor::engine {
namespace {

size_t Align(size_t b) { return (b + 255) / 256 * 256; }

}  // namespace

// Layout from the scratch's base: rows and targets (int32 [rows] each), log-probs and lse
// (fp32 [rows] each), ranks (int32 [rows]), top ids and log-probs ([rows, top_k] each), then the
// op's workspace.
size_t LmHeadScorer::Bytes(int64_t rows, int64_t vocab, int64_t top_k) {
  return 5 * Align(size_t(rows) * 4) + 2 * Align(size_t(rows * top_k) * 4) +
         kernels::TargetLogprobsWorkspaceBytes(rows, vocab, top_k);
}

absl::Status LmHeadScorer::Reserve(kernels::Backend& be, int64_t max_rows, int64_t vocab) {
  if (max_rows <= 0) return absl::OkStatus();
  return scratch_.Get(be, Bytes(max_rows, vocab, kernels::kCceMaxTopK)).status();
}

absl::Status LmHeadScorer::Run(kernels::Backend& be, const kernels::Tensor& hidden,
                               const kernels::Tensor& head, const kernels::Tensor& gather,
                               const std::vector<int32_t>& rows,
                               const std::vector<int32_t>& targets, int64_t top_k) {
  out_ = ScoredRows();
  const int64_t n = int64_t(rows.size());
  if (n == 0) return absl::OkStatus();
  if (targets.size() != rows.size() || gather.rows < n || top_k < 0 ||
      top_k > kernels::kCceMaxTopK) {
    return absl::InvalidArgumentError("LmHeadScorer: rows, targets, gather rows or top_k");
  }
  const int64_t vocab = head.rows;
  ASSIGN_OR_RETURN(void* base, scratch_.Get(be, Bytes(n, vocab, top_k)));
  char* at = static_cast<char*>(base);
  auto take = [&](size_t bytes) {
    void* p = at;
    at += Align(bytes);
    return p;
  };
  auto* rows_dev = static_cast<int32_t*>(take(size_t(n) * 4));
  auto* targets_dev = static_cast<int32_t*>(take(size_t(n) * 4));
  auto* logprobs = static_cast<float*>(take(size_t(n) * 4));
  auto* lse = static_cast<float*>(take(size_t(n) * 4));
  auto* ranks = static_cast<int32_t*>(take(size_t(n) * 4));
  auto* top_ids = static_cast<int32_t*>(take(size_t(n * top_k) * 4));
  auto* top_logprobs = static_cast<float*>(take(size_t(n * top_k) * 4));
  kernels::Stream& st = be.default_stream();
  RETURN_IF_ERROR(be.CopyToDevice(rows_dev, rows.data(), size_t(n) * 4, st));
  RETURN_IF_ERROR(be.CopyToDevice(targets_dev, targets.data(), size_t(n) * 4, st));
  const kernels::Tensor gathered = kernels::Rows(gather, 0, n);
  RETURN_IF_ERROR(be.GatherRows({hidden, rows_dev, gathered}, st));
  kernels::TargetLogprobsArgs a;
  a.x = gathered;
  a.w = head;
  a.targets = targets_dev;
  a.logprobs = logprobs;
  a.lse = lse;
  a.ranks = ranks;
  a.top_k = top_k;
  a.top_ids = top_k > 0 ? top_ids : nullptr;
  a.top_logprobs = top_k > 0 ? top_logprobs : nullptr;
  a.workspace = at;
  a.workspace_bytes = kernels::TargetLogprobsWorkspaceBytes(n, vocab, top_k);
  RETURN_IF_ERROR(be.TargetLogprobs(a, st));
  out_ = {logprobs, ranks, top_ids, top_logprobs, n, top_k};
  return absl::OkStatus();
}

}  // namespace arbor::engine
