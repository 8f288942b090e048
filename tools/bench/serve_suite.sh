#!/usr/bin/env bash
# The serving figures of issue 12 in one run on one card: the bundled server on a dummy-weight
# Llama-3-8B shape (bf16), `arbor bench serve` closed loop at each concurrency (prompt 512,
# output 128), then transformers at the same concurrencies (tools/bench/hf_serve_peer.py), and
# the ratios as bench/results.json records (tools/bench/serve_records.py) and plots
# (tools/bench/plot_serve.py, PNGs in $OUT/plots). tools/bench/gpu_suite.sh runs it; it also
# runs alone, from the repository root of an unpacked bundle on the GPU host:
#
#   tools/bench/serve_suite.sh [--concurrency 1,8,32,128,256] [--prompt 512] [--output 128]
#       [--model-dir tools/bench/llama3-8b] [--device cuda] [--dtype bfloat16] [--arbor PATH]
#       [--card NAME] [--tag 8b] [--peer-json FILE] [--set KEY=VALUE ...]
#   env: OUT (default /tmp/arbor-serve), RESULTS (default bench/results.json),
#        BUNDLE (default bundle; the server is $BUNDLE/arbor unless --arbor), HF_ARGS (extra
#        arguments for hf_serve_peer.py, e.g. "--compile off")
#
# The model directory holds only config.json, so the server has no tokenizer: prompts are token
# ids drawn uniformly over the vocabulary (`--vocab-size`), the server streams one chunk per
# token with empty text (no detokenization), and the peer neither encodes nor decodes. Prefix
# caching is off (every point sends the same seeded prompts). Each point sends max(2c, 16)
# requests. --peer-json reads a peer file instead of running transformers (the CPU test).
set -uo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
bundle=${BUNDLE:-$here/bundle}
out=${OUT:-/tmp/arbor-serve}
results=${RESULTS:-$here/bench/results.json}
arbor=$bundle/arbor
concurrency=1,8,32,128,256
prompt=512
output=128
model_dir=tools/bench/llama3-8b
device=cuda
dtype=bfloat16
card=
tag=
peer_json=
sets=()
while [ $# -gt 0 ]; do
  case $1 in
    --concurrency) concurrency=$2; shift 2 ;;
    --prompt) prompt=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    --model-dir) model_dir=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --arbor) arbor=$2; shift 2 ;;
    --card) card=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --peer-json) peer_json=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "serve_suite.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done
if [ -z "$card" ]; then
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  [ -n "$card" ] || card=cpu
fi
if [ -z "$tag" ]; then
  tag=$(basename "$model_dir")
  [ "$tag" = llama3-8b ] && tag=8b
fi
served=$(basename "$model_dir")-dummy  # the model name clients send and records carry
mkdir -p "$out"
vocab=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["vocab_size"])' \
  "$model_dir/config.json") || { echo "serve_suite: no vocab_size in $model_dir/config.json"; exit 1; }
IFS=, read -r -a cs <<<"$concurrency"
maxc=0
for c in "${cs[@]}"; do [ "$c" -gt "$maxc" ] && maxc=$c; done
# As bench_engine sizes its engine: a forward pass holds up to 16384 prompt tokens.
batched=$((maxc * prompt))
[ "$batched" -gt 16384 ] && batched=16384
[ "$batched" -lt 2048 ] && batched=2048
status=0

suite=serve_suite
source "$here/tools/bench/server_lib.sh"
port=$(free_port)
url=http://127.0.0.1:$port
trap stop_server EXIT
trap 'exit 143' TERM INT  # a timeout's signal runs the EXIT trap too: the server never outlives us

# The server: dummy weights of the config's shape, every request of the largest point running
# at once, the KV pool 0.9 of the memory left after the weights (as vLLM's default
# gpu_memory_utilization and bench_engine --capacity), context prompt + output.
echo "serve_suite: $card; $model_dir ($dtype, dummy weights) on $device; concurrency $concurrency, prompt $prompt, output $output"
"$arbor" serve --host 127.0.0.1 --port "$port" --grpc-port 0 --device "$device" \
  --set model.path="$model_dir" --set model.load_format=dummy \
  --set model.served_model_name="$served" --set model.dtype="$dtype" \
  --set model.max_model_len=$((prompt + output)) --set engine.max_num_seqs="$maxc" \
  --set engine.max_num_batched_tokens="$batched" --set engine.pool_bytes=0 \
  --set engine.pool_fraction=0.9 --set engine.enable_prefix_caching=false \
  "${sets[@]}" >"$out/server.log" 2>&1 &
server_pid=$!
start=$SECONDS
start_timed_out() { [ $((SECONDS - start)) -gt 300 ]; }  # 300 s to start
wait_healthy "$url" start_timed_out
echo "   server ready in $((SECONDS - start)) s at $url (pid $server_pid)"

bench=("$arbor" bench serve --url "$url" --model "$served" --prompt-len "$prompt"
  --output-len "$output" --vocab-size "$vocab" --timeout-s 300 --quiet)
# Warm-up (another seed, short outputs): first-use costs stay out of the first point.
w=$((maxc < 8 ? maxc : 8))
"${bench[@]}" --concurrency "$w" --num-requests "$w" --output-len 8 --seed 1 \
  >"$out/warmup.log" 2>&1 || { echo "serve_suite: warm-up failed"; tail -5 "$out/warmup.log"; exit 1; }
http_get "$url/metrics" "$out/metrics_before.txt" >/dev/null
arbor_json=()
for c in "${cs[@]}"; do
  n=$((2 * c > 16 ? 2 * c : 16))
  "${bench[@]}" --concurrency "$c" --num-requests "$n" --json "$out/arbor_c$c.json" \
    --csv "$out/arbor_c$c.csv" --results "$results" --card "$card" >"$out/arbor_c$c.log" 2>&1 \
    || { echo "arbor bench serve at concurrency $c FAILED"; status=1; }
  sed -n 2p "$out/arbor_c$c.log"
  [ -f "$out/arbor_c$c.json" ] && arbor_json+=("$out/arbor_c$c.json")
done
http_get "$url/metrics" "$out/metrics_after.txt" >/dev/null
# The peer needs the card's memory: the server goes first.
stop_server
[ "${#arbor_json[@]}" -gt 0 ] || { echo "serve_suite: no arbor points"; exit 1; }

if [ -z "$peer_json" ]; then
  peer_json=$out/hf_serve.json
  # shellcheck disable=SC2086  # HF_ARGS is a list of words
  python3 tools/bench/hf_serve_peer.py --config "$model_dir" --concurrency "$concurrency" \
    --prompt "$prompt" --output "$output" --out "$peer_json" ${HF_ARGS:-} 2>&1 \
    | tee "$out/hf_serve.log" | grep -E '^(concurrency|model built|wrote)'
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "hf_serve_peer.py FAILED (see $out/hf_serve.log)"; status=1; }
fi
if [ -f "$peer_json" ]; then
  python3 tools/bench/serve_records.py --arbor "${arbor_json[@]}" --peer "$peer_json" \
    --card "$card" --results "$results" --tag "$tag" \
    --model-desc "$model_dir (dummy weights), ${dtype/bfloat16/bf16}" \
    --command "tools/bench/serve_suite.sh --concurrency $concurrency --prompt $prompt --output $output --model-dir $model_dir" \
    --csv "$out/serve_sweep.csv" --metrics-before "$out/metrics_before.txt" \
    --metrics-after "$out/metrics_after.txt" || status=1
  python3 tools/bench/plot_serve.py --arbor "${arbor_json[@]}" --peer "$peer_json" \
    --card "$card" --subtitle "$model_dir ($dtype, dummy weights), prompt $prompt, output $output" \
    --out "$out/plots"
  case $? in
    0) ;;
    3) echo "   plots skipped: no matplotlib" ;;
    *) echo "plot_serve.py FAILED"; status=1 ;;
  esac
else
  echo "serve_suite: no peer figures ($peer_json); no ratios"
  status=1
fi
echo "serve_suite: $([ $status -eq 0 ] && echo OK || echo FAILED)"
exit $status
