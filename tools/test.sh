#!/usr/bin/env bash
# README's test command: installs what is missing, builds everything (the CUDA code too) and
# runs every test. Ends with one line "N passed, N failed, N skipped" summing all test cases;
# [gpu] cases are skipped (and counted) on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

tools/install_deps.sh || { echo "0 passed, 1 failed"; exit 1; }
bazel build //... || { echo "0 passed, 1 failed"; exit 1; }
bazel test //... "$@"
rc=$?
tools/test_summary.sh
summary_rc=$?
[ "$rc" -eq 0 ] && [ "$summary_rc" -eq 0 ]
