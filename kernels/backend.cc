#include "kernels/backend.h"

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

DeviceBuffer::~DeviceBuffer() { Release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = std::exchange(other.owner_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::Release() {
  if (owner_ != nullptr && data_ != nullptr) owner_->Free(data_);
  owner_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

namespace {

absl::Status RequirePositive(const char* op, const char* field, int64_t v) {
  if (v <= 0)
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", field, " must be > 0, got ", v));
  return absl::OkStatus();
}

absl::Status RequirePointer(const char* op, const char* field, const void* p) {
  if (p == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": ", field, " is null"));
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRmsNorm(const RmsNormArgs& a) {
  for (auto [f, p] :
       {std::pair<const char*, const void*>{"x", a.x}, {"weight", a.weight}, {"y", a.y}}) {
    if (auto s = RequirePointer("RmsNorm", f, p); !s.ok()) return s;
  }
  if (auto s = RequirePositive("RmsNorm", "rows", a.rows); !s.ok()) return s;
  if (auto s = RequirePositive("RmsNorm", "cols", a.cols); !s.ok()) return s;
  if (!(a.eps > 0.0f)) return absl::InvalidArgumentError("RmsNorm: eps must be > 0");
  return absl::OkStatus();
}

absl::Status ValidateSiluMul(const SiluMulArgs& a) {
  for (auto [f, p] :
       {std::pair<const char*, const void*>{"gate", a.gate}, {"up", a.up}, {"out", a.out}}) {
    if (auto s = RequirePointer("SiluMul", f, p); !s.ok()) return s;
  }
  return RequirePositive("SiluMul", "n", a.n);
}

absl::Status ValidateAxpy(const AxpyArgs& a) {
  for (auto [f, p] : {std::pair<const char*, const void*>{"x", a.x}, {"y", a.y}}) {
    if (auto s = RequirePointer("Axpy", f, p); !s.ok()) return s;
  }
  return RequirePositive("Axpy", "n", a.n);
}

absl::Status ValidateGemm(const GemmArgs& a) {
  for (auto [f, p] : {std::pair<const char*, const void*>{"a", a.a}, {"b", a.b}, {"c", a.c}}) {
    if (auto s = RequirePointer("Gemm", f, p); !s.ok()) return s;
  }
  if (auto s = RequirePositive("Gemm", "m", a.m); !s.ok()) return s;
  if (auto s = RequirePositive("Gemm", "n", a.n); !s.ok()) return s;
  if (auto s = RequirePositive("Gemm", "k", a.k); !s.ok()) return s;
  // cuBLAS takes int dimensions; refuse what would wrap rather than compute garbage.
  constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;
  if (a.m > kMaxDim || a.n > kMaxDim || a.k > kMaxDim) {
    return absl::InvalidArgumentError("Gemm: a dimension exceeds 2^31-1");
  }
  return absl::OkStatus();
}

#define ARBOR_REQUIRE(expr)                    \
  do {                                         \
    if (auto s_ = (expr); !s_.ok()) return s_; \
  } while (0)

absl::Status ValidateEmbedding(const EmbeddingArgs& a) {
  ARBOR_REQUIRE(RequirePointer("Embedding", "ids", a.ids));
  ARBOR_REQUIRE(RequirePointer("Embedding", "table", a.table));
  ARBOR_REQUIRE(RequirePointer("Embedding", "out", a.out));
  ARBOR_REQUIRE(RequirePositive("Embedding", "num_tokens", a.num_tokens));
  ARBOR_REQUIRE(RequirePositive("Embedding", "vocab", a.vocab));
  return RequirePositive("Embedding", "hidden", a.hidden);
}

absl::Status ValidateBiasAdd(const BiasAddArgs& a) {
  ARBOR_REQUIRE(RequirePointer("BiasAdd", "x", a.x));
  ARBOR_REQUIRE(RequirePointer("BiasAdd", "bias", a.bias));
  ARBOR_REQUIRE(RequirePositive("BiasAdd", "rows", a.rows));
  return RequirePositive("BiasAdd", "cols", a.cols);
}

absl::Status ValidateRope(const RopeArgs& a) {
  ARBOR_REQUIRE(RequirePointer("Rope", "q", a.q));
  ARBOR_REQUIRE(RequirePointer("Rope", "k", a.k));
  ARBOR_REQUIRE(RequirePointer("Rope", "positions", a.positions));
  ARBOR_REQUIRE(RequirePointer("Rope", "inv_freq", a.inv_freq));
  ARBOR_REQUIRE(RequirePositive("Rope", "num_tokens", a.num_tokens));
  ARBOR_REQUIRE(RequirePositive("Rope", "num_q_heads", a.num_q_heads));
  ARBOR_REQUIRE(RequirePositive("Rope", "num_kv_heads", a.num_kv_heads));
  ARBOR_REQUIRE(RequirePositive("Rope", "head_dim", a.head_dim));
  if (a.head_dim % 2 != 0) return absl::InvalidArgumentError("Rope: head_dim must be even");
  return absl::OkStatus();
}

namespace {

absl::Status ValidatePagedKv(const char* op, const PagedKv& kv) {
  ARBOR_REQUIRE(RequirePointer(op, "kv.pages", kv.pages));
  ARBOR_REQUIRE(RequirePositive(op, "kv.block_size", kv.block_size));
  ARBOR_REQUIRE(RequirePositive(op, "kv.num_layers", kv.num_layers));
  ARBOR_REQUIRE(RequirePositive(op, "kv.kv_dim", kv.kv_dim));
  if (kv.layer < 0 || kv.layer >= kv.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": kv.layer outside [0, num_layers)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateKvWrite(const KvWriteArgs& a) {
  ARBOR_REQUIRE(RequirePointer("KvWrite", "k", a.k));
  ARBOR_REQUIRE(RequirePointer("KvWrite", "v", a.v));
  ARBOR_REQUIRE(RequirePointer("KvWrite", "slots", a.slots));
  ARBOR_REQUIRE(ValidatePagedKv("KvWrite", a.kv));
  return RequirePositive("KvWrite", "num_tokens", a.num_tokens);
}

absl::Status ValidatePagedAttention(const PagedAttentionArgs& a) {
  ARBOR_REQUIRE(RequirePointer("PagedAttention", "q", a.q));
  ARBOR_REQUIRE(RequirePointer("PagedAttention", "out", a.out));
  ARBOR_REQUIRE(RequirePointer("PagedAttention", "block_tables", a.block_tables));
  ARBOR_REQUIRE(RequirePointer("PagedAttention", "token_seq", a.token_seq));
  ARBOR_REQUIRE(RequirePointer("PagedAttention", "q_positions", a.q_positions));
  ARBOR_REQUIRE(ValidatePagedKv("PagedAttention", a.kv));
  ARBOR_REQUIRE(RequirePositive("PagedAttention", "num_tokens", a.num_tokens));
  ARBOR_REQUIRE(RequirePositive("PagedAttention", "num_seqs", a.num_seqs));
  ARBOR_REQUIRE(RequirePositive("PagedAttention", "max_blocks", a.max_blocks));
  ARBOR_REQUIRE(RequirePositive("PagedAttention", "num_q_heads", a.num_q_heads));
  ARBOR_REQUIRE(RequirePositive("PagedAttention", "num_kv_heads", a.num_kv_heads));
  ARBOR_REQUIRE(RequirePositive("PagedAttention", "head_dim", a.head_dim));
  if (a.num_q_heads % a.num_kv_heads != 0) {
    return absl::InvalidArgumentError("PagedAttention: num_kv_heads must divide num_q_heads");
  }
  if (a.num_kv_heads * a.head_dim != a.kv.kv_dim) {
    return absl::InvalidArgumentError("PagedAttention: num_kv_heads * head_dim != kv.kv_dim");
  }
  if (a.sliding_window < 0) {
    return absl::InvalidArgumentError("PagedAttention: sliding_window < 0");
  }
  // The CUDA kernel keeps one head's output row in registers: 8 floats a lane, 32 lanes.
  if (a.head_dim > 256) return absl::InvalidArgumentError("PagedAttention: head_dim > 256");
  return absl::OkStatus();
}

absl::Status ValidateTopKSoftmax(const TopKSoftmaxArgs& a) {
  ARBOR_REQUIRE(RequirePointer("TopKSoftmax", "logits", a.logits));
  ARBOR_REQUIRE(RequirePointer("TopKSoftmax", "weights", a.weights));
  ARBOR_REQUIRE(RequirePointer("TopKSoftmax", "experts", a.experts));
  ARBOR_REQUIRE(RequirePositive("TopKSoftmax", "num_tokens", a.num_tokens));
  ARBOR_REQUIRE(RequirePositive("TopKSoftmax", "num_experts", a.num_experts));
  ARBOR_REQUIRE(RequirePositive("TopKSoftmax", "k", a.k));
  if (a.k > a.num_experts || a.k > 16) {
    return absl::InvalidArgumentError("TopKSoftmax: k must be <= num_experts and <= 16");
  }
  return absl::OkStatus();
}

absl::Status ValidateGatherRows(const GatherRowsArgs& a) {
  ARBOR_REQUIRE(RequirePointer("GatherRows", "src", a.src));
  ARBOR_REQUIRE(RequirePointer("GatherRows", "index", a.index));
  ARBOR_REQUIRE(RequirePointer("GatherRows", "dst", a.dst));
  ARBOR_REQUIRE(RequirePositive("GatherRows", "num_rows", a.num_rows));
  ARBOR_REQUIRE(RequirePositive("GatherRows", "src_rows", a.src_rows));
  return RequirePositive("GatherRows", "cols", a.cols);
}

absl::Status ValidateScatterAddRows(const ScatterAddRowsArgs& a) {
  ARBOR_REQUIRE(RequirePointer("ScatterAddRows", "src", a.src));
  ARBOR_REQUIRE(RequirePointer("ScatterAddRows", "index", a.index));
  ARBOR_REQUIRE(RequirePointer("ScatterAddRows", "scale", a.scale));
  ARBOR_REQUIRE(RequirePointer("ScatterAddRows", "dst", a.dst));
  ARBOR_REQUIRE(RequirePositive("ScatterAddRows", "num_rows", a.num_rows));
  ARBOR_REQUIRE(RequirePositive("ScatterAddRows", "dst_rows", a.dst_rows));
  return RequirePositive("ScatterAddRows", "cols", a.cols);
}

#undef ARBOR_REQUIRE

}  // namespace arbor::kernels
