#!/usr/bin/env python3
"""Trains issue 13's testbed in one run on a GPU host: tokenizer, dense Llama (+ chat tuning),
LoRA adapters, Mixtral MoE, Mistral sliding-window model, and the arithmetic policy + PRM.

  python3 tools/train/train_all.py --corpus train_data/corpus.tar.xz --out $OUT/testbed --budget-s 480

Needs torch, tokenizers, transformers and peft (the GPU host has them). `--smoke` runs every
stage at toy scale on the CPU with stand-ins for the Hugging Face libraries (tools/train/smoke.py),
to test the loops and data pipeline where those libraries are missing.

--budget-s is the wall clock of the whole run. Before each stage, what is left (less --reserve-s
and the evaluation/saving time OVERHEAD_S of every stage still to run) is shared among the
remaining stages by SHARES (plan.stage_seconds), measured by wall clock. --reuse DIR loads the
tokenizer, chat model and policy of a previous run instead (see tools/train/README.md). Stages run in priority order (dense + chat first: it becomes
models/testbed/chat) and each writes its outputs and report.json as soon as it ends, so a stage that
fails or runs out of time loses only itself. Weights are saved in bf16; every reported
perplexity/accuracy is computed in fp32 on the bf16-rounded weights, i.e. on exactly the saved
model (what Arbor loads), so Arbor's numbers can be compared with these.

Outputs under --out: tokenizer/, chat/ (chat-tuned dense; models/testbed/chat), dense-base/ (before chat
tuning), adapters/<name>/, moe/, swa/, policy/, prm/, eval/ (the documents and problems the
numbers were measured on), report.json, train.log.
"""
import argparse
import copy
import io
import json
import math
import os
import random
import sys
import tarfile
import time
import traceback

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import arith  # noqa: E402
import plan  # noqa: E402

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>", arith.STEP_TAG, "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>"]
BOS_T, EOD_T, EOT_T = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
# Qwen2's split regex: digits one by one (arithmetic), otherwise Llama-3's.
SPLIT_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = """{{- bos_token }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Model shapes. head_dim 64 everywhere (the fast attention kernels). Sizes keep the committed
# total near 45 MB in bf16 (vocab 4096, tied embeddings).
SIZES = {
    "dense": dict(arch="llama", hidden=256, layers=6, heads=4, kv=2, inter=640, seq=512),
    "moe": dict(arch="mixtral", hidden=256, layers=4, heads=4, kv=2, inter=128, experts=8, topk=2,
                seq=512),
    "swa": dict(arch="mistral", hidden=256, layers=4, heads=4, kv=2, inter=512, window=128, seq=512),
    "policy": dict(arch="llama", hidden=256, layers=4, heads=4, kv=2, inter=512, seq=128),
    "prm": dict(arch="llama", hidden=256, layers=4, heads=4, kv=2, inter=512, seq=160),
}
SMOKE_SIZES = {k: dict(v, hidden=64, layers=1, heads=1, kv=1, inter=64,
                       seq=min(v["seq"], 64), window=16 if "window" in v else None)
               for k, v in SIZES.items()}
# Shares of the training time (after tokenizer and data preparation), in stage order.
SHARES = {"dense": 0.30, "chat": 0.06, "adapters": 0.18, "moe": 0.14, "swa": 0.10,
          "policy": 0.14, "prm": 0.08}
# Pretraining mix: the probability a row comes from each source.
MIX = {"kjv": 0.24, "fortunes": 0.18, "gcide": 0.38, "jargon": 0.12, "devil": 0.05,
       "dhammapada": 0.03}
# LoRA adapters: name -> (sub-corpus, rank).
# Distinct styles: scripture, quips, cynical definitions (The Devil's Dictionary, in place of the
# first run's gcide-r32: plain dictionary English lowered every source's perplexity), hacker
# slang.
ADAPTERS = {"kjv-r8": ("kjv", 8), "fortunes-r16": ("fortunes", 16), "devil-r32": ("devil", 32),
            "jargon-r64": ("jargon", 64)}
POLICY_CHECK_EVERY = 5  # policy steps between dev checks (~30 steps/s on the H100)
ADAPTER_CHECKS = 6     # own-source checks per adapter (early stopping)
# Evaluation and saving after a stage's training, in seconds on the H100 (the first run's
# stage_s - train_s, with margin): planned apart from the training shares. The policy's is the
# test set's greedy and sampled generation (2 x 1000 problems, no KV cache; ~50 s) and 200 dev
# problems greedy.
OVERHEAD_S = {"dense": 12, "chat": 8, "adapters": 20, "moe": 8, "swa": 6, "policy": 75, "prm": 12}
EVAL_DOCS = 300        # validation documents per source for perplexity (the first, by file order)
EVAL_MAX_TOKENS = 512  # a document's tokens beyond this are not scored


def log(*a):
    msg = f"[{time.strftime('%H:%M:%S')}] " + " ".join(str(x) for x in a)
    print(msg, flush=True)
    if LOG_FILE:
        with open(LOG_FILE, "a") as f:
            f.write(msg + "\n")


LOG_FILE = None


# ------------------------------------------------------------------ libraries (the HF part)

class HF:
    """Everything that needs tokenizers / transformers / peft."""

    @staticmethod
    def train_tokenizer(texts, vocab_size):
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
        from tokenizers import trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT_PAT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                      special_tokens=SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        bos = tok.token_to_id(BOS_T)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS_T} $A", pair=f"{BOS_T} $A {BOS_T} $B", special_tokens=[(BOS_T, bos)])
        return Tok(tok)

    @staticmethod
    def make_model(size, vocab, ids):
        import inspect
        import transformers as T
        s = size
        cls = {"llama": T.LlamaConfig, "mistral": T.MistralConfig,
               "mixtral": T.MixtralConfig}[s["arch"]]
        kw = dict(vocab_size=vocab, hidden_size=s["hidden"], intermediate_size=s["inter"],
                  num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                  num_key_value_heads=s["kv"], head_dim=64, max_position_embeddings=2048,
                  rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=True,
                  bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["eod"])
        if s["arch"] == "mistral":
            kw["sliding_window"] = s["window"]
        if s["arch"] == "mixtral":
            kw.update(num_local_experts=s["experts"], num_experts_per_tok=s["topk"],
                      router_aux_loss_coef=0.02, sliding_window=None,
                      output_router_logits=True)   # aux_loss in the output; off when saved
        if "rope_parameters" in inspect.signature(cls.__init__).parameters:
            kw["rope_parameters"] = dict(rope_type="default", rope_theta=10000.0)
        else:
            kw["rope_theta"] = 10000.0
        config = cls(**kw)
        return T.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")

    @staticmethod
    def load_tokenizer(path):
        """The tokenizer a previous run saved (tokenizer.json; its post-processor adds BOS)."""
        from tokenizers import Tokenizer
        return Tok(Tokenizer.from_file(path))

    @staticmethod
    def load_model(d):
        """A model a previous run saved (bf16 safetensors), in fp32: bf16 -> fp32 is exact, so
        the weights are the saved ones bit for bit."""
        import transformers as T
        model = T.AutoModelForCausalLM.from_pretrained(d, attn_implementation="sdpa")
        return model.to(torch.float32)

    @staticmethod
    def set_attn(model, impl):
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(impl)
        else:
            model.config._attn_implementation = impl

    @staticmethod
    def add_lora(model, rank):
        from peft import LoraConfig, get_peft_model
        cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, lora_dropout=0.0,
                         bias="none", task_type="CAUSAL_LM")
        return get_peft_model(model, cfg)


class Tok:
    """The trained HF tokenizer, with the few calls the stages use."""

    def __init__(self, tok):
        self.tok = tok

    def get_vocab_size(self):
        return self.tok.get_vocab_size()

    def token_to_id(self, t):
        return self.tok.token_to_id(t)

    def encode_ids(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_many(self, texts):
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True)

    def save(self, path):
        self.tok.save(path)


class Smoke:
    """Stand-ins (tools/train/smoke.py) for a CPU check of everything but the HF calls."""

    @staticmethod
    def train_tokenizer(texts, vocab_size):
        import smoke
        for _ in texts:
            pass
        return smoke.ByteTokenizer(SPECIALS)

    @staticmethod
    def make_model(size, vocab, ids):
        import smoke
        c = smoke.Config(vocab_size=vocab, hidden_size=size["hidden"],
                         intermediate_size=size["inter"], num_hidden_layers=size["layers"],
                         num_attention_heads=size["heads"], num_key_value_heads=size["kv"],
                         head_dim=64, max_position_embeddings=1024,
                         sliding_window=size.get("window"), arch=size["arch"])
        return smoke.TinyLM(c)

    @staticmethod
    def load_tokenizer(path):
        import smoke
        with open(path) as f:
            return smoke.ByteTokenizer(json.load(f)["specials"])

    @staticmethod
    def load_model(d):
        import smoke
        with open(os.path.join(d, "config.json")) as f:
            model = smoke.TinyLM(smoke.Config(**json.load(f)))
        model.load_state_dict(torch.load(os.path.join(d, "smoke_model.pt")))
        return model.to(torch.float32)

    @staticmethod
    def set_attn(model, impl):
        pass

    @staticmethod
    def add_lora(model, rank):
        import smoke
        return smoke.LoraModel(model, rank, 2 * rank, TARGETS)


def encode_many(tok, texts):
    if hasattr(tok, "encode_many"):
        return tok.encode_many(texts)
    return [tok.encode_ids(t) for t in texts]


# ------------------------------------------------------------------ run state

class Run:
    def __init__(self, args):
        self.args = args
        self.lib = Smoke if args.smoke else HF
        self.sizes = SMOKE_SIZES if args.smoke else SIZES
        self.dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
        self.t0 = time.time()
        self.deadline = self.t0 + args.budget_s
        self.out = args.out
        self.report = {"budget_s": args.budget_s, "seed": args.seed, "smoke": args.smoke,
                       "device": str(self.dev), "stages": {}}
        self.models = {}
        self.stage_s = {}

    def amp(self):
        if self.dev.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def save_report(self):
        self.report["elapsed_s"] = round(time.time() - self.t0, 1)
        path = os.path.join(self.out, "report.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.report, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(path + ".tmp", path)

    def left(self):
        return self.deadline - time.time()


# ------------------------------------------------------------------ data

def load_corpus(path):
    """{split: {source: [doc]}} from the pack corpus.py writes."""
    out = {}
    with tarfile.open(path, "r:xz") as tar:
        for m in tar.getmembers():
            parts = m.name.split("/")
            if len(parts) == 3 and parts[2].endswith(".jsonl"):
                text = tar.extractfile(m).read().decode("utf-8")
                out.setdefault(parts[1], {})[parts[2][:-6]] = [json.loads(l) for l in text.splitlines()]
    return out


def doc_ids(tok, ids, texts):
    """Each document as BOS + text + end_of_text."""
    return [[ids["bos"]] + x + [ids["eod"]] for x in encode_many(tok, texts)]


class Streams:
    """Per-source token streams on the device, sampled as random windows."""

    def __init__(self, docs_by_source, weights, dev, gen):
        self.names = sorted(docs_by_source)
        flat, self.base, self.lens = [], [], []
        off = 0
        for n in self.names:
            s = [t for d in docs_by_source[n] for t in d]
            flat.extend(s)
            self.base.append(off)
            self.lens.append(len(s))
            off += len(s)
        self.data = torch.tensor(flat, dtype=torch.long, device=dev)
        self.base_t = torch.tensor(self.base, device=dev)
        self.lens_t = torch.tensor(self.lens, device=dev)
        self.w = torch.tensor([weights.get(n, 0.0) for n in self.names], dtype=torch.float)
        self.gen, self.dev = gen, dev

    def batch(self, b, t):
        src = torch.multinomial(self.w, b, replacement=True, generator=self.gen).to(self.dev)
        r = torch.rand(b, generator=self.gen).to(self.dev)
        start = self.base_t[src] + (r * (self.lens_t[src] - t - 1).clamp(min=1)).long()
        idx = start[:, None] + torch.arange(t + 1, device=self.dev)[None, :]
        idx = idx.clamp(max=self.data.numel() - 1)
        seq = self.data[idx]
        return seq[:, :-1], seq[:, 1:], torch.ones_like(seq[:, 1:], dtype=torch.float)


def padded_batch(rows, masks, pad, dev, max_len):
    """Right-padded (inputs, targets, loss mask) from token rows and per-token loss masks
    (mask[i] says whether token i is predicted). Right padding needs no attention mask in a
    causal model: real tokens never see the pads after them."""
    L = min(max(len(r) for r in rows), max_len + 1)
    x = torch.full((len(rows), L), pad, dtype=torch.long)
    m = torch.zeros((len(rows), L), dtype=torch.float)
    for i, (r, mk) in enumerate(zip(rows, masks)):
        r, mk = r[:L], mk[:L]
        x[i, :len(r)] = torch.tensor(r)
        m[i, :len(mk)] = torch.tensor(mk, dtype=torch.float)
    x = x.to(dev)
    m = m.to(dev)
    return x[:, :-1], x[:, 1:], m[:, 1:]


# ------------------------------------------------------------------ training and evaluation

def forward(model, x, moe=False):
    out = model(input_ids=x)
    return out.logits, getattr(out, "aux_loss", None)


def train_loop(run, model, batch_fn, seconds, lr, name, warmup=50, moe=False, aux_coef=0.02,
               min_lr_frac=0.1, callback=None, two_way=None, max_steps=None):
    """AdamW under a wall-clock budget: warmup, then cosine by the elapsed fraction of `seconds`
    (or of max_steps, whichever is further along); stops at either.
    callback(step, elapsed) runs after every step (it should be cheap unless it acts) and
    returns True to stop; the time it takes is not counted as training time.
    two_way=(plus_id, minus_id): the loss is a 2-way softmax over those logits at masked
    positions, whose targets are those ids (the PRM)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    nodecay = [p for p in params if p.dim() < 2]
    kw = {"fused": True} if run.dev.type == "cuda" else {}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8, **kw)
    model.train()
    t0 = time.time()
    step, last_log, tokens, hist, paused = 0, t0, 0, [], 0.0
    stopped = None
    while True:
        if step % 10 == 0 and run.dev.type == "cuda":
            torch.cuda.synchronize()
        el = time.time() - t0 - paused
        if el >= seconds:
            stopped = "time"
            break
        if max_steps is not None and step >= max_steps:
            stopped = "max_steps"
            break
        if run.args.smoke and step >= run.args.smoke_steps:
            stopped = "smoke_steps"
            break
        frac = min(1.0, max(el / seconds, step / max_steps if max_steps else 0.0))
        cur = lr * min(1.0, (step + 1) / warmup) * (
            min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = cur
        x, y, m = batch_fn()
        with run.amp():
            logits, aux = forward(model, x, moe)
        if two_way is not None:
            pm = logits.float()[..., list(two_way)]            # [b, t, 2]
            tgt = (y == two_way[1]).long()                     # 0: "+", 1: "-"
            nll = F.cross_entropy(pm.reshape(-1, 2), tgt.reshape(-1), reduction="none")
        else:
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                  reduction="none")
        loss = (nll * m.reshape(-1)).sum() / m.sum().clamp(min=1)
        if moe and aux is not None:
            loss = loss + aux_coef * aux.float()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += int(x.numel())
        if time.time() - last_log > (2 if run.args.smoke else 15) or step == 1:
            lv = float(loss)
            hist.append((round(time.time() - t0, 1), step, round(lv, 4)))
            log(f"{name}: step {step} loss {lv:.4f} lr {cur:.2e} "
                f"{tokens / max(time.time() - t0 - paused, 1e-9):,.0f} tok/s")
            last_log = time.time()
        if callback is not None:
            tc = time.time()
            stop = callback(step, tc - t0 - paused)
            paused += time.time() - tc
            model.train()
            if stop:
                stopped = "callback"
                break
    model.eval()
    return {"steps": step, "train_s": round(time.time() - t0 - paused, 1),
            "callback_s": round(paused, 1), "tokens": tokens, "loss_history": hist,
            "stopped_by": stopped}


def round_to_bf16(model):
    """Weights rounded to bf16 and kept in fp32: the saved model, for fp32 evaluation."""
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(torch.bfloat16).to(torch.float32)


@torch.no_grad()
def eval_nll(run, model, rows, batch=32):
    """(sum of NLL, scored tokens) over documents, each scored alone, fp32 (no autocast)."""
    model.eval()
    rows = sorted((r[:EVAL_MAX_TOKENS] for r in rows), key=len)
    total, count = 0.0, 0
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        x, y, m = padded_batch(chunk, [[0] + [1] * (len(r) - 1) for r in chunk], 0, run.dev,
                               EVAL_MAX_TOKENS)
        logits, _ = forward(model, x)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                              reduction="none")
        total += float((nll * m.reshape(-1)).sum())
        count += int(m.sum())
    return total, count


def ppl_by_source(run, model, val_rows):
    out, tot, cnt = {}, 0.0, 0
    for src, rows in sorted(val_rows.items()):
        s, c = eval_nll(run, model, rows)
        out[src] = round(math.exp(s / max(c, 1)), 4)
        tot, cnt = tot + s, cnt + c
    out["all"] = round(math.exp(tot / max(cnt, 1)), 4)
    return out


@torch.no_grad()
def generate(run, model, prompts, max_new, stop_ids, temperature=0.0, gen=None, batch=64):
    """Token lists continuing each prompt (lists of ids). No KV cache: prompts are bucketed by
    length so a batch needs no padding; fine for the short sequences used here."""
    model.eval()
    out = [None] * len(prompts)
    by_len = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for _, idxs in sorted(by_len.items()):
        for j in range(0, len(idxs), batch):
            part = idxs[j:j + batch]
            x = torch.tensor([prompts[i] for i in part], device=run.dev)
            done = torch.zeros(len(part), dtype=torch.bool, device=run.dev)
            new = []
            for _ in range(max_new):
                with run.amp():
                    logits, _ = forward(model, x)
                last = logits[:, -1].float()
                if temperature > 0:
                    probs = torch.softmax(last / temperature, -1)
                    nxt = torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(1).to(run.dev)
                else:
                    nxt = last.argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, stop_ids[0]), nxt)
                new.append(nxt)
                x = torch.cat([x, nxt[:, None]], 1)
                for s in stop_ids:
                    done |= nxt == s
                if bool(done.all()):
                    break
            gen_ids = torch.stack(new, 1).tolist() if new else [[] for _ in part]
            for k, i in enumerate(part):
                seq = gen_ids[k]
                for n, t in enumerate(seq):
                    if t in stop_ids:
                        seq = seq[:n]
                        break
                out[i] = seq
    return out


# ------------------------------------------------------------------ saving

def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def save_tokenizer_files(run, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    run.tok.save(os.path.join(out_dir, "tokenizer.json"))
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 2048,
        "clean_up_tokenization_spaces": False, "bos_token": BOS_T, "eos_token": EOT_T,
        "pad_token": EOD_T, "add_bos_token": False, "add_eos_token": False})
    with open(os.path.join(out_dir, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)


def save_model(run, model, out_dir):
    """bf16 safetensors + config + generation_config + tokenizer files."""
    m = copy.deepcopy(model).to(torch.bfloat16)
    if hasattr(m.config, "output_router_logits"):
        m.config.output_router_logits = False
    if not run.args.smoke:
        m.generation_config.bos_token_id = run.ids["bos"]
        m.generation_config.eos_token_id = [run.ids["eot"], run.ids["eod"]]
        m.generation_config.pad_token_id = run.ids["eod"]
    m.save_pretrained(out_dir, safe_serialization=True)
    if run.args.smoke:
        write_json(os.path.join(out_dir, "generation_config.json"),
                   {"bos_token_id": run.ids["bos"], "eos_token_id": [run.ids["eot"], run.ids["eod"]]})
    save_tokenizer_files(run, out_dir)
    del m
    return dir_bytes(out_dir)


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ stages

def stage_dense(run):
    size = run.sizes["dense"]
    torch.manual_seed(run.args.seed + 1)
    model = run.lib.make_model(size, run.vocab, run.ids).to(run.dev)
    bs = run.args.batch
    info = train_loop(run, model, lambda: run.train_streams.batch(bs, size["seq"]),
                      run.stage_s["dense"], lr=2e-3, name="dense")
    round_to_bf16(model)
    info["params"] = n_params(model)
    info["val_ppl"] = ppl_by_source(run, model, run.val_rows)
    info["bytes"] = save_model(run, model, os.path.join(run.out, "dense-base"))
    info["samples"] = samples(run, model)
    run.models["dense"] = model
    return info


def chat_examples(run, rng, split="train", n=6000):
    """(messages, answer) pairs built from the corpus: a chat request gets an answer in the
    corpus's style. Greetings get a fortune or a verse, so a first "Hi" reads as English."""
    docs = run.corpus[split]
    ex = []
    verses = [(d["title"], i, v) for d in docs["kjv"] for i, v in enumerate(d["text"].split("\n"))]
    short = [d["text"] for d in docs["fortunes"] if len(d["text"]) < 300]
    defs = [d for d in docs["gcide"] if len(d["text"]) < 500]
    greet = ["Hi", "Hello", "Hello!", "Hi there", "Hey", "Good morning", "How are you?",
             "Tell me something.", "Say something.", "What do you think?", "Talk to me.",
             "Who are you?", "What is new?", "Any advice?"]

    def cut(t, n=600):
        if len(t) <= n:
            return t
        k = t.rfind(". ", 0, n)
        return t[:k + 1] if k > 100 else t[:n]

    for _ in range(n):
        kind = rng.random()
        if kind < 0.22:
            title, i, v = rng.choice(verses)
            q = rng.choice([f"Quote {title}:{i + 1}.", f"What does {title}:{i + 1} say?",
                            "Read me a verse from the Bible.", "Give me a verse of scripture.",
                            f"Recite {title}:{i + 1}."])
            ex.append((q, v))
        elif kind < 0.45:
            q = rng.choice(["Tell me a fortune.", "Tell me a joke.", "Say something funny.",
                            "Give me some wisdom.", "Tell me a quote.", "Cheer me up.",
                            "What is your fortune for me?"])
            ex.append((q, rng.choice(short)))
        elif kind < 0.60:
            d = rng.choice(defs)
            w = d["title"]
            q = rng.choice([f"What does the word {w} mean?", f"Define {w}.",
                            f"What is the meaning of {w}?", f"What is {w}?"])
            ex.append((q, cut(d["text"])))
        elif kind < 0.68:
            d = rng.choice(docs["devil"])
            w = d["title"].lower()
            q = rng.choice([f"What is {w}, according to the Devil's Dictionary?",
                            f"Give me a cynical definition of {w}."])
            ex.append((q, cut(d["text"])))
        elif kind < 0.78:
            d = rng.choice(docs["jargon"])
            q = rng.choice([f"What does {d['title']} mean in hacker slang?",
                            f"Explain the jargon term {d['title']}."])
            ex.append((q, cut(d["text"])))
        elif kind < 0.82:
            ex.append((rng.choice(["Share a Buddhist saying.", "Tell me about wisdom.",
                                   "How should I live?"]),
                       cut(rng.choice(docs["dhammapada"])["text"])))
        else:
            q = rng.choice(greet)
            a = rng.choice(short) if rng.random() < 0.7 else rng.choice(verses)[2]
            ex.append((q, a))
    return ex


def render_chat(q, a=None):
    """What the chat template renders (bos_token, one user turn, the generation prompt)."""
    s = (f"{BOS_T}<|start_header_id|>user<|end_header_id|>\n\n{q.strip()}{EOT_T}"
         f"<|start_header_id|>assistant<|end_header_id|>\n\n")
    return s if a is None else s + a.strip() + EOT_T


def stage_chat(run):
    base = run.models["dense"]
    model = copy.deepcopy(base)
    rng = random.Random(run.args.seed + 2)
    ex = chat_examples(run, rng, n=600 if run.args.smoke else 12000)
    prompts = encode_many(run.tok, [render_chat(q) for q, _ in ex])
    fulls = encode_many(run.tok, [render_chat(q, a) for q, a in ex])
    rows, masks = [], []
    for p, f in zip(prompts, fulls):
        if f[:len(p)] != p:
            continue
        rows.append(f)
        masks.append([0] * len(p) + [1] * (len(f) - len(p)))
    size = run.sizes["dense"]
    bs = run.args.batch
    state = {"i": 0}

    def batch():
        state["i"] += 1
        if state["i"] % 3 == 0:   # keep plain-text completion alive
            return run.train_streams.batch(bs, size["seq"])
        pick = [rng.randrange(len(rows)) for _ in range(bs)]
        return padded_batch([rows[i] for i in pick], [masks[i] for i in pick], run.ids["eod"],
                            run.dev, 384)

    info = train_loop(run, model, batch, run.stage_s["chat"], lr=6e-4, name="chat", warmup=20)
    info["examples"] = len(rows)
    round_to_bf16(model)
    info["val_ppl"] = ppl_by_source(run, model, run.val_rows)
    # Chat loss on held-out (validation-split) examples: answers only.
    vex = chat_examples(run, random.Random(run.args.seed + 3), split="validation",
                        n=50 if run.args.smoke else 400)
    vp = encode_many(run.tok, [render_chat(q) for q, _ in vex])
    vf = encode_many(run.tok, [render_chat(q, a) for q, a in vex])
    tot = cnt = 0.0
    with torch.no_grad():
        for i in range(0, len(vf), 32):
            x, y, m = padded_batch(vf[i:i + 32], [[0] * len(p) + [1] * (len(f) - len(p))
                                                   for p, f in zip(vp[i:i + 32], vf[i:i + 32])],
                                   run.ids["eod"], run.dev, 384)
            logits, _ = forward(model, x)
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                  reduction="none")
            tot += float((nll * m.reshape(-1)).sum())
            cnt += float(m.sum())
    info["chat_answer_ppl"] = round(math.exp(tot / max(cnt, 1)), 4)
    info["bytes"] = save_model(run, model, os.path.join(run.out, "chat"))
    info["samples"] = samples(run, model)
    run.models["tiny"] = model
    return info


def samples(run, model):
    """A few greedy answers and completions, for the report (not a metric)."""
    chats = ["Hi", "Tell me a fortune.", "What does the word apple mean?", "Quote Genesis 1:1."]
    comps = ["In the beginning", "The meaning of life is"]
    bos = run.ids["bos"]
    ps = [run.tok.encode_ids(render_chat(q)) for q in chats] + \
         [[bos] + run.tok.encode_ids(c) for c in comps]
    outs = generate(run, model, ps, 12 if run.args.smoke else 48, [run.ids["eot"], run.ids["eod"]])
    res = {f"chat: {q}": run.tok.decode(o) for q, o in zip(chats, outs)}
    res.update({f"complete: {c}": run.tok.decode(o) for c, o in zip(comps, outs[len(chats):])})
    for k, v in res.items():
        log(f"  {k!r} -> {v!r}")
    return res


def lora_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def load_lora_state(model, state):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in state:
                p.copy_(state[n])


def stage_adapters(run):
    """One LoRA per distinct sub-corpus. Each reads at most --adapter-epochs passes over its
    sub-corpus (the first run's rank-64 adapter read its 388k-token sub-corpus ~29 times and got
    worse everywhere); its own-source perplexity on held-out documents (the test split, not the
    validation documents reported) is checked ADAPTER_CHECKS times and the best weights kept."""
    base = run.models["tiny"]
    srcs = sorted({s for s, _ in ADAPTERS.values()})
    val = {s: run.val_rows[s] for s in srcs}
    info = {"base_ppl": {s: round(math.exp(a / max(b, 1)), 4)
                         for s, (a, b) in ((s, eval_nll(run, base, val[s])) for s in srcs)},
            "adapters": {}, "epochs_max": run.args.adapter_epochs,
            "selection": "best own-source perplexity on the test split's first "
                         f"{EVAL_DOCS} documents, checked {ADAPTER_CHECKS} times",
            "specificity_definition": (
                "improvement ratio = base ppl / adapter ppl per source (validation); "
                "specificity = own ratio / the largest other-source ratio (> 1: helps its own "
                "source more than any other)")}
    base_sel = {}
    for s in srcs:
        a, b = eval_nll(run, base, run.select_rows[s])
        base_sel[s] = math.exp(a / max(b, 1))
    t_stage = time.time()
    matrix = {}
    seq = run.sizes["dense"]["seq"]
    bs = run.args.adapter_batch
    for k, (name, (src, rank)) in enumerate(sorted(ADAPTERS.items(), key=lambda kv: kv[1][1])):
        # What the stage has left, shared among the adapters still to train (one that stops at
        # its epoch cap leaves its time to the next).
        per = max((run.stage_s["adapters"] - (time.time() - t_stage)) / (len(ADAPTERS) - k), 2.0)
        try:
            torch.manual_seed(run.args.seed + 10 + k)
            model = run.lib.add_lora(copy.deepcopy(base), rank).to(run.dev)
            streams = run.adapter_streams[src]
            max_steps = plan.adapter_max_steps(run.train_tokens[src], run.args.adapter_epochs,
                                               bs, seq)
            lim = min(max_steps, run.args.smoke_steps) if run.args.smoke else max_steps
            points = set(plan.eval_points(lim, ADAPTER_CHECKS))
            best = {"ppl": base_sel[src], "step": 0, "state": lora_state(model)}
            checks = []

            late = {"done": False}

            def callback(step, el, model=model, src=src, best=best, checks=checks, per=per,
                         points=points, late=late):
                # Checked at the planned steps, and once when time is about to run out.
                is_late = el >= per - 1.0 and not late["done"]
                if step not in points and not is_late:
                    return False
                late["done"] |= is_late
                a, b = eval_nll(run, model, run.select_rows[src])
                ppl = math.exp(a / max(b, 1))
                checks.append((step, round(el, 1), round(ppl, 4)))
                if ppl < best["ppl"]:
                    best.update(ppl=ppl, step=step, state=lora_state(model))
                return False

            lr = plan.adapter_lr(rank)
            tr = train_loop(run, model, lambda: streams.batch(bs, seq), per, lr=lr,
                            name=f"lora {name}", warmup=min(20, max(1, max_steps // 5)),
                            max_steps=max_steps, callback=callback)
            if not checks or checks[-1][0] != tr["steps"]:
                callback(tr["steps"], per, points={tr["steps"]})   # the final weights
            load_lora_state(model, best["state"])
            round_to_bf16(model)
            row = {s: round(math.exp(a / max(b, 1)), 4)
                   for s, (a, b) in ((s, eval_nll(run, model, val[s])) for s in srcs)}
            matrix[name] = row
            out_dir = os.path.join(run.out, "adapters", name)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if "lora_" in n:
                        p.data = p.data.to(torch.bfloat16)
            model.save_pretrained(out_dir, safe_serialization=True)
            own_r, other_r, spec = plan.specificity(info["base_ppl"], row, src)
            own_better = row[src] < info["base_ppl"][src]
            others_not = all(row[s] >= info["base_ppl"][s] for s in srcs if s != src)
            info["adapters"][name] = dict(
                tr, source=src, rank=rank, lr=lr, ppl=row, lowers_own=own_better,
                not_others=others_not, own_ratio=round(own_r, 4),
                max_other_ratio=round(other_r, 4), specificity=round(spec, 4),
                max_steps=max_steps, epochs=round(tr["tokens"] / max(run.train_tokens[src], 1), 3),
                epochs_kept=round(best["step"] * bs * seq / max(run.train_tokens[src], 1), 3),
                kept_step=best["step"], selection_checks=checks,
                selection_base_ppl=round(base_sel[src], 4), bytes=dir_bytes(out_dir))
            log(f"lora {name}: kept step {best['step']} of {tr['steps']} (checks {checks}); "
                f"ppl {row} (base {info['base_ppl']}); own x{own_r:.3f}, best other "
                f"x{other_r:.3f}, specificity {spec:.3f}")
            del model
        except Exception as e:  # one adapter's failure does not lose the others
            info["adapters"][name] = {"error": repr(e), "trace": traceback.format_exc()}
            log(f"lora {name} FAILED: {e!r}\n{traceback.format_exc()}")
        run.report["stages"]["adapters"] = dict(info, ppl_matrix=matrix)
        run.save_report()
    info["ppl_matrix"] = matrix
    return info


def stage_lm(run, key, lr):
    """MoE (mixtral) or sliding-window (mistral) model pretrained on the same mix."""
    size = run.sizes[key]
    torch.manual_seed(run.args.seed + 20 + len(key))
    model = run.lib.make_model(size, run.vocab, run.ids).to(run.dev)
    info = {}
    if key == "swa":
        info["window_check_sdpa"] = window_check(run, model, size)
        if not info["window_check_sdpa"]["ok"]:
            run.lib.set_attn(model, "eager")
            info["window_check_eager"] = window_check(run, model, size)
    bs = run.args.batch
    info.update(train_loop(run, model, lambda: run.train_streams.batch(bs, size["seq"]),
                           run.stage_s[key], lr=lr, name=key, moe=(key == "moe")))
    round_to_bf16(model)
    if key == "swa":
        info["window_check_trained"] = window_check(run, model, size)
    info["params"] = n_params(model)
    info["val_ppl"] = ppl_by_source(run, model, run.val_rows)
    info["bytes"] = save_model(run, model, os.path.join(run.out, key))
    info["samples"] = samples(run, model)
    return info


@torch.no_grad()
def window_check(run, model, size):
    """Changing token 0 must not change logits at positions past layers * window (the widest
    reach of a windowed stack), and must change them inside the window."""
    w, L = size["window"], size["layers"]
    t = L * w + 16
    g = torch.Generator().manual_seed(5)
    x = torch.randint(10, run.vocab, (1, t), generator=g).to(run.dev)
    x2 = x.clone()
    x2[0, 0] = (x[0, 0] + 1) % run.vocab
    a, _ = forward(model, x)
    b, _ = forward(model, x2)
    far = float((a[0, L * w + 1:] - b[0, L * w + 1:]).abs().max())
    near = float((a[0, 1:w // 2] - b[0, 1:w // 2]).abs().max())
    return {"ok": far == 0.0 and near > 0.0, "far_max_diff": far, "near_max_diff": near,
            "seq": t, "window": w}


def arith_rows(run, problems, with_prompt_mask=True):
    prompts = encode_many(run.tok, [arith.prompt(p) for p in problems])
    fulls = encode_many(run.tok, [arith.prompt(p) + arith.solution(p) for p in problems])
    rows, masks = [], []
    for p, f in zip(prompts, fulls):
        if f[:len(p)] != p:
            continue
        rows.append([run.ids["bos"]] + f + [run.ids["eod"]])
        masks.append([0] * (len(p) + 1) + [1] * (len(f) - len(p) + 1))
    return rows, masks


@torch.no_grad()
def teacher_forced_accuracy(run, model, rows, masks, batch=128):
    """Fraction of rows whose every masked target token is the argmax (see stage_policy); whole
    rows, never truncated (a row with nothing scored counts as wrong)."""
    was = model.training
    model.eval()
    right = 0
    for i in range(0, len(rows), batch):
        x, y, m = padded_batch(rows[i:i + batch], masks[i:i + batch], run.ids["eod"], run.dev,
                               10_000)
        with run.amp():
            logits, _ = forward(model, x)
        ok = ((logits.argmax(-1) == y) | (m == 0)).all(-1) & (m.sum(-1) > 0)
        right += int(ok.sum())
    model.train(was)
    return round(right / max(len(rows), 1), 4)


def policy_answers(run, model, problems, temperature, gen=None):
    ps = [[run.ids["bos"]] + x for x in encode_many(run.tok, [arith.prompt(p) for p in problems])]
    outs = generate(run, model, ps, 80, [run.ids["eod"], run.ids["eot"]], temperature, gen)
    return [run.tok.decode(o) for o in outs]


def stage_policy(run):
    size = run.sizes["policy"]
    torch.manual_seed(run.args.seed + 30)
    model = run.lib.make_model(size, run.vocab, run.ids).to(run.dev)
    rows, masks = arith_rows(run, run.arith["train"])
    rng = random.Random(run.args.seed + 31)
    bs = run.args.batch * 2

    def batch():
        pick = [rng.randrange(len(rows)) for _ in range(bs)]
        return padded_batch([rows[i] for i in pick], [masks[i] for i in pick], run.ids["eod"],
                            run.dev, size["seq"])

    # Dev accuracy by teacher forcing: a problem counts as right when the argmax at every
    # position of its solution (and the end token) is the solution's token, i.e. exactly when
    # greedy decoding writes the reference solution. One batched forward pass over the dev set
    # (no generation), so it is checked every few steps and the stage stops at the first check
    # at or past --policy-target; of that checkpoint and the one before, the closer to the
    # target is kept. (The first run checked by generation every 10% of the stage: 0.64, 0.71,
    # then ran on to 0.98.)
    dev_rows, dev_masks = arith_rows(run, run.arith["dev"])
    checks, snaps = [], []
    every = 1 if run.args.smoke else POLICY_CHECK_EVERY

    def callback(step, el):
        if step % every:
            return False
        acc = teacher_forced_accuracy(run, model, dev_rows, dev_masks)
        checks.append((round(el, 1), step, acc))
        snaps.append({n: p.detach().clone() for n, p in model.state_dict().items()})
        del snaps[:-2]    # the last two checkpoints
        if len(checks) % 20 == 1 or acc >= run.args.policy_target:
            log(f"policy: dev accuracy (teacher-forced) {acc:.3f} at step {step}")
        return plan.policy_should_stop(acc, run.args.policy_target)

    info = train_loop(run, model, batch, run.stage_s["policy"], lr=2e-3, name="policy",
                      callback=callback)
    if checks:
        accs = [c[2] for c in checks[-len(snaps):]]
        k = plan.closest_check(accs, run.args.policy_target)
        model.load_state_dict(snaps[k])
        info["kept_check"] = list(checks[-len(snaps):][k])
    # (elapsed s, step, accuracy): all of them, or every k-th and the last two when many
    info["dev_checks"] = checks if len(checks) <= 42 else checks[::len(checks) // 40] + checks[-2:]
    info["dev_checks_n"] = len(checks)
    info["dev_problems"] = len(dev_rows)
    model.eval()
    round_to_bf16(model)
    # The kept weights as saved: the proxy again, and real greedy decoding on part of the dev set
    # (they should agree: the proxy is a lower bound that misses only other correct wordings).
    info["dev_accuracy_teacher_forced"] = teacher_forced_accuracy(run, model, dev_rows, dev_masks)
    dv = run.arith["dev"][:20 if run.args.smoke else 200]
    info["dev_accuracy_greedy_200"] = round(
        sum(arith.is_correct(p, t) for p, t in zip(dv, policy_answers(run, model, dv, 0))) / len(dv), 4)
    log(f"policy: kept check {info.get('kept_check')}; dev accuracy teacher-forced "
        f"{info['dev_accuracy_teacher_forced']}, greedy (200) {info['dev_accuracy_greedy_200']}")
    test = run.arith["test"]
    greedy = policy_answers(run, model, test, 0)
    gen = torch.Generator().manual_seed(run.args.seed + 32)
    sampled = policy_answers(run, model, test, 1.0, gen)
    info["test_problems"] = len(test)
    info["accuracy_greedy"] = round(sum(arith.is_correct(p, t) for p, t in zip(test, greedy)) / len(test), 4)
    info["accuracy_sampled_t1"] = round(sum(arith.is_correct(p, t) for p, t in zip(test, sampled)) / len(test), 4)
    info["params"] = n_params(model)
    info["bytes"] = save_model(run, model, os.path.join(run.out, "policy"))
    info["example"] = {"prompt": arith.prompt(test[0]), "greedy": greedy[0], "sampled": sampled[0]}
    run.policy_samples = list(zip(test, sampled))
    log(f"policy: test accuracy greedy {info['accuracy_greedy']} sampled {info['accuracy_sampled_t1']}")
    return info


def prm_text(p, steps):
    return arith.prompt(p) + "".join(s + arith.STEP_TAG + "\n" for s in steps)


def prm_rows(run, items):
    """items: (problem, steps, labels) -> rows whose masked targets are '+'/'-' at each tag."""
    plus, minus, tag = run.ids["plus"], run.ids["minus"], run.ids["step"]
    encs = encode_many(run.tok, [prm_text(p, s) for p, s, _ in items])
    rows, masks = [], []
    for enc, (_, steps, labels) in zip(encs, items):
        ids = [run.ids["bos"]] + enc
        tag_pos = [i for i, t in enumerate(ids) if t == tag]
        if len(tag_pos) != len(labels):
            continue
        # Position i predicts token i+1: the target after each tag is its label token.
        row = list(ids) + [0]
        mask = [0] * len(row)
        for pos, lab in zip(tag_pos, labels):
            row[pos + 1] = plus if lab else minus
            mask[pos + 1] = 1
        # the token after a tag is really "\n": only the label is trained, inputs keep "\n".
        rows.append((ids, row, mask))
    return rows


def prm_batch(run, rows, pick, seq):
    L = min(max(len(rows[i][0]) for i in pick), seq)
    x = torch.full((len(pick), L), run.ids["eod"], dtype=torch.long)
    y = torch.zeros((len(pick), L), dtype=torch.long)
    m = torch.zeros((len(pick), L))
    for k, i in enumerate(pick):
        ids, row, mask = rows[i]
        n = min(len(ids), L)
        x[k, :n] = torch.tensor(ids[:n])
        y[k, :n] = torch.tensor(row[1:n + 1])
        m[k, :n] = torch.tensor(mask[1:n + 1], dtype=torch.float)
    return x.to(run.dev), y.to(run.dev), m.to(run.dev)


def labelled(problems, rng):
    out = []
    for p in problems:
        if rng.random() < 0.5:
            steps = arith.solution_steps(p)
            out.append((p, steps, [True] * len(steps)))
        else:
            steps, labels = arith.corrupt_steps(p, rng)
            out.append((p, steps, labels))
    return out


@torch.no_grad()
def prm_accuracy(run, model, rows):
    right = total = 0
    plus, minus = run.ids["plus"], run.ids["minus"]
    for i in range(0, len(rows), 64):
        x, y, m = prm_batch(run, rows, list(range(i, min(i + 64, len(rows)))), 10_000)
        logits, _ = forward(model, x)
        pred_plus = logits[..., plus].float() > logits[..., minus].float()
        want_plus = y == plus
        right += int(((pred_plus == want_plus).float() * m).sum())
        total += int(m.sum())
    return round(right / max(total, 1), 4), total


def stage_prm(run):
    size = run.sizes["prm"]
    torch.manual_seed(run.args.seed + 40)
    model = run.lib.make_model(size, run.vocab, run.ids).to(run.dev)
    rng = random.Random(run.args.seed + 41)
    rows = prm_rows(run, labelled(run.arith["train"], rng))
    brng = random.Random(run.args.seed + 42)
    bs = run.args.batch * 2
    info = train_loop(run, model,
                      lambda: prm_batch(run, rows, [brng.randrange(len(rows)) for _ in range(bs)],
                                        size["seq"]),
                      run.stage_s["prm"], lr=2e-3, name="prm",
                      two_way=(run.ids["plus"], run.ids["minus"]))
    round_to_bf16(model)
    test_rows = prm_rows(run, labelled(run.arith["test"], random.Random(run.args.seed + 43)))
    info["step_accuracy_synthetic"], info["steps_synthetic"] = prm_accuracy(run, model, test_rows)
    if not getattr(run, "policy_samples", None) and "policy" in run.models:
        # --reuse without the policy stage: the reused policy's samples, drawn as stage_policy
        # draws them (same seed), so they are the ones its report entry was measured on.
        test = run.arith["test"]
        gen = torch.Generator().manual_seed(run.args.seed + 32)
        run.policy_samples = list(zip(test, policy_answers(run, run.models["policy"], test, 1.0,
                                                           gen)))
        info["policy_samples_from"] = os.path.join(run.args.reuse, "policy")
    if getattr(run, "policy_samples", None):
        items = []
        for p, text in run.policy_samples:
            lines = [l for l in text.split("\n") if l.strip()]
            if lines:
                items.append((p, lines, arith.label_steps(p, lines)))
        prow = prm_rows(run, items)
        if prow:
            info["step_accuracy_policy_samples"], info["steps_policy_samples"] = \
                prm_accuracy(run, model, prow)
    info["params"] = n_params(model)
    info["bytes"] = save_model(run, model, os.path.join(run.out, "prm"))
    write_json(os.path.join(run.out, "prm", "prm.json"), {
        "step_tag": arith.STEP_TAG, "step_tag_id": run.ids["step"],
        "plus_token": "+", "plus_id": run.ids["plus"], "minus_token": "-",
        "minus_id": run.ids["minus"],
        "format": "BOS, the policy prompt ('Problem: ...\\nSolution:\\n'), then each step's text "
                  "followed by the step tag and a newline; a step's score is "
                  "softmax(logit['+'], logit['-'])[0] at its tag's position"})
    log(f"prm: step accuracy {info.get('step_accuracy_synthetic')} "
        f"(policy samples {info.get('step_accuracy_policy_samples')})")
    return info


# ------------------------------------------------------------------ main

def reuse_dir(root, name):
    """root/name; the chat model may be under chat/ (models/testbed) or tiny/ (older runs)."""
    d = os.path.join(root, name)
    if name == "chat" and not os.path.isdir(d) and os.path.isdir(os.path.join(root, "tiny")):
        d = os.path.join(root, "tiny")
    return d


def reused_ids(root):
    """Token ids a previous run used: bos/eos/pad from the chat model's config and
    generation_config, step/plus/minus from prm.json when it has one."""
    want = {}
    cdir = reuse_dir(root, "chat")
    with open(os.path.join(cdir, "config.json")) as f:
        cfg = json.load(f)
    want["vocab"] = cfg["vocab_size"]
    if "bos_token_id" in cfg:
        want["bos"] = cfg["bos_token_id"]
    if "pad_token_id" in cfg:
        want["eod"] = cfg["pad_token_id"]
    gpath = os.path.join(cdir, "generation_config.json")
    if os.path.exists(gpath):
        with open(gpath) as f:
            g = json.load(f)
        eos = g.get("eos_token_id")
        if isinstance(eos, list) and len(eos) == 2:
            want["eot"], want["eod"] = eos
        if "bos_token_id" in g:
            want["bos"] = g["bos_token_id"]
    # Every id the first run's tokenizer gave: report.json's data.token_ids, or (runs before it
    # was recorded) train.log's "tokenizer: ... ids {...}" line.
    rpath, lpath = os.path.join(root, "report.json"), os.path.join(root, "train.log")
    ids = None
    if os.path.exists(rpath):
        with open(rpath) as f:
            ids = json.load(f).get("data", {}).get("token_ids")
    if ids is None and os.path.exists(lpath):
        import ast
        with open(lpath) as f:
            for line in f:
                if "tokenizer: vocab" in line and "; ids {" in line:
                    ids = ast.literal_eval(line[line.index("; ids {") + 6:].strip())
                    break
    want.update(ids or {})
    ppath = os.path.join(root, "prm", "prm.json")
    if os.path.exists(ppath):
        with open(ppath) as f:
            p = json.load(f)
        want.update(step=p["step_tag_id"], plus=p["plus_id"], minus=p["minus_id"])
    return want


def prepare(run):
    """Tokenizer, token streams, evaluation sets and arithmetic problems."""
    args = run.args
    t = time.time()
    run.corpus = load_corpus(args.corpus)
    if args.smoke:   # toy scale: a slice of each source
        run.corpus = {sp: {s: d[:args.smoke_docs] for s, d in srcs.items()}
                      for sp, srcs in run.corpus.items()}
    train = run.corpus["train"]
    n_arith = (2000, 100, 100) if args.smoke else (200_000, 500, 1000)
    tr, dv, te = arith.split_problems(args.seed, *n_arith)
    run.arith = {"train": tr, "dev": dv, "test": te}

    def texts():
        rng = random.Random(args.seed)
        budget = args.tokenizer_mb * 1e6
        per = {s: budget * MIX[s] for s in train}
        for s in sorted(train):
            used = 0
            for d in sorted(train[s], key=lambda d: rng.random()):
                if used > per[s]:
                    break
                used += len(d["text"])
                yield d["text"]
        for p in tr[:5000]:
            yield arith.prompt(p) + arith.solution(p)

    if args.reuse:
        run.tok = run.lib.load_tokenizer(os.path.join(reuse_dir(args.reuse, "chat"),
                                                      "tokenizer.json"))
    else:
        run.tok = run.lib.train_tokenizer(texts(), args.vocab)
    run.vocab = run.tok.get_vocab_size()
    run.ids = {"bos": run.tok.token_to_id(BOS_T), "eod": run.tok.token_to_id(EOD_T),
               "eot": run.tok.token_to_id(EOT_T), "step": run.tok.token_to_id(arith.STEP_TAG),
               "eos": run.tok.token_to_id(EOT_T)}
    plus, minus = run.tok.encode_ids("+"), run.tok.encode_ids("-")
    assert len(plus) == 1 and len(minus) == 1, (plus, minus)
    run.ids["plus"], run.ids["minus"] = plus[0], minus[0]
    if args.reuse:
        # The reused models were trained with these ids: they must be the ones prm.json (or the
        # saved configs) recorded.
        want = reused_ids(args.reuse)
        vocab = want.pop("vocab", run.vocab)
        assert all(run.ids.get(k) == v for k, v in want.items()), (run.ids, want)
        assert run.vocab == vocab, (run.vocab, vocab)
        assert {"bos", "eod", "eot", "step", "plus", "minus"} <= set(want), want
        log(f"reuse: tokenizer ids match {want}")
    save_tokenizer_files(run, os.path.join(run.out, "tokenizer"))
    log(f"tokenizer: vocab {run.vocab} in {time.time() - t:.1f}s; ids {run.ids}")

    t = time.time()
    gen = torch.Generator().manual_seed(args.seed)
    train_rows = {s: doc_ids(run.tok, run.ids, [d["text"] for d in docs])
                  for s, docs in train.items()}
    run.train_streams = Streams(train_rows, MIX, run.dev, gen)
    run.adapter_streams = {s: Streams({s: train_rows[s]}, {s: 1.0}, run.dev, gen)
                           for s, _ in ADAPTERS.values()}
    run.train_tokens = {s: sum(len(r) for r in rows) for s, rows in train_rows.items()}
    # Adapter checkpoint selection (early stopping) is on the test split's documents, so the
    # validation perplexities reported (and measured by Arbor) are not the ones selected on.
    run.select_rows = {s: doc_ids(run.tok, run.ids,
                                  [d["text"] for d in run.corpus["test"][s][:EVAL_DOCS]])
                       for _, (s, _) in ADAPTERS.items()}
    # Validation: the first EVAL_DOCS documents of each source (file order), each scored alone.
    val = {s: docs[:EVAL_DOCS] for s, docs in run.corpus["validation"].items()}
    run.val_rows = {s: doc_ids(run.tok, run.ids, [d["text"] for d in docs]) for s, docs in val.items()}
    os.makedirs(os.path.join(run.out, "eval"), exist_ok=True)
    for s, docs in val.items():
        with open(os.path.join(run.out, "eval", f"validation_{s}.jsonl"), "w") as f:
            for d in docs:
                f.write(json.dumps({"text": d["text"]}, ensure_ascii=False) + "\n")
    with open(os.path.join(run.out, "eval", "arith_test.jsonl"), "w") as f:
        for p in te:
            f.write(json.dumps({"problem": arith.problem_text(p), "prompt": arith.prompt(p),
                                "answer": arith.answer(p), "start": p["start"],
                                "ops": p["ops"]}) + "\n")
    if args.reuse:
        # Seeded problem sets and the corpus's validation documents: identical to the first
        # run's, or the numbers are not comparable (another corpus pack?). Stop early if not.
        same = {}
        for name in sorted(os.listdir(os.path.join(run.out, "eval"))):
            old = os.path.join(args.reuse, "eval", name)
            if os.path.exists(old):
                with open(old, "rb") as a, open(os.path.join(run.out, "eval", name), "rb") as b:
                    same[name] = a.read() == b.read()
        run.report["reuse_eval_files_identical"] = same
        log(f"reuse: eval files identical to {args.reuse}/eval: {same}")
        assert same and all(same.values()), f"eval files differ from {args.reuse}/eval: {same}"
    ntok = {s: sum(len(r) for r in rows) for s, rows in train_rows.items()}
    run.report["data"] = {
        "train_tokens": ntok, "val_docs": {s: len(r) for s, r in run.val_rows.items()},
        "arith_problems": {k: len(v) for k, v in run.arith.items()},
        "token_ids": run.ids, "vocab": run.vocab,
        "perplexity_definition": (
            f"per document of eval/validation_<source>.jsonl: tokens = BOS + encode(text) + "
            f"<|end_of_text|> (no special-token parsing of the text), the first "
            f"{EVAL_MAX_TOKENS} kept; every token after BOS scored given the ones before it; "
            f"ppl = exp(sum NLL / scored tokens) over the documents (per source, and 'all' over "
            f"every source); fp32 on the bf16 weights as saved"),
        "prep_s": round(time.time() - t, 1)}
    log(f"data: train tokens {ntok} in {time.time() - t:.1f}s")


def load_reused(run, stages):
    """--reuse: the chat model (what adapters train on), the policy when its stage does not run
    (the PRM is also measured on its samples), and the previous report's stages not redone."""
    root = run.args.reuse
    cdir = reuse_dir(root, "chat")
    if any(s in stages for s in ("adapters",)) and "chat" not in stages:
        run.models["tiny"] = run.lib.load_model(cdir).to(run.dev)
        run.models["tiny"].eval()
        log(f"reuse: chat model from {cdir}")
    pdir = os.path.join(root, "policy")
    if "prm" in stages and "policy" not in stages and os.path.isdir(pdir):
        run.models["policy"] = run.lib.load_model(pdir).to(run.dev)
        run.models["policy"].eval()
        log(f"reuse: policy from {pdir}")
    rpath = os.path.join(root, "report.json")
    if os.path.exists(rpath):
        with open(rpath) as f:
            old = json.load(f)
        kept = {k: v for k, v in old.get("stages", {}).items() if k not in stages}
        for v in kept.values():
            v["reused"] = True
        run.report["stages"].update(kept)
        run.report["reused"] = {"dir": root, "stages_kept": sorted(kept),
                                "elapsed_s": old.get("elapsed_s"), "device": old.get("device"),
                                "versions": old.get("versions"),
                                "committed_bytes": old.get("committed_bytes")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=128, help="rows of 512 tokens (dense/MoE/SWA)")
    ap.add_argument("--tokenizer-mb", type=float, default=8.0, help="text the tokenizer trains on")
    ap.add_argument("--policy-target", type=float, default=0.8,
                    help="policy training stops once greedy dev accuracy reaches this")
    ap.add_argument("--stages", default="dense,chat,adapters,moe,swa,policy,prm")
    ap.add_argument("--reuse", default=None, metavar="DIR",
                    help="a previous run's outputs (e.g. models/testbed): its tokenizer and chat "
                         "model (DIR/chat, or DIR/tiny) are loaded instead of trained, and its "
                         "policy (DIR/policy) when the policy stage does not run; report.json "
                         "keeps its stages that this run does not redo")
    ap.add_argument("--adapter-epochs", type=float, default=1.5,
                    help="most passes an adapter makes over its sub-corpus's train tokens")
    ap.add_argument("--adapter-batch", type=int, default=8,
                    help="rows of 512 tokens per adapter step")
    ap.add_argument("--reserve-s", type=float, default=20,
                    help="of the budget, kept unused at the end (each stage's evaluation and "
                         "saving time is OVERHEAD_S, planned separately)")
    ap.add_argument("--smoke", action="store_true", help="toy scale on the CPU, HF stand-ins")
    ap.add_argument("--smoke-steps", type=int, default=3)
    ap.add_argument("--smoke-docs", type=int, default=40)
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.tokenizer_mb, args.adapter_batch = 4, 0.2, 2
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in SHARES]
    if unknown:
        ap.error(f"unknown stages {unknown}; known: {list(SHARES)}")
    if args.reuse and os.path.abspath(args.reuse) == os.path.abspath(args.out):
        ap.error("--reuse and --out must differ (the run rewrites eval/ and report.json)")
    os.makedirs(args.out, exist_ok=True)
    global LOG_FILE
    LOG_FILE = os.path.join(args.out, "train.log")
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    if torch.cuda.is_available() and not args.smoke:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    run = Run(args)
    log(f"device {run.dev}, torch {torch.__version__}, budget {args.budget_s}s")
    try:
        import transformers
        import peft
        import tokenizers
        run.report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                                  "peft": peft.__version__, "tokenizers": tokenizers.__version__}
    except ImportError:
        run.report["versions"] = {"torch": torch.__version__}
    prepare(run)
    overhead = {k: v * (0.1 if args.smoke else 1.0) for k, v in OVERHEAD_S.items()}
    if args.reuse:
        load_reused(run, stages)
    # The first plan (recomputed before each stage from the clock; see plan.stage_seconds).
    run.report["stage_budget_s"] = {
        s: round(plan.stage_seconds(run.left(), args.reserve_s, stages[i:], SHARES, overhead), 1)
        for i, s in enumerate(stages) if i == 0}
    run.report["overhead_s"] = {s: overhead[s] for s in stages}
    run.save_report()
    fns = {"dense": stage_dense, "chat": stage_chat, "adapters": stage_adapters,
           "moe": lambda r: stage_lm(r, "moe", 2e-3), "swa": lambda r: stage_lm(r, "swa", 2e-3),
           "policy": stage_policy, "prm": stage_prm}
    needs = {"chat": "dense", "adapters": "tiny"}
    for i, s in enumerate(stages):
        t = time.time()
        if s in needs and needs[s] not in run.models:
            run.report["stages"][s] = {"skipped": f"needs {needs[s]}, which did not train"}
            run.save_report()
            continue
        if run.left() < overhead[s] + 10:
            run.report["stages"][s] = {"skipped": f"budget: {run.left():.0f}s left"}
            log(f"stage {s}: skipped, {run.left():.0f}s left")
            run.save_report()
            continue
        # What is left (less the reserve and every remaining stage's evaluation overhead) is
        # shared among the remaining stages, so an overrun shrinks the later ones in proportion.
        run.stage_s[s] = plan.stage_seconds(run.left(), args.reserve_s, stages[i:], SHARES,
                                            overhead)
        run.report["stage_budget_s"][s] = round(run.stage_s[s], 1)
        log(f"stage {s}: {run.stage_s[s]:.0f}s of training ({run.left():.0f}s left)")
        try:
            info = fns[s](run)
            info["stage_s"] = round(time.time() - t, 1)
            run.report["stages"][s] = info
        except Exception as e:
            run.report["stages"][s] = {"error": repr(e), "trace": traceback.format_exc()}
            log(f"stage {s} FAILED: {e!r}\n{traceback.format_exc()}")
        run.save_report()
        if run.dev.type == "cuda":
            torch.cuda.empty_cache()
    committed = {d: dir_bytes(os.path.join(args.out, d)) for d in
                 ("chat", "adapters", "moe", "swa", "policy", "prm")
                 if os.path.isdir(os.path.join(args.out, d))}
    if args.reuse:   # the reused directories this run did not rewrite
        old = dict((run.report.get("reused") or {}).get("committed_bytes") or {})
        old.pop("total", None)
        if "tiny" in old:
            old["chat"] = old.pop("tiny")
        committed = dict(old, **committed)
    run.report["committed_bytes"] = dict(committed, total=sum(committed.values()))
    run.save_report()
    log(f"done in {time.time() - run.t0:.0f}s; report {os.path.join(args.out, 'report.json')}")


if __name__ == "__main__":
    main()
