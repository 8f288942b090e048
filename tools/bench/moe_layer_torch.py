#!/usr/bin/env python3
"""The PyTorch peer of tools/bench_moe: one Mixtral-8x7B-shaped MoE layer in bf16.

A straightforward grouped implementation, as transformers' MixtralSparseMoeBlock runs it:
router logits, softmax in fp32, top-2 renormalised, then a loop over the experts that picks each
expert's tokens (torch.where), gathers them (index_select), runs gate_up / SiLU * up / down as
matmuls on the stacked weights, scales by the routing weight and adds the rows back
(index_add_). Same shapes, dtype and seeded-uniform weight bounds as bench_moe; times are
CUDA-event medians over --iters layers after 5 warm-ups, from the normed input to the layer's
output. Appends one record per token count to --results, named exactly as bench_moe names its
own (with "impl": "torch"), so that bench_moe, run next on the same card, writes the
moe.mixtral_layer_vs_torch ratio (BENCHMARKS.md).

  python3 tools/bench/moe_layer_torch.py [--tokens 1,16,256] [--iters 50]
                                         [--results bench/results.json]
"""

import argparse
import datetime
import math
import sys

from results_file import append_records


def record_name(n, hidden, inter, experts, top_k):
    # Must match RecordName in tools/bench_moe.cc.
    return (f"moe.mixtral_layer (tokens {n}, hidden {hidden}, inter {inter}, "
            f"{experts} experts, top-{top_k}, bf16)")


def moe_layer(torch, x, router, gate_up, down, top_k):
    """x [n, hidden] -> [n, hidden]; router [E, hidden], gate_up [E, 2 inter, hidden],
    down [E, hidden, inter] (Hugging Face's [out, in] orientation, gate rows before up)."""
    logits = x @ router.t()
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
    out = torch.zeros_like(x)
    inter = down.shape[2]
    for e in range(router.shape[0]):
        token, slot = torch.where(experts == e)
        if token.numel() == 0:
            continue
        rows = x.index_select(0, token)
        h = rows @ gate_up[e].t()
        h = torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]
        y = (h @ down[e].t()) * weights[token, slot].unsqueeze(-1)
        out.index_add_(0, token, y)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default="1,16,256")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--results", default="bench/results.json")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--inter", type=int, default=14336)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    a = p.parse_args()
    tokens = [int(t) for t in a.tokens.split(",") if t]
    if not tokens or min(tokens) <= 0 or a.iters <= 0 or not 0 < a.top_k <= a.experts:
        p.error("sizes must be > 0 and top-k <= experts")

    try:
        import torch
    except ImportError:
        print("moe_layer_torch: PyTorch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("moe_layer_torch: no CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(1)

    def uniform(shape, bound):
        t = torch.empty(shape, device=dev, dtype=torch.float32)
        return t.uniform_(-bound, bound, generator=gen).to(torch.bfloat16)

    E, H, I = a.experts, a.hidden, a.inter
    router = uniform((E, H), math.sqrt(3.0 / H))
    gate_up = uniform((E, 2 * I, H), math.sqrt(3.0 / H))
    down = uniform((E, H, I), math.sqrt(3.0 / I))
    card = torch.cuda.get_device_name(dev)
    print(f"MoE layer: hidden {H}, inter {I}, {E} experts, top-{a.top_k}, bf16, "
          f"torch {torch.__version__} on {card}")

    records = []
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    command = "python3 tools/bench/moe_layer_torch.py " + " ".join(sys.argv[1:])
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    with torch.inference_mode():
        for n in tokens:
            x = uniform((n, H), 1.0)
            ms = []
            for i in range(a.iters + 5):
                start.record()
                moe_layer(torch, x, router, gate_up, down, a.top_k)
                stop.record()
                stop.synchronize()
                if i >= 5:
                    ms.append(start.elapsed_time(stop))
            ms.sort()
            median = ms[len(ms) // 2]
            print(f"tokens {n:4d}: median {median:.3f} ms (min {ms[0]:.3f}, max {ms[-1]:.3f})")
            records.append({
                "name": record_name(n, H, I, E, a.top_k),
                "impl": "torch",
                "value": median,
                "unit": "ms",
                "baseline": None,
                "ratio": None,
                "target": None,
                "card": card,
                "date": date,
                "command": command.strip(),
            })

    append_records(a.results, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
