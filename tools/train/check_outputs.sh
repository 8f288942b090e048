#!/usr/bin/env bash
# Loads every model train_all.py produced with Arbor's own binary on the CPU and prints a sample
# chat answer and completion from each; registers each LoRA adapter on the chat model and
# completes through it; asks the policy one test problem. Run it here after the GPU run:
#
#   tools/train/check_outputs.sh TESTBED_DIR [ARBOR_BINARY]
#
# TESTBED_DIR is the run's --out (it holds chat/, adapters/, moe/, swa/, policy/, prm/,
# report.json); ARBOR_BINARY defaults to bazel-bin/server/arbor. Exits non-zero when a model
# fails to load or to answer. Needs curl and python3 (standard library).
set -uo pipefail
dir=$(cd "${1:?usage: check_outputs.sh TESTBED_DIR [ARBOR_BINARY]}" && pwd)
arbor=${2:-bazel-bin/server/arbor}
[ -x "$arbor" ] || { echo "no arbor binary at $arbor (bazel build //server:arbor)"; exit 2; }
fail=0
pid=

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {  # start MODEL_DIR [extra --set args...]; sets pid and port
  local model=$1; shift
  port=$(free_port)
  log=$(mktemp)
  "$arbor" serve --port "$port" --grpc-port 0 --device cpu --log-level warn \
    --set model.path="$model" --set model.served_model_name=m \
    --set engine.pool_bytes=67108864 "$@" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "FAILED: $model did not become healthy"; cat "$log"; fail=$((fail + 1))
  stop
  return 1
}

stop() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=; fi
}
trap stop EXIT

post() {  # post PATH JSON -> prints the answer's text, or fails
  local out
  out=$(curl -s "http://127.0.0.1:$port$1" -H 'Content-Type: application/json' -d "$2")
  python3 -c '
import json, sys
j = json.loads(sys.argv[1])
if "choices" not in j:
    print("ERROR", json.dumps(j)); sys.exit(1)
c = j["choices"][0]
print(repr(c["message"]["content"] if "message" in c else c["text"]))' "$out"
}

ask() {  # ask NAME MODEL_ID: one chat answer and one completion, greedy
  local name=$1 id=$2 a
  a=$(post /v1/chat/completions "{\"model\":\"$id\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":48,\"temperature\":0}") \
    || { echo "FAILED: $name chat: $a"; fail=$((fail + 1)); }
  echo "$name  chat 'Hi' -> $a"
  a=$(post /v1/completions "{\"model\":\"$id\",\"prompt\":\"In the beginning\",\"max_tokens\":32,\"temperature\":0}") \
    || { echo "FAILED: $name completion: $a"; fail=$((fail + 1)); }
  echo "$name  complete 'In the beginning' -> $a"
}

for m in chat tiny moe swa; do   # the chat model is chat/ (tiny/ in runs before --reuse)
  [ -f "$dir/$m/config.json" ] || { echo "skip $m: not produced"; continue; }
  if { [ "$m" = chat ] || [ "$m" = tiny ]; } && [ -d "$dir/adapters" ]; then
    start "$dir/$m" --set server.adapter_root="$dir/adapters" --set server.admin_key=check || continue
    ask "$m" m
    for a in "$dir"/adapters/*/; do
      a=${a%/}; name=$(basename "$a")
      r=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/adapters" \
        -H 'Authorization: Bearer check' -H 'Content-Type: application/json' \
        -d "{\"name\":\"$name\",\"path\":\"$a\"}")
      if [ "$r" != 200 ] && [ "$r" != 201 ]; then
        echo "FAILED: adapter $name registration: HTTP $r"; fail=$((fail + 1)); continue
      fi
      ask "adapter $name" "$name"
    done
  else
    start "$dir/$m" || continue
    ask "$m" m
  fi
  stop
done

if [ -f "$dir/policy/config.json" ] && [ -f "$dir/eval/arith_test.jsonl" ]; then
  if start "$dir/policy"; then
    read -r prompt answer < <(python3 -c '
import json, sys
p = json.loads(open(sys.argv[1]).readline())
print(json.dumps(p["prompt"]), p["answer"])' "$dir/eval/arith_test.jsonl")
    a=$(post /v1/completions "{\"model\":\"m\",\"prompt\":$prompt,\"max_tokens\":80,\"temperature\":0}") \
      || { echo "FAILED: policy: $a"; fail=$((fail + 1)); }
    echo "policy  $prompt -> $a  (answer $answer)"
    stop
  fi
fi
if [ -f "$dir/prm/config.json" ]; then
  start "$dir/prm" && { echo "prm  loads"; stop; }
fi
[ -f "$dir/report.json" ] && python3 - "$dir/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for name, s in r["stages"].items():
    keys = ("val_ppl", "chat_answer_ppl", "accuracy_greedy", "accuracy_sampled_t1",
            "step_accuracy_synthetic", "step_accuracy_policy_samples", "error", "skipped")
    print(name, {k: s[k] for k in keys if k in s})
    if name == "adapters":
        print("  base", s.get("base_ppl"))
        for a, row in s.get("ppl_matrix", {}).items():
            print("  ", a, row)
print("committed bytes", r.get("committed_bytes"))
EOF
echo "check_outputs: $fail failure(s)"
[ "$fail" -eq 0 ]
