// engine::Model: the forward pass of every supported architecture, written once against
// kernels::Backend (CPU reference or CUDA), in one activation dtype (f32, bf16 or f16) with a
// KV cache of its own dtype.
//
// Per layer: residual add + RMSNorm -> fused qkv (+bias, +LoRA) -> RoPE and the K/V write ->
// causal attention (GQA, optional sliding window) -> o (+bias, +LoRA) -> residual add + RMSNorm
// -> fused gate_up, SwiGLU, down (+LoRA) or MoE (softmax top-k routing); then the last residual
// add, the final norm and the LM head (fp32 logits) on the rows whose logits are wanted. The
// residual adds ride in the next norm, which rounds them as transformers does in bf16.
#ifndef ARBOR_ENGINE_MODEL_MODEL_H_
#define ARBOR_ENGINE_MODEL_MODEL_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/lora/adapter.h"
#include "engine/model/hf_config.h"
#include "engine/model/lm_head_scorer.h"
#include "engine/model/moe_layer.h"
#include "engine/model/scratch.h"
#include "engine/model/weights.h"
#include "kernels/backend.h"

namespace arbor::engine {

// Where the KV cache lives: pages laid out as memory/unified_pool.h documents (a page is one
// block of `block_size` tokens for every layer, K and V), in the model's kv_dtype(). The engine
// passes the unified pool.
struct KvCacheView {
  void* pages = nullptr;  // device pointer to page 0
  int64_t block_size = 16;
};

// Where adapters' pages live (the unified pool: AdapterStore), for decode graphs that apply
// adapters. The pool's base and page size are baked into those graphs; its page count bounds
// the page-table entries a batch's adapters can need (their pages are distinct pool pages).
struct LoraGraphPool {
  const void* base = nullptr;  // null: no graphs with adapters
  int64_t page_bytes = 0;
  int64_t num_pages = 0;
};

// The largest pass the engine will run: Model::Reserve sizes every workspace for it once, at
// start-up, so that serving allocates no device memory.
struct ForwardLimits {
  int64_t max_tokens = 0;       // tokens per pass (max_num_batched_tokens)
  int64_t max_seqs = 0;         // sequences per pass (max_num_seqs)
  int64_t max_blocks = 0;       // block-table length (max_model_len / block_size, rounded up)
  int64_t max_logit_rows = 0;   // logits rows per pass (sampled and scored)
  int64_t max_lora_rank = 0;    // 0: no adapters
  int64_t max_scored_rows = 0;  // rows scored against targets per pass (ChunkScore)
};

// The dtypes a model runs in (model.dtype and engine.kv_cache_dtype, resolved).
struct ModelOptions {
  kernels::DType dtype = kernels::DType::kF32;     // weights and activations
  kernels::DType kv_dtype = kernels::DType::kF32;  // the KV cache
};

// One sequence's share of a batch: `tokens` at positions [start, start + n), whose KV goes to
// the pages of `block_table` (which must cover start + n tokens).
struct SequenceChunk {
  enum class Logits { kNone, kLast, kAll };
  absl::Span<const int32_t> tokens;
  int64_t start = 0;
  absl::Span<const int32_t> block_table;
  Logits logits = Logits::kLast;
  const LoraAdapter* adapter = nullptr;  // applied to this chunk's tokens (null: base model)
};

// Log-probs of given targets for one chunk (prompt scoring), independent of its `logits`:
// one target per token, in [0, vocab) or -1 (not scored); every row is scored through the fused
// LM head (LmHeadScorer, kernels/cce.h) with top_k (<= kernels::kCceMaxTopK) alternatives, and
// no [rows, vocab] logits are made for it. Empty targets: the chunk is not scored.
struct ChunkScore {
  absl::Span<const int32_t> targets;
  int32_t top_k = 0;
};

// A single sequence that owns its pages (block table 0, 1, 2, ...): for tests and tools that
// run one sequence without the engine's pool.
struct SequenceKv {
  kernels::DeviceBuffer pages;
  std::vector<int32_t> block_table;
  int64_t block_size = 16;
  int64_t capacity = 0;
  int64_t length = 0;  // tokens already cached
};

class Model {
 public:
  // Loads config.json (+ generation_config.json) and the safetensors weights of `model_dir`.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& model_dir,
                                                     kernels::Backend& backend,
                                                     ModelOptions options = {});
  // `load_format: dummy`: the shapes of the spec, seeded random weights.
  static absl::StatusOr<std::unique_ptr<Model>> Dummy(const ModelSpec& spec, uint64_t seed,
                                                      kernels::Backend& backend,
                                                      ModelOptions options = {});

  const ModelSpec& spec() const { return spec_; }
  kernels::DType dtype() const { return options_.dtype; }
  kernels::DType kv_dtype() const { return options_.kv_dtype; }
  size_t weight_bytes() const { return w_.bytes; }

  // Bytes of one KV page (block) for this model in its kv_dtype().
  size_t KvPageBytes(int64_t block_size) const;

  // Grows every forward-pass buffer to what `limits` needs. Passes within the limits then
  // allocate nothing (buffers only grow). Call before sizing the KV pool from free memory.
  absl::Status Reserve(const ForwardLimits& limits);
  size_t workspace_bytes() const;

  // One forward pass over a batch (continuous batching: prefill chunks and decodes mixed).
  // Writes every chunk's K/V into its pages and returns host logits, one [vocab] row per
  // requested position, in chunk order. Ids outside the vocabulary, positions past
  // max_position_embeddings and block tables too short are InvalidArgument naming the chunk.
  absl::StatusOr<std::vector<float>> Forward(absl::Span<const SequenceChunk> chunks,
                                             const KvCacheView& kv);
  // The same pass, its logits left on the device: fp32 [rows, vocab] (rows 0 when no chunk
  // wants logits), valid until the next forward pass. Work is queued on the backend's default
  // stream; nothing waits for it. `scores`: empty, or one per chunk (ChunkScore); the scored
  // rows' results are in scored() after the call.
  absl::StatusOr<kernels::Tensor> ForwardOnDevice(absl::Span<const SequenceChunk> chunks,
                                                  const KvCacheView& kv,
                                                  absl::Span<const ChunkScore> scores = {});
  // The rows the last ForwardOnDevice scored (its ChunkScores, in chunk order, every row of a
  // scored chunk), on the device; valid until the next pass.
  const ScoredRows& scored() const { return scorer_.outputs(); }

  // CUDA graphs for decode steps (engine.cuda_graphs): one graph per batch-size bucket (1, 2, 4,
  // ..., max_batch, capped by what Reserve reserved), each the whole forward pass of that many
  // one-token sequences over the pages of `kv`. From then on a pass of b <= max_batch one-token
  // chunks without adapters, over these pages, uploads its plan padded to the smallest bucket
  // >= b and replays that bucket's graph: one launch instead of a few per layer. Returns how
  // many graphs were captured; Unimplemented on backends without graphs.
  // With `lora_pool` (and a max_lora_rank reserved), a second set of graphs per bucket applies
  // adapters too: a decode step whose sequences use adapters paged in `lora_pool` replays one
  // of those. Adapter slots, ranks, scales and page tables are data in a fixed LoRA region
  // (uploaded each step), not launch shapes: the graphs launch the LoRA op for every target
  // the model can adapt at the reserved max rank (kernels/lora.h: a slot's rank and missing
  // matrices are read from its directory, so a q/v-only rank-8 adapter adds nothing elsewhere;
  // on MoE models that includes the experts' gate_up and down on the pair rows).
  // Call after Reserve; a later Reserve that would grow the workspaces drops the graphs (they
  // hold the workspaces' addresses). Capturing again (a new engine over a new pool) replaces
  // them.
  absl::StatusOr<int64_t> CaptureDecodeGraphs(const KvCacheView& kv, int64_t max_batch,
                                              const LoraGraphPool& lora_pool = {});
  int64_t max_graph_batch() const { return graphs_.empty() ? 0 : graphs_.back().batch; }
  // Whether decode steps with adapters replay graphs.
  bool lora_graphs() const { return !lora_graphs_.empty(); }
  // Passes that replayed a graph so far, and those of them that applied adapters.
  int64_t graph_launches() const { return graph_launches_; }
  int64_t lora_graph_launches() const { return lora_graph_launches_; }

  // A single sequence with its own pages for up to `capacity` tokens.
  absl::StatusOr<SequenceKv> NewSequence(int64_t capacity, int64_t block_size = 16);
  // Runs `tokens` after the cached ones of `seq` and returns logits [n, vocab] when
  // `all_positions`, else [1, vocab]. Cache overflow is OutOfRange.
  absl::StatusOr<std::vector<float>> Forward(absl::Span<const int32_t> tokens, SequenceKv& seq,
                                             bool all_positions,
                                             const LoraAdapter* adapter = nullptr);

 private:
  Model(ModelSpec spec, ModelWeights weights, ModelOptions options, kernels::Backend& backend);
  absl::Status UploadRopeTable();  // inv_freq_ for the spec's rope scaling
  absl::StatusOr<kernels::Tensor> ForwardLocked(absl::Span<const SequenceChunk> chunks,
                                                const KvCacheView& kv,
                                                absl::Span<const ChunkScore> scores = {});
  // The host side of a pass: per token its id, position, sequence and KV slot; per sequence
  // its block table, padded with -1 to max_blocks; the rows whose logits are wanted; the
  // adapters of the batch (its LoRA slots) and each token's slot.
  struct PassPlan {
    std::vector<int32_t> ids, positions, token_seq, slots, tables, logit_rows;
    std::vector<int32_t> prefill_tiles, decode_rows;  // kernels/attention_plan.h
    int64_t num_seqs = 0;
    int64_t max_blocks = 1;
    std::vector<const LoraAdapter*> adapters;      // slot -> adapter
    std::vector<int32_t> token_slot;               // [n] when there are adapters; -1: base only
    int64_t adapter_tokens = 0, adapter_runs = 0;  // runs of consecutive tokens of one slot
    // Tokens scored against a target (ChunkScore): pass rows, targets, the largest top-k asked.
    std::vector<int32_t> score_rows, score_targets;
    int64_t score_top_k = 0;
    int64_t n() const { return int64_t(ids.size()); }
  };
  // The same plan on the device (carved from the workspace), and the shape the kernels'
  // launches depend on.
  struct DevicePlan {
    int32_t* ids = nullptr;            // [n]
    int32_t* positions = nullptr;      // [n]
    int32_t* token_seq = nullptr;      // [n]
    int32_t* slots = nullptr;          // [n]
    int32_t* tables = nullptr;         // [num_seqs, max_blocks]
    int32_t* logit_rows = nullptr;     // [rows]
    int32_t* prefill_tiles = nullptr;  // [num_prefill_tiles, 2]
    int32_t* decode_rows = nullptr;    // [num_decode_rows]
    int64_t n = 0, num_seqs = 0, max_blocks = 0, rows = 0;
    int64_t num_prefill_tiles = 0, num_decode_rows = 0;
  };
  struct DecodeGraph {
    int64_t batch = 0;
    std::unique_ptr<kernels::Graph> graph;
    bool lora = false;  // applies adapters (lora_graph_pass_)
  };
  struct Activations;
  struct LoraPass;
  // Checks the chunks (ids, positions, block tables) and builds the host plan; block tables
  // are padded to at least `min_blocks`.
  absl::StatusOr<PassPlan> PlanPass(absl::Span<const SequenceChunk> chunks, const KvCacheView& kv,
                                    int64_t min_blocks) const;
  // The scored rows of `scores` (one per chunk) into `plan`: rows, targets (checked), top-k.
  absl::Status PlanScores(absl::Span<const SequenceChunk> chunks,
                          absl::Span<const ChunkScore> scores, PassPlan* plan) const;
  // Adds padding sequences up to `batch` (see the .cc for why they touch no page).
  static void PadPlan(int64_t batch, PassPlan* plan);
  // Lays out the pass's buffers and queues the plan's upload; the adapters' slot arrays too,
  // unless `lora` is null (a graph pass: UploadGraphLora).
  absl::StatusOr<DevicePlan> UploadPlan(const PassPlan& plan, Activations* a, LoraPass* lora);
  // Every kernel of the pass, from the embedding to the LM head; launch-only (no host sync),
  // so that it can be captured.
  absl::StatusOr<kernels::Tensor> RunPass(const DevicePlan& d, const Activations& a,
                                          const LoraPass& lora, const KvCacheView& kv);
  // The graph that runs `chunks`, or null when they are not a capturable decode step.
  const DecodeGraph* GraphFor(absl::Span<const SequenceChunk> chunks, const KvCacheView& kv) const;
  // Captures one graph per bucket of `buckets`, with `lora` as every pass's LoRA state.
  absl::StatusOr<std::vector<DecodeGraph>> CaptureBuckets(absl::Span<const int64_t> buckets,
                                                          const LoraPass& lora,
                                                          const KvCacheView& kv);
  // The LoRA state of a graph pass (lora_graph_pass_) for the adapters of `p` (none: every
  // token base-only), uploaded into the fixed region; false when they do not fit it.
  absl::StatusOr<bool> UploadGraphLora(const PassPlan& p);
  // The batch's adapters as the Lora op takes them (kernels/lora.h), uploaded once for every
  // layer into the LoRA workspace.
  struct LoraPass {
    kernels::LoraWeights w;               // num_slots 0: no adapter in the batch
    const int32_t* token_slot = nullptr;  // [n]
    float* shrink = nullptr;              // [n, kLoraMaxTargets * max_rank]
    int64_t max_rank = 0;
    kernels::LoraSchedule schedule = kernels::LoraSchedule::kPerToken;
    std::vector<std::array<bool, kNumLoraTargets>> targets;  // [layer][target]: some slot adapts it
  };
  // The activations of one pass (model dtype), carved from the workspace.
  struct Activations {
    kernels::Tensor x;        // [n, hidden]: the residual stream
    kernels::Tensor hb;       // [n, hidden]: the normed input of a sublayer
    kernels::Tensor qkv;      // [n, q_dim + 2 kv_dim]
    kernels::Tensor attn;     // [n, q_dim]
    kernels::Tensor delta;    // [n, hidden]: a sublayer's output, added by the next norm
    kernels::Tensor gate_up;  // [n, 2 inter]; MoE: [n * k, 2 inter], one row per pair
    kernels::Tensor act;      // [n, inter]; MoE: [n * k, inter]
    kernels::Tensor router;   // [n, num_experts] (MoE)
    // [n * k, hidden] (MoE): every (token, expert) pair's input row, grouped by expert, then
    // its expert's output.
    kernels::Tensor pairs;
    int32_t* plan = nullptr;  // the int32 plan: ids, positions, sequences, slots, tables, rows
    // Split-KV partials of decode attention (CUDA only; kernels/attention_plan.h).
    float* attn_split = nullptr;
    int64_t attn_split_floats = 0;
  };
  // Where a pass's buffers sit from `base` (null: only the size); returns the bytes.
  size_t LayoutActivations(void* base, int64_t n, size_t plan_ints, Activations* a) const;
  // The LoRA workspace of a pass (null base: only the size): the int32 slot arrays (`ints`:
  // token_slot, slot_pages, slot_rank, slot_scale's bits, page_table) and the shrink floats.
  size_t LayoutLora(void* base, int64_t n, int64_t max_rank, int64_t num_slots, int64_t num_pages,
                    LoraPass* pass, int32_t** ints) const;
  // y[t, cols of target] += scale * B (A x[t]) for every token t under an adapter, for each of
  // `targets` (consecutive column slices of y in that order, with one fused shrink over x):
  // x [n, in_features], y [n, sum of the targets' out_features].
  absl::Status ApplyLora(const LoraPass& pass, int64_t layer, std::initializer_list<int> targets,
                         const kernels::Tensor& x, const kernels::Tensor& y);
  bool LoraTargets(const LoraPass& pass, int64_t layer, int target) const;
  absl::Status Mlp(const LayerWeights& L, const Activations& a, const LoraPass& lora,
                   int64_t layer);
  absl::Status Moe(const LayerWeights& L, const Activations& a, const LoraPass& lora,
                   int64_t layer);
  MoeLayerShape MoeShape() const;

  ModelSpec spec_;
  ModelWeights w_;
  ModelOptions options_;
  kernels::Backend& be_;
  kernels::DeviceBuffer inv_freq_;  // [head_dim / 2]
  // Forward's device buffers, reused from pass to pass (forward_mu_ serializes passes).
  std::mutex forward_mu_;
  Scratch workspace_;                // activations and the int32 plan
  Scratch lora_;                     // LoRA slot arrays and shrink rows (LayoutLora)
  Scratch logits_;                   // [rows, vocab]
  Scratch moe_;                      // MoE routing and grouping arrays (MoeScratchBytes)
  LmHeadScorer scorer_;              // rows scored against targets, through the fused LM head
  kernels::HostBuffer plan_mirror_;  // pinned: the int32 plan before it goes up (Reserve)
  ForwardLimits reserved_;           // the largest limits Reserve was given
  std::vector<DecodeGraph> graphs_;  // ascending batch (CaptureDecodeGraphs)
  // The same buckets with adapters applied; their LoRA state is lora_graph_pass_ (whose
  // w.pool and w.page_bytes are the adapters' pool's), laid out once in lora_graph_ for
  // max_graph_batch() tokens and slots and lora_graph_pages_ page-table entries (the pool's
  // page count).
  std::vector<DecodeGraph> lora_graphs_;
  int64_t lora_graph_pages_ = 0;
  Scratch lora_graph_;
  LoraPass lora_graph_pass_;
  int32_t* lora_graph_ints_ = nullptr;  // lora_graph_pass_'s int32 arrays, in LayoutLora order
  KvCacheView graph_kv_;                // the pages the graphs were captured over
  int64_t graph_max_blocks_ = 0;        // every graph's block-table width
  std::atomic<int64_t> graph_launches_{0};
  std::atomic<int64_t> lora_graph_launches_{0};
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_MODEL_H_
