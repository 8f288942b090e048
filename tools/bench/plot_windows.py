#!/usr/bin/env python3
"""Causal neighborhood attention: decode time against the window, one line per dilation, from
bench_attention's attention.window<w>_d<d>_ctx<c>.speedup_vs_full records in bench/results.json
(the latest run on the card), with the full context's time as a dashed line. The title names the
card, the context and the date.

  tools/bench/plot_windows.py bench/results.json --card "NVIDIA H100 80GB HBM3" \
      --out docs/bench/attention_windows.png

Needs matplotlib; without it, exits 3 with a message and writes nothing.
"""
import argparse
import json
import re
import sys

NO_MATPLOTLIB = 3
NAME = re.compile(r'^attention\.window(\d+k?)_d(\d+)_ctx(\d+k?)\.speedup_vs_full$')
NAMED = 'attention.window4k_ctx32k.speedup_vs_full'  # window 4k, dilation 1, context 32k


def tokens(label):
    return int(label[:-1]) * 1024 if label.endswith('k') else int(label)


def window_points(records, card):
    """{(context, dilation): {window: (ms, full ms, date)}}, the latest record of each."""
    out = {}
    for r in records:
        if r.get('card') != card or not isinstance(r.get('value'), (int, float)):
            continue
        name = r.get('name', '')
        m = NAME.match(name)
        if m:
            w, d, c = tokens(m.group(1)), int(m.group(2)), tokens(m.group(3))
        elif name == NAMED:
            w, d, c = 4096, 1, 32768
        else:
            continue
        out.setdefault((c, d), {})[w] = (r['value'], r['baseline'], r.get('date', ''))
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('results')
    ap.add_argument('--card', required=True)
    ap.add_argument('--out', required=True)
    args = ap.parse_args(argv)
    with open(args.results) as f:
        points = window_points(json.load(f), args.card)
    if not points:
        print(f'plot_windows: no window records for {args.card} in {args.results}',
              file=sys.stderr)
        return 1
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('plot_windows: matplotlib is not installed; no plot written', file=sys.stderr)
        return NO_MATPLOTLIB
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dates, full = set(), {}
    for (context, dilation), by_window in sorted(points.items()):
        windows = sorted(by_window)
        ax.plot(windows, [by_window[w][0] for w in windows], marker='o',
                label=f'window, dilation {dilation} (context {context // 1024}k)')
        for w in windows:
            dates.add(by_window[w][2])
            full[context] = by_window[w][1]
    for context, ms in sorted(full.items()):
        ax.axhline(ms, linestyle='--', color='gray', label=f'full causal, context {context // 1024}k')
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('window (keys of the query\'s dilation group)')
    ax.set_ylabel('decode attention, batch 32 (ms, median)')
    ax.set_title(f'Arbor paged neighborhood attention, GQA 32/8, head_dim 128, bf16\n'
                 f'{args.card}, {", ".join(sorted(dates))}', fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f'plot_windows: wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
