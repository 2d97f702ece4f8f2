"""Instruction-tuning data as QLoRA's qlora.py builds it (NOLA's llama/qlora.py, the LLaMA-2 runs).

Every dataset becomes rows {"input", "output"} (qlora.py `format_dataset`, lines 619-650):

  alpaca, alpaca-clean   input = ALPACA_PROMPT_DICT prompt filled from instruction / input (the
                         "prompt_input" template when input is non-empty), output unchanged
  chip2                  text "<human>: Q\\n<bot>: A": input = Q, output = A
  self-instruct          prompt -> input, completion -> output
  hh-rlhf                input = "", output = chosen
  oasst1                 input = "", output = text (the whole "### Human: ... ### Assistant: ...")
  input-output           as is (local files' default; also longform, for which qlora.py has no
                         branch)

A dataset is one of qlora.py's names (loaded from the Hugging Face hub with `datasets`, or from a
local copy given as `data_file`), a local .json / .jsonl / .csv / .tsv file (format
input-output unless told), or any hub id with an explicit format. As qlora.py, a local file
keeps a random 10% out of training (`local_holdout`); with evaluation on, the training split is
split again, `eval_dataset_size` rows for evaluation (seed 42, lines 657-675).

The collator (qlora.py `DataCollatorForCausalLM`, lines 464-515) tokenizes BOS + input and
output + EOS separately without special tokens, truncated to source_max_len / target_max_len
(the tokenizer's truncation side: right, so a long output loses its EOS), concatenates them, and
labels only the target (-100 on the source) unless train_on_source. Training with
--group_by_length groups rows by `Examples.lengths`: characters of input + output (qlora.py 669,
675), not tokens.

Fixed here (qlora.py bugs, documented): a tokenizer without a BOS token gets no BOS (qlora.py
writes the text "None"); a CSV's empty cell is "" (pandas reads NaN, formatted as "nan"); an
alpaca row whose input is null has no input (qlora.py formats "None"); an unknown format is an
error (qlora.py silently keeps the rows unformatted).

Needs neither torch nor `datasets` at import; `datasets` only to read the hub.
"""
import csv
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

IGNORE_INDEX = -100
DEFAULT_PAD_TOKEN = "[PAD]"

ALPACA_PROMPT_DICT = {
    "prompt_input": (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response: "),
    "prompt_no_input": (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response: "),
}

# qlora.py `load_data` (lines 591-617): name -> (hub id, load_dataset keyword arguments)
HUB_DATASETS = {
    "alpaca": ("tatsu-lab/alpaca", {}),
    "alpaca-clean": ("yahma/alpaca-cleaned", {}),
    "chip2": ("laion/OIG", {"data_files": "unified_chip2.jsonl"}),
    "self-instruct": ("yizhongw/self_instruct", {"name": "self_instruct"}),
    "hh-rlhf": ("Anthropic/hh-rlhf", {}),
    "longform": ("akoksal/LongForm", {}),
    "oasst1": ("timdettmers/openassistant-guanaco", {}),
}
FORMATS = ("alpaca", "alpaca-clean", "chip2", "self-instruct", "hh-rlhf", "oasst1", "input-output")
LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")
CHIP2_BOT = "\n<bot>: "


class Examples(list):
    """Formatted rows {"input", "output"}; a list, so a Trainer takes it as a dataset."""

    @property
    def lengths(self) -> List[int]:
        """What --group_by_length sorts by in qlora.py: len(input) + len(output) in characters."""
        return [len(r["input"]) + len(r["output"]) for r in self]


def resolve_format(dataset: str, dataset_format: Optional[str], local: bool) -> str:
    """qlora.py's choice: the explicit format, else the dataset's own name, else input-output."""
    if dataset_format is not None:
        if dataset_format not in FORMATS:
            raise ValueError(f"--dataset_format {dataset_format!r}: choose from {FORMATS}")
        return dataset_format
    if not local and dataset in FORMATS:
        return dataset
    return "input-output"


def _text(row: Dict, key: str, where: str, fmt: str, optional: bool = False) -> str:
    value = row.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        got = "missing" if key not in row else f"a {type(value).__name__}"
        raise ValueError(f"{where}: field {key!r} is {got}; {fmt} rows need a string {key!r}")
    return value


def format_row(row: Dict, fmt: str, where: str) -> Dict[str, str]:
    """One raw row as {"input", "output"}, as qlora.py's format_dataset; `where` names the row."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: not an object (a row with named fields)")
    if fmt in ("alpaca", "alpaca-clean"):
        fields = {"instruction": _text(row, "instruction", where, fmt),
                  "input": _text(row, "input", where, fmt, optional=True)}
        template = ALPACA_PROMPT_DICT["prompt_input" if fields["input"] != "" else
                                      "prompt_no_input"]
        return {"input": template.format(**fields), "output": _text(row, "output", where, fmt)}
    if fmt == "chip2":
        text = _text(row, "text", where, fmt)
        parts = text.split(CHIP2_BOT)
        if len(parts) < 2:
            raise ValueError(f"{where}: chip2 text lacks the bot turn {CHIP2_BOT!r}")
        # qlora.py keeps what follows the first bot marker up to a second one, if any
        return {"input": parts[0].replace("<human>: ", ""), "output": parts[1]}
    if fmt == "self-instruct":
        return {"input": _text(row, "prompt", where, fmt),
                "output": _text(row, "completion", where, fmt)}
    if fmt == "hh-rlhf":
        return {"input": "", "output": _text(row, "chosen", where, fmt)}
    if fmt == "oasst1":
        return {"input": "", "output": _text(row, "text", where, fmt)}
    if fmt == "input-output":
        return {"input": _text(row, "input", where, fmt), "output": _text(row, "output", where, fmt)}
    raise ValueError(f"unknown dataset format {fmt!r} (choose from {FORMATS})")


def format_rows(rows: Sequence[Dict], fmt: str, source: str) -> Examples:
    return Examples(format_row(r, fmt, f"{source}: row {n}") for n, r in enumerate(rows, 1))


def read_local(path: str) -> List[Dict]:
    """Rows of a local file: a JSON list or JSON lines (.json / .jsonl), or a table with a header
    (.csv, .tsv), as qlora.py's local_dataset reads them."""
    if not path.endswith(LOCAL_SUFFIXES):
        raise ValueError(f"{path}: unsupported dataset file (use {', '.join(LOCAL_SUFFIXES)})")
    if path.endswith((".csv", ".tsv")):
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ","))
        if not rows:
            raise ValueError(f"{path}: no rows under the header")
        return rows
    return [row for _, row in read_json_rows(path)]


def read_json_rows(path: str) -> List[Tuple[int, object]]:
    """(line number, value) of each row of a JSON list, a single JSON object, or JSON lines
    (blank lines skipped); a line that is not JSON is an error naming it. Rows of a JSON
    document are numbered from 1 in order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: neither a JSON document nor JSON lines "
                                 f"({e.msg})") from None
    else:
        rows = list(enumerate(whole if isinstance(whole, list) else [whole], 1))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def load_hub(hub_id: str, /, **kwargs) -> Dict[str, List[Dict]]:
    """Every split of a hub dataset as lists of rows (`datasets` imported here, on use)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(f"reading {hub_id!r} from the Hugging Face hub needs the `datasets` "
                          f"package (pip install datasets), or give a local copy of its rows") \
            from None
    return {split: list(rows) for split, rows in datasets.load_dataset(hub_id, **kwargs).items()}


def shuffled_split(n: int, test_size, seed: int) -> Tuple[List[int], List[int]]:
    """(train, test) row indices as `datasets.Dataset.train_test_split(test_size, shuffle=True,
    seed)` draws them (datasets 2.13 arrow_dataset.py 4400-4510): a float test_size takes
    ceil(test_size * n) rows; the test rows are the permutation's head, in its order."""
    import numpy as np
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test fraction {test_size} must lie in (0, 1)")
        n_test = math.ceil(test_size * n)
    else:
        n_test = int(test_size)
    if not 0 < n_test < n:
        raise ValueError(f"cannot hold {n_test} of {n} rows out and still train")
    perm = np.random.default_rng(seed).permutation(n).tolist()
    return perm[n_test:], perm[:n_test]


def load_splits(dataset: str, dataset_format: Optional[str] = None, *,
                data_file: Optional[str] = None, seed: int = 0,
                local_holdout: float = 0.1) -> Dict[str, Examples]:
    """The formatted splits of `dataset` (qlora.py `load_data` + `format_dataset`).

    dataset: one of qlora.py's names (HUB_DATASETS; `data_file` = a local copy of its training
    rows, read instead of the hub), a local file, or a hub id (with dataset_format).
    seed: the run's --seed. A local file's 10% holdout (`local_holdout`, 0 for none) is drawn,
    as in qlora.py, by numpy's global generator right after transformers.set_seed(seed), whose
    state makes `datasets` pick `seed` itself.
    """
    if dataset in HUB_DATASETS:
        fmt = resolve_format(dataset, dataset_format, local=False)
        if data_file is not None:
            raw = {"train": read_local(data_file)}
            source = data_file
        else:
            hub_id, kwargs = HUB_DATASETS[dataset]
            raw, source = load_hub(hub_id, **kwargs), hub_id
    elif os.path.exists(dataset):
        if data_file is not None:
            raise ValueError(f"--dataset {dataset} is a file already; drop the data file "
                             f"{data_file}")
        fmt = resolve_format(dataset, dataset_format, local=True)
        rows, source = read_local(dataset), dataset
        if local_holdout:
            train, test = shuffled_split(len(rows), float(local_holdout), seed)
            # errors name the rows by their number in the file
            return {split: Examples(format_row(rows[i], fmt, f"{source}: row {i + 1}")
                                    for i in idx)
                    for split, idx in (("train", train), ("test", test))}
        raw = {"train": rows}
    elif dataset_format is not None and "/" in dataset:
        fmt = resolve_format(dataset, dataset_format, local=False)
        raw, source = load_hub(dataset), dataset
    else:
        raise ValueError(f"--dataset {dataset!r}: neither one of qlora.py's datasets "
                         f"({', '.join(HUB_DATASETS)}) nor an existing file; a Hugging Face "
                         f"dataset id needs --dataset_format")
    return {split: format_rows(rows, fmt, f"{source} [{split}]" if len(raw) > 1 else source)
            for split, rows in raw.items()}


def train_eval_split(splits: Dict[str, Examples], *, do_train: bool = True,
                     do_eval: bool = False, eval_dataset_size: int = 1024,
                     max_train_samples: Optional[int] = None,
                     max_eval_samples: Optional[int] = None,
                     seed: int = 42) -> Tuple[Optional[Examples], Optional[Examples]]:
    """(train, eval) as qlora.py's make_data_module (lines 656-675): with evaluation, the
    dataset's "eval" split if it has one (qlora.py ignores a "test" split), else
    `eval_dataset_size` rows split off the training rows (seed 42); then the first
    max_*_samples rows of each."""
    if "train" not in splits:
        raise ValueError(f"the dataset has no train split (it has {sorted(splits)})")
    train, evaluation = splits["train"], None
    if do_eval:
        if "eval" in splits:
            evaluation = splits["eval"]
        else:
            keep, held = shuffled_split(len(train), int(eval_dataset_size), seed)
            train, evaluation = Examples(train[i] for i in keep), Examples(train[i] for i in held)
        if max_eval_samples is not None:
            evaluation = Examples(evaluation[:max_eval_samples])
    if not do_train:
        return None, evaluation
    if max_train_samples is not None:
        train = Examples(train[:max_train_samples])
    return train, evaluation


class InstructCollator:
    """qlora.py's DataCollatorForCausalLM (lines 464-515): a batch of {"input", "output"} rows ->
    input_ids, attention_mask, labels (right padding with the pad token, labels -100)."""

    def __init__(self, tokenizer, source_max_len: int, target_max_len: int,
                 train_on_source: bool = False, predict_with_generate: bool = False):
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has no EOS token: targets end with it")
        if tokenizer.pad_token_id is None:
            raise ValueError(f"the tokenizer has no pad token: add one (qlora.py adds "
                             f"{DEFAULT_PAD_TOKEN!r} and resizes the embeddings)")
        for name, value in (("source_max_len", source_max_len),
                            ("target_max_len", target_max_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.tokenizer = tokenizer
        self.source_max_len, self.target_max_len = source_max_len, target_max_len
        self.train_on_source, self.predict_with_generate = train_on_source, predict_with_generate

    def sources(self, instances: Sequence[Dict]) -> List[str]:
        return [f"{self.tokenizer.bos_token or ''}{ex['input']}" for ex in instances]

    def encode(self, instances: Sequence[Dict]) -> Tuple[List[List[int]], List[List[int]]]:
        """(source ids, target ids) of each row, truncated; no special tokens added."""
        tok = self.tokenizer
        targets = [f"{ex['output']}{tok.eos_token}" for ex in instances]
        src = tok(self.sources(instances), max_length=self.source_max_len, truncation=True,
                  add_special_tokens=False)["input_ids"]
        tgt = tok(targets, max_length=self.target_max_len, truncation=True,
                  add_special_tokens=False)["input_ids"]
        return src, tgt

    def __call__(self, instances: Sequence[Dict]):
        import torch
        src, tgt = self.encode(instances)
        if self.predict_with_generate:
            ids, labels = src, None
        else:
            ids = [s + t for s, t in zip(src, tgt)]
            labels = [(s if self.train_on_source else [IGNORE_INDEX] * len(s)) + t
                      for s, t in zip(src, tgt)]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        # From the lengths: the same as qlora.py's input_ids.ne(pad) while the pad id occurs in
        # no text (qlora.py's own [PAD] token), and right where it does (pad = EOS, say).
        attention = torch.zeros((len(ids), width), dtype=torch.bool)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = torch.tensor(x, dtype=torch.long)
            attention[i, :len(x)] = True
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if labels is not None:
            label_t = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)
            for i, y in enumerate(labels):
                label_t[i, :len(y)] = torch.tensor(y, dtype=torch.long)
            batch["labels"] = label_t
        return batch
