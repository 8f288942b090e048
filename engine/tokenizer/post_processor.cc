#include "engine/tokenizer/post_processor.h"

#include "absl/container/flat_hash_map.h"
#include "common/status_macros.h"

namespace arbor::engine {
namespace {

using json_fields::Json;

// The "single" template: a list of special-token id lists and the sequence itself ($A).
class TemplateProcessor : public PostProcessor {
 public:
  struct Item {
    bool is_sequence = false;
    std::vector<int32_t> ids;  // the special token's ids when !is_sequence
  };
  explicit TemplateProcessor(std::vector<Item> items) : items_(std::move(items)) {}
  std::vector<int32_t> Process(std::vector<int32_t> ids) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const Item& item : items_) {
      if (item.is_sequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), item.ids.begin(), item.ids.end());
      }
    }
    return out;
  }

 private:
  std::vector<Item> items_;
};

class IdentityProcessor : public PostProcessor {
 public:
  std::vector<int32_t> Process(std::vector<int32_t> ids) const override { return ids; }
};

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  std::vector<int32_t> Process(std::vector<int32_t> ids) const override {
    for (const auto& p : parts_) ids = p->Process(std::move(ids));
    return ids;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

absl::StatusOr<std::unique_ptr<PostProcessor>> TemplateFromJson(const Json& j,
                                                                const std::string& path) {
  // special_tokens: name -> {"id": name, "ids": [...], "tokens": [...]}.
  absl::flat_hash_map<std::string, std::vector<int32_t>> specials;
  const std::string sp_path = json_fields::Child(path, "special_tokens");
  if (const Json* sp = json_fields::Find(j, "special_tokens"); sp != nullptr) {
    if (!sp->is_object()) return json_fields::Error(sp_path, "expected an object");
    for (auto it = sp->begin(); it != sp->end(); ++it) {
      const std::string p = json_fields::Child(sp_path, it.key());
      const Json* ids = json_fields::Find(*it, "ids");
      if (ids == nullptr || !ids->is_array())
        return json_fields::Error(p, "expected \"ids\": [...]");
      std::vector<int32_t>& out = specials[it.key()];
      for (const Json& id : *ids) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
            id.get<int64_t>() > (int64_t{1} << 30)) {
          return json_fields::Error(json_fields::Child(p, "ids"), "expected ids in [0, 2^30]");
        }
        out.push_back(static_cast<int32_t>(id.get<int64_t>()));
      }
    }
  }
  const std::string single_path = json_fields::Child(path, "single");
  const Json* single = json_fields::Find(j, "single");
  if (single == nullptr || !single->is_array())
    return json_fields::Error(single_path, "expected a list");
  std::vector<TemplateProcessor::Item> items;
  for (size_t i = 0; i < single->size(); ++i) {
    const Json& piece = (*single)[i];
    const std::string p = json_fields::Index(single_path, i);
    TemplateProcessor::Item item;
    if (const Json* seq = json_fields::Find(piece, "Sequence"); seq != nullptr) {
      ASSIGN_OR_RETURN(const std::string id,
                       json_fields::GetString(*seq, "id", json_fields::Child(p, "Sequence")));
      if (id != "A")
        return json_fields::Error(json_fields::Child(p, "Sequence.id"), "expected \"A\"");
      item.is_sequence = true;
    } else if (const Json* tok = json_fields::Find(piece, "SpecialToken"); tok != nullptr) {
      const std::string tp = json_fields::Child(p, "SpecialToken");
      ASSIGN_OR_RETURN(const std::string id, json_fields::GetString(*tok, "id", tp));
      auto it = specials.find(id);
      if (it == specials.end()) {
        return json_fields::Error(json_fields::Child(tp, "id"),
                                  "\"" + id + "\" is not in " + sp_path);
      }
      item.ids = it->second;
    } else {
      return json_fields::Error(p, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
    items.push_back(std::move(item));
  }
  return std::unique_ptr<PostProcessor>(new TemplateProcessor(std::move(items)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessor::FromJson(const Json& j,
                                                                       const std::string& path) {
  if (j.is_null()) return std::unique_ptr<PostProcessor>();
  ASSIGN_OR_RETURN(const std::string type, json_fields::GetType(j, path));
  if (type == "Sequence") {
    const Json* list = json_fields::Find(j, "processors");
    const std::string list_path = json_fields::Child(path, "processors");
    if (list == nullptr || !list->is_array())
      return json_fields::Error(list_path, "expected a list");
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      ASSIGN_OR_RETURN(auto part, FromJson((*list)[i], json_fields::Index(list_path, i)));
      if (part != nullptr) parts.push_back(std::move(part));
    }
    return std::unique_ptr<PostProcessor>(new SequenceProcessor(std::move(parts)));
  }
  if (type == "TemplateProcessing") return TemplateFromJson(j, path);
  if (type == "ByteLevel") return std::unique_ptr<PostProcessor>(new IdentityProcessor());
  return json_fields::UnsupportedType(path, "post-processor", type,
                                      "Sequence, TemplateProcessing, ByteLevel");
}

}  // namespace arbor::engine
