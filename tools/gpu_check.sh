#!/usr/bin/env bash
# Runs on a GPU host from an unpacked bundle (tools/bundle.sh): every bundled test binary (the
# [gpu] cases run there), the op parity test under compute-sanitizer, the server on
# device=auto, which must pick CUDA, and the e2e suites against servers on the GPU. Writes
# logs under ${OUT:-/tmp/arbor-gpu-check}.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bundle=${BUNDLE:-$here/bundle}
out=${OUT:-/tmp/arbor-gpu-check}
mkdir -p "$out"
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

for t in "$bundle"/bin/*_test; do
  [ -x "$t" ] || continue  # a server-only bundle (the e2e one) has no tests
  name=$(basename "$t")
  echo "== $name"
  "$bundle/run.sh" "$name" --durations yes >"$out/$name.log" 2>&1 || status=1
  grep -E '^arbor-tests:|FAILED' "$out/$name.log"
done

# sanitize TOOL TEST FILTER LOG: one bundled test under compute-sanitizer, when bundled.
sanitize() {
  [ -x "$bundle/bin/$2" ] || return 0
  echo "== compute-sanitizer $1 $2 $3"
  LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64" compute-sanitizer --tool "$1" \
    --error-exitcode 9 "$bundle/bin/$2" "$3" >"$out/$4" 2>&1 || status=1
  grep -E 'ERROR SUMMARY|^arbor-tests:' "$out/$4"
}
if command -v compute-sanitizer >/dev/null; then
  sanitize memcheck ops_parity_test '[gpu]' sanitizer.log
  sanitize memcheck skinny_linear_test '[gpu]' sanitizer_skinny.log
  sanitize racecheck sampling_parity_test '[small]' racecheck.log
  sanitize racecheck moe_permute_test '[gpu]' racecheck_moe.log
fi

echo "== arbor serve --device auto"
"$bundle/run.sh" arbor serve --port 18080 --grpc-port 0 >"$out/serve.log" 2>&1 &
pid=$!
ok=0
for _ in $(seq 1 100); do
  if curl -sf http://127.0.0.1:18080/health >/dev/null; then ok=1; break; fi
  sleep 0.1
done
[ "$ok" -eq 1 ] || status=1
grep -E 'backend:' "$out/serve.log" || status=1
grep -q 'backend: cuda' "$out/serve.log" || { echo "server did not pick CUDA"; status=1; }
# A real generation on the GPU, through the HTTP API.
curl -sf http://127.0.0.1:18080/v1/completions -H 'Content-Type: application/json' \
  -d '{"model": "tiny", "prompt": "In the beginning", "max_tokens": 8, "temperature": 0}' \
  | tee "$out/completion.json" | grep -q '"finish_reason":"length"' || { echo "completion failed"; status=1; }
echo
if [ -x "$bundle/bin/bench_engine" ]; then
  echo "== bench_engine (cuda, then cpu, same host)"
  "$bundle/run.sh" bench_engine --device cuda --results "$out/results.json" || status=1
  "$bundle/run.sh" bench_engine --device cpu --results "$out/results.json" || status=1
fi
# The GPU benchmarks are tools/bench/gpu_suite.sh.
kill -TERM "$pid"; wait "$pid" || status=1
# Every e2e suite (the openai npm client, bad input, load, HTTP limits, drain) against servers
# on the GPU; the bundle brings node and the client.
echo "== e2e suites, --device cuda"
PATH="$bundle/node/bin:$PATH" ARBOR_E2E_DEVICE=cuda "$here/tests/e2e/run.sh" "$bundle/arbor" >"$out/e2e.log" 2>&1 || status=1
grep -E '^(FAIL|arbor-tests:)' "$out/e2e.log"
echo "gpu_check: $([ $status -eq 0 ] && echo OK || echo FAILED)"
exit $status
