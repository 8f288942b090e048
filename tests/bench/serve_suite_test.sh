#!/usr/bin/env bash
# tools/bench/serve_suite.sh's arbor half on the CPU: the real server on the tiny model's shape
# (dummy weights, no tokenizer, as the 8B run has none), `arbor bench serve` at two
# concurrencies, a fake transformers peer file in place of hf_serve_peer.py. Checks the records
# it appends (the generator's per-point figures and the ratios against the peer, computed in the
# right direction), the merged CSV, the /metrics agreement, the plots (or their clear skip
# without matplotlib), that the server is stopped at the end, and that a peer of other lengths
# fails the run.
set -uo pipefail
suite=$1 arbor=$2 tiny_config=$3
passed=0 failed=0
check() {  # check NAME OK(0/1)
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $1"; fi
}
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/serve_suite.XXXXXX")
mkdir "$tmp/tiny"
cp "$tiny_config" "$tmp/tiny/config.json"  # no tokenizer.json: token-id prompts only
# Round numbers, so the expected ratios are easy to state: arbor / peer for throughput, peer /
# arbor for the latencies.
cat >"$tmp/peer.json" <<'JSON'
{"tool": "fake", "peer": "a fake peer", "prompt": 16, "output": 8, "transformers": "0",
 "torch": "0", "compiled": false, "points": [
 {"concurrency": 1, "requests": 1, "completed": 1, "output_throughput": 100.0,
  "request_throughput": 12.5, "ttft_ms": {"p50": 50.0, "p90": 50.0, "p99": 50.0},
  "tpot_ms": {"p50": 10.0, "p90": 10.0, "p99": 10.0},
  "e2e_ms": {"p50": 120.0, "p90": 120.0, "p99": 120.0}},
 {"concurrency": 4, "requests": 4, "completed": 4, "output_throughput": 200.0,
  "request_throughput": 25.0, "ttft_ms": {"p50": 80.0, "p90": 80.0, "p99": 80.0},
  "tpot_ms": {"p50": 20.0, "p90": 20.0, "p99": 20.0},
  "e2e_ms": {"p50": 220.0, "p90": 220.0, "p99": 220.0}}]}
JSON
run_suite() {  # run_suite OUT PEER
  OUT=$1 RESULTS=$1/results.json "$suite" --arbor "$arbor" --model-dir "$tmp/tiny" \
    --device cpu --dtype float32 --concurrency 1,4 --prompt 16 --output 8 --card "cpu (test)" \
    --peer-json "$2" --set engine.pool_bytes=16777216
}
run_suite "$tmp/out" "$tmp/peer.json" >"$tmp/suite.log" 2>&1
rc=$?
cat "$tmp/suite.log"
check "the suite exits 0 and says OK" $(( rc == 0 ? 0 : 1 ))
grep -q '^serve_suite: OK$' "$tmp/suite.log"
check "the suite prints its OK line" $?
[ "$(grep -c ': agree$' "$tmp/suite.log")" -eq 3 ]
check "/metrics moved by what the generator counted (requests, output and prompt tokens)" $?

python3 - "$tmp/out/results.json" "$tmp/out/arbor_c1.json" "$tmp/out/arbor_c4.json" \
  "$tmp/peer.json" <<'PY'
import json, math, sys
records = json.load(open(sys.argv[1]))
arbor = {}
for path in sys.argv[2:4]:
    for p in json.load(open(path))['points']:
        arbor[p['concurrency']] = p
peer = {p['concurrency']: p for p in json.load(open(sys.argv[4]))['points']}
fails = []
def expect(what, ok):
    if not ok:
        fails.append(what)
by_prefix = {}
for r in records:
    by_prefix.setdefault(r['name'].split(' ')[0], []).append(r)
    for field in ('name', 'value', 'unit', 'baseline', 'ratio', 'target', 'card', 'date', 'command'):
        expect('%s has %s' % (r['name'], field), field in r)
    expect('%s names the card' % r['name'], r.get('card') == 'cpu (test)')
# The generator's own figures, one per point and figure, named by the served model.
for c in (1, 4):
    for fig in ('output_throughput', 'request_throughput', 'ttft_p50', 'ttft_p99', 'tpot_p50',
                'tpot_p99'):
        got = [r for r in by_prefix.get('serve.bench.' + fig, [])
               if '(concurrency=%d, tiny-dummy, prompt 16, output 8)' % c in r['name']]
        expect('serve.bench.%s at c=%d' % (fig, c), len(got) == 1)
# The ratios: value is arbor's, baseline the peer's, and above 1 means arbor is better.
def close(a, b):
    return a is not None and math.isclose(a, b, rel_tol=1e-9)
for c in (1, 4):
    a, h = arbor[c], peer[c]
    t = by_prefix.get('serve.tiny_c%d.throughput_vs_hf' % c, [])
    expect('one throughput ratio at c=%d' % c, len(t) == 1)
    if t:
        r = t[0]
        expect('throughput value c=%d' % c, close(r['value'], a['output_throughput']))
        expect('throughput baseline c=%d' % c, close(r['baseline'], h['output_throughput']))
        expect('throughput ratio = arbor / peer c=%d' % c,
               close(r['ratio'], a['output_throughput'] / h['output_throughput']))
        expect('throughput unit', r['unit'] == 'tokens/s')
        expect('shape in the name', 'concurrency %d, prompt 16, output 8' % c in r['name'])
    for fig in ('ttft', 'tpot'):
        got = by_prefix.get('serve.tiny_c%d.%s_p50_vs_hf' % (c, fig), [])
        expect('one %s ratio at c=%d' % (fig, c), len(got) == 1)
        if not got:
            continue
        r, av, hv = got[0], a[fig + '_ms']['p50'], h[fig + '_ms']['p50']
        expect('%s value c=%d' % (fig, c), close(r['value'], av))
        expect('%s baseline c=%d' % (fig, c), close(r['baseline'], hv))
        if av > 0:
            expect('%s ratio = peer / arbor c=%d' % (fig, c), close(r['ratio'], hv / av))
        expect('%s unit' % fig, r['unit'] == 'ms')
        expect('%s direction named' % fig, 'above 1: arbor faster' in r['name'])
expect('6 ratio records', sum(len(v) for k, v in by_prefix.items() if k.endswith('_vs_hf')) == 6)
for f in fails:
    print('records: ' + f)
sys.exit(1 if fails else 0)
PY
check "records: the generator's figures and the ratios against the peer" $?

[ "$(wc -l <"$tmp/out/serve_sweep.csv")" -eq 5 ] && grep -q '^transformers,4,' "$tmp/out/serve_sweep.csv" \
  && grep -q '^arbor,1,16,16,' "$tmp/out/serve_sweep.csv"
check "serve_sweep.csv: a header and both sides' points (max(2c, 16) requests each)" $?

if python3 -c 'import matplotlib' 2>/dev/null; then
  n=$(ls "$tmp/out/plots"/serve_*.png 2>/dev/null | wc -l)
  [ "$n" -eq 4 ]
  check "four plots written (matplotlib here)" $?
else
  grep -q 'matplotlib is not installed' "$tmp/suite.log" && grep -q 'plots skipped' "$tmp/suite.log"
  check "no matplotlib: a clear message, no traceback, the suite still OK" $?
  ! grep -q Traceback "$tmp/suite.log"
  check "no traceback" $?
fi

pid=$(sed -nE 's/.*\(pid ([0-9]+)\)$/\1/p' "$tmp/suite.log" | head -1)
[ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && grep -q 'stopped' "$tmp/out/server.log"
check "the server was stopped (SIGTERM, drained)" $?

# A peer measured at other lengths: no ratios, the run fails, and the server is stopped too.
sed 's/"prompt": 16/"prompt": 512/' "$tmp/peer.json" >"$tmp/peer512.json"
run_suite "$tmp/out2" "$tmp/peer512.json" >"$tmp/suite2.log" 2>&1
rc=$?
check "a peer of other lengths fails the run" $(( rc != 0 ? 0 : 1 ))
grep -q 'the peer 512 / 8' "$tmp/suite2.log"
check "... saying which lengths differ" $?
[ "$(python3 -c 'import json, sys; print(sum("_vs_hf" in n["name"] for n in json.load(open(sys.argv[1]))))' "$tmp/out2/results.json")" -eq 0 ]
check "... and writing no ratio" $?
pid=$(sed -nE 's/.*\(pid ([0-9]+)\)$/\1/p' "$tmp/suite2.log" | head -1)
[ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null
check "... with its server stopped" $?

rm -rf "$tmp"
echo "arbor-tests: $passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
