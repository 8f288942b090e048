#!/usr/bin/env python3
"""The transformers peer of bench_engine: `generate` in bf16 with a static KV cache, on the GPU.

Builds a random-weight model of a config.json's shape on the GPU (no checkpoint), then times one
wave as bench_engine runs it: `batch` random prompts of `prompt` tokens, `gen` greedy tokens each
(no EOS stop), from the call to its return, after one untimed warm-up wave. Writes
{"peer", "batch", "prompt", "gen", "tokens_per_s", "seconds", "card", ...} to --out, the file
`bench_engine --peer` reads to form serve.throughput_vs_hf in the same run on the same card.

  python3 tools/bench/hf_generate.py --config tools/bench/llama3-8b --batch 32 --prompt 512 \
      --gen 128 --out hf_b32.json
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tools/bench/llama3-8b")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    config = AutoConfig.from_pretrained(args.config)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.eval()
    vocab = config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.prompt), device="cuda")
    mask = torch.ones_like(ids)
    kwargs = dict(max_new_tokens=args.gen, min_new_tokens=args.gen, do_sample=False,
                  cache_implementation="static", pad_token_id=0, eos_token_id=None)

    def wave():
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        torch.cuda.synchronize()
        return time.perf_counter() - start, out.shape[1] - args.prompt

    wave()  # warm-up: kernels, the static cache's allocation
    seconds, generated = wave()
    assert generated == args.gen, f"generated {generated} tokens, asked {args.gen}"
    tokens_per_s = args.batch * args.gen / seconds
    result = dict(peer="transformers generate (bf16, static cache, sdpa)", batch=args.batch,
                  prompt=args.prompt, gen=args.gen, seconds=seconds, tokens_per_s=tokens_per_s,
                  card=torch.cuda.get_device_name(0), torch=torch.__version__,
                  transformers=transformers.__version__, config=args.config,
                  peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
