#!/usr/bin/env bash
# Raw-HTTP negative tests for Arbor's OpenAI-compatible endpoints (tests/e2e; spec:
# shared/specs/robustness.md). Every case checks the status code AND that the body is OpenAI's
# error envelope {"error": {"message", "type", "param", "code"}} with code == the status, naming
# the field where one applies; after every case a normal completion must still succeed.
#
#   ARBOR_URL=http://127.0.0.1:PORT ARBOR_API_KEY=KEY tests/e2e/bad_input.sh
#
# The server must run with --set server.api_key=$ARBOR_API_KEY. Needs curl and python3.
# Prints one line per failed case, then `arbor-tests: N passed, M failed, 0 skipped`.
set -u

BASE=${ARBOR_URL:-http://127.0.0.1:8000}
KEY=${ARBOR_API_KEY:-}
MODEL=${ARBOR_MODEL:-tiny}
CONTEXT=${ARBOR_CONTEXT:-2048}
VOCAB=${ARBOR_VOCAB:-1206}
VERBOSE=${VERBOSE:-0}

if [[ -z "$KEY" ]]; then
  echo "bad_input.sh: set ARBOR_API_KEY (the server must run with server.api_key)" >&2
  exit 2
fi
case "$BASE" in
  http://127.0.0.1:*|http://localhost:*|http://\[::1\]:*) ;;
  *) echo "bad_input.sh: ARBOR_URL must be a loopback URL, got $BASE" >&2; exit 2 ;;
esac

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PASSED=0
FAILED=0
AUTH=(-H "Authorization: Bearer $KEY")
JSON=(-H "Content-Type: application/json")

fail() { # name, reason
  FAILED=$((FAILED + 1))
  echo "FAIL $1: $2"
}

# Check an error response: status in an allowed set, OpenAI envelope, code == status, field
# named in message or param, and every '|'-separated substring present in the message.
CHECK_ERR='
import json, sys
status, allowed, field, subs, path = sys.argv[1:6]
raw = open(path, "rb").read()
problems = []
if status not in allowed.split(","):
    problems.append("status %s, want %s" % (status, "/".join(allowed.split(","))))
try:
    body = json.loads(raw)
except Exception as e:
    problems.append("body is not JSON (%s)" % e)
    body = None
if body is not None:
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        problems.append("no \"error\" object")
    else:
        msg = err.get("message")
        if not isinstance(msg, str) or not msg:
            problems.append("error.message missing or empty")
            msg = ""
        if not isinstance(err.get("type"), str) or not err.get("type"):
            problems.append("error.type missing")
        if "param" not in err:
            problems.append("error.param missing")
        code = err.get("code")
        if not (isinstance(code, int) and not isinstance(code, bool) and str(code) == status):
            problems.append("error.code %r is not the HTTP status %s" % (code, status))
        if field and field.lower() not in (msg + " " + str(err.get("param"))).lower():
            problems.append("message/param does not name %r" % field)
        for s in filter(None, subs.split("|")):
            if s not in msg:
                problems.append("message lacks %r" % s)
if problems:
    print("; ".join(problems) + " -- body: " + raw[:300].decode("utf-8", "replace").replace("\n", " "))
    sys.exit(1)
'

# A normal completion must succeed after every case.
sanity() {
  local st
  st=$(curl -sS -o "$TMP/sanity" -w '%{http_code}' --max-time 30 -X POST "$BASE/v1/completions" \
    "${AUTH[@]}" "${JSON[@]}" --data-binary "{\"model\":\"$MODEL\",\"prompt\":\"Hello there\",\"max_tokens\":3}" 2>"$TMP/sanity_err") \
    || st="curl error: $(tr '\n' ' ' <"$TMP/sanity_err")"
  if [[ "$st" != 200 ]]; then
    echo "normal completion afterwards failed: status $st body $(head -c 200 "$TMP/sanity" 2>/dev/null)"
    return 1
  fi
  python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
assert isinstance(j["choices"][0]["text"], str) and j["usage"]["completion_tokens"] >= 1
' "$TMP/sanity" 2>/dev/null || { echo "normal completion afterwards: malformed body $(head -c 200 "$TMP/sanity")"; return 1; }
}

# expect_err NAME ALLOWED FIELD SUBSTRINGS -- curl arguments...
expect_err() {
  local name=$1 allowed=$2 field=$3 subs=$4
  shift 4
  [[ "${1:-}" == "--" ]] && shift
  local st why t0 t1
  t0=$(date +%s.%N)
  st=$(curl -sS -o "$TMP/body" -w '%{http_code}' --max-time 30 "$@" 2>"$TMP/err") || {
    # curl may have got a response before the server closed the connection (413/431).
    [[ "$st" =~ ^[1-5][0-9][0-9]$ && "$st" != 000 ]] || st="000 (curl: $(tr '\n' ' ' <"$TMP/err"))"
  }
  t1=$(date +%s.%N)
  [[ -f "$TMP/body" ]] || : >"$TMP/body"
  if [[ "$VERBOSE" == 1 ]]; then
    echo "  [$name] $st $(head -c 200 "$TMP/body")"
  fi
  if ! why=$(python3 -c "$CHECK_ERR" "${st%% *}" "$allowed" "$field" "$subs" "$TMP/body"); then
    [[ "$st" == 000* ]] && why="$st"
    fail "$name" "$why"
    rm -f "$TMP/body"
    return
  fi
  rm -f "$TMP/body"
  if [[ -n "${MAX_SECONDS:-}" ]] && ! python3 -c "import sys; sys.exit(0 if $t1 - $t0 <= $MAX_SECONDS else 1)"; then
    fail "$name" "took $(python3 -c "print(round($t1 - $t0, 2))") s, bound ${MAX_SECONDS} s"
    return
  fi
  if ! why=$(sanity); then fail "$name" "$why"; return; fi
  PASSED=$((PASSED + 1))
}

# post_err NAME ALLOWED FIELD SUBSTRINGS PATH JSON-BODY [extra curl args]
post_err() {
  local name=$1 allowed=$2 field=$3 subs=$4 path=$5 body=$6
  shift 6
  printf '%s' "$body" >"$TMP/req"
  expect_err "$name" "$allowed" "$field" "$subs" -- -X POST "$BASE$path" "${AUTH[@]}" "${JSON[@]}" \
    --data-binary @"$TMP/req" "$@"
}
comp() { post_err "$1" "$2" "$3" "${5:-}" /v1/completions "$4"; }   # name allowed field json [subs]
chat() { post_err "$1" "$2" "$3" "${5:-}" /v1/chat/completions "$4"; }

M="\"model\":\"$MODEL\""
P="$M,\"prompt\":\"Hello\""
MSG="$M,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]"

# ---------------------------------------------------------------- 1. body and content type
comp  malformed_json                 400 "" "{$M,\"prompt\":"
comp  non_object_body_array          400 "" '[1,2,3]'
comp  non_object_body_string         400 "" '"prompt"'
comp  empty_body                     400 "" ''
chat  chat_malformed_json            400 "" "{$M,\"messages\":[{]}"
printf '%s' "{$P,\"max_tokens\":2}" >"$TMP/req"
expect_err wrong_content_type_text_plain 400,415 "" "" -- -X POST "$BASE/v1/completions" "${AUTH[@]}" \
  -H 'Content-Type: text/plain' --data-binary @"$TMP/req"
expect_err wrong_content_type_form 400,415 "" "" -- -X POST "$BASE/v1/completions" "${AUTH[@]}" \
  -H 'Content-Type: application/x-www-form-urlencoded' --data-binary @"$TMP/req"

# ---------------------------------------------------------------- wrong JSON types per field
comp  type_model_number              400 model   "{\"model\":123,\"prompt\":\"Hello\"}"
comp  type_prompt_object             400 prompt  "{$M,\"prompt\":{\"a\":1}}"
comp  type_prompt_number             400 prompt  "{$M,\"prompt\":42}"
chat  type_messages_string           400 messages "{$M,\"messages\":\"hi\"}"
chat  type_message_content_number    400 content "{$M,\"messages\":[{\"role\":\"user\",\"content\":5}]}"
chat  type_message_role_number       400 role    "{$M,\"messages\":[{\"role\":1,\"content\":\"hi\"}]}"
chat  bad_message_role               400 role    "{$M,\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}"
comp  type_max_tokens_string         400 max_tokens "{$P,\"max_tokens\":\"10\"}"
comp  type_temperature_string        400 temperature "{$P,\"temperature\":\"hot\"}"
comp  type_top_p_bool                400 top_p   "{$P,\"top_p\":true}"
comp  type_n_string                  400 n       "{$P,\"n\":\"2\"}"
comp  type_stop_number               400 stop    "{$P,\"stop\":5}"
comp  type_stop_list_of_numbers      400 stop    "{$P,\"stop\":[1,2]}"
comp  type_stream_string             400 stream  "{$P,\"stream\":\"yes\"}"
comp  type_seed_string               400 seed    "{$P,\"seed\":\"abc\"}"
comp  type_logprobs_string           400 logprobs "{$P,\"logprobs\":\"3\"}"
comp  type_logit_bias_list           400 logit_bias "{$P,\"logit_bias\":[1,2]}"
comp  type_echo_string               400 echo "{$P,\"echo\":\"yes\"}"
chat  type_chat_logprobs_string      400 logprobs "{$MSG,\"logprobs\":\"yes\"}"

# ---------------------------------------------------------------- 3. max_tokens
comp  max_tokens_0                   400 max_tokens "{$P,\"max_tokens\":0}"
comp  max_tokens_neg1                400 max_tokens "{$P,\"max_tokens\":-1}"
comp  max_tokens_2p31                400 max_tokens "{$P,\"max_tokens\":2147483648}"
comp  max_tokens_2p63                400 max_tokens "{$P,\"max_tokens\":9223372036854775808}"
comp  max_tokens_2p64                400 max_tokens "{$P,\"max_tokens\":18446744073709551616}"
comp  max_tokens_fraction            400 max_tokens "{$P,\"max_tokens\":1.5}"
chat  chat_max_completion_tokens_neg 400 max_completion_tokens "{$MSG,\"max_completion_tokens\":-5}"
comp  min_tokens_over_max_tokens     400 min_tokens "{$P,\"max_tokens\":2,\"min_tokens\":5}"

# ---------------------------------------------------------------- 4. sampling ranges
comp  temperature_neg1               400 temperature "{$P,\"temperature\":-1}"
comp  temperature_1e999              400 temperature "{$P,\"temperature\":1e999}"
chat  chat_temperature_neg           400 temperature "{$MSG,\"temperature\":-0.1}"
comp  top_p_0                        400 top_p "{$P,\"top_p\":0}"
comp  top_p_1_5                      400 top_p "{$P,\"top_p\":1.5}"
comp  top_k_neg2                     400 top_k "{$P,\"top_k\":-2}"
comp  presence_penalty_3             400 presence_penalty "{$P,\"presence_penalty\":3}"
comp  presence_penalty_neg3          400 presence_penalty "{$P,\"presence_penalty\":-3}"
comp  frequency_penalty_3            400 frequency_penalty "{$P,\"frequency_penalty\":3}"
comp  frequency_penalty_neg3         400 frequency_penalty "{$P,\"frequency_penalty\":-3}"
comp  repetition_penalty_neg3        400 repetition_penalty "{$P,\"repetition_penalty\":-3}"
comp  repetition_penalty_3           400 repetition_penalty "{$P,\"repetition_penalty\":3}"
comp  min_p_2                        400 min_p "{$P,\"min_p\":2}"
comp  min_p_neg                      400 min_p "{$P,\"min_p\":-0.5}"
comp  logit_bias_out_of_vocab        400 logit_bias "{$P,\"logit_bias\":{\"$((VOCAB + 10))\":1}}"
comp  logit_bias_value_500           400 logit_bias "{$P,\"logit_bias\":{\"5\":500}}"

# ---------------------------------------------------------------- 5. caps
comp  n_0                            400 n "{$P,\"n\":0}"
comp  n_1000                         400 n "{$P,\"n\":1000}"
comp  logprobs_21                    400 logprobs "{$P,\"logprobs\":21}"
comp  logprobs_neg1                  400 logprobs "{$P,\"logprobs\":-1}"
chat  chat_top_logprobs_21           400 top_logprobs "{$MSG,\"logprobs\":true,\"top_logprobs\":21}"
chat  chat_top_logprobs_over_vocab   400 top_logprobs "{$MSG,\"logprobs\":true,\"top_logprobs\":$((VOCAB + 1))}"

# ---------------------------------------------------------------- 6. token ids, empty inputs
comp  token_id_out_of_vocab          400 prompt "{$M,\"prompt\":[1,2,$VOCAB]}"
comp  token_id_huge                  400 prompt "{$M,\"prompt\":[1,4294967296]}"
comp  token_id_negative              400 prompt "{$M,\"prompt\":[1,-1,3]}"
comp  token_id_non_integer           400 prompt "{$M,\"prompt\":[1,2.5,3]}"
comp  token_id_mixed_types           400 prompt "{$M,\"prompt\":[1,\"a\",3]}"
comp  empty_prompt_string            400 prompt "{$M,\"prompt\":\"\"}"
comp  empty_prompt_list              400 prompt "{$M,\"prompt\":[]}"
comp  missing_prompt                 400 prompt "{$M,\"max_tokens\":2}"
chat  empty_messages                 400 messages "{$M,\"messages\":[]}"
chat  missing_messages               400 messages "{$M,\"max_tokens\":2}"

# ---------------------------------------------------------------- 7. invalid UTF-8, surrogates
printf '{"model":"%s","prompt":"bad \xff\xfe bytes \xc3\x28","max_tokens":2}' "$MODEL" >"$TMP/req"
expect_err invalid_utf8_prompt 400 "" "" -- -X POST "$BASE/v1/completions" "${AUTH[@]}" "${JSON[@]}" --data-binary @"$TMP/req"
printf '{"model":"%s","messages":[{"role":"user","content":"\xed\xa0\x80 overlong \xc0\xaf"}]}' "$MODEL" >"$TMP/req"
expect_err invalid_utf8_message 400 "" "" -- -X POST "$BASE/v1/chat/completions" "${AUTH[@]}" "${JSON[@]}" --data-binary @"$TMP/req"
comp  lone_surrogate_prompt          400 "" "{$M,\"prompt\":\"a\\ud800b\",\"max_tokens\":2}"
comp  lone_surrogate_stop            400 "" "{$P,\"stop\":[\"\\ud800\"],\"max_tokens\":2}"
chat  lone_surrogate_message         400 "" "{$M,\"messages\":[{\"role\":\"user\",\"content\":\"x\\udc00\"}]}"

# ---------------------------------------------------------------- 2. context length
ids() { python3 -c "import sys; print(','.join(str(1 + i % ($VOCAB - 1)) for i in range(int(sys.argv[1]))))" "$1"; }
comp  prompt_plus_max_tokens_over_context 400 "" "{$M,\"prompt\":[$(ids 2000)],\"max_tokens\":100}" "2048|2000"
comp  prompt_at_context              400 "" "{$M,\"prompt\":[$(ids "$CONTEXT")],\"max_tokens\":1}" "2048"
long_text=$(python3 -c "print('hello world ' * 3000)")
comp  long_string_prompt_over_context 400 "" "{$M,\"prompt\":\"$long_text\",\"max_tokens\":1}" "2048"
chat  chat_over_context              400 "" "{$M,\"messages\":[{\"role\":\"user\",\"content\":\"$long_text\"}]}" "2048"

# Edge: context-1 prompt tokens + max_tokens 1 is accepted.
printf '{"model":"%s","prompt":[%s],"max_tokens":1}' "$MODEL" "$(ids $((CONTEXT - 1)))" >"$TMP/req"
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' --max-time 60 -X POST "$BASE/v1/completions" "${AUTH[@]}" "${JSON[@]}" \
  --data-binary @"$TMP/req" 2>"$TMP/err") || st="000 ($(tr '\n' ' ' <"$TMP/err"))"
if [[ "$st" != 200 ]]; then
  fail context_minus_1_plus_1_accepted "status $st, want 200 -- body: $(head -c 300 "$TMP/body" 2>/dev/null)"
elif ! why=$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1])); u = j["usage"]
if u["prompt_tokens"] != int(sys.argv[2]) - 1 or u["completion_tokens"] != 1:
    print("usage %r, want prompt_tokens %d and completion_tokens 1" % (u, int(sys.argv[2]) - 1)); sys.exit(1)
' "$TMP/body" "$CONTEXT" 2>&1); then
  fail context_minus_1_plus_1_accepted "$why"
elif ! why=$(sanity); then fail context_minus_1_plus_1_accepted "$why"
else PASSED=$((PASSED + 1)); fi

# ---------------------------------------------------------------- fields refused by name, never dropped
comp  suffix_not_supported           400 suffix "{$P,\"suffix\":\" and so on\"}"
chat  functions_not_supported        400 functions "{$MSG,\"functions\":[{\"name\":\"f\",\"parameters\":{}}]}"
chat  function_call_not_supported    400 function_call "{$MSG,\"function_call\":\"auto\"}"
chat  response_format_json_object    400 response_format "{$MSG,\"response_format\":{\"type\":\"json_object\"}}"
chat  response_format_not_object     400 response_format "{$MSG,\"response_format\":\"text\"}"
comp  stream_options_without_stream  400 stream_options "{$P,\"stream_options\":{\"include_usage\":true}}"
comp  prompt_list_with_number        400 prompt "{$M,\"prompt\":[\"a\",5]}"
comp  prompt_list_with_empty_ids     400 prompt "{$M,\"prompt\":[[1,2],[]]}"
comp  prompt_list_bad_id             400 prompt "{$M,\"prompt\":[\"fine\",[1,$VOCAB]]}"
comp  max_tokens_0_without_echo      400 max_tokens "{$P,\"max_tokens\":0}"
comp  max_tokens_0_echo_n2           400 n "{$P,\"max_tokens\":0,\"echo\":true,\"n\":2}"
comp  n_fraction                     400 n "{$P,\"n\":1.5}"

# ---------------------------------------------------------------- 9. unknown model
comp  unknown_model                  404 "" "{\"model\":\"no-such-model\",\"prompt\":\"Hi\"}" 'The model `no-such-model` does not exist.'
chat  chat_unknown_model             404 "" "{\"model\":\"no-such-model\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}" 'The model `no-such-model` does not exist.'

# ---------------------------------------------------------------- 10. oversized requests
python3 -c "
import sys
pad = 'a' * (9 * 1024 * 1024)
sys.stdout.write('{\"model\":\"$MODEL\",\"prompt\":\"' + pad + '\",\"max_tokens\":1}')" >"$TMP/big"
expect_err body_9MiB_413 413 "" "" -- -X POST "$BASE/v1/completions" "${AUTH[@]}" "${JSON[@]}" -H 'Expect:' --data-binary @"$TMP/big"
rm -f "$TMP/big"
# Headers over 64 KB: 431 (more header cases, chunked floods and slow clients: http_limits.py).
big_header=$(python3 -c "print('x' * 70000)")
printf '%s' "{$P,\"max_tokens\":2}" >"$TMP/req"
expect_err headers_over_64KB 431 "" "" -- -X POST "$BASE/v1/completions" "${AUTH[@]}" "${JSON[@]}" \
  -H "X-Padding: $big_header" --data-binary @"$TMP/req"

# ---------------------------------------------------------------- 24. structures that explode
python3 -c "
import sys
d = 10000
sys.stdout.write('{\"model\":\"$MODEL\",\"prompt\":\"Hi\",\"logit_bias\":' + '[' * d + ']' * d + '}')" >"$TMP/req"
MAX_SECONDS=5 expect_err nested_json_10k_deep 400 "" "" -- -X POST "$BASE/v1/completions" "${AUTH[@]}" "${JSON[@]}" --data-binary @"$TMP/req"
python3 -c "
import sys
d = 10000
sys.stdout.write('{\"model\":\"$MODEL\",\"messages\":' + '{\"a\":' * d + '1' + '}' * d + '}')" >"$TMP/req"
MAX_SECONDS=5 expect_err nested_json_10k_deep_objects 400 "" "" -- -X POST "$BASE/v1/chat/completions" "${AUTH[@]}" "${JSON[@]}" --data-binary @"$TMP/req"
stops=$(python3 -c "import json; print(json.dumps(['stop%d' % i for i in range(1000)]))")
MAX_SECONDS=5 comp huge_stop_list_1000 400 stop "{$P,\"stop\":$stops}"

# ---------------------------------------------------------------- 11. request-supplied template
chat  chat_template_in_request       400 chat_template "{$MSG,\"chat_template\":\"{{ 7*7 }}\"}"
chat  chat_template_kwargs_template  400 chat_template "{$MSG,\"chat_template\":\"{% for x in range(99999999) %}{% endfor %}\",\"max_tokens\":1}"

# ---------------------------------------------------------------- 23. API key
printf '%s' "{$P,\"max_tokens\":2}" >"$TMP/req"
expect_err missing_api_key 401 "" "" -- -X POST "$BASE/v1/completions" "${JSON[@]}" --data-binary @"$TMP/req"
expect_err wrong_api_key 401 "" "" -- -X POST "$BASE/v1/completions" -H "Authorization: Bearer ${KEY}x" "${JSON[@]}" --data-binary @"$TMP/req"
expect_err api_key_without_bearer 401 "" "" -- -X POST "$BASE/v1/completions" -H "Authorization: $KEY" "${JSON[@]}" --data-binary @"$TMP/req"
expect_err api_key_basic_scheme 401 "" "" -- -X POST "$BASE/v1/completions" -H "Authorization: Basic $KEY" "${JSON[@]}" --data-binary @"$TMP/req"
printf '%s' "{$MSG}" >"$TMP/req"
expect_err chat_missing_api_key 401 "" "" -- -X POST "$BASE/v1/chat/completions" "${JSON[@]}" --data-binary @"$TMP/req"
expect_err models_missing_api_key 401 "" "" -- "$BASE/v1/models"
# The key check comes before body parsing: garbage without a key is still 401.
expect_err missing_api_key_bad_body 401 "" "" -- -X POST "$BASE/v1/completions" "${JSON[@]}" --data-binary '{not json'

# ---------------------------------------------------------------- routes and methods
expect_err unknown_route 404 "" "" -- -X POST "$BASE/v1/nope" "${AUTH[@]}" "${JSON[@]}" --data-binary '{}'
expect_err get_on_completions 405 "" "" -- "$BASE/v1/completions" "${AUTH[@]}"

echo "arbor-tests: $PASSED passed, $FAILED failed, 0 skipped"
[[ $FAILED -eq 0 ]]
