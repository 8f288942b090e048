#include "server/openai_api.h"

#include <cmath>
#include <limits>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace arbor::server {

using nlohmann::json;
using nlohmann::ordered_json;

absl::Status FieldError(const std::string& field, const std::string& what) {
  absl::Status s = absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
  s.SetPayload(kParamPayload, absl::Cord(field));
  return s;
}

namespace {

// Calls visit(i) for every byte offset of `body` outside JSON string literals; visit returns
// how many bytes it consumed (>= 1) or 0 to stop the scan.
template <typename Visit>
void ScanOutsideStrings(const std::string& body, Visit visit) {
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < body.size();) {
    const char c = body[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      ++i;
      continue;
    }
    if (c == '"') {
      in_string = true;
      ++i;
      continue;
    }
    const size_t used = visit(i);
    if (used == 0) return;
    i += used;
  }
}

// Offset of the first number literal that overflows a double, or npos.
size_t FirstInfiniteNumber(const std::string& body) {
  size_t found = std::string::npos;
  ScanOutsideStrings(body, [&](size_t i) -> size_t {
    const char c = body[i];
    if (c != '-' && (c < '0' || c > '9')) return 1;
    const char* start = body.c_str() + i;
    char* end = nullptr;
    if (std::isinf(std::strtod(start, &end))) {
      found = i;
      return 0;
    }
    return size_t(std::max<ptrdiff_t>(1, end - start));
  });
  return found;
}

}  // namespace

absl::StatusOr<json> ParseBody(const std::string& body) {
  // Nesting depth outside strings, counted before parsing: a 4 MB "[[[[..." must not reach a
  // recursive destructor.
  int depth = 0;
  bool too_deep = false;
  ScanOutsideStrings(body, [&](size_t i) -> size_t {
    const char c = body[i];
    if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        too_deep = true;
        return 0;
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
    return 1;
  });
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat("request body nests deeper than ", kMaxJsonDepth, " levels"));
  }
  json j;
  try {
    j = json::parse(body);
  } catch (const json::out_of_range& e) {
    // A number out of range (1e999) is nlohmann's out_of_range.406: name the field it belongs
    // to (the last key before the first such number).
    const size_t at = FirstInfiniteNumber(body);
    const std::string before = body.substr(0, std::min(body.size(), at));
    const size_t colon = before.find_last_of(':');
    const size_t close =
        colon == std::string::npos ? std::string::npos : before.find_last_of('"', colon);
    const size_t open = close == std::string::npos || close == 0
                            ? std::string::npos
                            : before.find_last_of('"', close - 1);
    const std::string tail = colon == std::string::npos ? "" : before.substr(colon + 1);
    // The number must follow its key directly ("key": <number>), not sit inside an array.
    const bool key_value = tail.find_first_not_of(" \t\r\n") == std::string::npos;
    if (open != std::string::npos && key_value) {
      return FieldError(before.substr(open + 1, close - open - 1),
                        std::string("number out of range (") + e.what() + ")");
    }
    return absl::InvalidArgumentError("request body holds a number out of range");
  } catch (const json::exception&) {
    j = json::value_t::discarded;
  }
  if (j.is_discarded()) {
    // nlohmann rejects malformed JSON, invalid UTF-8 and unpaired surrogate escapes alike.
    return absl::InvalidArgumentError(
        "request body is not valid JSON (or holds invalid UTF-8 or an unpaired surrogate)");
  }
  if (!j.is_object()) return absl::InvalidArgumentError("request body must be a JSON object");
  return j;
}

absl::Status ReadBool(const json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(key, "must be true or false, got " + it->dump());
  *out = it->get<bool>();
  return absl::OkStatus();
}

std::optional<int64_t> IntegerValue(const json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    return u > uint64_t(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                             : int64_t(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    // 8.0 is 8, as vLLM (pydantic) takes it; 8.5, inf and values past int64 are not integers.
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9.2e18) return int64_t(d);
  }
  return std::nullopt;
}

namespace {

const json* Find(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status ReadInt(const json& j, const char* key, int64_t lo, int64_t hi, int32_t* out) {
  const json* v = Find(j, key);
  if (v == nullptr) return absl::OkStatus();
  const std::optional<int64_t> x = IntegerValue(*v);
  if (!x.has_value()) return FieldError(key, "must be an integer, got " + v->dump());
  if (*x < lo || *x > hi) {
    return FieldError(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v->dump()));
  }
  *out = int32_t(*x);
  return absl::OkStatus();
}

absl::Status ReadFloat(const json& j, const char* key, float* out) {
  const json* v = Find(j, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number()) return FieldError(key, "must be a number, got " + v->dump());
  const double x = v->get<double>();
  if (!std::isfinite(x)) return FieldError(key, "must be finite");
  *out = float(x);
  return absl::OkStatus();
}

absl::Status ReadModel(const json& j, std::string* out) {
  const json* v = Find(j, "model");
  if (v == nullptr) return FieldError("model", "is required");
  if (!v->is_string()) return FieldError("model", "must be a string");
  *out = v->get<std::string>();
  return absl::OkStatus();
}

// What completions and chat share: the sampling fields, stream and its options.
struct SamplingFields {
  engine::SamplingParams params;
  int32_t max_tokens = -1;  // as given (0 is the caller's to judge); -1: not given
  bool stream = false;
  bool include_usage = false;
};

// Fields this server does not implement are refused by name rather than silently dropped.
absl::Status RefuseUnsupported(const json& j) {
  // A template in the request would run client-chosen code in the server (robustness 11).
  for (const char* refused :
       {"chat_template", "chat_template_kwargs", "guided_json", "guided_regex", "guided_grammar",
        "guided_choice", "tools", "functions", "function_call"}) {
    if (Find(j, refused) != nullptr) {
      return FieldError(refused, "is not supported by this server");
    }
  }
  // {"type": "text"} is the default: plain text, which is what the server produces.
  if (const json* v = Find(j, "response_format")) {
    const json* type = v->is_object() ? Find(*v, "type") : nullptr;
    if (type == nullptr || !type->is_string()) {
      return FieldError("response_format", "must be an object with a string `type`");
    }
    if (*type != "text") {
      return FieldError("response_format",
                        "type `" + type->get<std::string>() +
                            "` is not supported by this server (only `text`: no guided decoding)");
    }
  }
  return absl::OkStatus();
}

absl::Status ReadSampling(const json& j, SamplingFields* out) {
  RETURN_IF_ERROR(RefuseUnsupported(j));
  engine::SamplingParams& p = out->params;
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  RETURN_IF_ERROR(ReadInt(j, "max_tokens", 0, kIntMax, &out->max_tokens));
  RETURN_IF_ERROR(ReadInt(j, "max_completion_tokens", 0, kIntMax, &out->max_tokens));
  if (out->max_tokens >= 1) p.max_tokens = out->max_tokens;
  RETURN_IF_ERROR(ReadInt(j, "n", 1, engine::kMaxSamplingN, &p.n));
  RETURN_IF_ERROR(ReadInt(j, "top_k", -1, kIntMax, &p.top_k));
  RETURN_IF_ERROR(ReadInt(j, "min_tokens", 0, kIntMax, &p.min_tokens));
  RETURN_IF_ERROR(ReadFloat(j, "temperature", &p.temperature));
  RETURN_IF_ERROR(ReadFloat(j, "top_p", &p.top_p));
  RETURN_IF_ERROR(ReadFloat(j, "min_p", &p.min_p));
  RETURN_IF_ERROR(ReadFloat(j, "presence_penalty", &p.presence_penalty));
  RETURN_IF_ERROR(ReadFloat(j, "frequency_penalty", &p.frequency_penalty));
  RETURN_IF_ERROR(ReadFloat(j, "repetition_penalty", &p.repetition_penalty));
  RETURN_IF_ERROR(ReadBool(j, "ignore_eos", &p.ignore_eos));
  RETURN_IF_ERROR(ReadBool(j, "skip_special_tokens", &p.skip_special_tokens));
  RETURN_IF_ERROR(ReadBool(j, "stream", &out->stream));
  if (const json* v = Find(j, "seed")) {
    if (v->is_number_unsigned()) {
      p.seed = v->get<uint64_t>();
    } else if (const std::optional<int64_t> x = IntegerValue(*v)) {
      p.seed = uint64_t(*x);
    } else {
      return FieldError("seed", "must be an integer");
    }
  }
  if (const json* v = Find(j, "stop")) {
    if (v->is_string()) {
      p.stop = {v->get<std::string>()};
    } else if (v->is_array()) {
      if (v->size() > engine::kMaxStopStrings) {
        return FieldError("stop", absl::StrCat("at most ", engine::kMaxStopStrings,
                                               " stop strings, got ", v->size()));
      }
      for (const auto& s : *v) {
        if (!s.is_string()) return FieldError("stop", "must be a string or a list of strings");
        p.stop.push_back(s.get<std::string>());
      }
    } else {
      return FieldError("stop", "must be a string or a list of strings");
    }
  }
  if (const json* v = Find(j, "stop_token_ids")) {
    if (!v->is_array()) return FieldError("stop_token_ids", "must be a list of integers");
    if (v->size() > engine::kMaxStopTokenIds) return FieldError("stop_token_ids", "too many ids");
    for (const auto& id : *v) {
      const std::optional<int64_t> x = IntegerValue(id);
      if (!x.has_value()) return FieldError("stop_token_ids", "must hold integers");
      if (*x < 0 || *x > std::numeric_limits<int32_t>::max()) {
        return FieldError("stop_token_ids",
                          absl::StrCat("token id ", id.dump(), " is out of range"));
      }
      p.stop_token_ids.push_back(int32_t(*x));
    }
  }
  if (const json* v = Find(j, "logit_bias")) {
    if (!v->is_object()) return FieldError("logit_bias", "must map token ids to numbers");
    if (v->size() > engine::kMaxLogitBiasEntries) return FieldError("logit_bias", "too many ids");
    for (const auto& [key, bias] : v->items()) {
      char* end = nullptr;
      const long long id = std::strtoll(key.c_str(), &end, 10);
      if (key.empty() || *end != '\0' || id < 0 || id > std::numeric_limits<int32_t>::max()) {
        return FieldError("logit_bias", "keys must be token ids, got \"" + key + "\"");
      }
      if (!bias.is_number()) return FieldError("logit_bias", "values must be numbers");
      p.logit_bias.emplace_back(int32_t(id), float(bias.get<double>()));
    }
  }
  if (const json* v = Find(j, "stream_options")) {
    if (!out->stream) {
      return FieldError("stream_options", "is only allowed when stream is true");
    }
    if (!v->is_object()) return FieldError("stream_options", "must be an object");
    RETURN_IF_ERROR(ReadBool(*v, "include_usage", &out->include_usage));
  }
  if (const json* v = Find(j, "user"); v != nullptr && !v->is_string()) {
    return FieldError("user", "must be a string");
  }
  return absl::OkStatus();
}

// vLLM's prompt_logprobs: an integer in [0, kMaxLogprobs]. Its -1 (every vocabulary entry) is
// refused by name: the fused LM head keeps at most kMaxLogprobs alternatives a position.
absl::Status ReadPromptLogprobs(const json& j, int32_t* out) {
  const json* v = Find(j, "prompt_logprobs");
  if (v != nullptr && IntegerValue(*v) == -1) {
    return FieldError("prompt_logprobs",
                      absl::StrCat("-1 (the whole vocabulary) is not supported; at most ",
                                   engine::kMaxLogprobs, " alternatives"));
  }
  return ReadInt(j, "prompt_logprobs", 0, engine::kMaxLogprobs, out);
}

// One prompt's token ids (`where` names it in errors).
absl::StatusOr<std::vector<int32_t>> ReadIds(const json& list) {
  std::vector<int32_t> ids;
  ids.reserve(list.size());
  for (const auto& id : list) {
    const std::optional<int64_t> x = IntegerValue(id);
    if (!x.has_value()) return FieldError("prompt", "token ids must be integers, got " + id.dump());
    if (*x < 0 || *x > INT32_MAX) {
      return FieldError("prompt", absl::StrCat("token id ", id.dump(), " is out of range"));
    }
    ids.push_back(int32_t(*x));
  }
  return ids;
}

// `prompt`: a string, token ids, or a list of either (OpenAI's batched form).
absl::StatusOr<std::vector<PromptInput>> ReadPrompts(const json& body) {
  const json* prompt = Find(body, "prompt");
  if (prompt == nullptr) return FieldError("prompt", "is required");
  std::vector<PromptInput> out;
  auto add_text = [&](const json& v) -> absl::Status {
    PromptInput in;
    in.text = v.get<std::string>();
    if (in.text.empty()) return FieldError("prompt", "must not be empty");
    out.push_back(std::move(in));
    return absl::OkStatus();
  };
  if (prompt->is_string()) {
    RETURN_IF_ERROR(add_text(*prompt));
    return out;
  }
  if (!prompt->is_array()) {
    return FieldError("prompt", "must be a string, a list of token ids, or a list of those");
  }
  if (prompt->empty()) return FieldError("prompt", "must not be empty");
  if ((*prompt)[0].is_number()) {
    PromptInput in;
    in.is_text = false;
    ASSIGN_OR_RETURN(in.ids, ReadIds(*prompt));
    out.push_back(std::move(in));
    return out;
  }
  if (prompt->size() > kMaxPromptsPerRequest) {
    return FieldError("prompt", absl::StrCat("at most ", kMaxPromptsPerRequest,
                                             " prompts per request, got ", prompt->size()));
  }
  for (const json& item : *prompt) {
    if (item.is_string()) {
      RETURN_IF_ERROR(add_text(item));
    } else if (item.is_array() && !item.empty()) {
      PromptInput in;
      in.is_text = false;
      ASSIGN_OR_RETURN(in.ids, ReadIds(item));
      out.push_back(std::move(in));
    } else if (item.is_array()) {
      return FieldError("prompt", "must not hold an empty list of token ids");
    } else {
      return FieldError(
          "prompt",
          "a list of prompts must hold strings or lists of token ids, got " + item.dump());
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(const json& body) {
  CompletionRequest r;
  RETURN_IF_ERROR(ReadModel(body, &r.model));
  ASSIGN_OR_RETURN(r.prompts, ReadPrompts(body));
  if (const json* echo = Find(body, "echo")) {
    if (!echo->is_boolean()) return FieldError("echo", "must be a boolean");
    r.echo = echo->get<bool>();
  }
  if (const json* v = Find(body, "best_of"); v != nullptr && IntegerValue(*v) != 1) {
    return FieldError("best_of", "only best_of 1 is supported");
  }
  // Fill-in-the-middle needs a model trained for it and its template; this server refuses a
  // non-empty suffix by name rather than drop it (an empty one asks for nothing).
  if (const json* v = Find(body, "suffix")) {
    if (!v->is_string()) return FieldError("suffix", "must be a string");
    if (!v->get<std::string>().empty()) {
      return FieldError("suffix", "is not supported by this server");
    }
  }
  SamplingFields f;
  RETURN_IF_ERROR(ReadSampling(body, &f));
  r.params = std::move(f.params);
  r.stream = f.stream;
  r.include_usage = f.include_usage;
  r.max_tokens_set = f.max_tokens >= 0;
  if (f.max_tokens == 0) {
    // OpenAI's legacy scoring request: echo the prompt (with its log-probs), generate nothing.
    if (!r.echo) return FieldError("max_tokens", "must be at least 1 (0 only with echo: true)");
    if (r.params.n != 1) return FieldError("n", "must be 1 when max_tokens is 0");
    r.score_only = true;
    r.params.max_tokens = 1;  // validated by the engine, unused by a score-only request
  }
  if (const json* v = Find(body, "logprobs")) {
    const std::optional<int64_t> k = IntegerValue(*v);
    if (!k.has_value()) return FieldError("logprobs", "must be an integer");
    if (*k < 0 || *k > engine::kMaxLogprobs) {
      return FieldError("logprobs", absl::StrCat("must be in [0, ", engine::kMaxLogprobs, "]"));
    }
    r.params.logprobs = int32_t(*k);
  }
  RETURN_IF_ERROR(ReadPromptLogprobs(body, &r.prompt_logprobs));
  return r;
}

absl::StatusOr<ordered_json> ParseMessages(const json& body) {
  const json* messages = Find(body, "messages");
  if (messages == nullptr || !messages->is_array()) {
    return FieldError("messages", "must be a list of messages");
  }
  if (messages->empty()) return FieldError("messages", "must not be empty");
  ordered_json out = ordered_json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return FieldError(where, "must be an object");
    const json* role = Find(m, "role");
    if (role == nullptr || !role->is_string()) return FieldError(where + ".role", "is required");
    const std::string role_s = role->get<std::string>();
    if (role_s != "system" && role_s != "user" && role_s != "assistant" && role_s != "tool" &&
        role_s != "developer") {
      return FieldError(where + ".role", "unknown role \"" + role_s + "\"");
    }
    std::string content;
    const json* c = Find(m, "content");
    if (c == nullptr) {
      if (role_s != "assistant") return FieldError(where + ".content", "is required");
    } else if (c->is_string()) {
      content = c->get<std::string>();
    } else if (c->is_array()) {
      // Content parts: only text parts are understood.
      for (const auto& part : *c) {
        const json* type = part.is_object() ? Find(part, "type") : nullptr;
        const json* text = part.is_object() ? Find(part, "text") : nullptr;
        if (type == nullptr || !type->is_string() || *type != "text" || text == nullptr ||
            !text->is_string()) {
          return FieldError(where + ".content", "only text content parts are supported");
        }
        content += text->get<std::string>();
      }
    } else {
      return FieldError(where + ".content", "must be a string or a list of text parts");
    }
    ordered_json msg = {{"role", role_s}, {"content", content}};
    if (const json* name = Find(m, "name"); name != nullptr && name->is_string()) {
      msg["name"] = name->get<std::string>();
    }
    out.push_back(std::move(msg));
  }
  return out;
}

absl::StatusOr<ChatRequest> ParseChatRequest(const json& body) {
  ChatRequest r;
  RETURN_IF_ERROR(ReadModel(body, &r.model));
  ASSIGN_OR_RETURN(r.messages, ParseMessages(body));
  RETURN_IF_ERROR(ReadBool(body, "add_generation_prompt", &r.add_generation_prompt));
  SamplingFields f;
  RETURN_IF_ERROR(ReadSampling(body, &f));
  if (f.max_tokens == 0) {
    return FieldError(
        Find(body, "max_completion_tokens") != nullptr ? "max_completion_tokens" : "max_tokens",
        "must be at least 1");
  }
  r.params = std::move(f.params);
  r.stream = f.stream;
  r.include_usage = f.include_usage;
  r.max_tokens_set = f.max_tokens >= 1;
  RETURN_IF_ERROR(ReadBool(body, "logprobs", &r.logprobs));
  int32_t top = 0;
  RETURN_IF_ERROR(ReadInt(body, "top_logprobs", 0, engine::kMaxLogprobs, &top));
  if (Find(body, "top_logprobs") != nullptr && !r.logprobs) {
    return FieldError("top_logprobs", "needs logprobs: true");
  }
  r.params.logprobs = r.logprobs ? top : -1;
  RETURN_IF_ERROR(ReadPromptLogprobs(body, &r.prompt_logprobs));
  return r;
}

namespace {

ordered_json ReasonJson(const std::optional<engine::FinishReason>& f) {
  return f ? ordered_json(engine::FinishReasonName(*f)) : ordered_json(nullptr);
}

ordered_json UsageJson(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

ordered_json BytesJson(std::string_view s) {
  ordered_json b = ordered_json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

// The first `limit` alternatives of `top` as {token text: logprob}.
ordered_json TopJson(const ResponseMeta& meta, const std::vector<engine::TokenLogprob>& top,
                     size_t limit) {
  ordered_json out = ordered_json::object();
  for (size_t i = 0; i < top.size() && i < limit; ++i) {
    out[meta.token_text(top[i].token)] = top[i].logprob;
  }
  return out;
}

// Completions' logprobs: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}.
// With `echo`, the prompt's tokens come first; its first token has null log-probs, as OpenAI's.
// text_offset counts characters of the choice's text (echoed prompt included).
ordered_json CompletionLogprobs(const ResponseMeta& meta, const std::vector<int32_t>& ids,
                                const std::vector<engine::SampleResult>& lps,
                                const std::vector<TokenSpan>& spans, const EchoedPrompt* echo) {
  ordered_json tokens = ordered_json::array(), token_lps = ordered_json::array(),
               tops = ordered_json::array(), offsets = ordered_json::array();
  if (echo != nullptr) {
    for (size_t i = 0; i < echo->ids.size(); ++i) {
      tokens.push_back(meta.token_text(echo->ids[i]));
      offsets.push_back(i < echo->offsets.size() ? echo->offsets[i] : 0);
      const engine::PromptLogprob* lp =
          i >= 1 && i - 1 < echo->logprobs.size() ? &echo->logprobs[i - 1] : nullptr;
      if (lp == nullptr) {
        token_lps.push_back(nullptr);
        tops.push_back(nullptr);
        continue;
      }
      token_lps.push_back(lp->logprob);
      // The engine kept max(logprobs, prompt_logprobs) alternatives: logprobs shows its own.
      tops.push_back(TopJson(meta, lp->top, size_t(std::max(meta.top_logprobs, 0))));
    }
  }
  for (size_t i = 0; i < lps.size() && i < ids.size(); ++i) {
    tokens.push_back(meta.token_text(ids[i]));
    token_lps.push_back(lps[i].logprob);
    tops.push_back(TopJson(meta, lps[i].top, lps[i].top.size()));
    offsets.push_back(i < spans.size() ? spans[i].offset : 0);
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_lps},
          {"top_logprobs", tops},
          {"text_offset", offsets}};
}

// Chat's logprobs: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
// A token's bytes are its own (a byte-fallback piece of a character has its one byte), so they
// concatenate to the content; an alternative's are those of the token alone.
ordered_json ChatLogprobs(const ResponseMeta& meta, const std::vector<int32_t>& ids,
                          const std::vector<engine::SampleResult>& lps,
                          const std::vector<TokenSpan>& spans) {
  const bool own_bytes = meta.tokenizer != nullptr;
  ordered_json content = ordered_json::array();
  for (size_t i = 0; i < lps.size() && i < ids.size(); ++i) {
    const std::string t = meta.token_text(ids[i]);
    ordered_json top = ordered_json::array();
    for (const auto& alt : lps[i].top) {
      const std::string at = meta.token_text(alt.token);
      top.push_back({{"token", at},
                     {"logprob", alt.logprob},
                     {"bytes", BytesJson(own_bytes ? TokenBytes(meta.tokenizer, alt.token) : at)}});
    }
    // Without a tokenizer a token's text (its id) stands for its bytes.
    const std::string bytes = !own_bytes ? t : i < spans.size() ? spans[i].bytes : std::string();
    content.push_back({{"token", t},
                       {"logprob", lps[i].logprob},
                       {"bytes", BytesJson(bytes)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

// The fields every response and chunk starts with.
ordered_json Envelope(const ResponseMeta& meta, const char* object) {
  return {{"id", meta.id},
          {"object", object},
          {"created", meta.created},
          {"model", meta.model},
          {"system_fingerprint", meta.system_fingerprint}};
}

}  // namespace

ordered_json PromptLogprobsJson(const ResponseMeta& meta, const PromptScores& prompt) {
  ordered_json out = ordered_json::array();
  if (prompt.prompt_len > 0) out.push_back(nullptr);
  const size_t k = size_t(std::max(meta.prompt_logprobs, 0));
  size_t next = 0;  // prompt.logprobs ascend by position
  for (int64_t pos = 1; pos < prompt.prompt_len; ++pos) {
    while (next < prompt.logprobs.size() && prompt.logprobs[next].position < pos) ++next;
    if (next == prompt.logprobs.size() || prompt.logprobs[next].position != pos) {
      out.push_back(nullptr);  // never scored (the request was aborted first)
      continue;
    }
    const engine::PromptLogprob& e = prompt.logprobs[next];
    ordered_json entry = ordered_json::object();
    auto add = [&](int32_t id, float logprob, int32_t rank) {
      const std::string key = absl::StrCat(id);
      if (entry.contains(key)) return;
      entry[key] = {{"logprob", logprob == -INFINITY ? -9999.0f : logprob},
                    {"rank", rank},
                    {"decoded_token", meta.token_text(id)}};
    };
    add(e.token, e.logprob, e.rank);
    for (size_t j = 0; j < e.top.size() && j < k; ++j) {
      add(e.top[j].token, e.top[j].logprob, int32_t(j + 1));
    }
    out.push_back(std::move(entry));
  }
  return out;
}

ordered_json CompletionResponse(const ResponseMeta& meta, const std::vector<ChoiceState>& choices,
                                const Usage& usage) {
  ordered_json out_choices = ordered_json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceState& c = choices[i];
    out_choices.push_back(
        {{"index", i},
         {"text", c.echo != nullptr ? c.echo->text + c.text : c.text},
         {"logprobs", meta.with_logprobs
                          ? CompletionLogprobs(meta, c.token_ids, c.logprobs, c.spans, c.echo)
                          : ordered_json(nullptr)},
         {"finish_reason", ReasonJson(c.finish)}});
    if (meta.prompt_logprobs >= 0 && c.prompt != nullptr) {
      out_choices.back()["prompt_logprobs"] = PromptLogprobsJson(meta, *c.prompt);
    }
  }
  ordered_json out = Envelope(meta, "text_completion");
  out["choices"] = std::move(out_choices);
  out["usage"] = UsageJson(usage);
  return out;
}

ordered_json ChatResponse(const ResponseMeta& meta, const std::vector<ChoiceState>& choices,
                          const Usage& usage) {
  ordered_json out_choices = ordered_json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceState& c = choices[i];
    out_choices.push_back(
        {{"index", i},
         {"message", {{"role", "assistant"}, {"content", c.text}}},
         {"logprobs", meta.with_logprobs ? ChatLogprobs(meta, c.token_ids, c.logprobs, c.spans)
                                         : ordered_json(nullptr)},
         {"finish_reason", ReasonJson(c.finish)}});
  }
  ordered_json out = Envelope(meta, "chat.completion");
  out["choices"] = std::move(out_choices);
  out["usage"] = UsageJson(usage);
  if (meta.prompt_logprobs >= 0 && !choices.empty() && choices[0].prompt != nullptr) {
    out["prompt_logprobs"] = PromptLogprobsJson(meta, *choices[0].prompt);
  }
  return out;
}

ordered_json CompletionChunk(const ResponseMeta& meta, const engine::StreamEvent& ev,
                             const std::vector<TokenSpan>& spans, const PromptScores* prompt) {
  ordered_json choice = {
      {"index", ev.index},
      {"text", ev.text},
      {"logprobs", meta.with_logprobs
                       ? CompletionLogprobs(meta, ev.token_ids, ev.logprobs, spans, nullptr)
                       : ordered_json(nullptr)},
      {"finish_reason", ReasonJson(ev.finish)}};
  if (prompt != nullptr) choice["prompt_logprobs"] = PromptLogprobsJson(meta, *prompt);
  ordered_json out = Envelope(meta, "text_completion");
  out["choices"] = ordered_json::array({choice});
  return out;
}

ordered_json EchoChunk(const ResponseMeta& meta, int32_t index, const EchoedPrompt& echo,
                       const PromptScores* prompt) {
  ordered_json choice = {
      {"index", index},
      {"text", echo.text},
      {"logprobs",
       meta.with_logprobs ? CompletionLogprobs(meta, {}, {}, {}, &echo) : ordered_json(nullptr)},
      {"finish_reason", nullptr}};
  if (prompt != nullptr) choice["prompt_logprobs"] = PromptLogprobsJson(meta, *prompt);
  ordered_json out = Envelope(meta, "text_completion");
  out["choices"] = ordered_json::array({choice});
  return out;
}

ordered_json ChatChunk(const ResponseMeta& meta, const engine::StreamEvent& ev, bool first,
                       const std::vector<TokenSpan>& spans, const PromptScores* prompt) {
  ordered_json delta = ordered_json::object();
  if (first) delta["role"] = "assistant";
  if (!ev.text.empty() || !ev.finish) delta["content"] = ev.text;
  ordered_json choice = {
      {"index", ev.index},
      {"delta", delta},
      {"logprobs", meta.with_logprobs ? ChatLogprobs(meta, ev.token_ids, ev.logprobs, spans)
                                      : ordered_json(nullptr)},
      {"finish_reason", ReasonJson(ev.finish)}};
  ordered_json out = Envelope(meta, "chat.completion.chunk");
  out["choices"] = ordered_json::array({choice});
  if (prompt != nullptr) out["prompt_logprobs"] = PromptLogprobsJson(meta, *prompt);
  return out;
}

ordered_json UsageChunk(const ResponseMeta& meta, const char* object, const Usage& usage) {
  ordered_json out = Envelope(meta, object);
  out["choices"] = ordered_json::array();
  out["usage"] = UsageJson(usage);
  return out;
}

}  // namespace arbor::server
