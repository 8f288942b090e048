#!/usr/bin/env python3
"""The PyTorch peer of tools/bench_cce: log_softmax(x @ W.T) plus a gather, in bf16.

x [N, D] and W [V, D] in bf16, U(-1, 1) and U(-0.03, 0.03); the targets uniform over the
vocabulary. The timed call is what a PyTorch scorer writes:
    logits = x @ W.T                                  # [N, V] bf16 (cuBLAS)
    logp = torch.log_softmax(logits, -1, dtype=torch.float32)   # [N, V] fp32
    out = logp.gather(1, targets[:, None])
(fp32 log-softmax: in bf16 its log-probs would be off by ~0.1). Times are CUDA-event medians over
--iters calls after 2 warm-ups; peak memory is torch.cuda.max_memory_allocated over one call,
less what x, W and the targets hold. A shape that does not fit the card is reported with a
null value, not a crash.

Appends per shape cce.torch_ms.<shape> and cce.torch_peak_mb.<shape> ("impl": "torch"), named
as bench_cce names its shapes (n32k_v128k), so that bench_cce, run next on the same card, writes
cce.time_vs_torch.<shape>.

  python3 tools/bench/cce_torch.py [--rows 1024,8192,32768] [--vocabs 32768,131072]
                                   [--hidden 4096] [--iters 10] [--results bench/results.json]
"""

import argparse
import datetime
import sys

from results_file import append_records

WARMUP = 2


def label(n):
    # Must match Label in tools/bench_cce.cc.
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def shape_name(n, v):
    return f"n{label(n)}_v{label(v)}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1024,8192,32768")
    p.add_argument("--vocabs", default="32768,131072")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--results", default="bench/results.json")
    a = p.parse_args()
    rows = [int(t) for t in a.rows.split(",") if t]
    vocabs = [int(t) for t in a.vocabs.split(",") if t]
    if not rows or not vocabs or min(rows + vocabs) <= 0 or a.iters <= 0 or a.hidden <= 0:
        p.error("rows, vocabs, hidden and iters must be > 0")
    try:
        import torch
    except ImportError as e:
        print(f"cce_torch: PyTorch is not installed ({e})", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("cce_torch: no CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(15)
    card = torch.cuda.get_device_name(dev)
    print(f"log_softmax(x @ W.T) + gather: hidden {a.hidden}, bf16, torch {torch.__version__} "
          f"on {card}")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    command = ("python3 tools/bench/cce_torch.py " + " ".join(sys.argv[1:])).strip()
    records, ran = [], 0

    def score(x, w, targets):
        logits = x @ w.T
        logp = torch.log_softmax(logits, -1, dtype=torch.float32)
        return logp.gather(1, targets[:, None])

    with torch.inference_mode():
        for v in vocabs:
            w = torch.empty((v, a.hidden), device=dev).uniform_(-0.03, 0.03, generator=gen)
            w = w.to(torch.bfloat16)
            for n in rows:
                name = shape_name(n, v)
                x = torch.empty((n, a.hidden), device=dev).uniform_(-1, 1, generator=gen)
                x = x.to(torch.bfloat16)
                targets = torch.randint(0, v, (n,), device=dev, generator=gen)
                torch.cuda.synchronize()
                note = (f"N {n}, V {v}, D {a.hidden}, bf16 matmul, fp32 log_softmax, "
                        f"torch {torch.__version__}")
                try:
                    base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    score(x, w, targets)
                    torch.cuda.synchronize()
                    peak_mb = (torch.cuda.max_memory_allocated() - base) / 1e6
                    start = torch.cuda.Event(enable_timing=True)
                    stop = torch.cuda.Event(enable_timing=True)
                    ms = []
                    for i in range(a.iters + WARMUP):
                        start.record()
                        score(x, w, targets)
                        stop.record()
                        stop.synchronize()
                        if i >= WARMUP:
                            ms.append(start.elapsed_time(stop))
                    ms.sort()
                    t = ms[len(ms) // 2]
                    print(f"{name:12s} torch {t:9.3f} ms, peak {peak_mb:10.1f} MB")
                    ran += 1
                except torch.cuda.OutOfMemoryError as e:
                    print(f"{name:12s} torch: out of memory ({str(e).splitlines()[0]})")
                    t, peak_mb = None, None
                    note += ": out of memory"
                    torch.cuda.empty_cache()
                for rec, value, unit in ((f"cce.torch_ms.{name}", t, "ms"),
                                         (f"cce.torch_peak_mb.{name}", peak_mb, "MB")):
                    records.append({"name": rec, "impl": "torch", "value": value, "unit": unit,
                                    "baseline": None, "ratio": None, "target": None,
                                    "card": card, "date": date,
                                    "command": f"{command} ({note})"})
                del x, targets
                torch.cuda.empty_cache()
            del w
            torch.cuda.empty_cache()

    append_records(a.results, records)
    return 0 if ran else 1


if __name__ == "__main__":
    sys.exit(main())
