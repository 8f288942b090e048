#!/usr/bin/env python3
"""Writes the seed corpus of //tests/checkpoint:safetensors_fuzz_test into this directory.

Small safetensors file images, valid and broken in one way each, so the fuzzer starts from the
interesting shapes of the format. Rerun after changing a seed: python3 make_seeds.py
"""
import json
import os
import struct


def image(header, data=b"", pad=True, header_len=None):
    if isinstance(header, bytes):
        text = header
    else:
        text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    n = len(text) if header_len is None else header_len
    return struct.pack("<Q", n) + text + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def all_dtypes():
    sizes = [("F64", 8), ("F32", 4), ("F16", 2), ("BF16", 2), ("I64", 8), ("I32", 4),
             ("I16", 2), ("I8", 1), ("U8", 1), ("BOOL", 1), ("F8_E4M3", 1), ("F8_E5M2", 1)]
    header, off = {}, 0
    for i, (d, s) in enumerate(sizes):
        header[f"t{i}_{d}"] = entry(d, [2], off, off + 2 * s)
        off += 2 * s
    return image(header, bytes(off))


SEEDS = {
    "valid_all_dtypes.safetensors": all_dtypes(),
    "valid_f32.safetensors": image({"w": entry("F32", [2, 2], 0, 16)}, bytes(range(16))),
    "valid_multi_meta.safetensors": image(
        {
            "__metadata__": {"format": "pt"},
            "embed.weight": entry("BF16", [3, 2], 0, 12),
            "norm.weight": entry("F16", [2], 12, 16),
            "ids": entry("I64", [1], 16, 24),
        },
        bytes(24),
    ),
    "valid_zero_elem.safetensors": image(
        {"a": entry("U8", [2], 0, 2), "e": entry("F32", [0, 7], 2, 2), "b": entry("I8", [1], 2, 3)},
        b"abc",
    ),
    "valid_empty.safetensors": image({}),
    "valid_scalar.safetensors": image({"s": entry("BF16", [], 0, 2)}, b"\x80\x3f"),
    "bad_gap.safetensors": image(
        {"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, bytes(12)),
    "bad_overlap.safetensors": image(
        {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, bytes(12)),
    "bad_span.safetensors": image({"w": entry("F32", [3, 4], 0, 10)}, bytes(10)),
    "bad_dtype.safetensors": image({"w": entry("Q4_K", [1], 0, 1)}, bytes(1)),
    "bad_header_len.safetensors": image({"w": entry("U8", [1], 0, 1)}, bytes(1), header_len=4096),
    "bad_utf8.safetensors": image(
        b'{"w\xff":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', bytes(1)),
    "bad_duplicate.safetensors": image(
        b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}',
        bytes(2),
    ),
}

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    for name, data in SEEDS.items():
        with open(os.path.join(here, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {here}")
