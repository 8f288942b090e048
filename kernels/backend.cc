#include "kernels/backend.h"

#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace arbor::kernels {

const char* DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kCpu:
      return "cpu";
    case DeviceKind::kCuda:
      return "cuda";
  }
  return "?";
}

absl::Status Backend::BeginCapture(Stream&) {
  return absl::UnimplementedError(
      absl::StrCat("graph capture: the ", DeviceKindName(kind()), " backend has no graphs"));
}

absl::StatusOr<std::unique_ptr<Graph>> Backend::EndCapture(Stream&) {
  return absl::UnimplementedError(
      absl::StrCat("graph capture: the ", DeviceKindName(kind()), " backend has no graphs"));
}

namespace {

#define ARBOR_REQUIRE(expr)                    \
  do {                                         \
    if (auto s_ = (expr); !s_.ok()) return s_; \
  } while (0)

absl::Status Invalid(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

absl::Status RequirePositive(const char* op, const char* field, int64_t v) {
  if (v <= 0) return Invalid(op, absl::StrCat(field, " must be > 0, got ", v));
  return absl::OkStatus();
}

// An expert count the device MoE kernels take (their per-expert arrays sit in shared memory).
absl::Status RequireExperts(const char* op, int64_t num_experts) {
  ARBOR_REQUIRE(RequirePositive(op, "num_experts", num_experts));
  if (num_experts > kMaxExperts) {
    return Invalid(op, absl::StrCat("num_experts ", num_experts, " exceeds ", kMaxExperts));
  }
  return absl::OkStatus();
}

absl::Status RequirePointer(const char* op, const char* field, const void* p) {
  if (p == nullptr) return Invalid(op, absl::StrCat(field, " is null"));
  return absl::OkStatus();
}

// A float tensor with data, a positive shape and a stride that covers its columns. Kernels
// index with 64-bit offsets; cuBLASLt takes 32-bit dimensions and leading dimensions.
absl::Status RequireTensor(const char* op, const char* field, const Tensor& t) {
  if (t.data == nullptr) return Invalid(op, absl::StrCat(field, " is null"));
  if (!IsFloat(t.dtype)) {
    return Invalid(op, absl::StrCat(field, " has dtype ", DTypeName(t.dtype), ", not a float"));
  }
  if (t.rows <= 0 || t.cols <= 0) {
    return Invalid(op, absl::StrCat(field, " has shape [", t.rows, ", ", t.cols, "]"));
  }
  if (t.stride < t.cols) {
    return Invalid(op, absl::StrCat(field, " has stride ", t.stride, " < cols ", t.cols));
  }
  constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;
  if (t.rows > kMaxDim || t.stride > kMaxDim) {
    return Invalid(op, absl::StrCat(field, " exceeds 2^31-1 rows or stride"));
  }
  return absl::OkStatus();
}

absl::Status RequireShape(const char* op, const char* field, const Tensor& t, int64_t rows,
                          int64_t cols) {
  if (t.rows != rows || t.cols != cols) {
    return Invalid(
        op, absl::StrCat(field, " is [", t.rows, ", ", t.cols, "], want [", rows, ", ", cols, "]"));
  }
  return absl::OkStatus();
}

absl::Status RequireDType(const char* op, const char* field, const Tensor& t, DType want) {
  if (t.dtype != want) {
    return Invalid(op, absl::StrCat(field, " is ", DTypeName(t.dtype), ", want ", DTypeName(want)));
  }
  return absl::OkStatus();
}

absl::Status ValidatePagedKv(const char* op, const PagedKv& kv) {
  ARBOR_REQUIRE(RequirePointer(op, "kv.pages", kv.pages));
  if (!IsFloat(kv.dtype)) return Invalid(op, "kv.dtype is not a float type");
  ARBOR_REQUIRE(RequirePositive(op, "kv.block_size", kv.block_size));
  ARBOR_REQUIRE(RequirePositive(op, "kv.num_layers", kv.num_layers));
  ARBOR_REQUIRE(RequirePositive(op, "kv.kv_dim", kv.kv_dim));
  if (kv.layer < 0 || kv.layer >= kv.num_layers) {
    return Invalid(op, "kv.layer outside [0, num_layers)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateLinear(const LinearArgs& a) {
  ARBOR_REQUIRE(RequireTensor("Linear", "x", a.x));
  ARBOR_REQUIRE(RequireTensor("Linear", "w", a.w));
  ARBOR_REQUIRE(RequireTensor("Linear", "y", a.y));
  ARBOR_REQUIRE(RequireDType("Linear", "w", a.w, a.x.dtype));
  if (a.y.dtype != a.x.dtype && a.y.dtype != DType::kF32) {
    return Invalid("Linear", absl::StrCat("y is ", DTypeName(a.y.dtype), ": want x's dtype (",
                                          DTypeName(a.x.dtype), ") or f32"));
  }
  if (a.x.cols != a.w.cols) {
    return Invalid("Linear", absl::StrCat("x has ", a.x.cols, " columns, w has ", a.w.cols));
  }
  if (a.w.cols > (int64_t{1} << 31) - 1) return Invalid("Linear", "k exceeds 2^31-1");
  if (a.epilogue == LinearEpilogue::kNone) {
    return RequireShape("Linear", "y", a.y, a.x.rows, a.w.rows);
  }
  if (a.epilogue == LinearEpilogue::kRopeKvWrite) {
    ARBOR_REQUIRE(RequireShape("Linear", "y", a.y, a.x.rows, a.w.rows));
    ARBOR_REQUIRE(RequireDType("Linear", "y", a.y, a.x.dtype));
    if (a.accumulate) return Invalid("Linear", "epilogue rope_kv_write takes no accumulate");
    if (a.rope.qkv.data != a.y.data || a.rope.qkv.rows != a.y.rows ||
        a.rope.qkv.cols != a.y.cols || a.rope.qkv.stride != a.y.stride) {
      return Invalid("Linear", "epilogue rope_kv_write: rope.qkv must be y");
    }
    return ValidateRopeKvWrite(a.rope);
  }
  if (a.epilogue != LinearEpilogue::kSiluMul) return Invalid("Linear", "unknown epilogue");
  if (a.w.rows % 2 != 0) {
    return Invalid("Linear", absl::StrCat("epilogue silu_mul: w has ", a.w.rows,
                                          " rows, want an even count (gate then up)"));
  }
  if (a.bias != nullptr || a.accumulate) {
    return Invalid("Linear", "epilogue silu_mul takes no bias and no accumulate");
  }
  ARBOR_REQUIRE(RequireShape("Linear", "y", a.y, a.x.rows, a.w.rows / 2));
  ARBOR_REQUIRE(RequireDType("Linear", "y", a.y, a.x.dtype));
  ARBOR_REQUIRE(RequireTensor("Linear", "scratch", a.scratch));
  ARBOR_REQUIRE(RequireShape("Linear", "scratch", a.scratch, a.x.rows, a.w.rows));
  return RequireDType("Linear", "scratch", a.scratch, a.x.dtype);
}

absl::Status LinearThenEpilogue(Backend& be, const LinearArgs& a, Stream& stream) {
  LinearArgs plain = a;
  plain.epilogue = LinearEpilogue::kNone;
  plain.scratch = Tensor{};
  plain.rope = RopeKvWriteArgs{};
  if (a.epilogue == LinearEpilogue::kRopeKvWrite) {
    if (auto s = be.Linear(plain, stream); !s.ok()) return s;
    return be.RopeKvWrite(a.rope, stream);
  }
  plain.y = a.scratch;
  if (auto s = be.Linear(plain, stream); !s.ok()) return s;
  return be.SiluMul({a.scratch, a.y}, stream);
}

absl::Status ValidateAddRmsNorm(const AddRmsNormArgs& a) {
  ARBOR_REQUIRE(RequireTensor("AddRmsNorm", "x", a.x));
  ARBOR_REQUIRE(RequireTensor("AddRmsNorm", "y", a.y));
  ARBOR_REQUIRE(RequirePointer("AddRmsNorm", "weight", a.weight));
  ARBOR_REQUIRE(RequireShape("AddRmsNorm", "y", a.y, a.x.rows, a.x.cols));
  ARBOR_REQUIRE(RequireDType("AddRmsNorm", "y", a.y, a.x.dtype));
  if (!a.delta.empty()) {
    ARBOR_REQUIRE(RequireTensor("AddRmsNorm", "delta", a.delta));
    ARBOR_REQUIRE(RequireShape("AddRmsNorm", "delta", a.delta, a.x.rows, a.x.cols));
    ARBOR_REQUIRE(RequireDType("AddRmsNorm", "delta", a.delta, a.x.dtype));
  }
  if (!(a.eps > 0.0f)) return Invalid("AddRmsNorm", "eps must be > 0");
  return absl::OkStatus();
}

absl::Status ValidateSiluMul(const SiluMulArgs& a) {
  ARBOR_REQUIRE(RequireTensor("SiluMul", "gate_up", a.gate_up));
  ARBOR_REQUIRE(RequireTensor("SiluMul", "out", a.out));
  ARBOR_REQUIRE(RequireShape("SiluMul", "gate_up", a.gate_up, a.out.rows, 2 * a.out.cols));
  return RequireDType("SiluMul", "out", a.out, a.gate_up.dtype);
}

absl::Status ValidateEmbedding(const EmbeddingArgs& a) {
  ARBOR_REQUIRE(RequirePointer("Embedding", "ids", a.ids));
  ARBOR_REQUIRE(RequireTensor("Embedding", "table", a.table));
  ARBOR_REQUIRE(RequireTensor("Embedding", "out", a.out));
  ARBOR_REQUIRE(RequireDType("Embedding", "out", a.out, a.table.dtype));
  if (a.out.cols != a.table.cols) {
    return Invalid("Embedding",
                   absl::StrCat("out has ", a.out.cols, " columns, the table ", a.table.cols));
  }
  return absl::OkStatus();
}

absl::Status ValidateRopeKvWrite(const RopeKvWriteArgs& a) {
  const char* op = "RopeKvWrite";
  ARBOR_REQUIRE(RequireTensor(op, "qkv", a.qkv));
  ARBOR_REQUIRE(RequirePointer(op, "positions", a.positions));
  ARBOR_REQUIRE(RequirePointer(op, "inv_freq", a.inv_freq));
  ARBOR_REQUIRE(RequirePointer(op, "slots", a.slots));
  ARBOR_REQUIRE(ValidatePagedKv(op, a.kv));
  ARBOR_REQUIRE(RequirePositive(op, "num_q_heads", a.num_q_heads));
  ARBOR_REQUIRE(RequirePositive(op, "num_kv_heads", a.num_kv_heads));
  ARBOR_REQUIRE(RequirePositive(op, "head_dim", a.head_dim));
  if (a.head_dim % 2 != 0) return Invalid(op, "head_dim must be even");
  if (a.qkv.cols != (a.num_q_heads + 2 * a.num_kv_heads) * a.head_dim) {
    return Invalid(op, absl::StrCat("qkv has ", a.qkv.cols, " columns, want (", a.num_q_heads,
                                    " + 2 * ", a.num_kv_heads, ") * ", a.head_dim));
  }
  if (a.num_kv_heads * a.head_dim != a.kv.kv_dim) {
    return Invalid(op, "num_kv_heads * head_dim != kv.kv_dim");
  }
  return absl::OkStatus();
}

absl::Status ValidatePagedAttention(const PagedAttentionArgs& a) {
  const char* op = "PagedAttention";
  ARBOR_REQUIRE(RequireTensor(op, "q", a.q));
  ARBOR_REQUIRE(RequireTensor(op, "out", a.out));
  ARBOR_REQUIRE(RequirePointer(op, "block_tables", a.block_tables));
  ARBOR_REQUIRE(RequirePointer(op, "token_seq", a.token_seq));
  ARBOR_REQUIRE(RequirePointer(op, "q_positions", a.q_positions));
  ARBOR_REQUIRE(ValidatePagedKv(op, a.kv));
  ARBOR_REQUIRE(RequirePositive(op, "num_seqs", a.num_seqs));
  ARBOR_REQUIRE(RequirePositive(op, "max_blocks", a.max_blocks));
  ARBOR_REQUIRE(RequirePositive(op, "num_q_heads", a.num_q_heads));
  ARBOR_REQUIRE(RequirePositive(op, "num_kv_heads", a.num_kv_heads));
  ARBOR_REQUIRE(RequirePositive(op, "head_dim", a.head_dim));
  ARBOR_REQUIRE(RequireShape(op, "q", a.q, a.q.rows, a.num_q_heads * a.head_dim));
  ARBOR_REQUIRE(RequireShape(op, "out", a.out, a.q.rows, a.num_q_heads * a.head_dim));
  ARBOR_REQUIRE(RequireDType(op, "out", a.out, a.q.dtype));
  if (a.num_q_heads % a.num_kv_heads != 0)
    return Invalid(op, "num_kv_heads must divide num_q_heads");
  if (a.num_kv_heads * a.head_dim != a.kv.kv_dim) {
    return Invalid(op, "num_kv_heads * head_dim != kv.kv_dim");
  }
  if (a.sliding_window < 0) return Invalid(op, "sliding_window < 0");
  // Position j is key i of p's group for j = p - i * dilation: 0 would repeat p forever.
  if (a.dilation < 1) return Invalid(op, absl::StrCat("dilation must be >= 1, got ", a.dilation));
  if (a.num_prefill_tiles < 0) return Invalid(op, "num_prefill_tiles < 0");
  if (a.num_prefill_tiles > 0) {
    ARBOR_REQUIRE(RequirePointer(op, "prefill_tiles", a.prefill_tiles));
    if (a.num_decode_rows < 0 || a.num_decode_rows > a.q.rows) {
      return Invalid(op, "num_decode_rows outside [0, q.rows]");
    }
    if (a.num_decode_rows > 0) ARBOR_REQUIRE(RequirePointer(op, "decode_rows", a.decode_rows));
  }
  if (a.split_workspace != nullptr) {
    if (a.split_keys <= 0 || a.split_keys % 128 != 0) {
      return Invalid(op, "split_keys must be a positive multiple of 128");
    }
    if (a.max_context <= 0) return Invalid(op, "max_context must be > 0 with a split workspace");
    if (a.split_workspace_floats <= 0) return Invalid(op, "split_workspace_floats must be > 0");
  }
  // The CUDA kernel keeps one head's output row in registers: 8 floats a lane, 32 lanes.
  if (a.head_dim > 256) return Invalid(op, "head_dim > 256");
  return absl::OkStatus();
}

absl::Status ValidateTopKSoftmax(const TopKSoftmaxArgs& a) {
  ARBOR_REQUIRE(RequireTensor("TopKSoftmax", "logits", a.logits));
  ARBOR_REQUIRE(RequirePointer("TopKSoftmax", "weights", a.weights));
  ARBOR_REQUIRE(RequirePointer("TopKSoftmax", "experts", a.experts));
  ARBOR_REQUIRE(RequirePositive("TopKSoftmax", "k", a.k));
  if (a.k > a.logits.cols || a.k > kMaxTopK) {
    return Invalid("TopKSoftmax", absl::StrCat("k must be <= num_experts and <= ", kMaxTopK));
  }
  return absl::OkStatus();
}

absl::Status ValidateGatherRows(const GatherRowsArgs& a) {
  ARBOR_REQUIRE(RequireTensor("GatherRows", "src", a.src));
  ARBOR_REQUIRE(RequirePointer("GatherRows", "index", a.index));
  ARBOR_REQUIRE(RequireTensor("GatherRows", "dst", a.dst));
  ARBOR_REQUIRE(RequireDType("GatherRows", "dst", a.dst, a.src.dtype));
  if (a.dst.cols != a.src.cols) return Invalid("GatherRows", "dst and src column counts differ");
  return absl::OkStatus();
}

absl::Status ValidateScatterAddRows(const ScatterAddRowsArgs& a) {
  ARBOR_REQUIRE(RequireTensor("ScatterAddRows", "src", a.src));
  ARBOR_REQUIRE(RequirePointer("ScatterAddRows", "index", a.index));
  ARBOR_REQUIRE(RequirePointer("ScatterAddRows", "scale", a.scale));
  ARBOR_REQUIRE(RequireTensor("ScatterAddRows", "dst", a.dst));
  ARBOR_REQUIRE(RequireDType("ScatterAddRows", "dst", a.dst, a.src.dtype));
  if (a.dst.cols != a.src.cols) {
    return Invalid("ScatterAddRows", "dst and src column counts differ");
  }
  return absl::OkStatus();
}

absl::Status ValidateMoeCombine(const MoeCombineArgs& a) {
  ARBOR_REQUIRE(RequireTensor("MoeCombine", "expert_out", a.expert_out));
  ARBOR_REQUIRE(RequirePointer("MoeCombine", "rows", a.rows));
  ARBOR_REQUIRE(RequirePointer("MoeCombine", "weights", a.weights));
  ARBOR_REQUIRE(RequireTensor("MoeCombine", "out", a.out));
  ARBOR_REQUIRE(RequirePositive("MoeCombine", "k", a.k));
  ARBOR_REQUIRE(RequireDType("MoeCombine", "out", a.out, a.expert_out.dtype));
  if (a.out.cols != a.expert_out.cols) {
    return Invalid("MoeCombine", "out and expert_out column counts differ");
  }
  return absl::OkStatus();
}

absl::Status ValidateMoePermute(const MoePermuteArgs& a) {
  const char* op = "MoePermute";
  ARBOR_REQUIRE(RequirePointer(op, "experts", a.experts));
  ARBOR_REQUIRE(RequirePointer(op, "weights", a.weights));
  ARBOR_REQUIRE(RequirePointer(op, "expert_offsets", a.expert_offsets));
  ARBOR_REQUIRE(RequirePointer(op, "permuted_tokens", a.permuted_tokens));
  ARBOR_REQUIRE(RequirePointer(op, "combine_rows", a.combine_rows));
  ARBOR_REQUIRE(RequirePointer(op, "combine_weights", a.combine_weights));
  ARBOR_REQUIRE(RequirePositive(op, "num_tokens", a.num_tokens));
  ARBOR_REQUIRE(RequirePositive(op, "k", a.k));
  ARBOR_REQUIRE(RequireExperts(op, a.num_experts));
  if (a.k > a.num_experts || a.k > kMaxTopK) {
    return Invalid(op, absl::StrCat("k must be <= num_experts and <= ", kMaxTopK));
  }
  if (a.num_tokens > ((int64_t{1} << 31) - 1) / a.k) {
    return Invalid(op, "num_tokens * k exceeds 2^31-1");
  }
  return absl::OkStatus();
}

absl::Status ValidateGroupedLinear(const GroupedLinearArgs& a) {
  const char* op = "GroupedLinear";
  ARBOR_REQUIRE(RequireTensor(op, "x", a.x));
  ARBOR_REQUIRE(RequireTensor(op, "w", a.w));
  ARBOR_REQUIRE(RequireTensor(op, "y", a.y));
  ARBOR_REQUIRE(RequirePointer(op, "offsets", a.offsets));
  ARBOR_REQUIRE(RequireExperts(op, a.num_experts));
  ARBOR_REQUIRE(RequireDType(op, "w", a.w, a.x.dtype));
  ARBOR_REQUIRE(RequireDType(op, "y", a.y, a.x.dtype));
  if (a.x.cols != a.w.cols) {
    return Invalid(op, absl::StrCat("x has ", a.x.cols, " columns, w has ", a.w.cols));
  }
  ARBOR_REQUIRE(RequireShape(op, "w", a.w, a.num_experts * a.y.cols, a.x.cols));
  ARBOR_REQUIRE(RequireShape(op, "y", a.y, a.x.rows, a.y.cols));
  return absl::OkStatus();
}

absl::Status ValidateRandomFill(const RandomFillArgs& a) {
  ARBOR_REQUIRE(RequireTensor("RandomFill", "out", a.out));
  if (!(a.lo < a.hi) || !std::isfinite(a.lo) || !std::isfinite(a.hi)) {
    return Invalid("RandomFill", "needs finite lo < hi");
  }
  return absl::OkStatus();
}

absl::Status ValidateConvert(const ConvertArgs& a) {
  ARBOR_REQUIRE(RequireTensor("Convert", "src", a.src));
  ARBOR_REQUIRE(RequireTensor("Convert", "dst", a.dst));
  return RequireShape("Convert", "dst", a.dst, a.src.rows, a.src.cols);
}

absl::Status ValidateSampleShape(const SampleArgs& a) {
  if (a.num_rows < 0 || a.num_rows > 65535) {
    return Invalid("Sample", absl::StrCat("num_rows must be in [0, 65535], got ", a.num_rows));
  }
  if (a.vocab < 1 || a.vocab > (int64_t{1} << 23)) {
    return Invalid("Sample", absl::StrCat("vocab must be in [1, 2^23], got ", a.vocab));
  }
  if (a.num_rows == 0) return absl::OkStatus();
  ARBOR_REQUIRE(RequirePointer("Sample", "logits", a.logits));
  ARBOR_REQUIRE(RequirePointer("Sample", "rows", a.rows));
  ARBOR_REQUIRE(RequirePointer("Sample", "tokens_out", a.tokens_out));
  if (a.logits_stride < a.vocab) return Invalid("Sample", "logits_stride must be >= vocab");
  return absl::OkStatus();
}

absl::Status ValidateLora(const LoraArgs& a) {
  constexpr const char* kOp = "Lora";
  ARBOR_REQUIRE(RequireTensor(kOp, "x", a.x));
  ARBOR_REQUIRE(RequireTensor(kOp, "y", a.y));
  ARBOR_REQUIRE(RequireDType(kOp, "y", a.y, a.x.dtype));
  if (a.y.rows != a.x.rows) {
    return Invalid(kOp, absl::StrCat("y has ", a.y.rows, " rows but x has ", a.x.rows));
  }
  ARBOR_REQUIRE(RequirePointer(kOp, "token_slot", a.token_slot));
  ARBOR_REQUIRE(RequirePointer(kOp, "shrink", a.shrink));
  if (a.num_targets < 1 || a.num_targets > kLoraMaxTargets) {
    return Invalid(kOp, absl::StrCat("num_targets must be in [1, ", kLoraMaxTargets, "], got ",
                                     a.num_targets));
  }
  if (a.max_rank < 1 || a.max_rank > kLoraMaxRank) {
    return Invalid(kOp,
                   absl::StrCat("max_rank must be in [1, ", kLoraMaxRank, "], got ", a.max_rank));
  }
  int64_t end = 0;  // targets in column order, disjoint
  for (int g = 0; g < a.num_targets; ++g) {
    const LoraTarget& t = a.targets[g];
    if (t.matrix < 0) return Invalid(kOp, absl::StrCat("targets[", g, "].matrix is negative"));
    if (t.out_features <= 0 || t.out_col < end || t.out_col + t.out_features > a.y.cols) {
      return Invalid(kOp, absl::StrCat("targets[", g, "] columns [", t.out_col, ", ",
                                       t.out_col + t.out_features, ") are not inside y's ",
                                       a.y.cols, " columns after the previous target's"));
    }
    end = t.out_col + t.out_features;
  }
  if (a.expert_offsets != nullptr) {
    ARBOR_REQUIRE(RequirePointer(kOp, "row_token", a.row_token));
    if (a.num_experts < 1 || a.expert_matrix_stride < 0) {
      return Invalid(
          kOp, absl::StrCat("expert rows need num_experts >= 1 (got ", a.num_experts,
                            ") and expert_matrix_stride >= 0 (got ", a.expert_matrix_stride, ")"));
    }
  }
  const LoraWeights& w = a.w;
  if (w.num_slots < 0) return Invalid(kOp, "w.num_slots is negative");
  if (w.num_slots == 0) return absl::OkStatus();  // every token must be base-only
  ARBOR_REQUIRE(RequirePointer(kOp, "w.pool", w.pool));
  ARBOR_REQUIRE(RequirePointer(kOp, "w.page_table", w.page_table));
  ARBOR_REQUIRE(RequirePointer(kOp, "w.slot_pages", w.slot_pages));
  ARBOR_REQUIRE(RequirePointer(kOp, "w.slot_rank", w.slot_rank));
  ARBOR_REQUIRE(RequirePointer(kOp, "w.slot_scale", w.slot_scale));
  if (w.page_bytes <= 0 || w.page_bytes % 16 != 0) {
    return Invalid(kOp, absl::StrCat("w.page_bytes must be a positive multiple of 16, got ",
                                     w.page_bytes));
  }
  return absl::OkStatus();
}

#undef ARBOR_REQUIRE

}  // namespace arbor::kernels
