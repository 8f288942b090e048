#!/usr/bin/env python3
"""Plots of the serving sweep (tools/bench/serve_suite.sh), arbor and transformers on the same
axes, each titled with the card and the date:

  serve_throughput.png          output tokens/s against concurrency
  serve_ttft.png                TTFT p50 and p99 against concurrency
  serve_tpot.png                TPOT p50 and p99 against concurrency
  serve_latency_throughput.png  TPOT p50 against output tokens/s, one point per concurrency

Reads what `arbor bench serve --json` wrote (one file per concurrency or one for all) and what
tools/bench/hf_serve_peer.py wrote. Needs matplotlib (the GPU host has it); without it, exits 3
with a message and writes nothing.

  tools/bench/plot_serve.py --arbor arbor_c*.json --peer hf_serve.json --card NAME \
      [--date YYYY-MM-DD] --out DIR
"""
import argparse
import datetime
import json
import os
import sys

NO_MATPLOTLIB = 3  # the exit status serve_suite.sh reads as "skipped", not "failed"


def points_by_concurrency(paths):
    out = {}
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        for p in doc.get('points', []):
            if p.get('concurrency') is not None:
                out[int(p['concurrency'])] = p
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--arbor', nargs='+', required=True)
    ap.add_argument('--peer', help='hf_serve_peer.py output (omitted: arbor alone)')
    ap.add_argument('--card', required=True)
    ap.add_argument('--date', default=datetime.datetime.now(datetime.timezone.utc)
                    .strftime('%Y-%m-%d'))
    ap.add_argument('--subtitle', default='Llama-3-8B shape, dummy bf16 weights, prompt 512, '
                    'output 128')
    ap.add_argument('--out', required=True)
    args = ap.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        sys.stderr.write('plot_serve.py: matplotlib is not installed here (python3 -m pip install '
                         'matplotlib); no plots written\n')
        return NO_MATPLOTLIB

    sides = [('arbor', points_by_concurrency(args.arbor), 'tab:green')]
    if args.peer:
        sides.append(('transformers (one static batch)', points_by_concurrency([args.peer]),
                      'tab:gray'))
    os.makedirs(args.out, exist_ok=True)
    title_tail = '%s, %s\n%s' % (args.card, args.date, args.subtitle)

    def figure(title, ylabel, xlabel='concurrency (requests in flight)', logx=True):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.set_title('%s: %s' % (title, title_tail), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale('log', base=2)
        ax.grid(True, which='both', alpha=0.3)
        return fig, ax

    def save(fig, ax, name):
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(args.out, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print('wrote', path)

    fig, ax = figure('Output throughput', 'output tokens/s')
    for label, pts, color in sides:
        cs = sorted(pts)
        ax.plot(cs, [pts[c]['output_throughput'] for c in cs], 'o-', color=color, label=label)
    ax.set_xticks(sorted(set().union(*(p.keys() for _, p, _ in sides))))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    save(fig, ax, 'serve_throughput.png')

    for key, name, what in (('ttft_ms', 'serve_ttft.png', 'Time to first token'),
                            ('tpot_ms', 'serve_tpot.png', 'Time per output token')):
        fig, ax = figure(what, 'ms (log scale)')
        ax.set_yscale('log')
        for label, pts, color in sides:
            cs = sorted(pts)
            p50 = [pts[c][key]['p50'] for c in cs]
            p99 = [pts[c][key]['p99'] for c in cs]
            if p50 == p99:  # one static batch: every request has the same latency
                ax.plot(cs, p50, 'o-', color=color, label=label + ' p50 = p99')
                continue
            ax.plot(cs, p50, 'o-', color=color, label=label + ' p50')
            ax.plot(cs, p99, 's--', color=color, label=label + ' p99', alpha=0.7)
        ax.set_xticks(sorted(set().union(*(p.keys() for _, p, _ in sides))))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        save(fig, ax, name)

    fig, ax = figure('Latency against throughput', 'TPOT p50 (ms)', 'output tokens/s', False)
    for label, pts, color in sides:
        cs = sorted(pts)
        xs = [pts[c]['output_throughput'] for c in cs]
        ys = [pts[c]['tpot_ms']['p50'] for c in cs]
        ax.plot(xs, ys, 'o-', color=color, label=label)
        for c, x, y in zip(cs, xs, ys):
            ax.annotate('c=%d' % c, (x, y), textcoords='offset points', xytext=(4, 4), fontsize=7)
    save(fig, ax, 'serve_latency_throughput.png')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
