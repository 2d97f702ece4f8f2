#!/usr/bin/env python
"""Train a small byte-level BPE vocabulary and write it in GPT-2's file format.

Output (in --out_dir), readable by the same encoder code as OpenAI's GPT-2 files:
  encoder.json  token string -> id: the 256 byte symbols (GPT-2's bytes_to_unicode map), then one
                token per merge in merge order, then "<|endoftext|>" as the last id;
  vocab.bpe     "#version: 0.2", then one merge "a b" a line, ending with a newline (readers drop
                the header and the empty last line).
Words are split with GPT-2's pre-tokenizer (from NLG/src/encoder.py), so every merge the encoder applies to a word
has a token in encoder.json and any byte string still encodes (bytes are the fallback).
"""
import argparse
import collections
import json
import os
import sys

# The project's encoder supplies GPT-2's byte alphabet and pre-tokenizer, so the words counted
# here are exactly the pieces it will run the merges on.
from nlg.encoder import EOT_TOKEN as EOT, Encoder, bytes_to_unicode

_SPLIT = Encoder({}, []).pat


def word_counts(lines):
    b2u = bytes_to_unicode()
    counts = collections.Counter()
    for line in lines:
        for tok in _SPLIT.findall(line.rstrip("\n")):
            counts["".join(b2u[b] for b in tok.encode("utf-8"))] += 1
    return counts


def train_bpe(counts, n_merges):
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties: smallest pair)."""
    words = [(list(w), c) for w, c in counts.items()]
    pairs = collections.Counter()
    where = collections.defaultdict(set)  # pair -> indices of words containing it
    for i, (sym, c) in enumerate(words):
        for a, b in zip(sym, sym[1:]):
            pairs[a, b] += c
            where[a, b].add(i)
    merges = []
    while len(merges) < n_merges and pairs:
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if best[1] < 2:  # a pair seen once teaches nothing
            break
        (a, b), _ = best
        merges.append((a, b))
        for i in list(where[a, b]):
            sym, c = words[i]
            for x, y in zip(sym, sym[1:]):
                pairs[x, y] -= c
                if pairs[x, y] <= 0:
                    del pairs[x, y]
            out, j = [], 0
            while j < len(sym):
                if j + 1 < len(sym) and sym[j] == a and sym[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(sym[j])
                    j += 1
            words[i] = (out, c)
            for x, y in zip(out, out[1:]):
                pairs[x, y] += c
                where[x, y].add(i)
        where.pop((a, b), None)
    return merges


def write_vocab(out_dir, merges):
    os.makedirs(out_dir, exist_ok=True)
    encoder = {}
    for ch in bytes_to_unicode().values():
        encoder[ch] = len(encoder)
    for a, b in merges:
        if a + b not in encoder:  # two merge paths can spell the same token; keep one id
            encoder[a + b] = len(encoder)
    encoder[EOT] = len(encoder)
    # Written under temporary names and renamed, vocab.bpe last: a present vocab.bpe means a
    # complete vocabulary (the demo reuses it on the next run).
    enc_path, bpe_path = os.path.join(out_dir, "encoder.json"), os.path.join(out_dir, "vocab.bpe")
    with open(enc_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(encoder, f, ensure_ascii=False)
    with open(bpe_path + ".tmp", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    os.replace(enc_path + ".tmp", enc_path)
    os.replace(bpe_path + ".tmp", bpe_path)
    return encoder


def read_lines(path):
    """Plain text one line a unit; for *.jsonl, the context and completion strings of each line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if path.endswith(".jsonl"):
                try:
                    item = json.loads(line)
                    yield item.get("context", "")
                    yield item.get("completion", "")
                except (json.JSONDecodeError, AttributeError) as e:
                    sys.exit(f"build_vocab.py: {path}:{n}: not a json object ({e})")
            else:
                yield line


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="text files (or *.jsonl with context/completion)")
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--vocab_size", type=int, default=1024,
                    help="total tokens incl. the 256 bytes and <|endoftext|> (an upper bound)")
    args = ap.parse_args(argv)
    if args.vocab_size < 258:
        ap.error("--vocab_size must be at least 258 (256 bytes, one merge, <|endoftext|>)")
    for p in args.inputs:
        if not os.path.isfile(p):
            ap.error(f"input file not found: {p}")

    counts = collections.Counter()
    for p in args.inputs:
        counts.update(word_counts(read_lines(p)))
    merges = train_bpe(counts, args.vocab_size - 257)
    encoder = write_vocab(args.out_dir, merges)
    print(f"build_vocab: {len(encoder)} tokens ({len(merges)} merges), "
          f"<|endoftext|> = {encoder[EOT]} -> {args.out_dir}")


if __name__ == "__main__":
    main()
