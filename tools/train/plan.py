"""Pure helpers of train_all.py (standard library only, checked by selftest.py): how a stage's
time is planned, how many steps an adapter may take, which policy checkpoint is kept, and how
specific an adapter is.
"""
import math


def stage_seconds(left_s, reserve_s, stages, shares, overhead_s, min_s=5.0):
    """Training seconds for stages[0], the next stage to run, given the wall clock left.

    What is left, less the final reserve and the evaluation/saving overhead of every stage still
    to run, is shared among those stages in proportion to their shares; stages[0] gets its part.
    Recomputed before each stage, so a stage that overran (or finished early) shrinks (grows)
    the later ones in proportion instead of starving the last."""
    avail = left_s - reserve_s - sum(overhead_s.get(s, 0.0) for s in stages)
    total = sum(shares[s] for s in stages)
    return max(avail * shares[stages[0]] / total, min_s) if total > 0 else min_s


def adapter_max_steps(train_tokens, epochs, batch_rows, seq):
    """Steps that read `epochs` passes over a sub-corpus of train_tokens tokens (at least 1)."""
    return max(1, math.ceil(epochs * train_tokens / float(batch_rows * seq)))


def adapter_lr(rank, base_lr=1e-3, ref_rank=16):
    """LoRA learning rate by rank: base_lr up to ref_rank, then falling as 1/sqrt(rank).
    PEFT's alpha = 2r keeps the scale alpha/r = 2 at every rank, but a higher rank still moves
    more directions at once; rank 64 overfitted its small sub-corpus at 1e-3."""
    return base_lr * min(1.0, math.sqrt(ref_rank / float(rank)))


def eval_points(max_steps, n):
    """The steps (1..max_steps) at which an adapter's own-source perplexity is checked: n
    points spread evenly, the last at max_steps."""
    n = max(1, min(n, max_steps))
    return sorted({max(1, round(max_steps * (i + 1) / n)) for i in range(n)})


def specificity(base, row, own):
    """How specific an adapter is to its own source, from perplexities (source -> ppl) without
    (base) and with it (row). An improvement ratio is base / adapter (> 1: lower perplexity).
    Returns (own_ratio, max_other_ratio, own_ratio / max_other_ratio): the last is > 1 when the
    adapter helps its own source more than any other."""
    ratio = {s: base[s] / row[s] for s in row if s in base and row[s] > 0}
    others = [r for s, r in ratio.items() if s != own]
    mo = max(others) if others else 1.0
    return ratio[own], mo, ratio[own] / mo


def closest_check(checks, target):
    """Index of the check (accuracy values) closest to target; ties go to the earlier one."""
    best = None
    for i, a in enumerate(checks):
        if best is None or abs(a - target) < abs(checks[best] - target):
            best = i
    return best


def policy_should_stop(acc, target):
    """The policy trains until its dev accuracy first reaches the target."""
    return acc >= target
