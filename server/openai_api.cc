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

namespace {

const json* Find(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status ReadInt(const json& j, const char* key, int64_t lo, int64_t hi, int32_t* out) {
  const json* v = Find(j, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number_integer()) return FieldError(key, "must be an integer, got " + v->dump());
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(hi)) {
    return FieldError(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v->dump()));
  }
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) {
    return FieldError(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", x));
  }
  *out = int32_t(x);
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

absl::Status ReadBool(const json& j, const char* key, bool* out) {
  const json* v = Find(j, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) return FieldError(key, "must be true or false, got " + v->dump());
  *out = v->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadModel(const json& j, std::string* out) {
  const json* v = Find(j, "model");
  if (v == nullptr) return FieldError("model", "is required");
  if (!v->is_string()) return FieldError("model", "must be a string");
  *out = v->get<std::string>();
  return absl::OkStatus();
}

// The sampling fields completions and chat share.
absl::Status ReadSampling(const json& j, engine::SamplingParams& p, bool* stream,
                          bool* include_usage) {
  // A template in the request would run client-chosen code in the server (robustness 11).
  for (const char* refused : {"chat_template", "chat_template_kwargs", "guided_json",
                              "guided_regex", "guided_grammar", "response_format", "tools"}) {
    if (Find(j, refused) != nullptr) {
      return FieldError(refused, "is not supported by this server");
    }
  }
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  RETURN_IF_ERROR(ReadInt(j, "max_tokens", 1, kIntMax, &p.max_tokens));
  RETURN_IF_ERROR(ReadInt(j, "max_completion_tokens", 1, kIntMax, &p.max_tokens));
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
  RETURN_IF_ERROR(ReadBool(j, "stream", stream));
  if (const json* v = Find(j, "seed")) {
    if (!v->is_number_integer()) return FieldError("seed", "must be an integer");
    p.seed = v->is_number_unsigned() ? v->get<uint64_t>() : uint64_t(v->get<int64_t>());
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
      if (!id.is_number_integer()) return FieldError("stop_token_ids", "must hold integers");
      p.stop_token_ids.push_back(int32_t(id.get<int64_t>()));
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
    if (!v->is_object()) return FieldError("stream_options", "must be an object");
    RETURN_IF_ERROR(ReadBool(*v, "include_usage", include_usage));
  }
  if (const json* v = Find(j, "user"); v != nullptr && !v->is_string()) {
    return FieldError("user", "must be a string");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(const json& body) {
  CompletionRequest r;
  RETURN_IF_ERROR(ReadModel(body, &r.model));
  const json* prompt = Find(body, "prompt");
  if (prompt == nullptr) return FieldError("prompt", "is required");
  if (prompt->is_string()) {
    r.prompt_text = prompt->get<std::string>();
    if (r.prompt_text.empty()) return FieldError("prompt", "must not be empty");
  } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number()) {
    r.prompt_is_text = false;
    for (const auto& id : *prompt) {
      if (!id.is_number_integer()) {
        return FieldError("prompt", "token ids must be integers, got " + id.dump());
      }
      const int64_t x = id.is_number_unsigned() && id.get<uint64_t>() > uint64_t(INT32_MAX)
                            ? int64_t(INT32_MAX) + 1
                            : id.get<int64_t>();
      if (x < 0 || x > INT32_MAX)
        return FieldError("prompt", absl::StrCat("token id ", id.dump(), " is out of range"));
      r.prompt_ids.push_back(int32_t(x));
    }
  } else if (prompt->is_array() && prompt->empty()) {
    return FieldError("prompt", "must not be empty");
  } else if (prompt->is_array()) {
    return FieldError("prompt", "lists of prompts are not supported: send one request per prompt");
  } else {
    return FieldError("prompt", "must be a string or a list of token ids");
  }
  if (const json* echo = Find(body, "echo")) {
    if (!echo->is_boolean()) return FieldError("echo", "must be a boolean");
    r.echo = echo->get<bool>();
  }
  if (const json* v = Find(body, "best_of");
      v != nullptr && !(v->is_number_integer() && v->get<int64_t>() == 1)) {
    return FieldError("best_of", "only best_of 1 is supported");
  }
  RETURN_IF_ERROR(ReadSampling(body, r.params, &r.stream, &r.include_usage));
  if (const json* v = Find(body, "logprobs")) {
    if (!v->is_number_integer()) return FieldError("logprobs", "must be an integer");
    const int64_t k = v->get<int64_t>();
    if (k < 0 || k > engine::kMaxLogprobs) {
      return FieldError("logprobs", absl::StrCat("must be in [0, ", engine::kMaxLogprobs, "]"));
    }
    r.params.logprobs = int32_t(k);
  }
  return r;
}

absl::StatusOr<ChatRequest> ParseChatRequest(const json& body) {
  ChatRequest r;
  RETURN_IF_ERROR(ReadModel(body, &r.model));
  const json* messages = Find(body, "messages");
  if (messages == nullptr || !messages->is_array()) {
    return FieldError("messages", "must be a list of messages");
  }
  if (messages->empty()) return FieldError("messages", "must not be empty");
  r.messages = ordered_json::array();
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
    r.messages.push_back(std::move(msg));
  }
  RETURN_IF_ERROR(ReadBool(body, "add_generation_prompt", &r.add_generation_prompt));
  RETURN_IF_ERROR(ReadSampling(body, r.params, &r.stream, &r.include_usage));
  RETURN_IF_ERROR(ReadBool(body, "logprobs", &r.logprobs));
  int32_t top = 0;
  RETURN_IF_ERROR(ReadInt(body, "top_logprobs", 0, engine::kMaxLogprobs, &top));
  if (Find(body, "top_logprobs") != nullptr && !r.logprobs) {
    return FieldError("top_logprobs", "needs logprobs: true");
  }
  r.params.logprobs = r.logprobs ? top : -1;
  return r;
}

namespace {

json ReasonJson(const std::optional<engine::FinishReason>& f) {
  return f ? json(engine::FinishReasonName(*f)) : json(nullptr);
}

json UsageJson(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

// Completions' logprobs: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}.
// With `echo`, the prompt's tokens come first; its first token has null log-probs, as OpenAI's.
json CompletionLogprobs(const std::vector<int32_t>& ids,
                        const std::vector<engine::SampleResult>& lps, const TokenText& text,
                        const EchoedPrompt* echo = nullptr) {
  json tokens = json::array(), token_lps = json::array(), tops = json::array(),
       offsets = json::array();
  int64_t offset = 0;
  if (echo != nullptr) {
    // Offsets index the choice's text. A prompt token whose text is not at the current offset
    // (a BOS the tokenizer added, which the echoed prompt does not show) takes no width.
    for (size_t i = 0; i < echo->ids.size(); ++i) {
      const std::string t = text(echo->ids[i]);
      tokens.push_back(t);
      offsets.push_back(offset);
      if (echo->text.compare(size_t(offset), t.size(), t) == 0) offset += int64_t(t.size());
      const engine::PromptLogprob* lp =
          i >= 1 && i - 1 < echo->logprobs.size() ? &echo->logprobs[i - 1] : nullptr;
      if (lp == nullptr) {
        token_lps.push_back(nullptr);
        tops.push_back(nullptr);
        continue;
      }
      token_lps.push_back(lp->logprob);
      json top = json::object();
      for (const auto& alt : lp->top) top[text(alt.token)] = alt.logprob;
      tops.push_back(top);
    }
    offset = int64_t(echo->text.size());  // the generated text follows the whole prompt
  }
  for (size_t i = 0; i < lps.size() && i < ids.size(); ++i) {
    const std::string t = text(ids[i]);
    tokens.push_back(t);
    token_lps.push_back(lps[i].logprob);
    json top = json::object();
    for (const auto& alt : lps[i].top) top[text(alt.token)] = alt.logprob;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += int64_t(t.size());
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_lps},
          {"top_logprobs", tops},
          {"text_offset", offsets}};
}

// Chat's logprobs: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
json ChatLogprobs(const std::vector<int32_t>& ids, const std::vector<engine::SampleResult>& lps,
                  const TokenText& text) {
  auto bytes = [](const std::string& s) {
    json b = json::array();
    for (unsigned char c : s) b.push_back(int(c));
    return b;
  };
  json content = json::array();
  for (size_t i = 0; i < lps.size() && i < ids.size(); ++i) {
    const std::string t = text(ids[i]);
    json top = json::array();
    for (const auto& alt : lps[i].top) {
      const std::string at = text(alt.token);
      top.push_back({{"token", at}, {"logprob", alt.logprob}, {"bytes", bytes(at)}});
    }
    content.push_back(
        {{"token", t}, {"logprob", lps[i].logprob}, {"bytes", bytes(t)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

}  // namespace

json CompletionResponse(const std::string& id, int64_t created, const std::string& model,
                        const std::vector<ChoiceState>& choices, const Usage& usage,
                        bool with_logprobs, const TokenText& token_text, const EchoedPrompt* echo) {
  json out_choices = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceState& c = choices[i];
    out_choices.push_back(
        {{"index", i},
         {"text", echo != nullptr ? echo->text + c.text : c.text},
         {"logprobs", with_logprobs ? CompletionLogprobs(c.token_ids, c.logprobs, token_text, echo)
                                    : json(nullptr)},
         {"finish_reason", ReasonJson(c.finish)}});
  }
  return {{"id", id},       {"object", "text_completion"}, {"created", created},
          {"model", model}, {"choices", out_choices},      {"usage", UsageJson(usage)}};
}

json ChatResponse(const std::string& id, int64_t created, const std::string& model,
                  const std::vector<ChoiceState>& choices, const Usage& usage, bool with_logprobs,
                  const TokenText& token_text) {
  json out_choices = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceState& c = choices[i];
    out_choices.push_back(
        {{"index", i},
         {"message", {{"role", "assistant"}, {"content", c.text}}},
         {"logprobs",
          with_logprobs ? ChatLogprobs(c.token_ids, c.logprobs, token_text) : json(nullptr)},
         {"finish_reason", ReasonJson(c.finish)}});
  }
  return {{"id", id},       {"object", "chat.completion"}, {"created", created},
          {"model", model}, {"choices", out_choices},      {"usage", UsageJson(usage)}};
}

json CompletionChunk(const std::string& id, int64_t created, const std::string& model,
                     const engine::StreamEvent& ev, bool with_logprobs,
                     const TokenText& token_text) {
  json choice = {
      {"index", ev.index},
      {"text", ev.text},
      {"logprobs",
       with_logprobs ? CompletionLogprobs(ev.token_ids, ev.logprobs, token_text) : json(nullptr)},
      {"finish_reason", ReasonJson(ev.finish)}};
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

json EchoChunk(const std::string& id, int64_t created, const std::string& model, int32_t index,
               const EchoedPrompt& echo, bool with_logprobs, const TokenText& token_text) {
  json choice = {
      {"index", index},
      {"text", echo.text},
      {"logprobs", with_logprobs ? CompletionLogprobs({}, {}, token_text, &echo) : json(nullptr)},
      {"finish_reason", nullptr}};
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

json ChatChunk(const std::string& id, int64_t created, const std::string& model,
               const engine::StreamEvent& ev, bool first, bool with_logprobs,
               const TokenText& token_text) {
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  if (!ev.text.empty() || !ev.finish) delta["content"] = ev.text;
  json choice = {{"index", ev.index},
                 {"delta", delta},
                 {"logprobs", with_logprobs ? ChatLogprobs(ev.token_ids, ev.logprobs, token_text)
                                            : json(nullptr)},
                 {"finish_reason", ReasonJson(ev.finish)}};
  return {{"id", id},
          {"object", "chat.completion.chunk"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

json UsageChunk(const std::string& id, int64_t created, const std::string& model,
                const char* object, const Usage& usage) {
  return {{"id", id},       {"object", object},         {"created", created},
          {"model", model}, {"choices", json::array()}, {"usage", UsageJson(usage)}};
}

}  // namespace arbor::server
