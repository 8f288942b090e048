#!/usr/bin/env python3
"""Writes the seed corpus of //tests/tokenizer:tokenizer_fuzz_test into this directory.

Byte 0 of an input picks the tokenizer (value % 6: llama3, gpt2, qwen2, llama2, mistral,
metaspace), bit 0x40 add_special_tokens and bit 0x80 skip_special_tokens; the rest is text.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = {
    "llama3_chat": (0x40, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                          "Hi!<|eot_id|>"),
    "llama3_ws": (0x80, "a   b\t\t\n\n  c \r\n   "),
    "gpt2_added": (0x01, "x   <mask>   y <rs>  tool_call atool_callb <|endoftext|>"),
    "gpt2_contractions": (0xC1, "It's they're we've I'm you'll he'd DON'T 1234567"),
    "qwen2_nfc": (0x42, "Ame\u0301lie cafe\u0301 <|im_start|>user\n\u4f60\u597d"
                        "<tool_call>{}</tool_call>"),
    "qwen2_digits": (0x02, "3.14159 1,000,000 \u0663\u0664"),
    "llama2_bytes": (0x43, "\U0001F468\u200d\U0001F469\u200d\U0001F467 "
                           "\u65e5\u672c\u8a9e <s>x</s>"),
    "llama2_tool": (0x83, " <tool> a<tool>b \u2581x"),
    "mistral_inst": (0x44, "[INST] Hello [/INST] <s>first"),
    "mistral_spaces": (0x04, "   leading and trailing   "),
    "metaspace_mixed": (0x05, "Zalgo Z\u0335a\u0334 \ufffd \u00a0\u3000 \U0001F1EB\U0001F1F7"),
}
RAW = {
    "llama3_invalid_utf8": bytes([0x40]) + b"ok \xe4\xbd then \xff\xfe and \xed\xa0\x80",
    "llama2_ids_partial_char": bytes([0x03, 0xE7, 0x00, 0xC0, 0x00, 0xA3, 0x00, 0x05, 0x00]),
    "metaspace_ids_out_of_range": bytes([0x05]) + b"\xff\xff\xaf\x04\x00\x00",
}


def main():
    for name, (flags, text) in SEEDS.items():
        with open(os.path.join(HERE, name + ".txt"), "wb") as f:
            f.write(bytes([flags]) + text.encode("utf-8"))
    for name, data in RAW.items():
        with open(os.path.join(HERE, name + ".bin"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
