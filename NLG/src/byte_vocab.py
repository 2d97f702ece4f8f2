"""A byte-level BPE vocabulary with no merges (each byte one token, plus special tokens), in
GPT-2's file layout (encoder.json + vocab.bpe): every text encodes, nothing is downloaded. The
smoke runs (NLU --smoke, the LLM smoke) give it to their tiny random models."""
import json
import os
from typing import Sequence

from nlg.encoder import bytes_to_unicode


def write_byte_vocab(folder: str, specials: Sequence[str] = ("<|endoftext|>",),
                     specials_first: bool = False) -> int:
    """Write folder/encoder.json and folder/vocab.bpe; returns the vocabulary size. specials
    take the first ids when specials_first (RoBERTa: <s> 0, <pad> 1, </s> 2), else the last
    (GPT-2: <|endoftext|> after the bytes)."""
    os.makedirs(folder, exist_ok=True)
    chars = sorted(bytes_to_unicode().values())
    tokens = list(specials) + chars if specials_first else chars + list(specials)
    vocab = {t: i for i, t in enumerate(tokens)}
    with open(os.path.join(folder, "encoder.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "vocab.bpe"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    return len(vocab)
