#!/usr/bin/env python3
"""Random PEFT LoRA adapters for a model config's shape, for tools/bench/lora_suite.sh: K distinct
adapter directories per rank (PEFT's layout: adapter_config.json + adapter_model.safetensors,
bf16), which the suite registers under many names (the server keeps a host copy, a budget slot
and GPU residency per registered name, so N names cost the server what N distinct adapters
would; only the disk holds fewer).

Values: A uniform in +-1/sqrt(in_features) (the scale of PEFT's Kaiming-uniform init), B uniform
in +-b_scale (PEFT starts B at zero, which would leave outputs unchanged; a small random B moves
them), lora_alpha = 2r (scale 2). Seeded: the same arguments give the same bytes.

  tools/bench/make_adapters.py --config tools/bench/llama3-8b/config.json --out DIR \
      [--ranks 8,16,32,64] [--per-rank 2] [--targets q_proj,v_proj] [--seed 0]

Writes DIR/r<rank>-<k>/ and DIR/manifest.json: {"adapters": [{"dir", "rank", "bytes"}...],
"targets", "config", "bytes_by_rank"}, in the order the suite cycles them (ranks interleaved:
r8-0, r16-0, r32-0, r64-0, r8-1, ...). numpy makes large shapes fast; without it a pure-Python
path writes small (test) shapes.
"""
import argparse
import json
import os
import random
import struct
import sys

ATTENTION = ('q_proj', 'k_proj', 'v_proj', 'o_proj')
MLP = ('gate_proj', 'up_proj', 'down_proj')


def target_shape(cfg, target):
    """(in_features, out_features) of a target module, as engine/lora/adapter.cc's
    LoraTargetShape."""
    hidden = cfg['hidden_size']
    heads = cfg['num_attention_heads']
    head_dim = cfg.get('head_dim') or hidden // heads
    q = heads * head_dim
    kv = cfg.get('num_key_value_heads', heads) * head_dim
    inter = cfg['intermediate_size']
    return {'q_proj': (hidden, q), 'k_proj': (hidden, kv), 'v_proj': (hidden, kv),
            'o_proj': (q, hidden), 'gate_proj': (hidden, inter), 'up_proj': (hidden, inter),
            'down_proj': (inter, hidden)}[target]


def adapter_tensors(cfg, rank, targets):
    """[(name, shape, bound)] of one adapter, in PEFT's names."""
    out = []
    for layer in range(cfg['num_hidden_layers']):
        for t in targets:
            in_f, out_f = target_shape(cfg, t)
            part = 'self_attn' if t in ATTENTION else 'mlp'
            prefix = 'base_model.model.model.layers.%d.%s.%s.' % (layer, part, t)
            out.append((prefix + 'lora_A.weight', [rank, in_f], None))
            out.append((prefix + 'lora_B.weight', [out_f, rank], None))
    return out


def adapter_bytes(cfg, rank, targets):
    """bf16 bytes of one adapter's weights."""
    total = 0
    for _, shape, _ in adapter_tensors(cfg, rank, targets):
        total += 2 * shape[0] * shape[1]
    return total


class Bf16Source:
    """Uniform random bf16 bytes in +-bound: numpy when present, else pure Python."""

    def __init__(self, seed):
        try:
            import numpy
            self.np = numpy
            self.rng = numpy.random.default_rng(seed)
        except ImportError:
            self.np = None
            self.rng = random.Random(seed)

    def uniform(self, n, bound):
        if self.np is not None:
            x = self.rng.uniform(-bound, bound, n).astype(self.np.float32)
            # bf16 = the upper half of the fp32 bits, rounded to nearest even.
            u = x.view(self.np.uint32)
            u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
            return u.astype('<u2').tobytes()
        if n > 5_000_000:
            sys.exit('make_adapters: %d values without numpy would take minutes; install numpy'
                     % n)
        words = struct.unpack('<%dI' % n, struct.pack(
            '<%df' % n, *[self.rng.uniform(-bound, bound) for _ in range(n)]))
        return struct.pack('<%dH' % n, *[(w + 0x7FFF + ((w >> 16) & 1)) >> 16 for w in words])


def write_adapter(path, cfg, rank, targets, source, b_scale, base_model):
    os.makedirs(path, exist_ok=True)
    header, sizes, offset = {}, [], 0
    tensors = adapter_tensors(cfg, rank, targets)
    for name, shape, _ in sorted(tensors):
        n = 2 * shape[0] * shape[1]
        header[name] = {'dtype': 'BF16', 'shape': shape, 'data_offsets': [offset, offset + n]}
        offset += n
    header['__metadata__'] = {'format': 'pt'}
    text = json.dumps(header, separators=(',', ':')).encode()
    text += b' ' * (-len(text) % 8)
    with open(os.path.join(path, 'adapter_model.safetensors'), 'wb') as f:
        f.write(struct.pack('<Q', len(text)))
        f.write(text)
        for name, shape, _ in sorted(tensors):
            n = shape[0] * shape[1]
            bound = 1.0 / shape[1] ** 0.5 if name.endswith('lora_A.weight') else b_scale
            f.write(source.uniform(n, bound))
    config = {
        'base_model_name_or_path': base_model, 'bias': 'none', 'fan_in_fan_out': False,
        'inference_mode': True, 'init_lora_weights': True, 'lora_alpha': 2 * rank,
        'lora_dropout': 0.0, 'modules_to_save': None, 'peft_type': 'LORA', 'r': rank,
        'rank_pattern': {}, 'alpha_pattern': {}, 'target_modules': list(targets),
        'task_type': 'CAUSAL_LM', 'use_dora': False, 'use_rslora': False,
    }
    with open(os.path.join(path, 'adapter_config.json'), 'w') as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write('\n')
    return offset


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--config', required=True, help='the base model\'s config.json (or its dir)')
    ap.add_argument('--out', required=True)
    ap.add_argument('--ranks', default='8,16,32,64')
    ap.add_argument('--per-rank', type=int, default=2, help='distinct directories per rank')
    ap.add_argument('--targets', default='q_proj,v_proj')
    ap.add_argument('--b-scale', type=float, default=0.01, help='B uniform in +-this')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    config_path = args.config
    if os.path.isdir(config_path):
        config_path = os.path.join(config_path, 'config.json')
    with open(config_path) as f:
        cfg = json.load(f)
    ranks = [int(r) for r in args.ranks.split(',') if r]
    targets = [t for t in args.targets.split(',') if t]
    for t in targets:
        if t not in ATTENTION + MLP:
            ap.error('unknown target module %s' % t)
    if not ranks or min(ranks) < 1 or args.per_rank < 1:
        ap.error('--ranks and --per-rank must be positive')
    source = Bf16Source(args.seed)
    adapters = []
    for k in range(args.per_rank):
        for r in ranks:
            name = 'r%d-%d' % (r, k)
            n = write_adapter(os.path.join(args.out, name), cfg, r, targets, source,
                              args.b_scale, os.path.dirname(os.path.abspath(config_path)))
            adapters.append({'dir': name, 'rank': r, 'bytes': n})
    manifest = {'config': os.path.abspath(config_path), 'targets': targets, 'ranks': ranks,
                'per_rank': args.per_rank, 'dtype': 'bfloat16', 'b_scale': args.b_scale,
                'bytes_by_rank': {str(r): adapter_bytes(cfg, r, targets) for r in ranks},
                'adapters': adapters}
    with open(os.path.join(args.out, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write('\n')
    total = sum(a['bytes'] for a in adapters)
    print('make_adapters: %d adapters (ranks %s x %d, targets %s) in %s: %.3g MB on disk; per '
          'adapter %s' % (len(adapters), args.ranks, args.per_rank, ','.join(targets), args.out,
                          total / 1e6, ', '.join('r%s %.3g MB' % (r, b / 1e6) for r, b in
                                                 manifest['bytes_by_rank'].items())))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
