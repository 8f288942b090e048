#!/usr/bin/env bash
# Sums the "arbor-tests: N passed, N failed, N skipped" line each test prints (tests/test_main.cc
# and the shell tests) over every test target's log, plus any such lines given as arguments. A target whose log lacks the line (it did
# not build, or crashed before the end) counts as one failure.
set -uo pipefail
cd "$(dirname "$0")/.."
testlogs=$(bazel info bazel-testlogs 2>/dev/null)
passed=0; failed=0; skipped=0
for target in $(bazel query 'tests(//...)' 2>/dev/null); do
  rel=${target#//}
  log="$testlogs/${rel/://}/test.log"
  line=$(grep -a '^arbor-tests: ' "$log" 2>/dev/null | tail -n 1)
  if [ -z "$line" ]; then
    echo "no test summary from $target (see $log)"
    failed=$((failed + 1))
    continue
  fi
  read -r p f s < <(echo "$line" | sed -E 's/^arbor-tests: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped.*/\1 \2 \3/')
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
# Extra summary lines given as arguments (suites run outside Bazel); an empty one means the
# suite printed none: one failure.
for line in "$@"; do
  if [ -z "$line" ]; then
    echo "an extra suite printed no summary line"
    failed=$((failed + 1))
    continue
  fi
  read -r p f s < <(echo "$line" | sed -E 's/^arbor-tests: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped.*/\1 \2 \3/')
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
