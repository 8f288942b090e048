#!/usr/bin/env bash
# Runs a libFuzzer binary (bazel/fuzz.bzl): replays the committed corpus, then fuzzes for a
# bounded time on a scratch copy. Prints the arbor-tests summary line .ci/run sums.
#   fuzz_runner.sh FUZZER SECONDS [CORPUS_FILE ...]
set -u
fuzzer=$1
seconds=$2
shift 2
work=${TEST_TMPDIR:-$(mktemp -d)}/corpus
mkdir -p "$work"
for f in "$@"; do cp "$f" "$work/"; done
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
pass=0
fail=0
if "$fuzzer" -runs=0 "$work" >replay.log 2>&1; then pass=$((pass + 1)); else fail=$((fail + 1)); tail -40 replay.log; fi
if "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 "$work" >fuzz.log 2>&1; then
  pass=$((pass + 1))
  grep -E 'stat::number_of_executed_units|DONE' fuzz.log | tail -2
else
  fail=$((fail + 1))
  tail -60 fuzz.log
fi
echo "arbor-tests: $pass passed, $fail failed, 0 skipped"
[ "$fail" -eq 0 ]
