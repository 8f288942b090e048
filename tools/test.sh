#!/usr/bin/env bash
# README's test command: installs what is missing, builds everything (the CUDA code too) and
# runs every test. Ends with one line "N passed, N failed, N skipped" summing all test cases;
# [gpu] cases are skipped (and counted) on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

tools/install_deps.sh || { echo "0 passed, 1 failed"; exit 1; }
# The testbed models kept off main (the [testbed] cases need them; skipped without them).
tools/train/testbed.sh restore 2>&1 || echo "testbed models not restored: [testbed] cases skip"
bazel build //... || { echo "0 passed, 1 failed"; exit 1; }
bazel test //... "$@"
rc=$?
# Black-box suites against the real binary with clients nobody here wrote (the official openai
# npm package, curl, a loopback load test): tests/e2e/run.sh prints its own summary line.
e2e_log=$(mktemp)
tests/e2e/run.sh bazel-bin/server/arbor 2>&1 | tee "$e2e_log"
e2e_rc=${PIPESTATUS[0]}
tools/test_summary.sh "$(grep -a '^arbor-tests: ' "$e2e_log" | tail -n 1)"
summary_rc=$?
rm -f "$e2e_log"
[ "$rc" -eq 0 ] && [ "$e2e_rc" -eq 0 ] && [ "$summary_rc" -eq 0 ]
