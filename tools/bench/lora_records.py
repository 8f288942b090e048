#!/usr/bin/env python3
"""The records of tools/bench/lora_suite.sh (S-LoRA's workload, issue 14). Reads, from the suite's
output directory, per point LABEL (`base`, or N adapters):

  point_<LABEL>.json                     `arbor bench serve --json` (one open-loop point)
  metrics_<LABEL>_before.txt, _after.txt  the server's /metrics around the point
  register_<LABEL>.json                  tools/bench/lora_client.py register (adapter points)

and, optionally, the slice run on both sides (arbor_slice.json from lora_client.py run-slice,
peft.json from tools/bench/peft_peer.py). Appends to bench/results.json:

  lora.base.throughput        output tokens/s of the base-only trace
  lora.<N>.throughput         output tokens/s with N adapters
  lora.<N>.vs_base            the same over base-only (ratio; target >= 0.8 at N = 1000)
  lora.<N>.ttft_p50/p90/p99, lora.<N>.tpot_p50/p90/p99   ms (base too, as lora.base.*)
  lora.<N>.wait_fraction      request time spent waiting for the adapter (the server's
                              lora_adapter_wait_seconds sum over its e2e latency sum)
  lora.<N>.register_rate      adapters registered per second (the registrations before the point)
  lora.2000.served            2,000 adapters registered and every request of the point served
                              (ratio: the smaller of registered / N and completed / sent)
  lora.vs_peft                arbor's tokens/s on the slice over the better PEFT mode (target >= 4)
  lora.vs_peft_single, lora.vs_peft_mixed   the same over each PEFT mode

The adapter counters of each point (disk loads, host->device copies and bytes, evictions by
tier, prefetch hits and misses, wait seconds) go in the records' notes and in lora_points.csv.
Prints a table. Exit 1 when a point failed requests or a file is missing (records of the points
that are there are still written), 2 on bad arguments.

  tools/bench/lora_records.py --dir OUT --labels base,5,100,1000,2000 --card NAME \
      [--results bench/results.json] [--desc TEXT] [--command TEXT] [--served-n 2000]
      [--slice-arbor OUT/arbor_slice.json --peer OUT/peft.json] [--csv OUT/lora_points.csv]
"""
import argparse
import datetime
import json
import os
import sys

from serve_records import scrape  # the bench tools sit side by side

COUNTERS = (
    ('wait_s', 'arbor:lora_adapter_wait_seconds_sum'),
    ('waited_requests', 'arbor:lora_adapter_wait_seconds_count'),
    ('e2e_s', 'arbor:e2e_request_latency_seconds_sum'),
    ('disk_loads', 'arbor:lora_adapter_disk_loads_total'),
    ('copies', 'arbor:lora_adapter_copies_total'),
    ('copy_bytes', 'arbor:lora_adapter_copy_bytes_total'),
    ('prefetch_hits', 'arbor:lora_prefetch_hits_total'),
    ('prefetch_misses', 'arbor:lora_prefetch_misses_total'),
    ('completed', 'arbor:request_success_total'),
    ('generated', 'arbor:generation_tokens_total'),
    ('preemptions', 'arbor:num_preemptions_total'),
)
GAUGES = (
    ('registered', 'arbor:lora_adapters_loaded'),
    ('gpu_resident', 'arbor:lora_adapters_resident'),
    ('host_resident', 'arbor:lora_adapters_host_resident'),
    ('host_bytes', 'arbor:lora_host_bytes'),
)


def adapter_counters(before, after):
    m0, m1 = scrape(before), scrape(after)
    c = {k: m1.get(name, 0.0) - m0.get(name, 0.0) for k, name in COUNTERS}
    for tier in ('host', 'gpu'):
        key = 'arbor:lora_adapter_evictions_total{tier="%s"}' % tier
        c['evictions_' + tier] = m1.get(key, 0.0) - m0.get(key, 0.0)
    for k, name in GAUGES:
        c[k] = m1.get(name, 0.0)
    c['wait_fraction'] = c['wait_s'] / c['e2e_s'] if c['e2e_s'] > 0 else 0.0
    return c


def load(path):
    with open(path) as f:
        return json.load(f)


def read_point(d, label):
    """(point dict, counters, registration) or None with a message."""
    path = os.path.join(d, 'point_%s.json' % label)
    if not os.path.exists(path):
        return None, 'no %s' % path
    doc = load(path)
    pts = doc.get('points', [])
    if len(pts) != 1:
        return None, '%s holds %d points, expected 1' % (path, len(pts))
    point = pts[0]
    point['_config'] = doc.get('config', {})
    before = os.path.join(d, 'metrics_%s_before.txt' % label)
    after = os.path.join(d, 'metrics_%s_after.txt' % label)
    counters = adapter_counters(before, after) if os.path.exists(before) and os.path.exists(
        after) else None
    reg_path = os.path.join(d, 'register_%s.json' % label)
    reg = load(reg_path) if os.path.exists(reg_path) else None
    return (point, counters, reg), ''


def counters_note(c):
    if c is None:
        return 'no /metrics scrape'
    return ('adapter counters over the point: wait %.3f s in %d requests (fraction %.4f of %.1f '
            'request-seconds), %d disk loads, %d host->device copies (%.1f MB), evictions host '
            '%d / gpu %d, prefetch hits %d / misses %d, preemptions %d; after it %d registered, '
            '%d GPU-resident, %d host-resident (%.1f MB)'
            % (c['wait_s'], c['waited_requests'], c['wait_fraction'], c['e2e_s'], c['disk_loads'],
               c['copies'], c['copy_bytes'] / 1e6, c['evictions_host'], c['evictions_gpu'],
               c['prefetch_hits'], c['prefetch_misses'], c['preemptions'], c['registered'],
               c['gpu_resident'], c['host_resident'], c['host_bytes'] / 1e6))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dir', required=True)
    ap.add_argument('--labels', required=True, help='base,5,100,...')
    ap.add_argument('--card', required=True)
    ap.add_argument('--results')
    ap.add_argument('--desc', default='tools/bench/llama3-8b (dummy weights), bf16')
    ap.add_argument('--command', default='tools/bench/lora_suite.sh')
    ap.add_argument('--date', default=datetime.datetime.now(datetime.timezone.utc)
                    .strftime('%Y-%m-%d'))
    ap.add_argument('--served-n', type=int, default=2000,
                    help='the point that gives lora.<N>.served')
    ap.add_argument('--vs-base-target-n', type=int, default=1000)
    ap.add_argument('--slice-arbor')
    ap.add_argument('--peer')
    ap.add_argument('--csv')
    args = ap.parse_args(argv)
    labels = [x for x in args.labels.split(',') if x]
    if not labels:
        ap.error('--labels is empty')

    status = 0
    points = {}
    for label in labels:
        got, why = read_point(args.dir, label)
        if got is None:
            print('lora_records: point %s: %s' % (label, why))
            status = 1
            continue
        points[label] = got
        p = got[0]
        if p.get('failed', 0) or p.get('completed', 0) != p.get('requests', 0):
            print('lora_records: point %s: %d of %d requests failed (%s)'
                  % (label, p.get('failed', 0), p.get('requests', 0), p.get('first_error', '')))
            status = 1

    # Every point must have served the same trace (the same lengths, hence the same tokens).
    traces = {label: (got[0].get('prompt_tokens'), got[0].get('output_tokens'))
              for label, got in points.items() if not got[0].get('failed')}
    if len(set(traces.values())) > 1:
        print('lora_records: the points served different traces (prompt, output tokens): %s'
              % ', '.join('%s %s' % kv for kv in traces.items()))
        status = 1

    records = []

    def add(name, what, value, unit, baseline=None, ratio=None, target=None, note=''):
        records.append(dict(name='%s (%s)' % (name, what), value=value, unit=unit,
                            baseline=baseline, ratio=ratio, target=target, card=args.card,
                            date=args.date, command=args.command, note=note))

    base = points.get('base')
    base_tps = base[0]['output_throughput'] if base else None
    for label in labels:
        if label not in points:
            continue
        p, c, reg = points[label]
        cfg = p['_config']
        trace = ('Poisson %s req/s, %d requests, prompt %s, output %s, seed %s; %s'
                 % (p.get('rate'), p.get('requests', 0), cfg.get('prompt_len'),
                    cfg.get('output_len'), cfg.get('seed'), args.desc))
        if label == 'base':
            shape = 'base model only; ' + trace
        else:
            shape = ('%s adapters, power law alpha %s; %s'
                     % (label, cfg.get('adapter_alpha', '?'), trace))
        tps = p['output_throughput']
        note = counters_note(c) if label != 'base' else ''
        add('lora.%s.throughput' % label, 'output tokens/s; ' + shape, tps, 'tokens/s', note=note)
        if label != 'base' and base_tps:
            target = '>= 0.8' if label == str(args.vs_base_target_n) else None
            add('lora.%s.vs_base' % label, 'output tokens/s with the adapters over base-only on '
                'the same trace, same server; ' + shape, tps, 'tokens/s', base_tps,
                tps / base_tps, target, note)
        for fig in ('ttft', 'tpot'):
            for q in ('p50', 'p90', 'p99'):
                add('lora.%s.%s_%s' % (label, fig, q), fig.upper() + ' ' + q + '; ' + shape,
                    p['%s_ms' % fig][q], 'ms')
        if label != 'base' and c is not None:
            add('lora.%s.wait_fraction' % label, 'request time spent waiting for the adapter '
                '(lora_adapter_wait_seconds sum / e2e latency sum); ' + shape, c['wait_fraction'],
                'fraction', note=note)
        if reg is not None:
            add('lora.%s.register_rate' % label, 'adapters registered per second through POST '
                '/v1/adapters, %d client threads, names %d..%d' % (reg['threads'], reg['from'],
                                                                   reg['to'] - 1),
                reg['per_second'], 'adapters/s',
                note='%d registered, %d failed in %.2f s; p50 %.0f ms, max %.0f ms per call%s'
                % (reg['registered'], reg['failed'], reg['seconds'],
                   1e3 * (reg['latency_p50_s'] or 0), 1e3 * (reg['latency_max_s'] or 0),
                   '; first failure: ' + reg['first_error'] if reg['first_error'] else ''))
        if label == str(args.served_n):
            registered = c['registered'] if c is not None else 0
            sent = p.get('requests', 0)
            frac = min(registered / args.served_n,
                       p.get('completed', 0) / sent if sent else 0.0)
            add('lora.%d.served' % args.served_n, 'adapters registered and servable on one GPU '
                'while the point ran, every request completed; ratio: the smaller of registered / '
                '%d and completed / sent requests; %s; %.1f output tokens/s%s'
                % (args.served_n, shape, tps,
                   ', %.3f of base-only' % (tps / base_tps) if base_tps else ''),
                registered, 'adapters', args.served_n, frac, '>= 1', note)

    # Arbor against PEFT on the slice.
    if args.slice_arbor and args.peer:
        if not (os.path.exists(args.slice_arbor) and os.path.exists(args.peer)):
            print('lora_records: no slice figures (%s, %s); no PEFT ratio'
                  % (args.slice_arbor, args.peer))
            status = 1
        else:
            a, peer = load(args.slice_arbor), load(args.peer)
            at = a['output_throughput']
            peer_what = ('transformers %s, peft %s, torch %s' % (
                peer.get('transformers', '?'), peer.get('peft', '?'), peer.get('torch', '?')))
            slice_desc = ('slice of %d requests over %d adapters (%s), all sent at once; %s'
                          % (peer.get('requests', a.get('requests', 0)),
                             len(peer.get('adapters', [])), ','.join(peer.get('adapters', [])),
                             args.desc))
            if a.get('failed'):
                print('lora_records: %d slice requests failed on arbor' % a['failed'])
                status = 1
            best = None
            for mode, desc in (('single', 'one adapter at a time (set_adapter, a batch per '
                                'adapter)'), ('mixed', 'mixed-adapter batch (adapter_names=)')):
                m = peer.get('modes', {}).get(mode)
                if not m or not m.get('output_throughput'):
                    print('lora_records: PEFT %s: no figure' % mode)
                    continue
                ht = m['output_throughput']
                partial = '' if m.get('complete') else ' (PEFT partial: %d of %d requests)' % (
                    m.get('requests', 0), peer.get('requests', 0))
                add('lora.vs_peft_%s' % mode, 'arbor\'s output tokens/s over HF PEFT %s; %s%s'
                    % (desc, slice_desc, partial), at, 'tokens/s', ht, at / ht,
                    note='Peer: ' + peer_what)
                if best is None or ht > best[1]:
                    best = (mode, ht, partial)
            if best is not None:
                add('lora.vs_peft', 'arbor\'s output tokens/s over the better HF PEFT mode (%s); '
                    '%s%s' % (best[0], slice_desc, best[2]), at, 'tokens/s', best[1],
                    at / best[1], '>= 4', note='Peer: ' + peer_what)
            else:
                status = 1

    # The table.
    print('%-6s %10s %8s %9s %9s %9s %9s %8s %7s %7s %9s'
          % ('N', 'tok/s', 'vs base', 'TTFT p50', 'TTFT p99', 'TPOT p50', 'TPOT p99', 'wait',
             'copies', 'loads', 'reg/s'))
    for label in labels:
        if label not in points:
            continue
        p, c, reg = points[label]
        tps = p['output_throughput']
        print('%-6s %10.1f %8s %9.1f %9.1f %9.2f %9.2f %8s %7s %7s %9s' % (
            label, tps, '%.3f' % (tps / base_tps) if base_tps and label != 'base' else '',
            p['ttft_ms']['p50'], p['ttft_ms']['p99'], p['tpot_ms']['p50'], p['tpot_ms']['p99'],
            '%.4f' % c['wait_fraction'] if c and label != 'base' else '',
            '%d' % c['copies'] if c and label != 'base' else '',
            '%d' % c['disk_loads'] if c and label != 'base' else '',
            '%.1f' % reg['per_second'] if reg and reg.get('per_second') else ''))
    for r in records:
        if r['name'].startswith('lora.vs_peft') or '.served' in r['name']:
            print('%s: %.4g %s, baseline %s, ratio %s%s' % (
                r['name'].split(' ')[0], r['value'], r['unit'], r['baseline'],
                '%.3f' % r['ratio'] if r['ratio'] is not None else None,
                ', target ' + r['target'] if r['target'] else ''))

    if args.csv:
        cols = ['label', 'requests', 'completed', 'failed', 'output_tokens', 'duration_s',
                'output_throughput', 'vs_base'] + ['%s_%s' % (f, q) for f in ('ttft', 'tpot')
                                                   for q in ('p50', 'p90', 'p99')]
        ckeys = [k for k, _ in COUNTERS] + ['evictions_host', 'evictions_gpu', 'wait_fraction'] + [
            k for k, _ in GAUGES]
        lines = [','.join(cols + ckeys)]
        for label in labels:
            if label not in points:
                continue
            p, c, _ = points[label]
            row = [label] + ['%g' % p.get(k, 0) for k in cols[1:7]]
            row.append('%g' % (p['output_throughput'] / base_tps) if base_tps else '')
            row += ['%g' % p['%s_ms' % f][q] for f in ('ttft', 'tpot') for q in ('p50', 'p90',
                                                                                  'p99')]
            row += ['%g' % c[k] if c else '' for k in ckeys]
            lines.append(','.join(row))
        with open(args.csv, 'w') as f:
            f.write('\n'.join(lines) + '\n')

    if args.results:
        try:
            existing = load(args.results)
        except (OSError, ValueError):
            existing = []
        if not isinstance(existing, list):
            existing = []
        existing.extend(records)
        os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
        with open(args.results, 'w') as f:
            # As tools/bench/results.cc writes it (nlohmann's dump(2): sorted keys).
            f.write(json.dumps(existing, indent=2, sort_keys=True, ensure_ascii=False) + '\n')
        print('appended %d records to %s' % (len(records), args.results))
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
