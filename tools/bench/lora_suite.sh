#!/usr/bin/env bash
# S-LoRA's workload (issue 14's Benchmark) in one run on one card: the bundled server on a
# dummy-weight Llama-3-8B shape (bf16) serves one Poisson trace (input and output lengths uniform
# in [8, 512]) base-only and then with N = 5, 100, 1000, 2000 adapters of ranks 8/16/32/64
# (power-law popularity, alpha 1), registered through the admin API (timed); /metrics is scraped
# around every point for the adapter counters. A slice of the trace is then served by HF PEFT
# (tools/bench/peft_peer.py: one adapter at a time, and PEFT's mixed-adapter batch) and by the
# server, for the ratio. Records go to bench/results.json (tools/bench/lora_records.py), plots to
# $OUT/plots (tools/bench/plot_lora.py). From the repository root of an unpacked bundle:
#
#   tools/bench/lora_suite.sh [--adapters 5,100,1000,2000] [--rate 32] [--num-requests 320]
#       [--min-len 8] [--max-len 512] [--alpha 1] [--ranks 8,16,32,64] [--per-rank 2]
#       [--targets q_proj,v_proj] [--host-bytes 60129542144] [--max-num-seqs 256]
#       [--pool-fraction 0.9] [--register-threads 12] [--peft-requests 32] [--peft-adapters 4]
#       [--peft-budget-s 150] [--peer-json FILE | --no-peer] [--budget-s 540]
#       [--model-dir tools/bench/llama3-8b] [--device cuda] [--dtype bfloat16] [--arbor PATH]
#       [--card NAME] [--seed 0] [--adapter-dir DIR] [--out DIR] [--results FILE] [--pack FILE]
#       [--set KEY=VALUE ...]
#   env: OUT (default /tmp/arbor-lora), RESULTS (default bench/results.json), BUNDLE (default
#        bundle; the server is $BUNDLE/arbor unless --arbor)
#
# Adapters: --per-rank distinct PEFT directories per rank (tools/bench/make_adapters.py; bf16,
# random A, small random B), written outside $OUT (--adapter-dir, default a temporary directory,
# removed at the end). Name i (lora-0000 ...) is registered on directory i mod (per-rank x ranks),
# ranks interleaved, so every N mixes all ranks; the server keeps a host copy, a share of
# lora.host_bytes and GPU residency per name, as for N distinct adapters. The names of a point
# are the first N: points reuse the previous point's registrations and add the rest.
# Defaults: q_proj and v_proj (a rank-r adapter of the Llama-3-8B shape is 0.85 MB x r in bf16:
# 6.8 / 13.6 / 27.3 / 54.5 MB, 51 GB of host copies for 2,000 names; q,k,v,o would double it,
# more pinned memory than the host should give), and lora.host_bytes = 56 GiB, which holds all
# 2,000 packed copies as S-LoRA keeps every adapter in host memory; a smaller --host-bytes adds
# disk rereads (LRU) to the picture.
#
# Time: every step checks --budget-s (from the start); a point that would not finish before the
# time kept for the peer is skipped and said so. --peer-json reads a peer file instead of running
# PEFT (the CPU test); --no-peer runs no PEFT comparison. --pack FILE tars $OUT into one file at
# the end (a device call brings back few files).
set -uo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
bundle=${BUNDLE:-$here/bundle}
out=${OUT:-/tmp/arbor-lora}
results=${RESULTS:-$here/bench/results.json}
arbor=$bundle/arbor
ns=5,100,1000,2000
rate=32
num_requests=320
min_len=8
max_len=512
alpha=1
ranks=8,16,32,64
per_rank=2
targets=q_proj,v_proj
host_bytes=$((56 << 30))
max_seqs=256
pool_fraction=0.9
reg_threads=12
peft_requests=32
peft_adapters=4
peft_budget=150
peer_json=
no_peer=0
budget=540
model_dir=tools/bench/llama3-8b
device=cuda
dtype=bfloat16
card=
seed=0
adapter_dir=
pack=
sets=()
while [ $# -gt 0 ]; do
  case $1 in
    --adapters) ns=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --num-requests) num_requests=$2; shift 2 ;;
    --min-len) min_len=$2; shift 2 ;;
    --max-len) max_len=$2; shift 2 ;;
    --alpha) alpha=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --per-rank) per_rank=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --host-bytes) host_bytes=$2; shift 2 ;;
    --max-num-seqs) max_seqs=$2; shift 2 ;;
    --pool-fraction) pool_fraction=$2; shift 2 ;;
    --register-threads) reg_threads=$2; shift 2 ;;
    --peft-requests) peft_requests=$2; shift 2 ;;
    --peft-adapters) peft_adapters=$2; shift 2 ;;
    --peft-budget-s) peft_budget=$2; shift 2 ;;
    --peer-json) peer_json=$2; shift 2 ;;
    --no-peer) no_peer=1; shift ;;
    --budget-s) budget=$2; shift 2 ;;
    --model-dir) model_dir=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --arbor) arbor=$2; shift 2 ;;
    --card) card=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --adapter-dir) adapter_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --pack) pack=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "lora_suite.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done
if [ -z "$card" ]; then
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  [ -n "$card" ] || card=cpu
fi
served=$(basename "$model_dir")-dummy
mkdir -p "$out"
out=$(cd "$out" && pwd)
vocab=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["vocab_size"])' \
  "$model_dir/config.json") || { echo "lora_suite: no vocab_size in $model_dir/config.json"; exit 1; }
IFS=, read -r -a n_list <<<"$ns"
IFS=, read -r -a rank_list <<<"$ranks"
max_rank=0
for r in "${rank_list[@]}"; do [ "$r" -gt "$max_rank" ] && max_rank=$r; done
nmax=0
for n in "${n_list[@]}"; do [ "$n" -gt "$nmax" ] && nmax=$n; done
run_peer=1
[ "$no_peer" = 1 ] && run_peer=0
[ -n "$peer_json" ] && run_peer=0
# Seconds kept at the end for the PEFT peer (when it runs here), records and plots.
reserve=20
[ "$run_peer" = 1 ] && reserve=$((reserve + peft_budget + 40))
status=0
key=lora-suite-$$
cleanup_adapters=0
if [ -z "$adapter_dir" ]; then
  adapter_dir=$(mktemp -d "${TMPDIR:-/tmp}/arbor-lora-adapters.XXXXXX")
  cleanup_adapters=1
fi
mkdir -p "$adapter_dir"
adapter_dir=$(cd "$adapter_dir" && pwd)
left() { echo $((budget - SECONDS)); }

suite=lora_suite
source "$here/tools/bench/server_lib.sh"
port=$(free_port)
url=http://127.0.0.1:$port
on_exit() {
  stop_server
  [ "$cleanup_adapters" = 1 ] && rm -rf "$adapter_dir"
}
trap on_exit EXIT
trap 'exit 143' TERM INT  # a timeout's signal runs the EXIT trap too: the server never outlives us

echo "lora_suite: $card; $model_dir ($dtype, dummy weights) on $device; N $ns, Poisson $rate req/s," \
  "$num_requests requests, lengths uniform [$min_len, $max_len], alpha $alpha; ranks $ranks x" \
  "$per_rank dirs, targets $targets; lora.host_bytes $host_bytes; budget $budget s"
# The server: dummy weights of the config's shape, context max_len + max_len, up to max_seqs
# sequences at once, the unified pool (KV pages and adapter pages) 0.9 of the memory left after
# the weights. Arbor has no per-batch adapter limit (vLLM's max_loras): any mix runs in one batch.
"$arbor" serve --host 127.0.0.1 --port "$port" --grpc-port 0 --device "$device" \
  --set model.path="$model_dir" --set model.load_format=dummy \
  --set model.served_model_name="$served" --set model.dtype="$dtype" \
  --set model.max_model_len=$((2 * max_len)) --set engine.max_num_seqs="$max_seqs" \
  --set engine.max_num_batched_tokens=8192 --set engine.pool_bytes=0 \
  --set engine.pool_fraction="$pool_fraction" --set engine.enable_prefix_caching=false \
  --set engine.max_lora_rank="$max_rank" --set lora.host_bytes="$host_bytes" \
  --set server.admin_key="$key" --set server.adapter_root="$adapter_dir" \
  "${sets[@]}" >"$out/server.log" 2>&1 &
server_pid=$!
# The adapters, while the server loads.
start=$SECONDS
python3 tools/bench/make_adapters.py --config "$model_dir" --out "$adapter_dir" --ranks "$ranks" \
  --per-rank "$per_rank" --targets "$targets" --seed "$seed" 2>&1 | tee "$out/make_adapters.log" \
  | sed 's/^/   /'
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "lora_suite: make_adapters.py FAILED"; exit 1; }
echo "   adapters written in $((SECONDS - start)) s"
over_budget() { [ "$(left)" -lt "$reserve" ]; }  # the budget, less the reserve
wait_healthy "$url" over_budget
echo "   server ready at $SECONDS s at $url (pid $server_pid)"
grep -E 'engine: pool' "$out/server.log" | sed 's/^.*\] /   /'

names() {  # names N: lora-0000,...,lora-(N-1)
  python3 -c 'import sys; print(",".join("lora-%04d" % i for i in range(int(sys.argv[1]))))' "$1"
}
registered=0
reg_rate=0
register_to() {  # register_to N LABEL
  local n=$1 label=$2
  [ "$n" -le "$registered" ] && return 0
  python3 tools/bench/lora_client.py register --url "$url" --key "$key" \
    --manifest "$adapter_dir/manifest.json" --from "$registered" --to "$n" \
    --threads "$reg_threads" --out "$out/register_$label.json" | sed 's/^/   /'
  local rc=${PIPESTATUS[0]}
  reg_rate=$(python3 -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["per_second"] or 0))' \
    "$out/register_$label.json" 2>/dev/null || echo 0)
  registered=$n
  return "$rc"
}
bench=("$arbor" bench serve --url "$url" --model "$served" --prompt-len "uniform:$min_len,$max_len"
  --output-len "uniform:$min_len,$max_len" --vocab-size "$vocab" --timeout-s 300 --quiet)
run_point() {  # run_point LABEL NAMES: one open-loop point, /metrics scraped around it
  local label=$1 names_arg=(--adapters "$2" --adapter-alpha "$alpha")
  http_get "$url/metrics" "$out/metrics_${label}_before.txt" >/dev/null
  local t0=$SECONDS
  timeout $(($(left) > 30 ? $(left) : 30)) "${bench[@]}" --rate "$rate" \
    --num-requests "$num_requests" --seed "$seed" "${names_arg[@]}" \
    --json "$out/point_$label.json" >"$out/point_$label.log" 2>&1
  local rc=$?
  http_get "$url/metrics" "$out/metrics_${label}_after.txt" >/dev/null
  echo "   point $label: rc $rc in $((SECONDS - t0)) s: $(sed -n 2p "$out/point_$label.log" | tr -s ' ')"
  [ "$rc" -eq 0 ] || { echo "arbor bench serve at point $label FAILED"; tail -3 "$out/point_$label.log"; status=1; }
}

# The slice's adapters and the first point's names, then warm-up (another seed, short outputs):
# first-use costs (the LoRA kernels' first launches) stay out of the points.
first=${n_list[0]}
[ "$peft_adapters" -gt "$first" ] && first=$peft_adapters
register_to "$first" "${n_list[0]}" || status=1
w=8
"${bench[@]}" --rate inf --num-requests "$w" --output-len 8 --seed 1 >"$out/warmup.log" 2>&1 \
  && "${bench[@]}" --rate inf --num-requests "$w" --output-len 8 --seed 1 \
    --adapters "$(names "$first")" >>"$out/warmup.log" 2>&1 \
  || { echo "lora_suite: warm-up failed"; tail -5 "$out/warmup.log"; exit 1; }

labels=(base)
# Base-only on the same trace: the base model's name twice. The generator draws a request's
# model before its lengths and prompt, but draws nothing for a list of one name (libstdc++'s
# discrete_distribution), so `--model` alone would give other lengths than the adapter points.
run_point base "$served,$served"
# The slice (arbor's side of the PEFT comparison), while few adapters are registered.
if [ "$no_peer" = 0 ]; then
  python3 tools/bench/lora_client.py slice --manifest "$adapter_dir/manifest.json" \
    --adapters "$peft_adapters" --requests "$peft_requests" --alpha "$alpha" --seed 7 \
    --min-len "$min_len" --max-len "$max_len" --vocab-size "$vocab" --out "$out/slice.json" \
    | sed 's/^/   /'
  python3 tools/bench/lora_client.py run-slice --url "$url" --slice "$out/slice.json" \
    --out "$out/arbor_slice.json" | sed 's/^/   /'
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "lora_client.py run-slice FAILED"; status=1; }
fi
point_s=$(python3 -c "import json; print(int(json.load(open('$out/point_base.json'))['points'][0]['duration_s']) + 5)" 2>/dev/null || echo 60)
for n in "${n_list[@]}"; do
  # Skip a point that cannot finish before the time kept for the peer.
  need=$((point_s + 10))
  if [ "$reg_rate" -gt 0 ] && [ "$n" -gt "$registered" ]; then
    need=$((need + (n - registered) / reg_rate + 5))
  fi
  if [ $(( $(left) - reserve )) -lt "$need" ]; then
    echo "   point $n: SKIPPED (needs ~$need s, $(( $(left) - reserve )) s left before the peer's reserve)"
    status=1
    continue
  fi
  register_to "$n" "$n" || status=1
  run_point "$n" "$(names "$n")"
  labels+=("$n")
done
python3 - "$url" "$key" "$out/adapters_end.json" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + '/v1/adapters', headers={'Authorization': 'Bearer ' + sys.argv[2]})
data = json.load(urllib.request.urlopen(req, timeout=30))['data']
summary = {'registered': len(data), 'gpu_resident': sum(a['gpu_resident'] for a in data),
           'host_resident': sum(a['host_resident'] for a in data),
           'host_bytes_by_rank': {str(a['rank']): a['host_bytes'] for a in data},
           'pages_by_rank': {str(a['rank']): a['pages'] for a in data}}
json.dump(summary, open(sys.argv[3], 'w'), indent=1, sort_keys=True)
print('   at the end: %(registered)d registered, %(gpu_resident)d GPU-resident, %(host_resident)d host-resident' % summary)
PY
# The peer needs the card's memory: the server goes first.
stop_server

if [ "$run_peer" = 1 ]; then
  peer_json=$out/peft.json
  pb=$(( $(left) - 30 ))
  [ "$pb" -gt "$peft_budget" ] && pb=$peft_budget
  if [ "$pb" -lt 30 ]; then
    echo "lora_suite: no time left for the PEFT peer"
    status=1
  else
    timeout $((pb + 60)) python3 tools/bench/peft_peer.py --config "$model_dir" \
      --slice "$out/slice.json" --out "$peer_json" --budget-s "$pb" 2>&1 \
      | tee "$out/peft.log" | grep -E '^(model|mixed|single|wrote)' | sed 's/^/   /'
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "peft_peer.py FAILED or partial (see $out/peft.log)"; status=1; }
  fi
fi
peer_args=()
[ "$no_peer" = 0 ] && peer_args=(--slice-arbor "$out/arbor_slice.json" --peer "$peer_json")
served_n=$nmax
python3 tools/bench/lora_records.py --dir "$out" --labels "$(IFS=,; echo "${labels[*]}")" \
  --card "$card" --results "$results" --served-n "$served_n" \
  --desc "$model_dir (dummy weights), ${dtype/bfloat16/bf16}; adapters ranks $ranks on $targets" \
  --command "tools/bench/lora_suite.sh --adapters $ns --rate $rate --num-requests $num_requests --min-len $min_len --max-len $max_len --alpha $alpha --per-rank $per_rank --host-bytes $host_bytes --model-dir $model_dir" \
  --csv "$out/lora_points.csv" "${peer_args[@]}" || status=1
python3 tools/bench/plot_lora.py --dir "$out" --labels "$(IFS=,; echo "${labels[*]}")" \
  --card "$card" --subtitle "$model_dir ($dtype, dummy weights), Poisson $rate req/s, lengths U[$min_len, $max_len], alpha $alpha" \
  "${peer_args[@]}" --out "$out/plots"
case $? in
  0) ;;
  3) echo "   plots skipped: no matplotlib" ;;
  *) echo "plot_lora.py FAILED"; status=1 ;;
esac
echo "lora_suite: $([ $status -eq 0 ] && echo OK || echo FAILED) in $SECONDS s"
if [ -n "$pack" ]; then
  tar czf "$pack" -C "$out" . && echo "packed $(du -h "$pack" | cut -f1) into $pack"
fi
exit $status
