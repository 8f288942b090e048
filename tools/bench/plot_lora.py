#!/usr/bin/env python3
"""Plots of tools/bench/lora_suite.sh (S-LoRA's workload), each titled with the card and the date:

  lora_throughput.png  output tokens/s against the number of adapters, base-only as a line
  lora_latency.png     TTFT and TPOT p50/p90/p99 against the number of adapters (base dashed)
  lora_adapters.png    per point: the fraction of request time waiting for adapters, and the
                       host->device copies, disk loads and GPU evictions
  lora_vs_peft.png     the slice: arbor's output tokens/s against HF PEFT's two modes

Reads the suite's directory (point_<LABEL>.json, metrics_<LABEL>_{before,after}.txt; see
tools/bench/lora_records.py) and, when given, the slice figures. Needs matplotlib (the GPU host
has it); without it, exits 3 with a message and writes nothing.

  tools/bench/plot_lora.py --dir OUT --labels base,5,100,1000,2000 --card NAME \
      [--slice-arbor arbor_slice.json --peer peft.json] [--subtitle TEXT] --out DIR
"""
import argparse
import datetime
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_records import read_point  # noqa: E402

NO_MATPLOTLIB = 3  # the exit status lora_suite.sh reads as "skipped", not "failed"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dir', required=True)
    ap.add_argument('--labels', required=True)
    ap.add_argument('--card', required=True)
    ap.add_argument('--date', default=datetime.datetime.now(datetime.timezone.utc)
                    .strftime('%Y-%m-%d'))
    ap.add_argument('--subtitle', default='Llama-3-8B shape, dummy bf16 weights')
    ap.add_argument('--slice-arbor')
    ap.add_argument('--peer')
    ap.add_argument('--out', required=True)
    args = ap.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        sys.stderr.write('plot_lora.py: matplotlib is not installed here (python3 -m pip install '
                         'matplotlib); no plots written\n')
        return NO_MATPLOTLIB

    points = {}
    for label in [x for x in args.labels.split(',') if x]:
        got, _ = read_point(args.dir, label)
        if got is not None:
            points[label] = got
    base = points.pop('base', None)
    ns = sorted(int(k) for k in points)
    if not ns and base is None:
        sys.stderr.write('plot_lora.py: no points in %s\n' % args.dir)
        return 1
    os.makedirs(args.out, exist_ok=True)
    title_tail = '%s, %s\n%s' % (args.card, args.date, args.subtitle)

    def figure(title, ylabel, ax=None, fig=None):
        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.set_title('%s: %s' % (title, title_tail), fontsize=9)
        ax.set_xlabel('adapters (N)')
        ax.set_ylabel(ylabel)
        if ns:
            ax.set_xscale('log')
            ax.set_xticks(ns)
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which='both', alpha=0.3)
        return fig, ax

    def save(fig, name):
        fig.tight_layout()
        path = os.path.join(args.out, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print('wrote', path)

    fig, ax = figure('Output throughput', 'output tokens/s')
    if ns:
        ax.plot(ns, [points[str(n)][0]['output_throughput'] for n in ns], 'o-', color='tab:green',
                label='arbor, N adapters')
    if base is not None:
        ax.axhline(base[0]['output_throughput'], color='tab:gray', ls='--', label='arbor, base only')
        ax.axhline(0.8 * base[0]['output_throughput'], color='tab:red', ls=':', lw=1,
                   label='0.8 of base (target at N = 1000)')
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    save(fig, 'lora_throughput.png')

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, what in ((axes[0], 'ttft_ms', 'TTFT'), (axes[1], 'tpot_ms', 'TPOT')):
        figure(what, 'ms (log scale)', ax, fig)
        ax.set_yscale('log')
        for q, style in (('p50', 'o-'), ('p90', 's-'), ('p99', '^-')):
            line = None
            if ns:
                line, = ax.plot(ns, [points[str(n)][0][key][q] for n in ns], style, label=q)
            if base is not None:
                ax.axhline(base[0][key][q], ls='--', lw=1, alpha=0.7,
                           color=line.get_color() if line else None, label='base ' + q)
        ax.legend(fontsize=7)
    save(fig, 'lora_latency.png')

    if ns:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        figure('Waiting for adapters', 'fraction of request time', axes[0], fig)
        axes[0].plot(ns, [points[str(n)][1]['wait_fraction'] if points[str(n)][1] else 0
                          for n in ns], 'o-', color='tab:orange')
        axes[0].set_ylim(bottom=0)
        figure('Adapter traffic per point', 'count', axes[1], fig)
        for key, label in (('copies', 'host->device copies'), ('disk_loads', 'disk loads'),
                           ('evictions_gpu', 'GPU evictions'), ('evictions_host',
                                                                'host evictions')):
            axes[1].plot(ns, [points[str(n)][1][key] if points[str(n)][1] else 0 for n in ns],
                         'o-', label=label)
        axes[1].legend(fontsize=8)
        save(fig, 'lora_adapters.png')

    if args.slice_arbor and args.peer and os.path.exists(args.slice_arbor) and os.path.exists(
            args.peer):
        with open(args.slice_arbor) as f:
            a = json.load(f)
        with open(args.peer) as f:
            peer = json.load(f)
        bars = [('arbor', a['output_throughput'], 'tab:green')]
        for mode, label in (('single', 'PEFT, one adapter\nat a time'), ('mixed',
                                                                         'PEFT, mixed batch')):
            m = peer.get('modes', {}).get(mode)
            if m and m.get('output_throughput'):
                bars.append((label + ('' if m.get('complete') else '\n(partial)'),
                             m['output_throughput'], 'tab:gray'))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.set_title('Slice of %d requests over %d adapters: %s' % (
            peer.get('requests', 0), len(peer.get('adapters', [])), title_tail), fontsize=9)
        ax.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
        for i, b in enumerate(bars):
            ax.annotate('%.0f' % b[1], (i, b[1]), ha='center', va='bottom', fontsize=8)
        ax.set_ylabel('output tokens/s')
        save(fig, 'lora_vs_peft.png')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
