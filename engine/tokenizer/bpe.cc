#include "engine/tokenizer/bpe.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/utf8.h"

namespace arbor::engine {

using json_fields::Json;

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const Json& model,
                                                             const std::string& path) {
  std::unique_ptr<BpeModel> m(new BpeModel());
  const std::string vocab_path = json_fields::Child(path, "vocab");
  const Json* vocab = json_fields::Find(model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) {
    return json_fields::Error(vocab_path, "missing (expected an object of token -> id)");
  }
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
        it->get<int64_t>() > (int64_t{1} << 30)) {
      return json_fields::Error(
          vocab_path, absl::StrCat("id of \"", it.key(), "\" is not an integer in [0, 2^30]"));
    }
    const auto id = static_cast<int32_t>(it->get<int64_t>());
    if (static_cast<size_t>(id) >= m->id_to_token_.size()) m->id_to_token_.resize(id + 1);
    if (m->id_to_token_[id].has_value()) {
      return json_fields::Error(
          vocab_path, absl::StrCat("id ", id, " is given to both \"", *m->id_to_token_[id],
                                   "\" and \"", it.key(), "\""));
    }
    m->id_to_token_[id] = it.key();
    m->vocab_[it.key()] = id;
  }

  if (const Json* d = json_fields::Find(model, "dropout"); d != nullptr) {
    if (!d->is_number() || d->get<double>() != 0.0) {
      return json_fields::Error(json_fields::Child(path, "dropout"),
                                "BPE dropout is not supported (encoding must be deterministic)");
    }
  }
  ASSIGN_OR_RETURN(const std::optional<std::string> unk,
                   json_fields::GetOptionalString(model, "unk_token", path));
  if (unk.has_value()) {
    auto it = m->vocab_.find(*unk);
    if (it == m->vocab_.end()) {
      return json_fields::Error(json_fields::Child(path, "unk_token"),
                                absl::StrCat("\"", *unk, "\" is not in ", vocab_path));
    }
    m->unk_id_ = it->second;
  }
  ASSIGN_OR_RETURN(m->fuse_unk_, json_fields::GetBool(model, "fuse_unk", path, false));
  ASSIGN_OR_RETURN(m->byte_fallback_, json_fields::GetBool(model, "byte_fallback", path, false));
  ASSIGN_OR_RETURN(m->ignore_merges_, json_fields::GetBool(model, "ignore_merges", path, false));
  ASSIGN_OR_RETURN(const std::optional<std::string> prefix,
                   json_fields::GetOptionalString(model, "continuing_subword_prefix", path));
  ASSIGN_OR_RETURN(const std::optional<std::string> suffix,
                   json_fields::GetOptionalString(model, "end_of_word_suffix", path));
  m->continuing_subword_prefix_ = prefix.value_or("");
  m->end_of_word_suffix_ = suffix.value_or("");

  m->byte_ids_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    auto it = m->vocab_.find(absl::StrFormat("<0x%02X>", b));
    if (it != m->vocab_.end()) m->byte_ids_[static_cast<size_t>(b)] = it->second;
  }

  const std::string merges_path = json_fields::Child(path, "merges");
  const Json* merges = json_fields::Find(model, "merges");
  static const Json* const kNoMerges = new Json(Json::array());
  if (merges == nullptr) merges = kNoMerges;  // a vocabulary of whole words needs none
  if (!merges->is_array()) return json_fields::Error(merges_path, "expected a list");
  m->merges_.reserve(merges->size());
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const Json& entry = (*merges)[rank];
    const std::string entry_path = json_fields::Index(merges_path, rank);
    std::string left, right;
    if (entry.is_string()) {  // "a b", the older format
      const std::string s = entry.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return json_fields::Error(entry_path, "expected \"left right\" with one space");
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      return json_fields::Error(entry_path, "expected [\"left\", \"right\"] or \"left right\"");
    }
    auto l = m->vocab_.find(left);
    auto r = m->vocab_.find(right);
    if (l == m->vocab_.end() || r == m->vocab_.end()) {
      return json_fields::Error(
          entry_path, absl::StrCat("token \"", l == m->vocab_.end() ? left : right, "\" is not in ",
                                   vocab_path));
    }
    std::string joined = left;
    const std::string& prefix_str = m->continuing_subword_prefix_;
    if (!prefix_str.empty() && right.compare(0, prefix_str.size(), prefix_str) == 0) {
      joined.append(right, prefix_str.size(), std::string::npos);
    } else {
      joined.append(right);
    }
    auto n = m->vocab_.find(joined);
    if (n == m->vocab_.end()) {
      return json_fields::Error(
          entry_path, absl::StrCat("merged token \"", joined, "\" is not in ", vocab_path));
    }
    // As in HF (a map built from the list), a repeated pair keeps its last rank.
    m->merges_[PairKey(l->second, r->second)] = Merge{static_cast<int32_t>(rank), n->second};
  }
  return m;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(ToAbsl(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !id_to_token_[id].has_value()) {
    return nullptr;
  }
  return &*id_to_token_[id];
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(ToAbsl(word)); it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (auto it = cache_.find(ToAbsl(word)); it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  MergeWord(word, &ids);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::MergeWord(std::string_view word, std::vector<int32_t>* out) const {
  // Symbols of the word as a doubly linked list; a merged-away symbol gets id -1.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, n - 1, n + 1});
  };
  int32_t pending_unk = -1;  // an unknown run not yet added (fused when fuse_unk), or -1
  std::string piece;
  for (size_t i = 0; i < word.size();) {
    size_t len = 1;
    utf8::DecodeAt(word, i, &len);
    const bool is_first = i == 0;
    const bool is_last = i + len >= word.size();
    piece.clear();
    if (!is_first) piece.append(continuing_subword_prefix_);
    piece.append(word.substr(i, len));
    if (is_last) piece.append(end_of_word_suffix_);
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      if (pending_unk >= 0) {
        add(pending_unk);
        pending_unk = -1;
      }
      add(it->second);
    } else {
      bool handled = false;
      if (byte_fallback_) {
        bool all = true;
        for (const char c : piece) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
        if (all) {
          for (const char c : piece) add(byte_ids_[static_cast<uint8_t>(c)]);
          handled = true;  // as in HF, a pending unknown run stays pending
        }
      }
      if (!handled && unk_id_.has_value()) {
        if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
        pending_unk = *unk_id_;
      }
      // Without unk_token an unknown character is dropped, as in HF.
    }
    i += len;
  }
  if (pending_unk >= 0) add(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
  auto push_pair = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges_.find(PairKey(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) queue.push(Candidate{it->second.rank, pos, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    // Skip entries made stale by an earlier merge: the pair there must still make new_id.
    auto it = merges_.find(PairKey(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    const int32_t right = left.next;
    left.id = top.new_id;
    left.next = symbols[right].next;
    symbols[right].id = -1;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (s.id >= 0) out->push_back(s.id);
  }
}

}  // namespace arbor::engine
