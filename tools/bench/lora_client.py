#!/usr/bin/env python3
"""The admin and slice client of tools/bench/lora_suite.sh (standard library only).

  register   registers names <prefix><i> for i in [--from, --to) through POST /v1/adapters,
             name i on the manifest's directory i mod K (tools/bench/make_adapters.py), from
             --threads client threads at once; times it and writes a JSON summary.
  slice      writes the PEFT comparison's requests: --requests requests over the first --adapters
             names, popularity a power law (P(i) ~ (i + 1)^-alpha), prompt and output lengths
             uniform in [--min-len, --max-len], prompts token ids uniform over the vocabulary
             (seeded). tools/bench/peft_peer.py and `run-slice` read the same file.
  run-slice  sends every request of a slice to the server at once (non-streamed /v1/completions,
             ignore_eos, max_tokens as planned, `model` the adapter's name) and writes the output
             tokens per second over the wall time from the first send to the last answer, as the
             peer measures its batches.

  tools/bench/lora_client.py register --url URL --key KEY --manifest DIR/manifest.json \
      --from 0 --to 2000 [--prefix lora-] [--threads 8] [--pin-first 0] --out reg.json
  tools/bench/lora_client.py slice --manifest M --adapters 4 --requests 32 --vocab-size V \
      [--alpha 1] [--seed 7] [--min-len 8] [--max-len 512] --out slice.json
  tools/bench/lora_client.py run-slice --url URL --slice slice.json --out arbor_slice.json
"""
import argparse
import concurrent.futures
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request


def adapter_name(prefix, i):
    return '%s%04d' % (prefix, i)


def post(url, body, key=None, timeout=600):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method='POST',
                                 headers={'Content-Type': 'application/json'})
    if key:
        req.add_header('Authorization', 'Bearer ' + key)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b'{}')
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, {'error': {'message': text.decode(errors='replace')}}
    except OSError as e:
        return 0, {'error': {'message': str(e)}}


def load_manifest(path):
    with open(path) as f:
        m = json.load(f)
    if not m.get('adapters'):
        sys.exit('lora_client: %s lists no adapters' % path)
    return m


def cmd_register(args):
    m = load_manifest(args.manifest)
    dirs = m['adapters']
    url = args.url.rstrip('/') + '/v1/adapters'

    def one(i):
        d = dirs[i % len(dirs)]
        body = {'name': adapter_name(args.prefix, i), 'path': d['dir']}
        if i < args.pin_first:
            body['pin'] = True
        t0 = time.perf_counter()
        code, reply = post(url, body, args.key)
        return i, code, reply, time.perf_counter() - t0

    start = time.perf_counter()
    ok, failed, first_error, host_bytes, latencies = 0, 0, '', 0, []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.threads)) as pool:
        for i, code, reply, dt in pool.map(one, range(args.start, args.end)):
            latencies.append(dt)
            if code == 200:
                ok += 1
                host_bytes += int(reply.get('host_bytes', 0))
            else:
                failed += 1
                if not first_error:
                    first_error = '%s: HTTP %d %s' % (adapter_name(args.prefix, i), code,
                                                      reply.get('error', {}).get('message', reply))
    seconds = time.perf_counter() - start
    latencies.sort()
    n = args.end - args.start
    out = {'from': args.start, 'to': args.end, 'registered': ok, 'failed': failed,
           'seconds': seconds, 'per_second': n / seconds if seconds > 0 else None,
           'threads': args.threads, 'host_bytes': host_bytes,
           'latency_p50_s': latencies[len(latencies) // 2] if latencies else None,
           'latency_max_s': latencies[-1] if latencies else None, 'first_error': first_error}
    with open(args.out, 'w') as f:
        json.dump(out, f, indent=1)
    print('registered %d of %d adapters (%s%04d..%s%04d) in %.2f s (%.1f/s, %d threads, p50 %.0f '
          'ms, max %.0f ms, %.1f MB of host copies)%s'
          % (ok, n, args.prefix, args.start, args.prefix, args.end - 1, seconds,
             out['per_second'] or 0, args.threads, 1e3 * (out['latency_p50_s'] or 0),
             1e3 * (out['latency_max_s'] or 0), host_bytes / 1e6,
             '; first failure: ' + first_error if first_error else ''))
    return 0 if failed == 0 else 1


def cmd_slice(args):
    m = load_manifest(args.manifest)
    dirs = m['adapters']
    root = os.path.dirname(os.path.abspath(args.manifest))
    rng = random.Random(args.seed)
    names = [adapter_name(args.prefix, i) for i in range(args.adapters)]
    weights = [(i + 1) ** -args.alpha for i in range(args.adapters)]
    requests = []
    for _ in range(args.requests):
        i = rng.choices(range(args.adapters), weights)[0]
        d = dirs[i % len(dirs)]
        plen = rng.randint(args.min_len, args.max_len)
        requests.append({'adapter': names[i], 'dir': os.path.join(root, d['dir']),
                         'rank': d['rank'], 'max_tokens': rng.randint(args.min_len, args.max_len),
                         'prompt': [rng.randrange(args.vocab_size) for _ in range(plen)]})
    doc = {'seed': args.seed, 'alpha': args.alpha, 'adapters': names,
           'lengths': [args.min_len, args.max_len], 'vocab_size': args.vocab_size,
           'requests': requests}
    with open(args.out, 'w') as f:
        json.dump(doc, f)
    used = sorted({r['adapter'] for r in requests})
    print('slice: %d requests over %d adapters (%s), %d prompt and %d output tokens'
          % (len(requests), len(used), ','.join(used), sum(len(r['prompt']) for r in requests),
             sum(r['max_tokens'] for r in requests)))
    return 0


def cmd_run_slice(args):
    with open(args.slice) as f:
        doc = json.load(f)
    url = args.url.rstrip('/') + '/v1/completions'

    def one(r):
        body = {'model': r['adapter'] if not args.base else args.base, 'prompt': r['prompt'],
                'max_tokens': r['max_tokens'], 'temperature': 0, 'ignore_eos': True}
        code, reply = post(url, body, timeout=args.timeout_s)
        return code, reply, time.perf_counter()

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(doc['requests'])) as pool:
        results = list(pool.map(one, doc['requests']))
    end = max(t for _, _, t in results)
    seconds = end - start
    tokens, failed, first_error = 0, 0, ''
    for (code, reply, _), r in zip(results, doc['requests']):
        if code == 200:
            tokens += int(reply.get('usage', {}).get('completion_tokens', 0))
        else:
            failed += 1
            first_error = first_error or 'HTTP %d %s' % (code, reply.get('error', {}))
    planned = sum(r['max_tokens'] for r in doc['requests'])
    out = {'tool': 'tools/bench/lora_client.py run-slice', 'requests': len(doc['requests']),
           'failed': failed, 'output_tokens': tokens, 'planned_tokens': planned,
           'seconds': seconds, 'output_throughput': tokens / seconds if seconds > 0 else 0,
           'first_error': first_error}
    with open(args.out, 'w') as f:
        json.dump(out, f, indent=1)
    print('arbor slice: %d requests, %d output tokens (%d planned) in %.2f s: %.1f tok/s%s'
          % (out['requests'], tokens, planned, seconds, out['output_throughput'],
             '; %d failed: %s' % (failed, first_error) if failed else ''))
    return 0 if failed == 0 and tokens == planned else 1


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('register')
    r.add_argument('--url', required=True)
    r.add_argument('--key', default='')
    r.add_argument('--manifest', required=True)
    r.add_argument('--prefix', default='lora-')
    r.add_argument('--from', dest='start', type=int, default=0)
    r.add_argument('--to', dest='end', type=int, required=True)
    r.add_argument('--threads', type=int, default=8)
    r.add_argument('--pin-first', type=int, default=0,
                   help='register names below this index with pin: true')
    r.add_argument('--out', required=True)
    s = sub.add_parser('slice')
    s.add_argument('--manifest', required=True)
    s.add_argument('--prefix', default='lora-')
    s.add_argument('--adapters', type=int, default=4)
    s.add_argument('--requests', type=int, default=32)
    s.add_argument('--alpha', type=float, default=1.0)
    s.add_argument('--seed', type=int, default=7)
    s.add_argument('--min-len', type=int, default=8)
    s.add_argument('--max-len', type=int, default=512)
    s.add_argument('--vocab-size', type=int, required=True)
    s.add_argument('--out', required=True)
    q = sub.add_parser('run-slice')
    q.add_argument('--url', required=True)
    q.add_argument('--slice', required=True)
    q.add_argument('--base', help='send every request to this model instead (base-only)')
    q.add_argument('--timeout-s', type=float, default=600)
    q.add_argument('--out', required=True)
    args = ap.parse_args(argv)
    return {'register': cmd_register, 'slice': cmd_slice, 'run-slice': cmd_run_slice}[args.cmd](
        args)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
