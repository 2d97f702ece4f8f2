"""GPT-2 byte-level BPE, read from OpenAI's `encoder.json` + `vocab.bpe`.

Gives the same ids as OpenAI's encoder (and Hugging Face's GPT2Tokenizer) with the standard
library only: GPT-2's pre-tokenizer needs \\p{L} / \\p{N}, which `re` lacks, so the letter,
number and whitespace classes are built once from `unicodedata` (see `_split_pattern`).
Characters assigned after this Python's Unicode version (unicodedata.unidata_version) fall in
the "other" class here, where the `regex` package may know them as letters or digits; ordinary
text is unaffected.

Usage (as in Microsoft's LoRA repo):
    enc = get_encoder("vocab")
    ids = enc.encode(text)          # list of token ids
    text = enc.decode(ids)
    enc.eos_id                      # id of "<|endoftext|>" in this vocabulary
"""
import json
import os
import re
import sys
import unicodedata
from functools import lru_cache

EOT_TOKEN = "<|endoftext|>"

# Unicode White_Space property, which is what `regex`'s \s matches. Python's own \s also takes
# U+001C..U+001F, which GPT-2's pattern must treat as punctuation.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


@lru_cache()
def bytes_to_unicode():
    """Map every byte to a printable unicode character (GPT-2's reversible byte alphabet):
    printable latin-1 bytes map to themselves, the rest to code points from 256 upwards."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    table = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _ranges_to_class(ranges):
    parts = []
    for lo, hi in ranges:
        parts.append(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
    return "".join(parts)


@lru_cache()
def _category_classes():
    """Character-class bodies for \\p{L} and \\p{N}, from unicodedata's general categories."""
    found = {"L": [], "N": []}
    for cp in range(sys.maxunicode + 1):
        major = unicodedata.category(chr(cp))[0]
        if major in found:
            rs = found[major]
            if rs and rs[-1][1] == cp - 1:
                rs[-1][1] = cp
            else:
                rs.append([cp, cp])
    return _ranges_to_class(found["L"]), _ranges_to_class(found["N"])


@lru_cache()
def _split_pattern():
    """GPT-2's pre-tokenizer
        's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
    written for the standard `re` module."""
    letters, numbers = _category_classes()
    ws = _WHITESPACE
    return re.compile(
        rf"'s|'t|'re|'ve|'m|'ll|'d"
        rf"| ?[{letters}]+| ?[{numbers}]+| ?[^{ws}{letters}{numbers}]+"
        rf"|[{ws}]+(?![^{ws}])|[{ws}]+"
    )


def get_pairs(word):
    """Set of adjacent symbol pairs in a word (a tuple of symbols)."""
    return set(zip(word[:-1], word[1:]))


class Encoder:
    def __init__(self, encoder, bpe_merges, errors="replace", source=None):
        self.encoder = encoder
        self.decoder = {v: k for k, v in encoder.items()}
        self.errors = errors  # how undecodable byte sequences are shown by decode()
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.bpe_ranks = {tuple(m): i for i, m in enumerate(bpe_merges)}
        self.cache = {}
        self.pat = _split_pattern()
        self.source = source  # vocabulary folder, for error messages

    @property
    def eos_id(self):
        try:
            return self.encoder[EOT_TOKEN]
        except KeyError:
            raise KeyError(f"{EOT_TOKEN!r} is not in the vocabulary"
                           + (f" {self.source}/encoder.json" if self.source else "")) from None

    def bpe(self, token):
        """Space-separated BPE symbols of one pre-token (already mapped to the byte alphabet)."""
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        word = tuple(token)
        ranks = self.bpe_ranks
        while len(word) > 1:
            pairs = get_pairs(word)
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            first, second = best
            merged = []
            i = 0
            n = len(word)
            while i < n:
                if i < n - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        result = " ".join(word)
        self.cache[token] = result
        return result

    def tokens(self, text):
        """The BPE symbols (strings in the byte alphabet) that `encode` maps to ids."""
        out = []
        be = self.byte_encoder
        for piece in self.pat.findall(text):
            mapped = "".join(be[b] for b in piece.encode("utf-8"))
            out.extend(self.bpe(mapped).split(" "))
        return out

    def encode(self, text):
        """Token ids of `text` (a list of ints)."""
        enc = self.encoder
        try:
            return [enc[t] for t in self.tokens(text)]
        except KeyError as e:
            where = f" {self.source}/encoder.json" if self.source else " encoder.json"
            raise KeyError(f"BPE symbol {e.args[0]!r} (from text {text[:60]!r}) is not in{where}: "
                           "encoder.json and vocab.bpe do not belong together") from None

    def decode(self, tokens):
        """Text of a list of token ids (invalid utf-8 shown per `errors`, default U+FFFD)."""
        try:
            chars = "".join(self.decoder[int(t)] for t in tokens)
        except KeyError as e:
            raise KeyError(f"token id {e.args[0]} is not in the vocabulary"
                           + (f" {self.source}/encoder.json" if self.source else "")) from None
        return bytearray(self.byte_decoder[c] for c in chars).decode("utf-8", errors=self.errors)


def read_merges(path):
    """Merge rules of a `vocab.bpe` file: an optional '#version' header, then 'a b' per line."""
    merges = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if lineno == 1 and line.startswith("#version"):
                continue
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: a merge rule must be two symbols, got {line!r}")
            merges.append((parts[0], parts[1]))
    return merges


def get_encoder(models_dir):
    """The encoder of the vocabulary in `models_dir` (encoder.json + vocab.bpe)."""
    enc_path = os.path.join(models_dir, "encoder.json")
    bpe_path = os.path.join(models_dir, "vocab.bpe")
    for p in (enc_path, bpe_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p} not found (GPT-2 vocabulary: run download_pretrained_checkpoints.sh "
                                    "or pass --vocab to a folder with encoder.json and vocab.bpe)")
    with open(enc_path, "r", encoding="utf-8") as f:
        try:
            encoder = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{enc_path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise ValueError(f"{enc_path}: expected a JSON object mapping token strings to integer ids")
    return Encoder(encoder=encoder, bpe_merges=read_merges(bpe_path), source=models_dir)
