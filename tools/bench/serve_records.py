#!/usr/bin/env python3
"""The serving sweep's ratios against transformers (tools/bench/serve_suite.sh): reads what
`arbor bench serve --json` wrote (one file per concurrency or one for all) and what
tools/bench/hf_serve_peer.py wrote, and appends per concurrency c present in both:

  serve.<tag>_c<c>.throughput_vs_hf  arbor's output tokens/s, transformers' as baseline;
                                     ratio = arbor / transformers
  serve.<tag>_c<c>.ttft_p50_vs_hf    arbor's p50 TTFT (ms), transformers' as baseline;
                                     ratio = transformers / arbor
  serve.<tag>_c<c>.tpot_p50_vs_hf    the same for TPOT

so every ratio above 1 means arbor is better (the record's name and `note` say so; for the
latencies the ratio is baseline / value, not value / baseline). Optionally checks that the
server's /metrics counted what the generator counted, and writes one CSV of both sides.

  tools/bench/serve_records.py --arbor arbor_c*.json --peer hf_serve.json --card NAME \
      --results bench/results.json [--tag 8b] [--model-desc TEXT] [--command TEXT] \
      [--csv serve_sweep.csv] [--metrics-before M0 --metrics-after M1]
"""
import argparse
import datetime
import json
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def points_by_concurrency(docs):
    """{c: point} over the closed-loop points of `arbor bench serve --json` documents (or the
    peer's), the last one of each concurrency winning."""
    out = {}
    for doc in docs:
        for p in doc.get('points', []):
            if p.get('concurrency') is not None:
                out[int(p['concurrency'])] = p
    return out


def scrape(path):
    """{name or name{labels}: value} of a Prometheus text exposition, plus per bare name the sum
    over its labels (as name)."""
    out, sums = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            key, _, value = line.rpartition(' ')
            try:
                v = float(value)
            except ValueError:
                continue
            out[key] = v
            if '{' in key:
                bare = key.split('{', 1)[0]
                sums[bare] = sums.get(bare, 0.0) + v
    for bare, v in sums.items():
        out.setdefault(bare, v)
    return out


def check_metrics(before, after, arbor_points):
    """The server's counters moved by what the generator counted. Returns the failures."""
    m0, m1 = scrape(before), scrape(after)
    failures = []
    for metric, field in (('arbor:request_success_total', 'completed'),
                          ('arbor:generation_tokens_total', 'output_tokens'),
                          ('arbor:prompt_tokens_total', 'prompt_tokens')):
        server = m1.get(metric, 0.0) - m0.get(metric, 0.0)
        client = sum(p.get(field, 0) for p in arbor_points)
        ok = abs(server - client) < 0.5
        print('metrics: %s moved by %d, the generator counted %d %s: %s'
              % (metric, server, client, field, 'agree' if ok else 'DISAGREE'))
        if not ok:
            failures.append(metric)
    return failures


def records(arbor, peer, peer_doc, tag, model_desc, prompt, output, card, date, command):
    peer_what = '%s; transformers %s, torch %s, compiled decode: %s' % (
        peer_doc.get('peer', 'transformers generate'), peer_doc.get('transformers', '?'),
        peer_doc.get('torch', '?'), peer_doc.get('compiled', '?'))
    out = []
    for c in sorted(set(arbor) & set(peer)):
        a, h = arbor[c], peer[c]
        shape = 'concurrency %d, prompt %s, output %s, %s' % (c, prompt, output, model_desc)

        def add(figure, what, value, unit, baseline, ratio, note):
            out.append(dict(name='serve.%s_c%d.%s (%s; %s)' % (tag, c, figure, what, shape),
                            value=value, unit=unit, baseline=baseline, ratio=ratio, target=None,
                            card=card, date=date, command=command,
                            note=note + '. Peer: ' + peer_what))

        at, ht = a['output_throughput'], h['output_throughput']
        add('throughput_vs_hf', 'output tokens/s of the server under a closed loop of c streams, '
            'over transformers generate serving the c requests as one static batch', at,
            'tokens/s', ht, at / ht if ht > 0 else None,
            'ratio = arbor / transformers: above 1, arbor serves more tokens per second')
        for fig, key in (('ttft', 'ttft_ms'), ('tpot', 'tpot_ms')):
            av, hv = a[key]['p50'], h[key]['p50']
            add('%s_p50_vs_hf' % fig, 'transformers\' %s over arbor\'s p50, above 1: arbor faster'
                % fig.upper(), av, 'ms', hv, hv / av if av > 0 else None,
                'ratio = transformers / arbor (baseline / value): above 1, arbor\'s %s is '
                'shorter; the static batch\'s one %s is its p50' % (fig.upper(), fig.upper()))
    return out


def write_csv(path, arbor, peer):
    cols = ['impl', 'concurrency', 'requests', 'completed', 'output_throughput',
            'request_throughput']
    lat = ['ttft_ms', 'tpot_ms', 'e2e_ms']
    stats = ['p50', 'p90', 'p99']
    header = cols + ['%s_%s' % (m, s) for m in lat for s in stats]
    lines = [','.join(header)]
    for impl, points in (('arbor', arbor), ('transformers', peer)):
        for c in sorted(points):
            p = points[c]
            row = [impl, str(c)] + ['%g' % p.get(k, 0) for k in cols[2:]]
            row += ['%g' % p[m][s] for m in lat for s in stats]
            lines.append(','.join(row))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--arbor', nargs='+', required=True, help='arbor bench serve --json files')
    ap.add_argument('--peer', required=True, help='tools/bench/hf_serve_peer.py --out file')
    ap.add_argument('--card', required=True)
    ap.add_argument('--results', help='append the records to this bench/results.json')
    ap.add_argument('--tag', default='8b')
    ap.add_argument('--model-desc', default='tools/bench/llama3-8b (dummy weights), bf16')
    ap.add_argument('--command', default='tools/bench/serve_suite.sh')
    ap.add_argument('--date', default=datetime.datetime.now(datetime.timezone.utc)
                    .strftime('%Y-%m-%d'))
    ap.add_argument('--csv', help='write both sides\' points here')
    ap.add_argument('--metrics-before')
    ap.add_argument('--metrics-after')
    args = ap.parse_args(argv)

    arbor_docs = [load(p) for p in args.arbor]
    peer_doc = load(args.peer)
    arbor, peer = points_by_concurrency(arbor_docs), points_by_concurrency([peer_doc])
    status = 0
    # The two sides must have measured the same shapes.
    prompt, output = str(peer_doc.get('prompt')), str(peer_doc.get('output'))
    for doc in arbor_docs:
        cfg = doc.get('config', {})
        if (str(cfg.get('prompt_len')), str(cfg.get('output_len'))) != (prompt, output):
            sys.stderr.write('serve_records: arbor ran prompt %s / output %s, the peer %s / %s\n'
                             % (cfg.get('prompt_len'), cfg.get('output_len'), prompt, output))
            return 2
    for c in sorted(set(arbor) ^ set(peer)):
        print('concurrency %d: only %s measured it; no ratio'
              % (c, 'arbor' if c in arbor else 'transformers'))
        status = 1
    for c, p in sorted(arbor.items()):
        if p.get('failed', 0):
            print('concurrency %d: %d arbor requests failed (%s)'
                  % (c, p['failed'], p.get('first_error', '')))
            status = 1

    recs = records(arbor, peer, peer_doc, args.tag, args.model_desc, prompt, output, args.card,
                   args.date, args.command)
    for c in sorted(set(arbor) & set(peer)):
        a, h = arbor[c], peer[c]
        print('concurrency %4d: out tok/s arbor %9.1f transformers %9.1f (%.2fx) | TTFT p50 ms '
              '%8.1f vs %8.1f | TPOT p50 ms %7.2f vs %7.2f'
              % (c, a['output_throughput'], h['output_throughput'],
                 a['output_throughput'] / h['output_throughput'] if h['output_throughput'] else 0,
                 a['ttft_ms']['p50'], h['ttft_ms']['p50'], a['tpot_ms']['p50'],
                 h['tpot_ms']['p50']))
    if args.results:
        try:
            all_records = load(args.results)
        except (OSError, ValueError):
            all_records = []
        if not isinstance(all_records, list):
            all_records = []
        all_records.extend(recs)
        with open(args.results, 'w') as f:
            # As tools/bench/results.cc writes it (nlohmann's dump(2): sorted keys).
            f.write(json.dumps(all_records, indent=2, sort_keys=True, ensure_ascii=False) + '\n')
        print('appended %d records to %s' % (len(recs), args.results))
    if args.csv:
        write_csv(args.csv, arbor, peer)
    if args.metrics_before and args.metrics_after:
        if check_metrics(args.metrics_before, args.metrics_after, list(arbor.values())):
            status = 1
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
