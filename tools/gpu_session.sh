#!/usr/bin/env bash
# One device call's worth of GPU work, from an unpacked bundle, packed into ONE file: a device
# call brings back only a few files from $OUT, so everything lands in $OUT/session.tgz
# (unpack it here: tar xzf session.tgz). Steps, each under its own time limit so that the pack
# is always written: the bf16 goldens (tools/fixtures/make_bf16_goldens.py, written beside the
# fixtures and copied into the pack), tools/gpu_check.sh, tools/bench/gpu_suite.sh (its records
# in results.json; the serving sweep is left to the serve step), tools/bench/profile_decode.sh at
# batch 1 (profile) and, graph steps only, at batch 32 (profile32).
#
#   OUT=/path tools/gpu_session.sh [goldens] [check] [suite] [profile] [profile32] [quick] [linear] [sanitize]
#       [serve] [tests] [cce] [lora_goldens] [moe_lora_goldens] [prefill] [lora] [lora_suite]
#   (default: goldens check suite profile; quick: the parity tests and the decode and attention
#   benchmarks alone, for a short device call; linear: the few-row Linear's test, sweep and decode;
#   serve: tools/bench/serve_suite.sh, the server against transformers at concurrency 1 to 256,
#   its records in results.json and its logs, JSON, CSV and plots under serve/; tests: the GPU
#   test binaries named in TESTS, or all; cce: the log-probs kernel against cuBLASLt and torch;
#   lora_goldens: transformers + PEFT goldens of tests/data/mixed_lora, copied beside the fixture
#   (run it before `tests` so mixed_lora_test checks them) and into the pack; moe_lora_goldens:
#   a PEFT-written target_parameters adapter on the Mixtral fixture and transformers + PEFT's
#   outputs with it (tools/fixtures/make_moe_lora.py), into the pack as moe_lora/; prefill: the
#   prefill attention kernels side by side against torch SDPA; lora: bench_lora; lora_suite:
#   S-LoRA's workload, tools/bench/lora_suite.sh. ARBOR_PREFILL_KERNEL / ARBOR_CCE_KERNEL pick
#   what the server and the benchmarks' recorded figures use, README "Running on a GPU host")
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=${OUT:-/tmp/arbor-session}
work=$(mktemp -d /tmp/arbor-session.XXXXXX)
steps=("$@")
[ "${#steps[@]}" -gt 0 ] || steps=(goldens check suite profile)
for step in "${steps[@]}"; do
  echo "== $step"
  start=$SECONDS
  case $step in
    goldens)
      # Only goldens this run made are packed (the committed ones sit in the same place).
      if timeout 90 python3 tools/fixtures/make_bf16_goldens.py >"$work/goldens.log" 2>&1; then
        for f in tests/data/models/*/reference_bf16.json; do
          mkdir -p "$work/goldens/$(basename "$(dirname "$f")")"
          cp "$f" "$work/goldens/$(basename "$(dirname "$f")")/"
        done
      fi
      tail -1 "$work/goldens.log" ;;
    check)
      OUT=$work/check timeout 240 tools/gpu_check.sh >"$work/check.txt" 2>&1
      grep -E '^==|arbor-tests|FAIL|ERROR SUMMARY|gpu_check' "$work/check.txt" ;;
    suite)
      SERVE_SUITE=0 OUT=$work/suite RESULTS=$work/results.json timeout 480 tools/bench/gpu_suite.sh \
        >"$work/suite.txt" 2>&1
      grep -E '^==|ratio|->|capacity|FAILED|gpu_suite' "$work/suite.txt" ;;
    profile)
      timeout 120 tools/bench/profile_decode.sh "$work/profile" >"$work/profile.txt" 2>&1
      head -14 "$work/profile.txt" ;;
    quick)
      # The checks that matter most when device time is short: the kernel and model parity
      # tests, decode graphs and the engine on the GPU, batch-1 decode and attention figures.
      mkdir -p "$work/quick"
      for t in ops_parity_test decode_attention_test prefill_attention_test bf16_parity_test \
          model_parity_test decode_graph_test engine_test; do
        timeout 120 bundle/run.sh "$t" --durations yes >"$work/quick/$t.log" 2>&1
        echo "$t: rc $? $(grep -a '^arbor-tests:' "$work/quick/$t.log" | tail -1)"
        grep -a -B2 -A12 FAILED "$work/quick/$t.log" | head -60
      done
      timeout 90 bundle/run.sh bench_decode --results "$work/results.json" \
        >"$work/quick/bench_decode.log" 2>&1
      tail -4 "$work/quick/bench_decode.log"
      timeout 60 python3 tools/bench/attention_sdpa.py --results "$work/results.json" \
        >"$work/quick/sdpa.log" 2>&1
      tail -3 "$work/quick/sdpa.log"
      timeout 90 bundle/run.sh bench_attention --results "$work/results.json" \
        >"$work/quick/bench_attention.log" 2>&1
      tail -8 "$work/quick/bench_attention.log" ;;
    linear)
      # The few-row Linear: every tiling against the host reference, the tiling sweep, and
      # batch-1 and batch-4 decode with SkinnyTilingFor's picks.
      mkdir -p "$work/linear"
      timeout 60 bundle/run.sh skinny_linear_test >"$work/linear/test.log" 2>&1
      echo "skinny_linear_test: rc $? $(grep -a '^arbor-tests:' "$work/linear/test.log" | tail -1)"
      grep -a -A12 FAILED "$work/linear/test.log" | head -40
      timeout 150 bundle/run.sh bench_linear --results "$work/results.json" \
        >"$work/linear/bench_linear.log" 2>&1
      sed -n '/^shape/,$p' "$work/linear/bench_linear.log"
      for b in 1 4; do
        timeout 90 bundle/run.sh bench_decode --batch $b --results "$work/results.json" \
          >"$work/linear/bench_decode_b$b.log" 2>&1
        grep -E "median|ratio" "$work/linear/bench_decode_b$b.log"
      done ;;
    serve)
      # The serving sweep against transformers: records in results.json; the server's log, the
      # generator's JSON and CSV per concurrency, the peer's JSON, serve_sweep.csv and plots/
      # (PNGs titled with the card and the date) under serve/.
      OUT=$work/serve RESULTS=$work/results.json timeout 450 tools/bench/serve_suite.sh \
        >"$work/serve.txt" 2>&1
      grep -E '^serve_suite|ready|^concurrency|^metrics|FAILED|skipped|wrote' "$work/serve.txt" ;;
    sanitize)
      # compute-sanitizer alone (gpu_check.sh runs it beside the e2e suites): memcheck on the op
      # parity cases and every skinny Linear tiling; SANITIZE="racecheck:ops_parity_test ..."
      # picks others (TOOL:TEST words).
      mkdir -p "$work/sanitize"
      for spec in ${SANITIZE:-"memcheck:ops_parity_test" "memcheck:skinny_linear_test"}; do
        spec=${spec/:/ }
        set -- $spec
        LD_LIBRARY_PATH="$PWD/bundle/lib:/usr/local/cuda/lib64" timeout 120 compute-sanitizer \
          --tool "$1" --error-exitcode 9 "bundle/bin/$2" '[gpu]' >"$work/sanitize/$1_$2.log" 2>&1
        echo "$1 $2: rc $? $(grep -aE 'ERROR SUMMARY|RACECHECK SUMMARY' "$work/sanitize/$1_$2.log" | tail -1)"
      done ;;
    tests)
      # GPU test binaries by name (TESTS="decode_attention_test cce_test"; default: every test
      # binary in the bundle), each under two minutes, failures shown.
      mkdir -p "$work/tests"
      names=${TESTS:-$(cd bundle/bin && ls -- *_test 2>/dev/null)}
      for t in $names; do
        timeout 120 bundle/run.sh "$t" --durations yes >"$work/tests/$t.log" 2>&1
        echo "$t: rc $? $(grep -a '^arbor-tests:' "$work/tests/$t.log" | tail -1)"
        grep -a -B2 -A12 FAILED "$work/tests/$t.log" | head -40
      done ;;
    cce)
      # Log-probs without logits (issue 15): the PyTorch peer first (bench_cce reads its
      # records for the torch ratio), then the fused kernel against cuBLASLt + log-softmax.
      mkdir -p "$work/cce"
      timeout 150 python3 tools/bench/cce_torch.py --results "$work/results.json" \
        >"$work/cce/cce_torch.log" 2>&1
      tail -8 "$work/cce/cce_torch.log"
      timeout 200 bundle/run.sh bench_cce --results "$work/results.json" \
        >"$work/cce/bench_cce.log" 2>&1
      tail -30 "$work/cce/bench_cce.log" ;;  # a shape: its line and a line per pass-1 kernel
    lora_goldens)
      mkdir -p "$work/lora_goldens"
      timeout 150 python3 tools/fixtures/make_mixed_lora.py goldens --data tests/data/mixed_lora \
        --out "$work/lora_goldens" >"$work/lora_goldens/make_mixed_lora.log" 2>&1
      echo "make_mixed_lora.py: rc $?"
      tail -3 "$work/lora_goldens/make_mixed_lora.log"
      cp "$work"/lora_goldens/goldens_*.json tests/data/mixed_lora/ 2>/dev/null ;;
    moe_lora_goldens)
      mkdir -p "$work/moe_lora"
      timeout 150 python3 tools/fixtures/make_moe_lora.py --out "$work/moe_lora" \
        >"$work/moe_lora/make_moe_lora.log" 2>&1
      echo "make_moe_lora.py: rc $?"
      tail -4 "$work/moe_lora/make_moe_lora.log" ;;
    prefill)
      mkdir -p "$work/prefill"
      timeout 90 python3 tools/bench/attention_sdpa.py --lengths 4096,16384 --iters 30 \
        --results "$work/results.json" >"$work/prefill/sdpa.log" 2>&1
      tail -3 "$work/prefill/sdpa.log"
      timeout 90 bundle/run.sh bench_attention --decode '' --decode-b1 '' --windows '' \
        --head-dims '' --prefill 4096,16384 --iters 30 --results "$work/results.json" \
        --peer "$work/results.json" >"$work/prefill/bench_attention.log" 2>&1
      tail -14 "$work/prefill/bench_attention.log" ;;
    lora)
      mkdir -p "$work/lora"
      timeout 120 bundle/run.sh bench_lora --tokens 1,16,64,256 --adapters 1,8,64 \
        --prefill 1024,4096 --iters 30 --results "$work/results.json" \
        >"$work/lora/bench_lora.log" 2>&1
      tail -30 "$work/lora/bench_lora.log" ;;
    lora_suite)
      OUT=$work/lora_suite timeout 570 tools/bench/lora_suite.sh --out "$work/lora_suite" \
        --results "$work/results.json" >"$work/lora_suite.txt" 2>&1
      echo "lora_suite.sh: rc $?"
      tail -30 "$work/lora_suite.txt" ;;
    profile32)
      KINDS=graph timeout 150 tools/bench/profile_decode.sh "$work/profile32" --batch 32 \
        >"$work/profile32.txt" 2>&1
      head -14 "$work/profile32.txt" ;;
    *) echo "unknown step $step" ;;
  esac
  echo "   ($((SECONDS - start)) s)"
done
mkdir -p "$out"
tar czf "$out/session.tgz" -C "$work" .
echo "packed $(du -h "$out/session.tgz" | cut -f1) into $out/session.tgz"
