#!/usr/bin/env bash
# End-to-end through the real binary: `arbor serve` on the embedded config answers /health and
# /v1/models with curl, then SIGTERM makes it drain and exit 0. Also: --help, bad flags, bad keys.
set -u
ARBOR="$1"
pass=0
fail=0
check() {  # check NAME COMMAND...
  local name="$1"; shift
  if "$@"; then pass=$((pass + 1)); else echo "FAILED: $name"; fail=$((fail + 1)); fi
}

check "--help exits 0 and shows serve" bash -c "'$ARBOR' --help | grep -q 'arbor serve'"
check "unknown command exits 2" bash -c "'$ARBOR' frobnicate 2>/dev/null; [ \$? -eq 2 ]"
check "unknown key is named" bash -c "'$ARBOR' serve --set server.colour=1 2>&1 | grep -q 'server.colour: unknown key'"
check "bad value is named" bash -c "'$ARBOR' serve --port 99999 2>&1 | grep -q 'server.http_port'"
check "missing config file is named" bash -c "'$ARBOR' serve --config /nonexistent.yaml 2>&1 | grep -q '/nonexistent.yaml'"
check "--print-config shows overrides" bash -c "'$ARBOR' serve --device cpu --print-config | grep -q 'device: cpu'"

# arbor eval through the binary: JSON on stdout, the progress line on stderr, bad data exits 1.
eval_docs=$(mktemp --suffix=.jsonl)
printf '{"text": "In the beginning"}\n{"text": ""}\n' >"$eval_docs"
eval_err=$(mktemp)
check "--help lists eval" bash -c "'$ARBOR' --help | grep -q 'arbor eval perplexity'"
check "eval --help exits 0" bash -c "'$ARBOR' eval --help | grep -q 'arbor eval reasoning'"
check "eval perplexity prints one JSON object" bash -c \
  "'$ARBOR' eval perplexity --device cpu --set model.path=models/tiny --data '$eval_docs' --json 2>'$eval_err' | python3 -c 'import json,sys; j=json.load(sys.stdin); assert j[\"documents\"] == 2 and j[\"perplexity\"] > 1, j'"
check "eval progress ends with a plain line on stderr" grep -q '^2/2 documents' "$eval_err"
printf '{"text": 1}\n' >"$eval_docs"
eval_out=$("$ARBOR" eval perplexity --device cpu --set model.path=models/tiny --data "$eval_docs" 2>&1)
eval_rc=$?
check "eval refuses bad data with 1" [ "$eval_rc" -eq 1 ]
check "eval names the bad line and field" grep -q ':1: field "text" must be a string' <<<"$eval_out"
rm -f "$eval_docs" "$eval_err"

# A free port: ask the kernel, then release it for the server.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# Whether the server on port $1 answers /health within 10 s.
healthy() {
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$1/health" >/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
port=$(free_port)
log=$(mktemp)
"$ARBOR" serve --port "$port" --grpc-port 0 --device cpu >"$log" 2>&1 &
pid=$!
check "server becomes healthy" healthy "$port"
check "/v1/models lists tiny" bash -c "curl -sf http://127.0.0.1:$port/v1/models | grep -q '\"id\":\"tiny\"'"
check "log says which backend" grep -q 'backend: cpu' "$log"
# The load generator in the same binary, against this server: a closed-loop point to JSON/CSV.
bench_json=$(mktemp)
bench_csv=$(mktemp)
bench_results=$(mktemp -u)
check "bench serve --help names gRPC as later" bash -c "'$ARBOR' bench serve --help | grep -q 'gRPC'"
check "bench serve runs against the server" "$ARBOR" bench serve --url "http://127.0.0.1:$port" \
  --model tiny --concurrency 2 --num-requests 4 --prompt-len 8 --output-len 4 --vocab-size 1206 \
  --quiet --json "$bench_json" --csv "$bench_csv" --results "$bench_results" --card "cpu (test)"
check "bench serve JSON counts 4 completed" grep -q '"completed": 4' "$bench_json"
check "bench serve appends results records" bash -c \
  "grep -q '\"name\": \"serve.bench.output_throughput (concurrency=2, tiny' '$bench_results' && grep -q '\"card\": \"cpu (test)\"' '$bench_results'"
check "bench serve CSV has a header and one row" bash -c "[ \$(wc -l < '$bench_csv') -eq 2 ]"
check "bench serve refuses a bad flag with 2" bash -c "'$ARBOR' bench serve --model tiny --rate x 2>/dev/null; [ \$? -eq 2 ]"
rm -f "$bench_json" "$bench_csv" "$bench_results"
kill -TERM "$pid"
wait "$pid"
rc=$?
check "SIGTERM exits 0" [ "$rc" -eq 0 ]
check "log shows drain" grep -q 'draining' "$log"

# Adapters registered at start-up (vLLM's --lora-modules, both forms) are served by name; a bad one
# stops start-up naming it.
port3=$(free_port)
log3=$(mktemp)
"$ARBOR" serve --port "$port3" --grpc-port 0 --device cpu --set model.path=tests/data/models/llama \
  --set server.adapter_root=tests/data/adapters \
  --lora-modules all=llama-lora-all '{"name": "qv", "path": "llama-lora-qv"}' >"$log3" 2>&1 &
pid3=$!
check "server with --lora-modules becomes healthy" healthy "$port3"
check "/v1/models lists the start-up adapters" bash -c \
  "curl -sf http://127.0.0.1:$port3/v1/models | grep -q '\"id\":\"all\"' && curl -sf http://127.0.0.1:$port3/v1/models | grep -q '\"id\":\"qv\"'"
check "a start-up adapter serves a completion" bash -c \
  "curl -sf http://127.0.0.1:$port3/v1/completions -H 'Content-Type: application/json' -d '{\"model\": \"qv\", \"prompt\": [1, 5, 9], \"max_tokens\": 4}' | grep -q '\"model\":\"qv\"'"
kill -TERM "$pid3"
wait "$pid3"
check "a missing start-up adapter stops start-up naming it" bash -c \
  "'$ARBOR' serve --port 0 --grpc-port 0 --device cpu --set model.path=tests/data/models/llama --set server.adapter_root=tests/data/adapters --lora-modules all=llama-lora-all gone=nope 2>&1 | grep -q 'lora.adapters\[1\] (gone = nope)'"
check "--lora-modules without an adapter root is refused" bash -c \
  "'$ARBOR' serve --device cpu --lora-modules all=llama-lora-all 2>&1 | grep -q 'server.adapter_root'"
rm -f "$log3"

# /health is 503 while the model loads (a 470 MB dummy model takes a moment), then 200.
port2=$(free_port)
log2=$(mktemp)
"$ARBOR" serve --port "$port2" --grpc-port 0 --device cpu --set model.path=tests/data/configs/llama-medium \
  --set model.load_format=dummy --set engine.pool_bytes=67108864 >"$log2" 2>&1 &
pid2=$!
saw_503=0
saw_200=0
for _ in $(seq 1 3000); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port2/health")
  [ "$code" = "503" ] && saw_503=1
  if [ "$code" = "200" ]; then saw_200=1; break; fi
  sleep 0.01
done
check "health is 503 while loading" [ "$saw_503" -eq 1 ]
check "health turns 200 once loaded" [ "$saw_200" -eq 1 ]
kill -TERM "$pid2"
wait "$pid2"
check "SIGTERM after loading exits 0" [ "$?" -eq 0 ]
[ "$fail" -eq 0 ] || cat "$log" "$log2"
rm -f "$log2"
rm -f "$log"
echo "arbor-tests: $pass passed, $fail failed, 0 skipped"
[ "$fail" -eq 0 ]
