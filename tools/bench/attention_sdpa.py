#!/usr/bin/env python3
"""The PyTorch peer of tools/bench_attention's prefill: causal torch SDPA in bf16.

torch.nn.functional.scaled_dot_product_attention(is_causal=True) on one sequence of S tokens at
bench_attention's shape: q [1, 32, S, 128], k and v [1, 8, S, 128] (GQA, 4 query heads per KV
head), U(-1, 1), the default scale 1/sqrt(128). Each backend is pinned with
torch.nn.attention.sdpa_kernel: FLASH_ATTENTION and CUDNN_ATTENTION. GQA goes through
enable_gqa=True; where the pinned backend (or this torch) refuses that, k and v are repeated to
32 heads (repeat_interleave, as transformers' repeat_kv) outside the timed call, and the record's
command says which. A backend that cannot run these inputs at all is reported as unavailable
(a record with a null value), not a crash. Times are CUDA-event medians over --iters calls after 5
warm-ups; the figure is TFLOP/s with bench_attention's FLOP count (4 * S * S / 2 * 32 * 128).

Appends one record per (S, backend) to --results, named as bench_attention names its own
(attention.prefill_4k.tflops, "impl": "torch-flash" or "torch-cudnn"), so that bench_attention,
run next on the same card, writes attention.prefill_4k.vs_sdpa against the faster backend
(BENCHMARKS.md).

  python3 tools/bench/attention_sdpa.py [--lengths 4096,16384] [--iters 20]
                                        [--results bench/results.json]
"""

import argparse
import datetime
import sys

from results_file import append_records

Q_HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
WARMUP = 5


def label(n):
    # Must match Label in tools/bench_attention.cc.
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def record_name(n):
    # Must match the prefill record name in tools/bench_attention.cc.
    return f"attention.prefill_{label(n)}.tflops"


def prefill_flops(n):
    # Q·K^T and P·V over the n * n / 2 causal (query, key) pairs, 2 * head_dim FLOPs each, per
    # query head: PrefillFlops in tools/bench_attention.cc.
    return 4.0 * n * n / 2.0 * Q_HEADS * HEAD_DIM


def time_backend(torch, backend, q, k, v, iters):
    """Median ms of causal SDPA pinned to `backend` and how GQA was expressed.

    q [1, 32, S, 128], k/v [1, 8, S, 128]. Raises when the backend runs neither form."""
    from torch.nn.attention import sdpa_kernel
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with sdpa_kernel(backend):
        try:
            sdpa(q, k, v, is_causal=True, enable_gqa=True)
            torch.cuda.synchronize()
            gqa = "enable_gqa=True"

            def call():
                return sdpa(q, k, v, is_causal=True, enable_gqa=True)
        except Exception as gqa_error:  # noqa: BLE001 - a refusal of any kind: try the other form
            group = Q_HEADS // KV_HEADS
            k_rep = k.repeat_interleave(group, dim=1)  # [1, 32, S, 128]
            v_rep = v.repeat_interleave(group, dim=1)
            try:
                sdpa(q, k_rep, v_rep, is_causal=True)
                torch.cuda.synchronize()
            except Exception as rep_error:  # noqa: BLE001
                raise RuntimeError(f"enable_gqa: {first_line(gqa_error)}; "
                                   f"k/v repeated: {first_line(rep_error)}") from rep_error
            gqa = f"k/v repeated to {Q_HEADS} heads (enable_gqa refused: {first_line(gqa_error)})"

            def call():
                return sdpa(q, k_rep, v_rep, is_causal=True)

        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        ms = []
        for i in range(iters + WARMUP):
            start.record()
            call()
            stop.record()
            stop.synchronize()
            if i >= WARMUP:
                ms.append(start.elapsed_time(stop))
    ms.sort()
    return ms[len(ms) // 2], gqa


def first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="4096,16384", help="tokens of the one sequence")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--results", default="bench/results.json")
    a = p.parse_args()
    lengths = [int(t) for t in a.lengths.split(",") if t]
    if not lengths or min(lengths) <= 0 or a.iters <= 0:
        p.error("lengths and iters must be > 0")

    try:
        import torch
        from torch.nn.attention import SDPBackend
    except ImportError as e:
        print(f"attention_sdpa: PyTorch with torch.nn.attention is not installed ({e})",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("attention_sdpa: no CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(1)

    def uniform(shape):
        t = torch.empty(shape, device=dev, dtype=torch.float32)
        return t.uniform_(-1.0, 1.0, generator=gen).to(torch.bfloat16)

    card = torch.cuda.get_device_name(dev)
    print(f"causal SDPA: {Q_HEADS} q / {KV_HEADS} kv heads, head_dim {HEAD_DIM}, bf16, "
          f"torch {torch.__version__} on {card}")
    backends = [("torch-flash", SDPBackend.FLASH_ATTENTION),
                ("torch-cudnn", SDPBackend.CUDNN_ATTENTION)]

    records = []
    ran = 0
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    command = ("python3 tools/bench/attention_sdpa.py " + " ".join(sys.argv[1:])).strip()
    with torch.inference_mode():
        for n in lengths:
            q = uniform((1, Q_HEADS, n, HEAD_DIM))
            k = uniform((1, KV_HEADS, n, HEAD_DIM))
            v = uniform((1, KV_HEADS, n, HEAD_DIM))
            for impl, backend in backends:
                pinned = getattr(backend, "name", backend)
                how = f"torch {torch.__version__}, sdpa_kernel({pinned})"
                try:
                    ms, gqa = time_backend(torch, backend, q, k, v, a.iters)
                except Exception as e:  # noqa: BLE001 - report, then go on with the next one
                    print(f"S {n:6d} {impl}: unavailable ({first_line(e)})")
                    value, note = None, f"{how}: unavailable: {first_line(e)}"
                else:
                    value = prefill_flops(n) / (ms * 1e-3) / 1e12
                    print(f"S {n:6d} {impl}: median {ms:.3f} ms -> {value:.1f} TFLOP/s ({gqa})")
                    note = f"{how}, {gqa}, median {ms:.3f} ms"
                    ran += 1
                records.append({
                    "name": record_name(n),
                    "impl": impl,
                    "value": value,
                    "unit": "TFLOP/s",
                    "baseline": None,
                    "ratio": None,
                    "target": None,
                    "card": card,
                    "date": date,
                    "command": f"{command} ({note})",
                })
            del q, k, v

    append_records(a.results, records)
    # Without one backend that ran, bench_attention has no baseline: fail the suite's step.
    return 0 if ran else 1


if __name__ == "__main__":
    sys.exit(main())
