// The BPE model of tokenizer.json: vocabulary, ranked merges and the options real files use
// (byte_fallback with "<0xNN>" tokens, unk_token/fuse_unk, ignore_merges,
// continuing_subword_prefix, end_of_word_suffix). Merging is Hugging Face's: repeatedly join the
// adjacent pair of lowest merge rank, leftmost first, with a priority queue over a linked list
// of symbols. Results per word are cached.
#ifndef ARBOR_ENGINE_TOKENIZER_BPE_H_
#define ARBOR_ENGINE_TOKENIZER_BPE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/tokenizer/json_fields.h"

namespace arbor::engine {

class BpeModel {
 public:
  // The "model" object at `path` (its "type" was checked to be "BPE").
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const json_fields::Json& model,
                                                            const std::string& path);

  // Appends the ids of one pre-tokenized word. Thread-safe.
  void Tokenize(std::string_view word, std::vector<int32_t>* out) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // nullptr when no vocabulary entry has this id.
  const std::string* IdToToken(int32_t id) const;
  // 1 + the largest id in the vocabulary (0 when empty).
  int32_t id_end() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void MergeWord(std::string_view word, std::vector<int32_t>* out) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::optional<std::string>> id_to_token_;  // [id_end()]
  absl::flat_hash_map<uint64_t, Merge> merges_;          // (left id, right id) -> merge
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  std::vector<int32_t> byte_ids_;  // [256] ids of "<0xNN>" (-1 if absent), for byte_fallback

  // Word -> ids. Bounded; words longer than kMaxCachedWordBytes are not cached.
  static constexpr size_t kCacheCapacity = 1 << 15;
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_BPE_H_
