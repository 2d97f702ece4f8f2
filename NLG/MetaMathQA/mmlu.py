"""MMLU accuracy as QLoRA's qlora.py measures it during training (NOLA's LLaMA-2 numbers).

Data: QLoRA's JSON-lines files {"subject", "input", "output"} under data/mmlu/ (qlora.py
740-755): mmlu-zs = zero_shot_mmlu_{val,test}.json, mmlu-fs (alias mmlu) =
five_shot_mmlu_{val,test}.json; split "eval" (also spelled "val") or "test"; the first
max_mmlu_samples rows when set. Each input ends with "Answer:", each output is one of A-D.

Scoring (MMLUEvalCallback, qlora.py 756-798): rows go through the training collator (source =
BOS + input truncated to mmlu_source_max_len, default 2048; target = output + EOS; labels on the
target only) in order, batch by batch. For each row the prediction is the arg-max, over the
token ids of "A", "B", "C", "D" (each letter tokenized alone without special tokens, first id),
of the logits at the position before the first labelled token, i.e. the last source token; the
reference is the letter of that first labelled token. Accuracy is computed per subject and the
reported mmlu_<split>_accuracy is the unweighted mean over subjects; mmlu_loss is the mean of
the batches' losses (the model's loss over each batch's target tokens, answer and EOS).

Differences from qlora.py, all where it would crash or mislead: mmlu-zs keeps its subjects
(qlora.py drops the column, then reads it: a KeyError at the first evaluation); the labels are
always target-only (with --train_on_source qlora.py would read the logit before the BOS); a
target that is not exactly answer + EOS, or an answer that is not one of the four letter
tokens, is an error naming the row (qlora.py pairs labels by twos across the batch). Subjects
are averaged in sorted order (qlora.py: set order; the mean differs in the last bit at most).
A source longer than mmlu_source_max_len loses its end (qlora.py's truncation, kept); such rows
are counted in `truncated_sources`.

Needs neither torch nor numpy at import.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

from instruct_data import IGNORE_INDEX, InstructCollator, read_json_rows

FILES = {
    "mmlu-zs": {"eval": "zero_shot_mmlu_val.json", "test": "zero_shot_mmlu_test.json"},
    "mmlu-fs": {"eval": "five_shot_mmlu_val.json", "test": "five_shot_mmlu_test.json"},
}
DATASETS = ("mmlu-zs", "mmlu-fs", "mmlu")      # "mmlu" is qlora.py's other name for mmlu-fs
SPLITS = {"eval": "eval", "val": "eval", "test": "test"}
LETTERS = ("A", "B", "C", "D")
DEFAULT_SOURCE_MAX_LEN = 2048                  # qlora.py's mmlu_source_max_len


def split_name(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"--mmlu_split {split!r}: choose from {sorted(SPLITS)}")
    return SPLITS[split]


def mmlu_path(data_dir: str, dataset: str, split: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"--mmlu_dataset {dataset!r}: choose from {DATASETS}")
    return os.path.join(data_dir, FILES["mmlu-fs" if dataset == "mmlu" else dataset][
        split_name(split)])


def read_mmlu(path: str, max_samples: Optional[int] = None) -> List[Dict[str, str]]:
    """The rows of a QLoRA MMLU file (JSON lines, or one JSON list); the first max_samples."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such MMLU file (QLoRA's data/mmlu/*.json)")
    numbered = read_json_rows(path)
    rows = []
    for n, row in numbered:
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: not an object with subject / input / output")
        bad = [k for k in ("subject", "input", "output") if not isinstance(row.get(k), str)]
        if bad:
            raise ValueError(f"{path}:{n}: field(s) {bad} missing or not text")
        if row["output"] not in LETTERS:
            raise ValueError(f"{path}:{n}: output {row['output']!r} is not one of {LETTERS}")
        rows.append({"subject": row["subject"], "input": row["input"], "output": row["output"]})
    if not rows:
        raise ValueError(f"{path}: no rows")
    if max_samples is not None:
        if max_samples <= 0:
            raise ValueError(f"max_mmlu_samples must be positive, got {max_samples}")
        rows = rows[:max_samples]          # qlora.py: select(range(n)), the file's first rows
    return rows


def abcd_token_ids(tokenizer) -> List[int]:
    """qlora.py's abcd_idx: the first id of each letter tokenized alone, no special tokens."""
    ids = [tokenizer(letter, add_special_tokens=False).input_ids[0] for letter in LETTERS]
    if len(set(ids)) != 4:
        raise ValueError(f"the tokenizer maps A, B, C, D to the ids {ids}, not four distinct "
                         f"tokens: MMLU scoring cannot tell the answers apart")
    return ids


def score_batch(logits, labels, abcd_idx: Sequence[int], first_row: int = 0
                ) -> Tuple[List[int], List[int]]:
    """(predicted, reference) answer indices 0-3 of one batch, from its logits (B, T, V) and
    labels (B, T) as the collator made them. Rows are numbered from `first_row` in errors."""
    import torch
    abcd = torch.as_tensor(list(abcd_idx), device=logits.device)
    preds, refs = [], []
    for i in range(labels.shape[0]):
        where = (labels[i] != IGNORE_INDEX).nonzero().flatten()
        if where.numel() != 2:
            raise ValueError(f"MMLU row {first_row + i + 1}: {where.numel()} labelled tokens; "
                             f"the target must tokenize to the answer letter and EOS (2 tokens)")
        first = int(where[0])
        if first == 0:
            raise ValueError(f"MMLU row {first_row + i + 1}: the source is empty, no position "
                             f"predicts the answer")
        answer = int(labels[i, first])
        if answer not in abcd_idx:
            raise ValueError(f"MMLU row {first_row + i + 1}: answer token {answer} is none of "
                             f"the letter tokens {list(abcd_idx)} (tokenizer mismatch)")
        preds.append(int(torch.argmax(logits[i, first - 1][abcd])))
        refs.append(list(abcd_idx).index(answer))
    return preds, refs


def summarize(subjects: Sequence[str], preds: Sequence[int], refs: Sequence[int], loss: float,
              split: str) -> Dict[str, float]:
    """qlora.py's logged dict: mmlu_loss, mmlu_<split>_accuracy_<subject> for every subject and
    mmlu_<split>_accuracy, the mean over subjects of their accuracy."""
    import numpy as np
    if not (len(subjects) == len(preds) == len(refs)) or not subjects:
        raise ValueError(f"{len(subjects)} subjects, {len(preds)} predictions, {len(refs)} "
                         f"references: one of each per row, at least one row")
    split = split_name(split)
    per: Dict[str, List[bool]] = {}
    for s, p, r in zip(subjects, preds, refs):
        per.setdefault(s, []).append(p == r)
    results = {"mmlu_loss": float(loss)}
    scores = []
    for s in sorted(per):
        score = sum(per[s]) / len(per[s])      # evaluate's "accuracy": the share of hits
        results[f"mmlu_{split}_accuracy_{s}"] = score
        scores.append(score)
    results[f"mmlu_{split}_accuracy"] = float(np.mean(scores))
    return results


def record(rows: Sequence[Dict[str, str]], run: Dict, *, dataset: str, split: str,
           data_file: str) -> Dict:
    """What a run folder's mmlu_results.json holds (the format nlg.report reads): qlora.py's
    logged values (`run["results"]`) and "accuracy" (their mean over subjects),
    "accuracy_questions" (over questions), "correct", "total", per subject {"accuracy",
    "correct", "total"}, and the data: "dataset", "data_file", "split", "shots" (0 / 5)."""
    split = split_name(split)
    subjects: Dict[str, Dict[str, float]] = {}
    for row, pred in zip(rows, run["predictions"]):
        s = subjects.setdefault(row["subject"], {"correct": 0, "total": 0})
        s["correct"] += int(LETTERS[pred] == row["output"])
        s["total"] += 1
    for s in subjects.values():
        s["accuracy"] = s["correct"] / s["total"]
    correct = sum(s["correct"] for s in subjects.values())
    return {"task": "mmlu", "dataset": dataset, "data_file": data_file, "split": split,
            "shots": 0 if dataset == "mmlu-zs" else 5,
            "accuracy": run["results"][f"mmlu_{split}_accuracy"],
            "accuracy_questions": correct / len(rows), "correct": correct, "total": len(rows),
            "subjects": dict(sorted(subjects.items())),
            "truncated_sources": run["truncated_sources"], **run["results"]}


def evaluate(model, tokenizer, rows: Sequence[Dict[str, str]], *, split: str = "eval",
             batch_size: int = 1, source_max_len: int = DEFAULT_SOURCE_MAX_LEN,
             target_max_len: int = 256, progress: bool = False) -> Dict:
    """Run `model` over MMLU `rows` in order, `batch_size` rows at a time; returns
    {"results": qlora.py's logged dict, "predictions": [0-3 per row], "truncated_sources": n}.
    The model's train/eval mode is restored afterwards."""
    import torch
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    collator = InstructCollator(tokenizer, source_max_len, target_max_len)
    abcd = abcd_token_ids(tokenizer)
    device = next(model.parameters()).device
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    full = tokenizer(collator.sources(rows), add_special_tokens=False)["input_ids"]
    truncated = sum(len(x) > source_max_len for x in full)
    was_training = model.training
    model.eval()
    preds, refs, loss_sum = [], [], 0.0
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(batches), desc="MMLU", unit="batch")
    try:
        with torch.no_grad():
            for b, batch in enumerate(batches):
                enc = collator(batch)
                out = model(input_ids=enc["input_ids"].to(device),
                            attention_mask=enc["attention_mask"].to(device),
                            labels=enc["labels"].to(device))
                p, r = score_batch(out.logits, enc["labels"].to(device), abcd, b * batch_size)
                preds += p
                refs += r
                loss_sum += float(out.loss)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    results = summarize([r["subject"] for r in rows], preds, refs, loss_sum / len(batches), split)
    return {"results": results, "predictions": preds, "truncated_sources": truncated}
