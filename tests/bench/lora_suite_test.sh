#!/usr/bin/env bash
# tools/bench/lora_suite.sh end to end on the CPU: the real server on the tiny model's shape
# (dummy weights), random PEFT adapters made at that shape (tools/bench/make_adapters.py, pure
# Python), registration through the admin API, a base-only point and two adapter points of the
# same Poisson trace, the slice on the server, and a fake PEFT peer file in place of
# tools/bench/peft_peer.py (no torch/peft here). A host budget of about two adapters makes the
# host tier evict and reread from disk. Checks the records (names, fields, ratios in the right
# direction, targets), that every point served the same trace, the adapter counters scraped from
# /metrics, the CSV, the plots or their clear skip, that the server is stopped and the adapters
# removed, and that lora_records.py fails points of different traces.
set -uo pipefail
suite=$1 arbor=$2 tiny_config=$3
records_py=$(dirname "$suite")/lora_records.py
passed=0 failed=0
check() {  # check NAME OK(0/1)
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $1"; fi
}
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/lora_suite.XXXXXX")
mkdir "$tmp/tiny" "$tmp/adapters"
cp "$tiny_config" "$tmp/tiny/config.json"  # no tokenizer.json: token-id prompts only
# Round numbers: the ratios against the peer are arbor's slice tokens/s over these.
cat >"$tmp/peer.json" <<'JSON'
{"tool": "fake", "peer": "a fake PEFT peer", "requests": 6, "adapters": ["lora-0000", "lora-0001"],
 "transformers": "0", "peft": "0", "torch": "0",
 "modes": {"single": {"output_throughput": 10.0, "output_tokens": 100, "seconds": 10.0,
                      "requests": 6, "complete": true},
           "mixed": {"output_throughput": 20.0, "output_tokens": 100, "seconds": 5.0,
                     "requests": 6, "complete": true}}}
JSON
OUT=$tmp/out RESULTS=$tmp/out/results.json "$suite" --arbor "$arbor" --model-dir "$tmp/tiny" \
  --device cpu --dtype float32 --adapters 2,8 --rate 40 --num-requests 12 --min-len 8 \
  --max-len 24 --ranks 8,16 --per-rank 1 --peft-requests 6 --peft-adapters 2 \
  --peer-json "$tmp/peer.json" --host-bytes 60000 --budget-s 250 --card "cpu (test)" \
  --adapter-dir "$tmp/adapters" --set engine.pool_bytes=16777216 >"$tmp/suite.log" 2>&1
rc=$?
cat "$tmp/suite.log"
check "the suite exits 0" $(( rc == 0 ? 0 : 1 ))
grep -q '^lora_suite: OK in' "$tmp/suite.log"
check "the suite prints its OK line" $?
grep -q 'registered 2 of 2 adapters' "$tmp/suite.log" && grep -q 'registered 6 of 6 adapters' "$tmp/suite.log"
check "registration: the first point's names, then the rest" $?

python3 - "$tmp/out" "$tmp/peer.json" <<'PY'
import json, math, os, sys
out, peer = sys.argv[1], json.load(open(sys.argv[2]))
records = json.load(open(os.path.join(out, 'results.json')))
fails = []
def expect(what, ok):
    if not ok:
        fails.append(what)
def close(a, b):
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
by = {}
for r in records:
    by.setdefault(r['name'].split(' ')[0], []).append(r)
    for field in ('name', 'value', 'unit', 'baseline', 'ratio', 'target', 'card', 'date', 'command'):
        expect('%s has %s' % (r['name'], field), field in r)
    expect('%s names the card' % r['name'], r.get('card') == 'cpu (test)')
for k, v in by.items():
    expect('one record named %s (got %d)' % (k, len(v)), len(v) == 1)
rec = {k: v[0] for k, v in by.items()}
points = {}
for label in ('base', '2', '8'):
    points[label] = json.load(open(os.path.join(out, 'point_%s.json' % label)))['points'][0]
    p = points[label]
    expect('point %s: every request completed' % label, p['completed'] == p['requests'] == 12)
    r = rec.get('lora.%s.throughput' % label)
    expect('lora.%s.throughput' % label, r is not None)
    if r:
        expect('lora.%s.throughput value' % label, close(r['value'], p['output_throughput']))
        expect('lora.%s.throughput unit' % label, r['unit'] == 'tokens/s')
    for fig in ('ttft', 'tpot'):
        for q in ('p50', 'p90', 'p99'):
            r = rec.get('lora.%s.%s_%s' % (label, fig, q))
            expect('lora.%s.%s_%s' % (label, fig, q), r is not None and r['unit'] == 'ms'
                   and close(r['value'], p['%s_ms' % fig][q]))
# The same trace at every point: same prompt and output tokens.
expect('same trace', len({(p['prompt_tokens'], p['output_tokens']) for p in points.values()}) == 1)
expect('base-only point sent the base model only',
       set(points['base']['completed_by_model']) == {'tiny-dummy'})
expect('point 8 used adapters beyond the first two',
       any(int(m.split('-')[1]) >= 2 for m in points['8']['completed_by_model']))
base = points['base']['output_throughput']
for n in ('2', '8'):
    r = rec.get('lora.%s.vs_base' % n)
    expect('lora.%s.vs_base' % n, r is not None)
    if r:
        expect('vs_base value', close(r['value'], points[n]['output_throughput']))
        expect('vs_base baseline', close(r['baseline'], base))
        expect('vs_base ratio = adapters / base', close(r['ratio'], r['value'] / base))
        expect('vs_base target only at N = 1000', r['target'] is None)
    r = rec.get('lora.%s.wait_fraction' % n)
    expect('lora.%s.wait_fraction in [0, 1]' % n, r is not None and 0 <= r['value'] <= 1)
    expect('lora.%s.register_rate' % n, rec.get('lora.%s.register_rate' % n, {}).get('value', 0) > 0)
s = rec.get('lora.8.served')
expect('lora.8.served', s is not None)
if s:
    expect('served: 8 registered', s['value'] == 8 and s['baseline'] == 8)
    expect('served: ratio 1 (all registered, all completed)', close(s['ratio'], 1.0))
    expect('served: target', s['target'] == '>= 1')
arb = json.load(open(os.path.join(out, 'arbor_slice.json')))
expect('the slice ran on arbor', arb['requests'] == 6 and arb['failed'] == 0
       and arb['output_tokens'] == arb['planned_tokens'] > 0)
for name, base_tps, target in (('lora.vs_peft', 20.0, '>= 4'), ('lora.vs_peft_single', 10.0, None),
                               ('lora.vs_peft_mixed', 20.0, None)):
    r = rec.get(name)
    expect(name, r is not None)
    if r:
        expect(name + ' value = arbor slice', close(r['value'], arb['output_throughput']))
        expect(name + ' baseline', close(r['baseline'], base_tps))
        expect(name + ' ratio = arbor / peft', close(r['ratio'], arb['output_throughput'] / base_tps))
        expect(name + ' target', r['target'] == target)
expect('vs_peft names the better mode', '(mixed)' in rec.get('lora.vs_peft', {}).get('name', ''))
expect('a 1000 target only where N = 1000', not any(
    r['target'] == '>= 0.8' for r in records))
for f in fails:
    print('records: ' + f)
sys.exit(1 if fails else 0)
PY
check "records: per-point figures, vs_base, served, the PEFT ratios" $?

python3 - "$tmp/out/lora_points.csv" <<'PY'
import csv, sys
rows = {r['label']: r for r in csv.DictReader(open(sys.argv[1]))}
ok = set(rows) == {'base', '2', '8'}
p8 = rows.get('8', {})
# A host budget of about two adapters: registering 8 evicts host copies, and point 8 rereads
# some from disk and copies them into the pool.
ok = ok and float(p8.get('evictions_host') or 0) > 0 and float(p8.get('disk_loads') or 0) > 0
ok = ok and float(p8.get('copies') or 0) > 0 and float(p8.get('registered') or 0) == 8
ok = ok and all(float(rows[l]['completed']) == 12 for l in rows)
print('csv:', {k: (v.get('copies'), v.get('disk_loads'), v.get('evictions_host')) for k, v in rows.items()})
sys.exit(0 if ok else 1)
PY
check "lora_points.csv: the /metrics adapter counters (host evictions, disk loads, copies)" $?

if python3 -c 'import matplotlib' 2>/dev/null; then
  [ "$(ls "$tmp/out/plots"/lora_*.png 2>/dev/null | wc -l)" -eq 4 ]
  check "four plots written (matplotlib here)" $?
else
  grep -q 'plots skipped: no matplotlib' "$tmp/suite.log" && ! grep -q Traceback "$tmp/suite.log"
  check "no matplotlib: a clear message, no traceback, the suite still OK" $?
fi

pid=$(sed -nE 's/.*\(pid ([0-9]+)\)$/\1/p' "$tmp/suite.log" | head -1)
[ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && grep -q 'stopped' "$tmp/out/server.log"
check "the server was stopped (SIGTERM, drained)" $?
[ -f "$tmp/adapters/manifest.json" ] && [ -f "$tmp/adapters/r16-0/adapter_model.safetensors" ]
check "--adapter-dir kept (given by the caller)" $?
grep -q '"q_proj"' "$tmp/adapters/r8-0/adapter_config.json" && grep -q '"v_proj"' "$tmp/adapters/r8-0/adapter_config.json"
check "adapters on q_proj and v_proj" $?

# Points of different traces: lora_records.py fails the run.
mkdir "$tmp/bad"
cp "$tmp/out"/point_base.json "$tmp/out"/point_2.json "$tmp/bad/"
python3 - "$tmp/bad/point_2.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d['points'][0]['output_tokens'] += 1
json.dump(d, open(sys.argv[1], 'w'))
PY
python3 "$records_py" --dir "$tmp/bad" --labels base,2 --card x >"$tmp/bad.log" 2>&1
rc=$?
[ "$rc" -eq 1 ] && grep -q 'served different traces' "$tmp/bad.log"
check "lora_records.py: points of different traces fail" $?

rm -rf "$tmp"
echo "arbor-tests: $passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
