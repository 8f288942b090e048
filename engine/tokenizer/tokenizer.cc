#include "engine/tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/bpe.h"
#include "engine/tokenizer/decoder.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/post_processor.h"
#include "engine/tokenizer/pretokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace arbor::engine {

using json_fields::Json;

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;       // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;  // may be null
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;  // may be null
  std::unique_ptr<Decoder> decoder;               // may be null: tokens joined by " "
  DecoderTraits decoder_traits;
  AddedVocabulary added;
  int32_t vocab_size = 0;

  // Everything FromJson reads, with errors naming fields (the caller adds the file).
  static absl::StatusOr<std::unique_ptr<Impl>> Load(const Json& root);

  // The token string Decode uses for an id: added tokens first, as in HF.
  const std::string* Token(int32_t id) const {
    if (const AddedToken* t = added.FindById(id); t != nullptr) return &t->decode_form;
    return model->IdToToken(id);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<const Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(
    const std::string& tokenizer_json_path) {
  std::ifstream in(tokenizer_json_path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(tokenizer_json_path, ": cannot open the file"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat(tokenizer_json_path, ": error reading the file"));
  }
  return FromJson(text.str(), tokenizer_json_path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text,
                                                               const std::string& source_name) {
  Json root;
  try {
    root = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": not valid JSON (", e.what(), ")"));
  }
  auto impl = Impl::Load(root);
  if (!impl.ok()) {
    return absl::Status(impl.status().code(),
                        absl::StrCat(source_name, ": ", impl.status().message()));
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(*impl)));
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       bool add_special_tokens) const {
  const Impl& t = *impl_;
  if (const size_t valid = utf8::ValidPrefixLength(text); valid != text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Encode: the text is not valid UTF-8 (first bad byte at offset ", valid,
                     " of ", text.size(), ")"));
  }
  // 1. Added tokens with normalized == false, in the raw text.
  struct Piece {
    std::string text;
    bool at_input_start;
    int32_t id;  // an added token, or -1
  };
  std::vector<Piece> raw;
  for (const AddedSplit& s : t.added.SplitRaw(text)) {
    if (s.id >= 0) {
      raw.push_back(Piece{"", false, s.id});
    } else {
      raw.push_back(Piece{std::string(text.substr(s.begin, s.end - s.begin)), s.begin == 0, -1});
    }
  }
  // 2. Normalize the rest; then added tokens with normalized == true. 3. Pre-tokenize and run
  // the model on each word.
  std::vector<int32_t> ids;
  std::vector<TextPiece> words;
  for (Piece& p : raw) {
    if (p.id >= 0) {
      ids.push_back(p.id);
      continue;
    }
    if (t.normalizer != nullptr) t.normalizer->Normalize(&p.text);
    for (const AddedSplit& s : t.added.SplitNormalized(p.text)) {
      if (s.id >= 0) {
        ids.push_back(s.id);
        continue;
      }
      words.clear();
      words.push_back(
          TextPiece{p.text.substr(s.begin, s.end - s.begin), p.at_input_start && s.begin == 0});
      if (t.pre_tokenizer != nullptr) t.pre_tokenizer->PreTokenize(&words);
      for (const TextPiece& w : words) t.model->Tokenize(w.text, &ids);
    }
  }
  // 4. BOS/EOS.
  if (add_special_tokens && t.post_processor != nullptr) {
    ids = t.post_processor->Process(std::move(ids));
  }
  return ids;
}

absl::StatusOr<std::string> Tokenizer::DecodeImpl(absl::Span<const int32_t> ids,
                                                  bool skip_special_tokens, bool raw_bytes) const {
  const Impl& t = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    const std::string* token = t.Token(id);
    if (token == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Decode: token id ", id, " is not in the vocabulary (vocab_size ", t.vocab_size, ")"));
    }
    if (skip_special_tokens && t.added.IsSpecialContent(*token)) continue;
    tokens.push_back(*token);
  }
  if (t.decoder == nullptr) return absl::StrJoin(tokens, " ");
  return absl::StrJoin(t.decoder->DecodeChain(std::move(tokens), raw_bytes), "");
}

absl::StatusOr<Tokenizer::StreamText> Tokenizer::DecodeForStream(absl::Span<const int32_t> ids,
                                                                 bool skip_special_tokens) const {
  const Impl& t = *impl_;
  StreamText out;
  ASSIGN_OR_RETURN(out.text, DecodeImpl(ids, skip_special_tokens, /*raw_bytes=*/false));
  // The last token that was decoded (special tokens may have been skipped).
  bool ends_in_byte_token = false;
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    const std::string* token = t.Token(*it);
    if (skip_special_tokens && t.added.IsSpecialContent(*token)) continue;
    unsigned char byte = 0;
    ends_in_byte_token = ParseByteToken(*token, &byte);
    break;
  }
  const DecoderTraits& traits = t.decoder_traits;
  out.tail_final = !absl::EndsWith(out.text, ToAbsl(utf8::kReplacement)) &&
                   !(traits.byte_fallback && ends_in_byte_token) &&
                   !(traits.strips_end && absl::EndsWith(out.text, traits.strip_content));
  return out;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  ASSIGN_OR_RETURN(StreamText out, DecodeForStream(ids, skip_special_tokens));
  return std::move(out.text);
}

absl::StatusOr<std::string> Tokenizer::DecodeBytes(absl::Span<const int32_t> ids,
                                                   bool skip_special_tokens) const {
  return DecodeImpl(ids, skip_special_tokens, /*raw_bytes=*/true);
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (auto id = impl_->added.FindByContent(token); id.has_value()) return id;
  return impl_->model->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (const AddedToken* t = impl_->added.FindById(id); t != nullptr) return t->content;
  const std::string* token = impl_->model->IdToToken(id);
  if (token == nullptr) return std::nullopt;
  return *token;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  const AddedToken* t = impl_->added.FindById(id);
  return t != nullptr && t->special;
}

namespace {

const Json& Member(const Json& root, std::string_view key) {
  static const Json* const kNull = new Json();
  const Json* v = json_fields::Find(root, key);
  return v == nullptr ? *kNull : *v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer::Impl>> Tokenizer::Impl::Load(const Json& root) {
  if (!root.is_object()) return absl::InvalidArgumentError("expected a JSON object at the top");
  for (const char* key : {"truncation", "padding"}) {
    if (json_fields::Find(root, key) != nullptr) {
      return json_fields::Error(key,
                                "must be null: the server limits and batches sequences itself");
    }
  }
  auto t = std::make_unique<Tokenizer::Impl>();

  const Json* model = json_fields::Find(root, "model");
  if (model == nullptr) return json_fields::Error("model", "missing");
  if (!model->is_object()) return json_fields::Error("model", "expected an object");
  ASSIGN_OR_RETURN(const std::optional<std::string> model_type,
                   json_fields::GetOptionalString(*model, "type", "model"));
  // Files from before "type" was written hold a BPE model when they have merges.
  const bool is_bpe = model_type.has_value() ? *model_type == "BPE"
                                             : json_fields::Find(*model, "merges") != nullptr;
  if (!is_bpe) {
    return json_fields::UnsupportedType("model", "model", model_type.value_or("(none)"), "BPE");
  }
  ASSIGN_OR_RETURN(t->model, BpeModel::FromJson(*model, "model"));

  ASSIGN_OR_RETURN(t->normalizer, Normalizer::FromJson(Member(root, "normalizer"), "normalizer"));
  ASSIGN_OR_RETURN(t->pre_tokenizer,
                   PreTokenizer::FromJson(Member(root, "pre_tokenizer"), "pre_tokenizer"));
  ASSIGN_OR_RETURN(t->post_processor,
                   PostProcessor::FromJson(Member(root, "post_processor"), "post_processor"));
  ASSIGN_OR_RETURN(t->decoder, Decoder::FromJson(Member(root, "decoder"), "decoder"));
  if (t->decoder != nullptr) t->decoder->AddTraits(&t->decoder_traits);
  ASSIGN_OR_RETURN(t->added, AddedVocabulary::FromJson(Member(root, "added_tokens"), "added_tokens",
                                                       t->normalizer.get()));

  t->vocab_size = t->model->id_end();
  const auto& added = t->added.tokens();
  for (size_t i = 0; i < added.size(); ++i) {
    const AddedToken& a = added[i];
    // HF gives an added token that is also a vocabulary entry the vocabulary's id.
    if (auto in_model = t->model->TokenToId(a.content); in_model.has_value() && *in_model != a.id) {
      return json_fields::Error(json_fields::Child(json_fields::Index("added_tokens", i), "id"),
                                absl::StrCat(a.id, " differs from the id of \"", a.content,
                                             "\" in model.vocab (", *in_model, ")"));
    }
    t->vocab_size = std::max(t->vocab_size, a.id + 1);
  }
  // The post-processor's ids must exist.
  if (t->post_processor != nullptr) {
    for (const int32_t id : t->post_processor->Process({})) {
      if (t->Token(id) == nullptr) {
        return json_fields::Error("post_processor",
                                  absl::StrCat("adds id ", id, ", which no token has"));
      }
    }
  }
  return t;
}

}  // namespace arbor::engine
