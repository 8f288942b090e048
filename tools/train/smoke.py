"""Stand-ins for HF tokenizers / transformers / peft, used only by `train_all.py --smoke`, so the
training loops, data pipeline and stage bookkeeping can be tested on a CPU machine that has
PyTorch but none of the Hugging Face libraries. Nothing here is saved for Arbor to load.
"""
import json
import math
import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F


class ByteTokenizer:
    """Bytes as ids, then the special tokens; splits special tokens out of text as HF does."""

    def __init__(self, specials):
        self.specials = list(specials)
        self._special_re = re.compile("(" + "|".join(re.escape(s) for s in self.specials) + ")")

    def get_vocab_size(self):
        return 256 + len(self.specials)

    def token_to_id(self, tok):
        return 256 + self.specials.index(tok) if tok in self.specials else None

    def encode_ids(self, text):
        ids = []
        for piece in self._special_re.split(text):
            if piece in self.specials:
                ids.append(self.token_to_id(piece))
            elif piece:
                ids.extend(piece.encode("utf-8"))
        return ids

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def save(self, path):
        with open(path, "w") as f:
            json.dump({"smoke": True, "specials": self.specials}, f)


class Config:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def to_dict(self):
        return dict(self.__dict__)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, hd = c.hidden_size, c.head_dim
        self.c = c
        self.q_proj = nn.Linear(h, c.num_attention_heads * hd, bias=False)
        self.k_proj = nn.Linear(h, c.num_key_value_heads * hd, bias=False)
        self.v_proj = nn.Linear(h, c.num_key_value_heads * hd, bias=False)
        self.o_proj = nn.Linear(c.num_attention_heads * hd, h, bias=False)
        self.gate_proj = nn.Linear(h, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(h, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, h, bias=False)
        self.n1 = nn.LayerNorm(h)
        self.n2 = nn.LayerNorm(h)

    def forward(self, x):
        c, (b, t, _) = self.c, x.shape
        y = self.n1(x)
        q = self.q_proj(y).view(b, t, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(y).view(b, t, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(y).view(b, t, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        rep = c.num_attention_heads // c.num_key_value_heads
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        i = torch.arange(t)
        allowed = i[:, None] >= i[None, :]
        if getattr(c, "sliding_window", None):
            allowed &= (i[:, None] - i[None, :]) < c.sliding_window
        att = (q @ k.transpose(-1, -2)) / math.sqrt(c.head_dim)
        att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
        x = x + self.o_proj((att @ v).transpose(1, 2).reshape(b, t, -1))
        y = self.n2(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


class Output:
    def __init__(self, logits):
        self.logits = logits
        self.aux_loss = None


class TinyLM(nn.Module):
    """A small causal LM with learned positions and Llama's module names (for the LoRA stand-in)."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.pos = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
        self.norm = nn.LayerNorm(c.hidden_size)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, input_ids=None, **_):
        x = self.embed(input_ids) + self.pos(torch.arange(input_ids.shape[1]))
        for layer in self.layers:
            x = layer(x)
        return Output(self.norm(x) @ self.embed.weight.t())

    def save_pretrained(self, out_dir, **_):
        os.makedirs(out_dir, exist_ok=True)
        torch.save(self.state_dict(), os.path.join(out_dir, "smoke_model.pt"))
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(self.config.to_dict(), f, indent=1)


class LoraLinear(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        self.base, self.scale = base, alpha / r
        self.lora_A = nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale


class LoraModel(nn.Module):
    """get_peft_model's effect: the base frozen, A/B pairs on the target Linears."""

    def __init__(self, base, r, alpha, targets):
        super().__init__()
        for p in base.parameters():
            p.requires_grad_(False)
        for name, mod in list(base.named_modules()):
            for child_name, child in list(mod.named_children()):
                if child_name in targets and isinstance(child, nn.Linear):
                    setattr(mod, child_name, LoraLinear(child, r, alpha))
        self.model, self.r = base, r

    def forward(self, input_ids=None, **kw):
        return self.model(input_ids=input_ids, **kw)

    def save_pretrained(self, out_dir, **_):
        os.makedirs(out_dir, exist_ok=True)
        sd = {k: v for k, v in self.state_dict().items() if "lora_" in k}
        torch.save(sd, os.path.join(out_dir, "smoke_adapter.pt"))
