"""Training data of the math / instruction pipeline, as LoRMA's train_math_lorma.py builds it.

Rows are MetaMathQA ({"query", "response"}: the query's first line becomes the instruction, the
rest the input) or Alpaca ({"instruction", "input", "output"}), in a JSON list or JSON lines. The
list is shuffled once with Python's random seeded 42 (the official module seeds `random` at
import), then cut to --data_length. Each example is the Alpaca prompt + the response + EOS; the
loss covers the response and EOS only (prompt tokens are labelled -100).
"""
import json
import random
from typing import Dict, List, Sequence

import torch

PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that "
                "provides further context. Write a response that appropriately completes the "
                "request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n"
                "### Response:")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that "
                   "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                   "### Response:")
IGNORE = -100


def read_rows(path: str) -> List[Dict]:
    """A JSON list, else JSON lines; errors name the file and line."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: neither a JSON list nor JSON lines ({e.msg})") \
                    from None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty list of rows")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {n} is not a JSON object")
    return rows


def to_alpaca(rows: List[Dict], path: str) -> List[Dict]:
    """instruction / input / output rows; MetaMathQA's query / response split as official."""
    mathqa = "instruction" not in rows[0]
    out = []
    for n, row in enumerate(rows, 1):
        need = ("query", "response") if mathqa else ("instruction", "output")
        missing = [k for k in need if not isinstance(row.get(k), str)]
        if missing:
            raise ValueError(f"{path}: row {n} lacks string field(s) {missing} "
                             f"({'MetaMathQA' if mathqa else 'Alpaca'} rows, as row 1)")
        if mathqa:
            first, _, rest = row["query"].partition("\n")
            out.append({"instruction": first, "input": rest, "output": row["response"]})
        else:
            out.append({"instruction": row["instruction"], "input": row.get("input") or "",
                        "output": row["output"]})
    return out


def load_examples(path: str, data_length: int) -> List[Dict]:
    rows = to_alpaca(read_rows(path), path)
    rows = random.Random(42).sample(rows, len(rows))
    return rows[:data_length]


def prompt(example: Dict) -> str:
    template = PROMPT_INPUT if example.get("input") else PROMPT_NO_INPUT
    return template.format(**example)


def responses_cut(tokenizer, examples: Sequence[Dict], max_length: int, sample: int = 1000) -> int:
    """How many of the first `sample` examples have no response token left once truncated to
    max_length (the prompt alone fills it: they would train on nothing); ValueError when that is
    every one of them (the loss would be zero or undefined from the first step)."""
    head = list(examples[:sample])
    cut = sum(len(tokenizer(prompt(ex), truncation=True, max_length=max_length)["input_ids"])
              >= max_length for ex in head)
    if head and cut == len(head):
        raise ValueError(f"--model_max_length {max_length}: every one of the first {len(head)} "
                         f"examples has a prompt of {max_length} tokens or more, so no response "
                         f"token is left to train on: raise --model_max_length")
    return cut


class Collator:
    """Tokenizes each batch as the official collator: source and source + target separately,
    truncated to max_length; labels mask the source; right padding."""

    def __init__(self, tokenizer, max_length: int):
        self.tok, self.max_length = tokenizer, max_length

    def _ids(self, text: str) -> List[int]:
        return self.tok(text, truncation=True, max_length=self.max_length)["input_ids"]

    def __call__(self, batch: Sequence[Dict]) -> Dict[str, torch.Tensor]:
        pad = self.tok.pad_token_id
        ids, labels = [], []
        for ex in batch:
            source = prompt(ex)
            full = self._ids(source + ex["output"] + self.tok.eos_token)
            n_src = len(self._ids(source))
            ids.append(full)
            labels.append([IGNORE] * min(n_src, len(full)) + full[n_src:])
        if all(y == IGNORE for row in labels for y in row):
            raise ValueError(f"--model_max_length {self.max_length}: a batch of {len(batch)} "
                             f"examples whose prompts fill it, leaving no response token to "
                             f"train on (the loss would be zero): raise --model_max_length")
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        label_t = torch.full((len(ids), width), IGNORE, dtype=torch.long)
        for i, (x, y) in enumerate(zip(ids, labels)):
            input_ids[i, :len(x)] = torch.tensor(x)
            label_t[i, :len(y)] = torch.tensor(y)
        return {"input_ids": input_ids, "labels": label_t, "attention_mask": input_ids.ne(pad)}
