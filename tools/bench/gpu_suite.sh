#!/usr/bin/env bash
# Every GPU benchmark, from an unpacked bundle (tools/bundle.sh) on the GPU host, in one run on
# one card, so that each ratio compares figures measured together. Appends to
# ${RESULTS:-bench/results.json} and writes logs under ${OUT:-/tmp/arbor-gpu-suite}.
#
#   tools/bench/gpu_suite.sh            # from the repository root on the GPU host
set -uo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
bundle=${BUNDLE:-$here/bundle}
out=${OUT:-/tmp/arbor-gpu-suite}
results=${RESULTS:-$here/bench/results.json}
mkdir -p "$out"
status=0
run() {  # run NAME CMD...: logs to $out/NAME.log, prints its last lines
  local name=$1
  shift
  echo "== $name"
  local start=$SECONDS
  "$@" >"$out/$name.log" 2>&1 || { echo "$name FAILED"; status=1; }
  tail -4 "$out/$name.log"
  echo "   ($((SECONDS - start)) s)"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# The few-row Linear's tilings and cuBLASLt at the 8B projection shapes (the decode GEMMs).
if [ -x "$bundle/bin/bench_linear" ]; then
  run bench_linear "$bundle/run.sh" bench_linear --results "$results"
  sed -n '/^shape/,/^m 4 layer/p' "$out/bench_linear.log"
fi
# Batch-1 decode of an 8B-shaped model against the bandwidth floor; graph vs eager.
run bench_decode "$bundle/run.sh" bench_decode --results "$results"
# The same at batch 32 (prompt 512): the step against weights + K/V read, where GEMMs and
# attention at a serving batch show.
run bench_decode_b32 "$bundle/run.sh" bench_decode --batch 32 --prompt 512 --results "$results"
# Throughput against transformers at 32 and 128 concurrent requests (prompt 512, output 128).
for b in 32 128; do
  run "hf_generate_b$b" python3 tools/bench/hf_generate.py --config tools/bench/llama3-8b \
    --batch "$b" --prompt 512 --gen 128 --out "$out/hf_b$b.json"
  run "bench_engine_8b_b$b" "$bundle/run.sh" bench_engine --config tools/bench/llama3-8b \
    --device cuda --batch "$b" --prompt 512 --gen 128 --peer "$out/hf_b$b.json" \
    --results "$results"
done
# Host overhead at batch 64, what deterministic mode costs, and how many 4k-token sequences
# the pool of this card holds at once (engine.pool_fraction 0.9).
run bench_engine_8b_b64 "$bundle/run.sh" bench_engine --config tools/bench/llama3-8b \
  --device cuda --batch 64 --prompt 128 --gen 128 --deterministic-cost 1 --capacity 4096 \
  --results "$results"
# Serving (issue 12): the bundled server on the 8B shape under `arbor bench serve` at concurrency
# 1, 8, 32, 128 and 256 (prompt 512, output 128), then transformers at the same concurrencies;
# throughput, TTFT and TPOT ratios as records, and plots in $out/serve/plots
# (tools/bench/serve_suite.sh). SERVE_SUITE=0 skips it (tools/gpu_session.sh runs it as its own
# step, serve).
if [ "${SERVE_SUITE:-1}" != 0 ]; then
  run serve_suite env OUT="$out/serve" RESULTS="$results" BUNDLE="$bundle" \
    tools/bench/serve_suite.sh
  grep -E '^concurrency +[0-9]+: out|^metrics' "$out/serve_suite.log"
fi
if [ -x "$bundle/bin/bench_moe" ]; then
  # The PyTorch peer first: bench_moe finds its records in the results file.
  run moe_layer_torch python3 tools/bench/moe_layer_torch.py --results "$results"
  run bench_moe "$bundle/run.sh" bench_moe --results "$results"
fi
if [ -x "$bundle/bin/bench_attention" ]; then
  # Paged attention: decode against the bandwidth floor, prefill against torch SDPA. The peer
  # first: bench_attention finds its records in the results file.
  run attention_sdpa python3 tools/bench/attention_sdpa.py --results "$results"
  run bench_attention "$bundle/run.sh" bench_attention --results "$results"
fi
run bench_sampling "$bundle/run.sh" bench_sampling --results "$results"
if [ -x "$bundle/bin/bench_cce" ]; then
  # Log-probs without logits (issue 15): the PyTorch peer first (bench_cce finds its records),
  # then the fused kernel against cuBLASLt logits + log-softmax at N 1k/8k/32k, V 32k/128k.
  run cce_torch python3 tools/bench/cce_torch.py --results "$results"
  run bench_cce "$bundle/run.sh" bench_cce --results "$results"
  grep -E '^n[0-9]+k_v' "$out/bench_cce.log"
fi
# Every figure with a ratio, its target and whether it is met (the latest record of each).
python3 "$here/tools/bench/summary_table.py" "$results" | tee "$out/summary.md"
echo "gpu_suite: $([ $status -eq 0 ] && echo OK || echo FAILED)"
exit $status
