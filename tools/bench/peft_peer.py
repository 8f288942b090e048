#!/usr/bin/env python3
"""The HF PEFT peer of tools/bench/lora_suite.sh: transformers + peft on a random-weight model of a
config.json's shape (bf16, sdpa, on the GPU), serving the requests of a slice
(tools/bench/lora_client.py slice) in two ways, S-LoRA's PEFT baselines:

  single  one adapter at a time: the slice's requests grouped by adapter, each group one
          `generate` batch after set_adapter (PEFT's usual serving: swap, then batch)
  mixed   PEFT's mixed-adapter batch: the whole slice (in batches of up to --max-batch) as one
          `generate(..., adapter_names=[...])` call, each row under its own adapter

Prompts are left-padded with an attention mask; every row generates max_new_tokens = the batch's
longest planned output (min_new_tokens the same, no EOS stop): a static batch runs to its
longest request, and only each request's own planned tokens are counted. Throughput = those
tokens / the wall time of all the mode's batches (torch.cuda.synchronize() around each), after a
warm-up call per mode. Modes run mixed first, then single; a mode not started or not finished
within --budget-s is reported as partial over the batches it completed (its `complete` is false).

  python3 tools/bench/peft_peer.py --config tools/bench/llama3-8b --slice slice.json \
      --out peft.json [--budget-s 200] [--max-batch 64] [--modes mixed,single]
"""
import argparse
import json
import sys
import time


def batches_of(items, n):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--config', default='tools/bench/llama3-8b')
    ap.add_argument('--slice', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--budget-s', type=float, default=200,
                    help='no batch starts after this many seconds from the start (0: no limit)')
    ap.add_argument('--max-batch', type=int, default=64)
    ap.add_argument('--modes', default='mixed,single')
    args = ap.parse_args()
    began = time.perf_counter()

    import torch
    import transformers
    import peft
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    with open(args.slice) as f:
        doc = json.load(f)
    requests = doc['requests']
    config = AutoConfig.from_pretrained(args.config)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device('cuda'):
        base = AutoModelForCausalLM.from_config(config, attn_implementation='sdpa')
    base.eval()
    dirs = {}
    for r in requests:
        dirs.setdefault(r['adapter'], r['dir'])
    names = sorted(dirs)
    model = PeftModel.from_pretrained(base, dirs[names[0]], adapter_name=names[0])
    for n in names[1:]:
        model.load_adapter(dirs[n], adapter_name=n)
    model.eval()
    build_s = time.perf_counter() - began
    print('model and %d adapters built in %.1f s' % (len(names), build_s), flush=True)

    def run_batch(batch, adapter_names=None, steps=None):
        """One generate over `batch` (left-padded); returns (seconds, counted tokens)."""
        width = max(len(r['prompt']) for r in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            p = torch.tensor(r['prompt'], dtype=torch.long)
            ids[i, width - len(p):] = p
            mask[i, width - len(p):] = 1
        ids, mask = ids.cuda(), mask.cuda()
        new = steps or max(r['max_tokens'] for r in batch)
        kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                      do_sample=False, pad_token_id=0, eos_token_id=None)
        if adapter_names is not None:
            kwargs['adapter_names'] = adapter_names
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**kwargs)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if out.shape[1] - width != new:
            sys.exit('peft_peer: generated %d tokens, asked %d' % (out.shape[1] - width, new))
        return dt, sum(min(r['max_tokens'], new) for r in batch)

    def over_budget():
        return args.budget_s > 0 and time.perf_counter() - began > args.budget_s

    modes = {}
    for mode in [m for m in args.modes.split(',') if m]:
        if mode == 'mixed':
            plan = [(b, [r['adapter'] for r in b]) for b in batches_of(requests, args.max_batch)]
        elif mode == 'single':
            plan = []
            for n in names:
                group = [r for r in requests if r['adapter'] == n]
                plan += [(b, n) for b in batches_of(group, args.max_batch)]
        else:
            sys.exit('peft_peer: unknown mode %s' % mode)
        result = dict(batches=len(plan), batches_done=0, seconds=0.0, output_tokens=0,
                      requests=0, complete=False)
        modes[mode] = result
        if over_budget():
            print('%s: skipped (past --budget-s %g)' % (mode, args.budget_s), flush=True)
            continue
        # Warm-up: a few tokens of the mode's first batch.
        first, who = plan[0]
        if mode == 'single':
            model.set_adapter(who)
        run_batch(first, who if mode == 'mixed' else None, steps=4)
        for batch, who in plan:
            if over_budget():
                break
            if mode == 'single':
                model.set_adapter(who)
                dt, tokens = run_batch(batch)
            else:
                dt, tokens = run_batch(batch, who)
            result['batches_done'] += 1
            result['seconds'] += dt
            result['output_tokens'] += tokens
            result['requests'] += len(batch)
            print('%s batch %d/%d: %d requests, %d tokens in %.1f s' % (
                mode, result['batches_done'], len(plan), len(batch), tokens, dt), flush=True)
        result['complete'] = result['batches_done'] == len(plan)
        result['output_throughput'] = (result['output_tokens'] / result['seconds']
                                       if result['seconds'] > 0 else 0)
        print('%s: %.1f tok/s over %d of %d requests%s' % (
            mode, result['output_throughput'], result['requests'], len(requests),
            '' if result['complete'] else ' (partial: --budget-s)'), flush=True)

    out = dict(tool='tools/bench/peft_peer.py',
               peer='transformers generate + PEFT (bf16, sdpa, dynamic cache, eager)',
               config=args.config, slice=args.slice, requests=len(requests), adapters=names,
               card=torch.cuda.get_device_name(0), torch=torch.__version__,
               transformers=transformers.__version__, peft=peft.__version__,
               build_seconds=build_s, seconds=time.perf_counter() - began,
               peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9, modes=modes)
    with open(args.out, 'w') as f:
        json.dump(out, f, indent=1)
    print('wrote %s in %.1f s' % (args.out, out['seconds']))
    return 0 if all(m['complete'] for m in modes.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
