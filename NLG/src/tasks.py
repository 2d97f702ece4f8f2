"""What an NLG task is, in one table: its data folder and raw files, its converter, its reference
layout and scorer, the splits it is scored on, and its training and decoding defaults.

create_datasets.sh (which raw file becomes which split), scripts/run_task.sh (data folder,
reference layout, scored splits), scripts/make_scripts.py (per-task defaults), gpt2_decode.py
(--ref_type) and eval/score.py (--task) read it; the shell scripts through this command line:

    python -m nlg.tasks                 the task names
    python -m nlg.tasks raw TASK        "split raw-file" lines, in build order
    python -m nlg.tasks shell TASK      TASK_* shell assignments (eval "$(python -m nlg.tasks shell e2e)")
"""
import shlex
import sys
from dataclasses import dataclass, field
from typing import Dict, Tuple


@dataclass(frozen=True)
class NLGTask:
    name: str
    title: str
    data_dir: str                   # under NLG/: what create_datasets.sh writes
    raw: Tuple[Tuple[str, str], ...]    # (split, raw file under the raw-data root), build order
    references: str                 # "e2e": one file, each context's references then a blank line;
                                    # "multi": reference0 .. reference{N-1} (GenerationEval)
    score_splits: Tuple[str, ...] = ("all",)   # WebNLG: also the seen / unseen categories
    ref_num: int = 6                # references per context written for "multi" scoring
    # Microsoft's examples/NLG/README.md values (per task), which the generated scripts start from
    defaults: Dict[str, str] = field(default_factory=dict)

    @property
    def converter(self) -> str:
        return f"src/format_converting_{self.name}.py"


TASKS: Dict[str, NLGTask] = {t.name: t for t in (
    NLGTask("e2e", "E2E", "data/e2e",
            (("train", "e2e/train.txt"), ("test", "e2e/test.txt"), ("valid", "e2e/valid.txt")),
            references="e2e",
            defaults=dict(WEIGHT_DECAY="0.01", DROPOUT="0.1", LABEL_SMOOTH="0.1",
                          LENGTH_PENALTY="0.9")),
    NLGTask("webnlg", "WebNLG 2017", "data/webnlg_challenge_2017",
            (("train", "webnlg_challenge_2017/train.json"),
             ("test", "webnlg_challenge_2017/test.json"),
             ("valid", "webnlg_challenge_2017/dev.json")),
            references="multi", score_splits=("all", "seen", "unseen"),
            defaults=dict(WEIGHT_DECAY="0.01", DROPOUT="0.1", LABEL_SMOOTH="0.1",
                          LENGTH_PENALTY="0.8")),
    NLGTask("dart", "DART", "data/dart",
            (("train", "dart/dart-v1.1.1-full-train.json"),
             ("test", "dart/dart-v1.1.1-full-test.json"),
             ("valid", "dart/dart-v1.1.1-full-dev.json")),
            references="multi",
            defaults=dict(WEIGHT_DECAY="0.0", DROPOUT="0.0", LABEL_SMOOTH="0.0",
                          LENGTH_PENALTY="0.8")),
)}


def get(name: str) -> NLGTask:
    if name not in TASKS:
        raise ValueError(f"unknown NLG task {name!r} (choose from {', '.join(TASKS)})")
    return TASKS[name]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(" ".join(TASKS))
        return 0
    if len(argv) != 2 or argv[0] not in ("raw", "shell"):
        print("usage: python -m nlg.tasks [raw TASK | shell TASK]", file=sys.stderr)
        return 2
    try:
        task = get(argv[1])
    except ValueError as e:
        print(f"nlg.tasks: {e}", file=sys.stderr)
        return 2
    if argv[0] == "raw":
        print("\n".join(f"{split} {rel}" for split, rel in task.raw))
    else:
        values = {"TASK_TITLE": task.title, "TASK_DATA": task.data_dir,
                  "TASK_REFERENCES": task.references,
                  "TASK_SCORE_SPLITS": " ".join(task.score_splits),
                  "TASK_REF_NUM": str(task.ref_num), "TASK_CONVERTER": task.converter}
        print("\n".join(f"{k}={shlex.quote(v)}" for k, v in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
