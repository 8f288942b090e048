#!/usr/bin/env bash
# Runs Arbor's black-box end-to-end suites against a built arbor binary (builds nothing):
#   1. tests/e2e/openai   — the official `openai` npm client (node --test)
#   2. tests/e2e/bad_input.sh — raw-HTTP negative cases with curl
#   3. tests/e2e/load_test.py — 200 concurrent streams with random disconnects, then /metrics;
#      300 streams beside 5,000 idle connections
#   4. tests/e2e/http_limits.py — 431/413/408/400 transport limits, request timeouts, hang-ups,
#      idle heads, HEAD, CORS, and eviction at a small server.max_connections (a second server)
#   5. tests/e2e/drain_test.py — SIGTERM drain
#   6. the embedded default config as a newcomer starts it: its chat answer reads as English
# Suites 1-5 serve models/tiny (ARBOR_E2E_MODEL): they pin its vocab of 1206 (out-of-vocab ids)
# and its speed (generations to the end of the context within their timeouts).
# Each suite gets its own server on a free loopback port, with the options it needs; each
# server is stopped with SIGTERM and must exit 0.
#
#   tests/e2e/run.sh [path/to/arbor]      (default bazel-bin/server/arbor, from the repo root)
#   ARBOR_E2E_DEVICE=cuda tests/e2e/run.sh bundle/arbor   # the same suites on the GPU host
#
# Needs node + npm (npm ci runs if tests/e2e/openai/node_modules is missing; it needs the npm
# registry or a warm npm cache), curl and python3. Ends with ONE line
# `arbor-tests: N passed, M failed, 0 skipped` summing every suite; exits non-zero on failure.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
ARBOR=${1:-bazel-bin/server/arbor}
# The servers' --device (cpu | cuda | auto); drain_test.py reads it too.
export ARBOR_E2E_DEVICE=${ARBOR_E2E_DEVICE:-cpu}
# The model suites 1-5 serve; drain_test.py reads it too.
export ARBOR_E2E_MODEL=${ARBOR_E2E_MODEL:-models/tiny}
if [[ ! -x "$ARBOR" ]]; then
  echo "run.sh: no arbor binary at $ARBOR (build it: bazel build //server:arbor)" >&2
  echo "arbor-tests: 0 passed, 1 failed, 0 skipped"
  exit 1
fi

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/arbor-e2e.XXXXXX")
PASSED=0
FAILED=0
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
}
trap cleanup EXIT

note_fail() { FAILED=$((FAILED + 1)); echo "FAIL $1: $2"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_server NAME ARGS... -> sets SERVER_PID and SERVER_PORT; returns non-zero if not ready.
# Serves ARBOR_E2E_MODEL unless ARGS set model.path.
start_server() {
  local name=$1; shift
  SERVER_PORT=$(free_port)
  "$ARBOR" serve --host 127.0.0.1 --port "$SERVER_PORT" --grpc-port 0 --device "$ARBOR_E2E_DEVICE" \
    --set model.path="$ARBOR_E2E_MODEL" "$@" >"$LOGS/$name.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  local i
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      note_fail "server_$name" "arbor exited during start-up; log tail:"
      tail -5 "$LOGS/$name.log" | sed 's/^/    /'
      return 1
    fi
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$SERVER_PORT/health") == 200 ]]; then
      return 0
    fi
    sleep 0.1
  done
  note_fail "server_$name" "/health not 200 within 30 s"
  return 1
}

# stop_server NAME PID: SIGTERM, must exit 0 within 30 s. Counts one case.
stop_server() {
  local name=$1 pid=$2 i rc
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    note_fail "sigterm_$name" "arbor still running 30 s after SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return
  fi
  wait "$pid"
  rc=$?
  if [[ $rc -eq 0 ]]; then PASSED=$((PASSED + 1)); else note_fail "sigterm_$name" "arbor exited $rc after SIGTERM"; fi
}

# add_counts NAME OUTPUT-FILE: parse the suite's `arbor-tests:` line.
add_counts() {
  local name=$1 file=$2 line p f s
  line=$(grep -E '^arbor-tests: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$file" | tail -1)
  if [[ -z "$line" ]]; then
    note_fail "$name" "suite printed no arbor-tests line"
    return
  fi
  read -r p f s < <(sed -E 's/^arbor-tests: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$/\1 \2 \3/' <<<"$line")
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f + s))   # nothing here may be skipped
}

KEY="e2e-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"

# ---------------------------------------------------------------- 1. openai npm client
echo "== openai client suite"
if [[ ! -d "$HERE/openai/node_modules/openai" ]]; then
  (cd "$HERE/openai" && npm ci --no-audit --no-fund --loglevel=error) || note_fail openai_npm_ci "npm ci failed"
fi
MAXC=4
if start_server openai --set server.api_key="$KEY" --set server.max_concurrent_requests=$MAXC; then
  (cd "$HERE/openai" && ARBOR_URL="http://127.0.0.1:$SERVER_PORT" ARBOR_API_KEY="$KEY" ARBOR_MAX_CONCURRENT=$MAXC \
    node --test --test-reporter=tap openai.test.mjs) >"$LOGS/openai.out" 2>&1
  rc=$?
  p=$(sed -nE 's/^# pass ([0-9]+)$/\1/p' "$LOGS/openai.out" | tail -1)
  f=$(sed -nE 's/^# fail ([0-9]+)$/\1/p' "$LOGS/openai.out" | tail -1)
  c=$(sed -nE 's/^# cancelled ([0-9]+)$/\1/p' "$LOGS/openai.out" | tail -1)
  s=0
  for n in $(sed -nE 's/^# (skipped|todo) ([0-9]+)$/\2/p' "$LOGS/openai.out"); do s=$((s + n)); done
  if [[ -z "$p" || -z "$f" ]]; then
    note_fail openai_suite "node --test printed no # pass / # fail (rc $rc); tail:"
    tail -20 "$LOGS/openai.out" | sed 's/^/    /'
  else
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f + ${c:-0} + ${s:-0}))
    # One line per failed test, with the first assertion message.
    python3 - "$LOGS/openai.out" <<'EOF'
import re, sys
lines = open(sys.argv[1], encoding='utf-8', errors='replace').read().splitlines()
for i, l in enumerate(lines):
    m = re.match(r'^not ok \d+ - (.*)$', l)
    if not m:
        continue
    msg = ''
    block = lines[i + 1:i + 60]
    for j, k in enumerate(block):
        mm = re.match(r"^(\s+)error: (.*)$", k)
        if not mm:
            continue
        msg = mm.group(2).strip()
        if msg in ('|-', '|', '>-', '>'):  # YAML block: the following more-indented lines
            body = []
            for b in block[j + 1:]:
                if b.strip() and not b.startswith(mm.group(1) + '  '):
                    break
                if b.strip():
                    body.append(b.strip())
            msg = ' / '.join(body[:4])
        msg = msg.strip("'")
        break
    print('FAIL openai: %s: %s' % (m.group(1), msg[:300]))
EOF
    echo "   openai: $p passed, $((f + ${c:-0} + ${s:-0})) failed (TAP: $LOGS/openai.out)"
  fi
  stop_server openai "$SERVER_PID"
fi

# ---------------------------------------------------------------- 2. raw-HTTP bad input
echo "== bad input suite"
if start_server bad_input --set server.api_key="$KEY"; then
  ARBOR_URL="http://127.0.0.1:$SERVER_PORT" ARBOR_API_KEY="$KEY" "$HERE/bad_input.sh" >"$LOGS/bad_input.out" 2>&1
  grep -v '^arbor-tests:' "$LOGS/bad_input.out" | sed 's/^/   /'
  add_counts bad_input "$LOGS/bad_input.out"
  grep '^arbor-tests:' "$LOGS/bad_input.out" | sed 's/^arbor-tests:/   bad_input:/'
  stop_server bad_input "$SERVER_PID"
fi

# ---------------------------------------------------------------- 3. load with disconnects
echo "== load suite"
# The idle phase holds 5,000 connections (some with half a head) through the streams: the idle,
# header and read timeouts must outlast it.
if start_server load --set server.max_concurrent_requests=512 --set engine.max_num_seqs=256 \
    --set server.idle_timeout_s=120 --set server.header_timeout_s=120 --set server.read_timeout_s=120; then
  python3 "$HERE/load_test.py" --url "http://127.0.0.1:$SERVER_PORT" >"$LOGS/load.out" 2>&1
  grep -v '^arbor-tests:' "$LOGS/load.out" | sed 's/^/   /'
  add_counts load "$LOGS/load.out"
  grep '^arbor-tests:' "$LOGS/load.out" | sed 's/^arbor-tests:/   load:/'
  stop_server load "$SERVER_PID"
fi

# ---------------------------------------------------------------- 4. transport limits, timeouts
echo "== http limits suite"
# A second, small server for the max_connections cases.
if start_server http_limits_small --set server.max_connections=4; then
  SMALL_PID=$SERVER_PID
  SMALL_PORT=$SERVER_PORT
  # The request timeout must end 2000-token generations: on a GPU the tiny model writes them
  # in under 0.5 s (16 at once took 0.49 s on an H100), so there it is 0.1 s.
  request_timeout=0.5
  [ "$ARBOR_E2E_DEVICE" = cuda ] && request_timeout=0.1
  if start_server http_limits --set server.api_key="$KEY" --set server.read_timeout_s=1 \
      --set server.request_timeout_s=$request_timeout --set server.header_timeout_s=0.5 \
      --set 'server.cors_allowed_origins=["http://cors.example"]'; then
    python3 "$HERE/http_limits.py" --url "http://127.0.0.1:$SERVER_PORT" --pid "$SERVER_PID" --key "$KEY" \
      --small-url "http://127.0.0.1:$SMALL_PORT" >"$LOGS/http_limits.out" 2>&1
    grep -v '^arbor-tests:' "$LOGS/http_limits.out" | sed 's/^/   /'
    add_counts http_limits "$LOGS/http_limits.out"
    grep '^arbor-tests:' "$LOGS/http_limits.out" | sed 's/^arbor-tests:/   http_limits:/'
    stop_server http_limits "$SERVER_PID"
  fi
  stop_server http_limits_small "$SMALL_PID"
fi

# ---------------------------------------------------------------- 5. SIGTERM drain
echo "== drain suite"
python3 "$HERE/drain_test.py" "$ARBOR" >"$LOGS/drain.out" 2>&1
grep -v '^arbor-tests:' "$LOGS/drain.out" | sed 's/^/   /'
add_counts drain "$LOGS/drain.out"
grep '^arbor-tests:' "$LOGS/drain.out" | sed 's/^arbor-tests:/   drain:/'

# ---------------------------------------------------------------- 6. the default config
# What tools/run.sh starts: the embedded configs/tiny.yaml, whose model is models/testbed/chat.
echo "== default config suite"
if start_server default --set model.path=models/testbed/chat; then
  python3 "$HERE/default_answer.py" "http://127.0.0.1:$SERVER_PORT" >"$LOGS/default.out" 2>&1
  grep -v '^arbor-tests:' "$LOGS/default.out" | sed 's/^/   /'
  add_counts default "$LOGS/default.out"
  grep '^arbor-tests:' "$LOGS/default.out" | sed 's/^arbor-tests:/   default:/'
  stop_server default "$SERVER_PID"
fi

trap - EXIT
echo "(logs in $LOGS)"
echo "arbor-tests: $PASSED passed, $FAILED failed, 0 skipped"
[[ $FAILED -eq 0 ]]
