#!/usr/bin/env python3
"""The transformers peer of the serving sweep (tools/bench/serve_suite.sh): at each concurrency c,
c requests served as ONE static batch by `generate` (bf16, static cache, sdpa), on the GPU.

Builds a random-weight model of a config.json's shape once (no checkpoint), as
tools/bench/hf_generate.py does. Per concurrency c: c random prompts of `prompt` token ids drawn
uniformly over the vocabulary (as `arbor bench serve --vocab-size V` draws them), `output` greedy
tokens each (min_new_tokens = max_new_tokens, no EOS stop), after a short warm-up call. Figures,
named as `arbor bench serve --json` names them:

  TTFT  the call's start to the first generated token (a stopping criterion, which generate calls
        once per step after appending the step's tokens, synchronizes and stamps the time)
  TPOT  (E2E - TTFT) / (output - 1)
  E2E   the call's start to its return (torch.cuda.synchronize() on both sides)
  output_throughput  c * output / E2E

A static batch has one TTFT, one TPOT and one E2E for all its requests, so p50 = p90 = p99 = mean
(the JSON says so in `note`). Writes one JSON file with a list of points; prints a line per point.

  python3 tools/bench/hf_serve_peer.py --config tools/bench/llama3-8b \
      --concurrency 1,8,32,128,256 --prompt 512 --output 128 --out hf_serve.json
"""
import argparse
import json
import sys
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, StoppingCriteria, StoppingCriteriaList

NOTE = ('one static batch per concurrency: all c requests share the batch\'s TTFT, TPOT and E2E, '
        'so p50 = p90 = p99 = mean')


class StepClock(StoppingCriteria):
    """When each step's tokens exist: generate calls its stopping criteria once per step, after
    appending the step's tokens; this one waits for the device, stamps the time and never stops
    anything. (generate already waits for the device every step, to test whether all sequences
    are done, so the extra synchronization costs about nothing.)"""

    def __init__(self):
        self.stamps = []

    def __call__(self, input_ids, scores, **kwargs):
        torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)


class StopAfter(StoppingCriteria):
    """Stops the whole batch after `steps` generated tokens (the warm-up call)."""

    def __init__(self, steps):
        self.steps = steps
        self.calls = 0

    def __call__(self, input_ids, scores, **kwargs):
        self.calls += 1
        done = self.calls >= self.steps
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def same(x):
    """One latency as a percentile summary: a static batch's requests all share it."""
    return dict(count=1, mean=x, p50=x, p90=x, p99=x, max=x)


def parse_list(text):
    values = [int(v) for v in text.split(',') if v]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError('expected positive integers separated by commas')
    return values


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--config', default='tools/bench/llama3-8b')
    ap.add_argument('--concurrency', type=parse_list, default=[1, 8, 32, 128, 256])
    ap.add_argument('--prompt', type=int, default=512)
    ap.add_argument('--output', type=int, default=128)
    ap.add_argument('--warmup-steps', type=int, default=4,
                    help='tokens the warm-up call generates before it is stopped (default 4)')
    ap.add_argument('--budget-s', type=float, default=200,
                    help='no point starts after this many seconds from the start; the rest are '
                    'listed as skipped (0: no limit)')
    ap.add_argument('--compile', choices=['auto', 'off'], default='auto',
                    help='auto: what generate does with a static cache (as hf_generate.py); '
                    'off: disable_compile=True')
    ap.add_argument('--out', required=True)
    args = ap.parse_args()
    if args.output < 2:
        ap.error('--output must be at least 2 (TPOT needs two tokens)')
    began = time.perf_counter()

    config = AutoConfig.from_pretrained(args.config)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device('cuda'):
        model = AutoModelForCausalLM.from_config(config, attn_implementation='sdpa')
    model.eval()
    vocab = config.vocab_size
    kwargs = dict(max_new_tokens=args.output, min_new_tokens=args.output, do_sample=False,
                  cache_implementation='static', pad_token_id=0, eos_token_id=None)
    if args.compile == 'off':
        kwargs['disable_compile'] = True
    build_s = time.perf_counter() - began
    print('model built in %.1f s' % build_s, flush=True)

    points, skipped = [], []
    for c in args.concurrency:
        if args.budget_s > 0 and time.perf_counter() - began > args.budget_s:
            skipped.append(c)
            print('concurrency %d: skipped (past --budget-s %g)' % (c, args.budget_s), flush=True)
            continue
        point_start = time.perf_counter()
        gen = torch.Generator(device='cuda').manual_seed(c)
        ids = torch.randint(0, vocab, (c, args.prompt), device='cuda', generator=gen)
        mask = torch.ones_like(ids)
        with torch.no_grad():
            # Warm-up: the same call, stopped after a few tokens. Its static cache is sized for
            # prompt + output as the timed call's (generate keeps it for the same batch size), so
            # kernels, the cache and any compiled decode graph are ready without a full wave.
            model.generate(input_ids=ids, attention_mask=mask,
                           stopping_criteria=StoppingCriteriaList([StopAfter(args.warmup_steps)]),
                           **kwargs)
            clock = StepClock()
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = model.generate(input_ids=ids, attention_mask=mask,
                                 stopping_criteria=StoppingCriteriaList([clock]), **kwargs)
            torch.cuda.synchronize()
            end = time.perf_counter()
        generated = out.shape[1] - args.prompt
        if generated != args.output:
            sys.exit('concurrency %d: generated %d tokens, asked %d' % (c, generated, args.output))
        if len(clock.stamps) != args.output:
            sys.exit('concurrency %d: the step clock saw %d steps, expected %d'
                     % (c, len(clock.stamps), args.output))
        first_token = clock.stamps[0]
        e2e = end - start
        ttft = first_token - start
        tpot = (e2e - ttft) / (args.output - 1)
        point = dict(label='concurrency=%d' % c, mode='static batch', concurrency=c,
                     requests=c, completed=c, failed=0, prompt_tokens=c * args.prompt,
                     output_tokens=c * args.output, duration_s=e2e,
                     request_throughput=c / e2e, output_throughput=c * args.output / e2e,
                     ttft_ms=same(1e3 * ttft), tpot_ms=same(1e3 * tpot), e2e_ms=same(1e3 * e2e),
                     point_seconds=time.perf_counter() - point_start)
        points.append(point)
        print('concurrency %4d: %8.1f out tok/s  TTFT %8.1f ms  TPOT %7.2f ms  E2E %8.1f ms  '
              '(point %.1f s)' % (c, point['output_throughput'], 1e3 * ttft, 1e3 * tpot,
                                   1e3 * e2e, point['point_seconds']), flush=True)

    result = dict(tool='tools/bench/hf_serve_peer.py',
                  peer='transformers generate (bf16, static cache, sdpa), one static batch per '
                  'concurrency',
                  note=NOTE, config=args.config, prompt=args.prompt, output=args.output,
                  vocab_size=vocab, compile=args.compile,
                  compiled=hasattr(model, '_compiled_call'),
                  card=torch.cuda.get_device_name(0), torch=torch.__version__,
                  transformers=transformers.__version__, build_seconds=build_s,
                  seconds=time.perf_counter() - began,
                  peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9,
                  points=points, skipped=skipped)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)
    print('wrote %d points to %s in %.1f s (compiled decode: %s)'
          % (len(points), args.out, result['seconds'], result['compiled']))
    return 1 if skipped else 0


if __name__ == '__main__':
    sys.exit(main())
