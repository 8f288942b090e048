#!/usr/bin/env python3
"""Builds the training corpus of issue 13 from Debian packages (standard library only).

  tools/train/corpus.py --out train_data            # writes train_data/corpus.tar.xz

Reads the installed packages (tools/train/corpus.sh installs them), extracts plain English
text, one JSON object per document {"text": ..., "title": ...}, and splits each source into
train / validation / test BY DOCUMENT: a document's split is a hash of its text, so equal
documents always land in the same split and the split does not depend on the order or on the
other documents. The pack holds
  corpus/manifest.json                  sources, licences, counts and bytes per split
  corpus/{train,validation,test}/SOURCE.jsonl
Deterministic: the same packages give a byte-identical pack (fixed tar metadata).

Sources (README.md has their licences):
  kjv        King James Bible (bible-kjv-text via `bible`), one chapter a document, a verse a line
  fortunes   fortune cookies (fortunes, fortunes-min, fortunes-bofh-excuses, fortunes-debian-hints)
  gcide      GNU Collaborative International Dictionary of English, one entry a document,
             pronunciation markup removed; subsampled by hash (--gcide-fraction)
  devil      Ambrose Bierce, The Devil's Dictionary (dict-devil), one entry a document
  jargon     The Jargon File (jargon-text), one entry a document
  dhammapada The Dhammapada, tr. John Richards (display-dhammapada), one paragraph a document
"""
import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

SPLITS = ("train", "validation", "test")

LICENCES = {
    "kjv": ("bible-kjv-text", "public domain (KJV text; copyright expired)"),
    "fortunes": ("fortunes, fortunes-min, fortunes-bofh-excuses, fortunes-debian-hints",
                 "BSD-style (fortune-mod), BOFH excuses public domain, debian-hints BSD-3-clause"),
    "gcide": ("dict-gcide", "GPL-2.0-or-later (GCIDE; based on the public-domain 1913 Webster)"),
    "devil": ("dict-devil", "public domain (Bierce, 1911; copyright expired)"),
    "jargon": ("jargon-text", "public domain (the Jargon File)"),
    "dhammapada": ("display-dhammapada", "public domain (tr. John Richards, 1993)"),
}

FORTUNE_DIR = "/usr/share/games/fortunes"
# ASCII art and the translation stub are not prose.
FORTUNE_SKIP = {"art", "ascii-art", "translate-me"}


def split_of(source, text, val_permille=50, test_permille=50):
    """'train', 'validation' or 'test' for a document, from a hash of its source and text."""
    h = int.from_bytes(hashlib.sha256((source + "\0" + text).encode("utf-8")).digest()[:8], "big")
    bucket = h % 1000
    if bucket < val_permille:
        return "validation"
    if bucket < val_permille + test_permille:
        return "test"
    return "train"


def keep_fraction(key, fraction):
    """Deterministic subsample: keeps about `fraction` of keys."""
    if fraction >= 1.0:
        return True
    h = int.from_bytes(hashlib.sha256(("keep\0" + key).encode("utf-8")).digest()[:8], "big")
    return (h % 1_000_000) < fraction * 1_000_000


def unwrap(lines):
    """Joins wrapped lines into paragraphs (blank lines separate them)."""
    paras, cur = [], []
    for line in lines:
        s = line.strip()
        if not s:
            if cur:
                paras.append(" ".join(cur))
                cur = []
        else:
            cur.append(s)
    if cur:
        paras.append(" ".join(cur))
    return paras


# ---------------------------------------------------------------- sources

def kjv_docs(bible_text=None):
    """One chapter a document: its verses, one a line, without numbers."""
    if bible_text is None:
        bible_text = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], check=True,
                                    capture_output=True, text=True).stdout
    docs, title, verses = [], None, []
    for line in bible_text.splitlines():
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m and title:
            verses.append(m.group(2).strip())
        elif line.strip() and not line.startswith(" "):
            if title and verses:
                docs.append({"title": title, "text": "\n".join(verses)})
            title, verses = line.strip(), []
    if title and verses:
        docs.append({"title": title, "text": "\n".join(verses)})
    return docs


def parse_fortunes(text):
    """Entries of a strfile source (separated by lines holding only '%')."""
    out = []
    for entry in re.split(r"^%\s*$", text, flags=re.M):
        entry = "\n".join(l.rstrip() for l in entry.strip("\n").splitlines()).strip()
        entry = entry.replace("\t", "    ")
        if entry and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", entry):
            out.append(entry)
    return out


def fortune_docs(fortune_dir=FORTUNE_DIR):
    docs = []
    for name in sorted(os.listdir(fortune_dir)):
        path = os.path.join(fortune_dir, name)
        if not os.path.isfile(path) or "." in name or name in FORTUNE_SKIP:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for entry in parse_fortunes(f.read()):
                docs.append({"title": name, "text": entry})
    return docs


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_number(s):
    n = 0
    for c in s:
        n = n * 64 + _B64.index(c)
    return n


def dictd_entries(index_path, dict_path):
    """(headword, raw text) per distinct entry of a dictd database, in file order."""
    with gzip.open(dict_path, "rb") as f:
        data = f.read()
    seen, out = set(), []
    with open(index_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
                continue
            off, ln = dictd_number(parts[1]), dictd_number(parts[2])
            if (off, ln) in seen:
                continue
            seen.add((off, ln))
            out.append((off, parts[0], data[off:off + ln].decode("utf-8", errors="replace")))
    out.sort()
    return [(w, t) for _, w, t in out]


def clean_gcide(raw):
    """'Abdication \\Ab`di*ca"tion\\, n. [L. ...]\\n   The act...' -> 'Abdication, n. The act...'"""
    lines = [l for l in raw.splitlines() if not re.match(r"^\s*\[[^\]]*\]\s*$", l)]
    text = " ".join(l.strip() for l in lines if l.strip())
    text = re.sub(r"\s*\\[^\\]{0,80}\\", "", text)          # pronunciation \Ab`di*ca"tion\
    text = re.sub(r"\[(?:1913 Webster|WordNet 1\.5|PJC|Century Dict\.)[^\]]*\]", "", text)
    text = re.sub(r"\s+--[A-Z][\w.]*(?: [A-Z][\w.]*)?\.?", "", text)  # --Bailey. citations
    text = re.sub(r"\s*\([^()]*\[[a-z]{2,8}\][^()]*\)", "", text)  # pronunciation (br[imac]z)
    text = re.sub(r"\[[a-z]{2,8}\]", "", text)                      # leftover entity codes
    text = re.sub(r"[{}]", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r" ([,.;:])", r"\1", text)
    return text


def gcide_docs(fraction, index="/usr/share/dictd/gcide.index",
               dict_path="/usr/share/dictd/gcide.dict.dz"):
    docs = []
    for word, raw in dictd_entries(index, dict_path):
        if not keep_fraction(word + raw[:64], fraction):
            continue
        text = clean_gcide(raw)
        if len(text) >= 40 and re.match(r"^[A-Za-z]", text):
            docs.append({"title": word, "text": text})
    return docs


def devil_docs(index="/usr/share/dictd/devil.index", dict_path="/usr/share/dictd/devil.dict.dz"):
    docs = []
    for word, raw in dictd_entries(index, dict_path):
        body = raw.strip("\n")
        if not re.match(r"^[A-Z][A-Z' -]+, ", body):
            continue
        # Prose paragraphs are unwrapped; indented verse keeps its lines.
        paras, cur, verse = [], [], []
        for line in body.splitlines() + [""]:
            if line.startswith("    ") and line.strip():
                if cur:
                    paras.append(" ".join(cur))
                    cur = []
                verse.append(line.strip())
            elif line.strip():
                if verse:
                    paras.append("\n".join(verse))
                    verse = []
                cur.append(line.strip())
            else:
                for buf, sep in ((cur, " "), (verse, "\n")):
                    if buf:
                        paras.append(sep.join(buf))
                        buf.clear()
        text = re.sub(r"[{}]", "", "\n\n".join(paras))
        docs.append({"title": word, "text": text})
    return docs


def jargon_docs(path="/usr/share/doc/jargon-text/jargon.txt.gz"):
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    docs, head, body = [], None, []

    def flush():
        if head and body:
            m = re.match(r"^:(.+?):\s*(.*)$", head)
            word, rest = m.group(1), m.group(2)
            rest = re.sub(r"/[^/]*/,?\s*", "", rest).strip()   # pronunciation /mak'dink/
            lead = word + (", " + rest if rest else "")
            paras = unwrap(body)
            text = re.sub(r"[{}]", "", lead + " " + "\n\n".join(paras))
            docs.append({"title": word, "text": text.strip()})

    for line in lines:
        if re.match(r"^   :[^:]+:", line):
            flush()
            head, body = line.strip(), []
        elif head is not None:
            body.append(line)
    flush()
    return docs


def dhammapada_docs(path="/usr/share/display-dhammapada/dhammapada-english-transl.txt"):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip().startswith("The Dhammapada - Information")), 0)
    return [{"title": "dhammapada", "text": re.sub(r"\s+\d+$", "", p)} for p in unwrap(lines[start:])
            if len(p) >= 40 and not p.startswith("[")]


# ---------------------------------------------------------------- packing

def split_docs(source, docs):
    """{split: [doc]} with exact duplicates dropped."""
    out, seen = {s: [] for s in SPLITS}, set()
    for d in docs:
        if d["text"] in seen:
            continue
        seen.add(d["text"])
        out[split_of(source, d["text"])].append(d)
    return out


def write_pack(path, sources):
    """sources: {name: {split: [doc]}} -> a deterministic tar.xz."""
    manifest = {"sources": {}, "splits": list(SPLITS)}
    files = {}
    for name in sorted(sources):
        entry = {"package": LICENCES[name][0], "licence": LICENCES[name][1]}
        for split in SPLITS:
            docs = sources[name][split]
            blob = "".join(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n"
                           for d in docs).encode("utf-8")
            files[f"corpus/{split}/{name}.jsonl"] = blob
            entry[split] = {"docs": len(docs), "bytes": sum(len(d["text"].encode()) for d in docs)}
        manifest["sources"][name] = entry
    files["corpus/manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    import lzma
    with open(path, "wb") as f:
        f.write(lzma.compress(raw.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    return manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="train_data")
    ap.add_argument("--gcide-fraction", type=float, default=1.0,
                    help="share of GCIDE entries kept (hash-chosen): the pack must stay small")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    builders = {
        "kjv": kjv_docs, "fortunes": fortune_docs, "gcide": lambda: gcide_docs(args.gcide_fraction),
        "devil": devil_docs, "jargon": jargon_docs, "dhammapada": dhammapada_docs,
    }
    sources = {}
    for name, build in builders.items():
        docs = build()
        if not docs:
            sys.exit(f"corpus: no documents from {name} ({LICENCES[name][0]} installed?)")
        sources[name] = split_docs(name, docs)
    path = os.path.join(args.out, "corpus.tar.xz")
    manifest = write_pack(path, sources)
    for name, e in manifest["sources"].items():
        print(f"{name:11s} " + "  ".join(f"{s} {e[s]['docs']:6d} docs {e[s]['bytes'] / 1e6:6.2f} MB"
                                        for s in SPLITS))
    print(f"wrote {path}: {os.path.getsize(path) / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
