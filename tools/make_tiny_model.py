#!/usr/bin/env python3
"""Writes the tiny model the embedded default config serves (models/tiny): a 2-layer Llama with
seeded random fp32 weights, shaped to a given tokenizer. Deterministic: the same arguments give
byte-identical files. Standard library only (no numpy/torch), so it runs on any machine.

  tools/make_tiny_model.py --tokenizer-dir DIR --out models/tiny
"""
import argparse
import json
import os
import random
import shutil
import struct

HIDDEN, LAYERS, HEADS, KV_HEADS, INTER, MAX_POS = 64, 2, 4, 2, 128, 2048


def vocab_size(tokenizer_json):
    with open(tokenizer_json, encoding="utf-8") as f:
        tok = json.load(f)
    ids = list(tok["model"]["vocab"].values()) + [t["id"] for t in tok.get("added_tokens", [])]
    return max(ids) + 1


def tensors(vocab, rng):
    head_dim = HIDDEN // HEADS

    def normal(shape, std):
        n = 1
        for d in shape:
            n *= d
        return shape, [rng.gauss(0.0, std) for _ in range(n)]

    def ones(n):
        return [n], [1.0 + rng.uniform(-0.1, 0.1) for _ in range(n)]

    out = {"model.embed_tokens.weight": normal([vocab, HIDDEN], 0.5),
           "model.norm.weight": ones(HIDDEN)}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        out[p + "input_layernorm.weight"] = ones(HIDDEN)
        out[p + "post_attention_layernorm.weight"] = ones(HIDDEN)
        out[p + "self_attn.q_proj.weight"] = normal([HEADS * head_dim, HIDDEN], 0.125)
        out[p + "self_attn.k_proj.weight"] = normal([KV_HEADS * head_dim, HIDDEN], 0.125)
        out[p + "self_attn.v_proj.weight"] = normal([KV_HEADS * head_dim, HIDDEN], 0.125)
        out[p + "self_attn.o_proj.weight"] = normal([HIDDEN, HEADS * head_dim], 0.125)
        out[p + "mlp.gate_proj.weight"] = normal([INTER, HIDDEN], 0.125)
        out[p + "mlp.up_proj.weight"] = normal([INTER, HIDDEN], 0.125)
        out[p + "mlp.down_proj.weight"] = normal([HIDDEN, INTER], 0.09)
    return out


def write_safetensors(path, named):
    header, blobs, offset = {}, [], 0
    for name in sorted(named):
        shape, values = named[name]
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # align the data section
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-dir", required=True,
                    help="holds tokenizer.json and tokenizer_config.json (copied along)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20261127)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    vocab = vocab_size(os.path.join(args.tokenizer_dir, "tokenizer.json"))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        src = os.path.join(args.tokenizer_dir, name)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(args.out, name))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": MAX_POS, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "tie_word_embeddings": True, "dtype": "float32",
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    # bos/eos from tokenizer_config.json's tokens; the end-of-text token also ends generation.
    with open(os.path.join(args.tokenizer_dir, "tokenizer.json"), encoding="utf-8") as f:
        ids = {t["content"]: t["id"] for t in json.load(f).get("added_tokens", [])}
    with open(os.path.join(args.tokenizer_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        tok_config = json.load(f)
    gen = {"bos_token_id": ids[tok_config["bos_token"]],
           "eos_token_id": sorted({ids[tok_config["eos_token"]]} |
                                  ({ids["<|end_of_text|>"]} if "<|end_of_text|>" in ids else set()))}
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(args.out, "model.safetensors"),
                      tensors(vocab, random.Random(args.seed)))
    print(f"wrote {args.out}: vocab {vocab}")


if __name__ == "__main__":
    main()
