"""GLUE tasks in the `download_glue_data.py` TSV layout, tokenized for RoBERTa.

Folders and files (as the GLUE download script writes them):
    CoLA/{train,dev}.tsv   no header: source, label, original label, sentence
    SST-2/{train,dev}.tsv  header: sentence, label
    MRPC/{train,dev}.tsv   header: Quality, #1 ID, #2 ID, #1 String, #2 String
    STS-B/{train,dev}.tsv  header: index, genre, filename, year, old_index, source1, source2,
                           sentence1, sentence2, score   (regression, 0..5)
    RTE/{train,dev}.tsv    header: index, sentence1, sentence2, label
    QNLI/{train,dev}.tsv   header: index, question, sentence, label
    QQP/{train,dev}.tsv    header: id, qid1, qid2, question1, question2, is_duplicate
    MNLI/train.tsv, dev_matched.tsv, dev_mismatched.tsv
                           header: index, promptID, pairID, genre, sentence{1,2}_binary_parse,
                           sentence{1,2}_parse, sentence1, sentence2, label1[, label2..5], gold_label
Fields are split on tabs only (quotes are text, as in Hugging Face's GLUE processors). A line
with the wrong number of fields or an unknown label is an error naming the file and the line.

Tokenizer: RoBERTa's byte-level BPE is GPT-2's algorithm with its own id table. `--tokenizer_dir`
holds Hugging Face's `vocab.json` + `merges.txt` (RoBERTa) or OpenAI's `encoder.json` +
`vocab.bpe` (same formats); the BPE itself is NLG/src/encoder.py. Special ids come from the
vocabulary when it has `<s>`, `<pad>`, `</s>` (RoBERTa: 0, 1, 2), else RoBERTa's 0, 1, 2.
Inputs are `<s> A </s>` or `<s> A </s></s> B </s>`, truncated longest-first as HF's tokenizers do.
"""
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from nlg.encoder import Encoder, read_merges


@dataclass(frozen=True)
class TaskSpec:
    folder: str
    text_a: int
    text_b: Optional[int]
    label: int                      # column index (negative: from the end)
    labels: Optional[Tuple[str, ...]]   # None: regression
    header: bool = True
    columns: Optional[int] = None   # fixed field count (headerless files); else the header's
    dev_files: Tuple[str, ...] = ("dev.tsv",)
    scores: Tuple[str, ...] = ("accuracy",)     # what evaluation reports (glue_metrics.py)
    metric: str = "accuracy"    # the one the papers report; the best epoch is chosen by it

    @property
    def reported(self) -> str:
        """The key of `metric` in run_glue's results (MNLI: dev_matched_accuracy)."""
        if len(self.dev_files) > 1:
            return f"{os.path.splitext(self.dev_files[0])[0]}_{self.metric}"
        return self.metric


# The metric: what the LoRA paper (and LoRMA's, MTLoRA's) report: Matthews correlation for CoLA,
# Pearson for STS-B, accuracy for the others (MRPC and QQP too; their F1 is reported beside it).
_F1 = ("accuracy", "f1", "acc_and_f1")
TASKS: Dict[str, TaskSpec] = {
    "cola": TaskSpec("CoLA", 3, None, 1, ("0", "1"), header=False, columns=4,
                     scores=("mcc", "accuracy"), metric="mcc"),
    "sst2": TaskSpec("SST-2", 0, None, 1, ("0", "1")),
    "mrpc": TaskSpec("MRPC", 3, 4, 0, ("0", "1"), scores=_F1),
    "stsb": TaskSpec("STS-B", 7, 8, -1, None, scores=("pearson", "spearmanr", "corr"),
                     metric="pearson"),
    "rte": TaskSpec("RTE", 1, 2, -1, ("entailment", "not_entailment")),
    "qnli": TaskSpec("QNLI", 1, 2, -1, ("entailment", "not_entailment")),
    "qqp": TaskSpec("QQP", 3, 4, 5, ("0", "1"), scores=_F1),
    # HF's label order, which Microsoft's released MNLI head uses.
    "mnli": TaskSpec("MNLI", 8, 9, -1, ("contradiction", "entailment", "neutral"),
                     dev_files=("dev_matched.tsv", "dev_mismatched.tsv")),
}
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli"}


def task_spec(name: str) -> TaskSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r} (choose from {', '.join(TASKS)})")
    return TASKS[key]


def num_labels(name: str) -> int:
    spec = task_spec(name)
    return 1 if spec.labels is None else len(spec.labels)


def task_dir(data_dir: str, name: str) -> str:
    """`data_dir` is either the task's own folder or the GLUE root holding it."""
    spec = task_spec(name)
    for cand in (os.path.join(data_dir, spec.folder), data_dir):
        if os.path.isfile(os.path.join(cand, "train.tsv")) or \
                os.path.isfile(os.path.join(cand, spec.dev_files[0])):
            return cand
    raise FileNotFoundError(f"no {spec.folder}/train.tsv or {spec.dev_files[0]} under {data_dir} "
                            f"(GLUE layout of download_glue_data.py; see create_datasets.sh)")


@dataclass
class Example:
    text_a: str
    text_b: Optional[str]
    label: float   # class index, or the score for regression
    line: int


def read_tsv(path: str, name: str) -> List[Example]:
    spec = task_spec(name)
    out: List[Example] = []
    # utf-8-sig: MRPC's header starts with a byte-order mark.
    with open(path, encoding="utf-8-sig", newline="") as f:
        ncol = spec.columns
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if lineno == 1 and spec.header:
                ncol = len(line.split("\t"))
                continue
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != ncol:
                raise ValueError(f"{path}:{lineno}: expected {ncol} tab-separated fields "
                                 f"({spec.folder}), got {len(fields)}: {line[:80]!r}")
            raw_label = fields[spec.label].strip()
            if spec.labels is None:
                try:
                    label = float(raw_label)
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: score {raw_label!r} is not a number") \
                        from None
            else:
                if raw_label not in spec.labels:
                    raise ValueError(f"{path}:{lineno}: label {raw_label!r} is not one of "
                                     f"{list(spec.labels)}")
                label = float(spec.labels.index(raw_label))
            out.append(Example(fields[spec.text_a],
                               fields[spec.text_b] if spec.text_b is not None else None,
                               label, lineno))
    return out


def load_split(data_dir: str, name: str, split: str) -> Dict[str, List[Example]]:
    """{'train': [...]} or, for split='dev', one list per dev file ('dev', or MNLI's
    'dev_matched' / 'dev_mismatched' when present; the matched file is required)."""
    spec = task_spec(name)
    d = task_dir(data_dir, name)
    if split == "train":
        path = os.path.join(d, "train.tsv")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found")
        return {"train": read_tsv(path, name)}
    out = {}
    for i, fn in enumerate(spec.dev_files):
        path = os.path.join(d, fn)
        if os.path.isfile(path):
            out[fn[:-len(".tsv")]] = read_tsv(path, name)
        elif i == 0:
            raise FileNotFoundError(f"{path} not found")
    return out


# ----------------------------------------------------------------------------------------------
# Tokenizer

class RobertaTokenizer:
    def __init__(self, tokenizer_dir: str):
        pairs = [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")]
        for vfile, mfile in pairs:
            vp, mp = os.path.join(tokenizer_dir, vfile), os.path.join(tokenizer_dir, mfile)
            if os.path.isfile(vp) and os.path.isfile(mp):
                break
        else:
            raise FileNotFoundError(f"{tokenizer_dir}: needs vocab.json + merges.txt (RoBERTa, "
                                    f"Hugging Face layout) or encoder.json + vocab.bpe")
        with open(vp, encoding="utf-8") as f:
            try:
                vocab = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{vp}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise ValueError(f"{vp}: expected a JSON object mapping token strings to integer ids")
        self.bpe = Encoder(vocab, read_merges(mp), source=tokenizer_dir)
        self.bos_id = vocab.get("<s>", 0)
        self.pad_id = vocab.get("<pad>", 1)
        self.eos_id = vocab.get("</s>", 2)
        self.vocab_size = max(vocab.values()) + 1
        self.source = tokenizer_dir

    def encode_pair(self, a: str, b: Optional[str], max_len: int) -> List[int]:
        ta = self.bpe.encode(a)
        tb = self.bpe.encode(b) if b is not None else None
        special = 2 if tb is None else 4
        budget = max_len - special
        if budget < (1 if tb is None else 2):
            raise ValueError(f"max_seq_length {max_len} leaves no room for text")
        if tb is None:
            ta = ta[:budget]
            return [self.bos_id] + ta + [self.eos_id]
        # Longest-first as Hugging Face's (Rust) tokenizers: when both are too long together,
        # the shorter side keeps at most half of the budget (rounded down; the first side on a
        # tie) and the longer side gets the rest.
        if len(ta) + len(tb) > budget:
            short, long_ = (len(tb), len(ta)) if len(ta) > len(tb) else (len(ta), len(tb))
            short = min(short, budget // 2)
            long_ = min(long_, budget - short)
            la, lb = (long_, short) if len(ta) > len(tb) else (short, long_)
            ta, tb = ta[:la], tb[:lb]
        return [self.bos_id] + ta + [self.eos_id, self.eos_id] + tb + [self.eos_id]


def encode_examples(tok: RobertaTokenizer, examples: Sequence[Example], max_len: int):
    """[(ids, label)] in file order."""
    return [(tok.encode_pair(e.text_a, e.text_b, max_len), e.label) for e in examples]
