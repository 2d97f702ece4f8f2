"""Writes the GLUE scripts of NLU/scripts/ from one hyperparameter table; run it after editing.

    python NLU/scripts/make_scripts.py          (from anywhere)

Each generated script only sets variables and hands over to run_glue_task.sh, the one pipeline
(train -> dev evaluation) every script shares. Generated:
  roberta_{base,large}_<method>_<task>.sh   methods: ft lora lorma_plus lorma_pi
                                            mtlora_{shim,icfm,ctcm,dtsm} nola qnola
  roberta_large_plus_cola.sh MODE R DO_PI SEED      LoRMA's README interface
  roberta_base_<task>.sh                            MTLoRA's README interface (SHIM by default,
                                                    MTLORA_STRUCTURE=ICFM|CTCM|DTSM to change)

Sources of the numbers:
  LoRA, RoBERTa-base: LoRA paper (Hu et al. 2021) Table 9 — batch, epochs, learning rate,
    r = 8, alpha = 8, max length 512, warmup 0.06, weight decay 0.1 as in microsoft/LoRA's
    examples/NLU/roberta_base_*.sh (checked: MNLI 16/30/5e-4, MRPC 16/30/4e-4, QNLI 32/25/4e-4,
    QQP 16/25/5e-4, RTE 32/80/5e-4, STS-B 16/40/4e-4; those scripts pass --lora_alpha 16, the
    paper's table says 8: we follow the paper for LoRA). MRPC, RTE, STS-B start from the MNLI
    adapter (the scripts' --lora_path roberta_base_mnli_lora.bin).
  LoRA, RoBERTa-large: Table 9 (alpha 16, batch 4); checked against microsoft/LoRA's
    roberta_large_{qqp,sst2,stsb}.sh, whose values are used where they exist (SST-2 batch 8,
    STS-B lr 3e-4 / 10 epochs / length 128). MRPC, RTE, STS-B start from MNLI.
  MTLoRA, RoBERTa-base: YaoLiang2023/MTLoRA NLU/roberta_base_<task>.sh: r 8, alpha 16, length
    512, warmup 0.06, weight decay 0.1, and per task the batch per GPU, lr, epochs and seed of
    MTLORA_BASE below (the official runs used 1 or 2 GPUs, noted per task; the batch here is per
    GPU, so run with that many GPUs for the official global batch). RoBERTa-large has no
    official MTLoRA script: LoRA's large values with alpha 16.
  LoRMA: Exploration-Lab/LoRMA NLU/scripts/roberta_{base,large}_{plus,pi}_<task>.sh, per task
    (LORMA below: batch, epochs, lr, length, alpha = r or r / 2 in the scripts' integer
    arithmetic, weight decay, warmup ratio); no MNLI start (the scripts have none).
    roberta_base_pi_cola.sh does not exist there: base pi CoLA takes base plus CoLA's values.
  Full fine-tuning (ft): RoBERTa paper's GLUE ranges (lr 2e-5 base / 1e-5 large, 10 epochs).
  NOLA: its paper has no GLUE setting; coefficients use its GPT-2 learning rate (1e-2 here is a
    placeholder to tune) and the head keeps LoRA's learning rate (--classifier_lr).
"""
import os
import stat
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import loralib as lora
    lora.script_variants
except (ImportError, AttributeError):   # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    sys.modules.pop("loralib", None)
    import loralib as lora
TASKS = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb")
FROM_MNLI = ("mrpc", "rte", "stsb")

# task: (batch per GPU, epochs, learning rate, max length)
LORA_BASE = {
    "mnli": (16, 30, 5e-4, 512), "sst2": (16, 60, 5e-4, 512), "mrpc": (16, 30, 4e-4, 512),
    "cola": (32, 80, 4e-4, 512), "qnli": (32, 25, 4e-4, 512), "qqp": (16, 25, 5e-4, 512),
    "rte": (32, 80, 5e-4, 512), "stsb": (16, 40, 4e-4, 512),
}
LORA_LARGE = {
    "mnli": (4, 10, 3e-4, 128), "sst2": (8, 10, 4e-4, 512), "mrpc": (4, 20, 3e-4, 512),
    "cola": (4, 20, 2e-4, 128), "qnli": (4, 10, 2e-4, 512), "qqp": (4, 20, 3e-4, 512),
    "rte": (4, 20, 4e-4, 512), "stsb": (4, 10, 3e-4, 128),
}
TABLE = {"base": LORA_BASE, "large": LORA_LARGE}
LORA_ALPHA = {"base": 8, "large": 16}
RANK = 8

# MTLoRA NLU/roberta_base_<task>.sh: task -> (GPUs, batch per GPU, lr, epochs, seed)
MTLORA_BASE = {
    "cola": (2, 32, 4e-4, 80, 27), "mnli": (2, 16, 5e-4, 30, 0), "mrpc": (1, 16, 4e-4, 30, 0),
    "qnli": (2, 32, 4e-4, 25, 1739), "qqp": (2, 16, 5e-4, 25, 0), "rte": (1, 32, 5e-4, 80, 0),
    "sst2": (2, 16, 5e-4, 60, 69), "stsb": (1, 16, 4e-4, 40, 0),
}
# LoRMA NLU/scripts/roberta_<size>_<plus|pi>_<task>.sh:
# (size, variant) -> task -> (batch, epochs, lr, length, alpha divisor of r, weight decay, warmup)
LORMA = {
    ("base", "plus"): {
        "cola": (64, 100, 4e-4, 512, 2, 0.2, 0.06), "mnli": (64, 30, 5e-4, 512, 2, 0.1, 0.06),
        "mrpc": (32, 30, 4e-4, 512, 1, 0.1, 0.06), "qnli": (64, 25, 4e-4, 512, 2, 0.1, 0.06),
        "qqp": (16, 25, 5e-4, 512, 1, 0.1, 0.06), "rte": (32, 80, 5e-4, 512, 2, 0.1, 0.06),
        "sst2": (64, 60, 5e-4, 512, 1, 0.1, 0.06), "stsb": (16, 40, 4e-4, 512, 1, 0.1, 0.06)},
    ("base", "pi"): {
        "mnli": (64, 30, 5e-4, 512, 1, 0.1, 0.06), "mrpc": (64, 30, 4e-4, 512, 1, 0.1, 0.06),
        "qnli": (64, 25, 4e-4, 512, 1, 0.1, 0.06), "qqp": (16, 25, 5e-4, 512, 1, 0.1, 0.06),
        "rte": (32, 80, 5e-4, 512, 1, 0.1, 0.06), "sst2": (64, 60, 5e-4, 512, 1, 0.1, 0.06),
        "stsb": (16, 40, 4e-4, 512, 1, 0.1, 0.06)},
    ("large", "plus"): {
        "cola": (8, 20, 3e-4, 128, 2, 0.2, 0.06), "mnli": (8, 10, 3e-4, 128, 1, 0.1, 0.06),
        "mrpc": (4, 20, 3e-4, 512, 2, 0.1, 0.06), "qnli": (4, 10, 2e-4, 512, 2, 0.1, 0.06),
        "qqp": (4, 20, 3e-4, 512, 1, 0.1, 0.0), "rte": (8, 20, 4e-4, 512, 2, 0.1, 0.06),
        "sst2": (8, 10, 4e-4, 512, 1, 0.1, 0.06), "stsb": (4, 10, 3e-4, 128, 2, 0.1, 0.06)},
    ("large", "pi"): {
        "cola": (8, 20, 3e-4, 128, 1, 0.2, 0.06), "mnli": (8, 10, 3e-4, 128, 1, 0.1, 0.06),
        "mrpc": (4, 20, 3e-4, 512, 1, 0.1, 0.06), "qnli": (4, 10, 2e-4, 512, 1, 0.1, 0.06),
        "qqp": (4, 20, 3e-4, 512, 1, 0.1, 0.06), "rte": (8, 20, 4e-4, 512, 1, 0.1, 0.06),
        "sst2": (8, 10, 4e-4, 512, 1, 0.1, 0.06), "stsb": (4, 10, 3e-4, 128, 1, 0.1, 0.06)},
}
LORMA[("base", "pi")]["cola"] = LORMA[("base", "plus")]["cola"][:4] + (1, 0.2, 0.06)


def method_args(method, size, task):
    """(settings overriding LoRA's, METHOD_ARGS) of one script variant."""
    r = RANK
    if method == "ft":
        return {"LR": 2e-5 if size == "base" else 1e-5, "EPOCHS": 10}, "--method full"
    family, flags = lora.script_variants().get(method, (method, ""))
    head = " ".join(x for x in (f"--method {family}", flags) if x)
    if method in ("lorma_plus", "lorma_pi"):
        bs, ep, lr, length, div, wd, warm = LORMA[(size, method[6:])][task]
        return ({"BATCH_SIZE": bs, "EPOCHS": ep, "LR": lr, "MAX_SEQ_LENGTH": length,
                 "WEIGHT_DECAY": wd, "WARMUP_RATIO": warm, "FROM_MNLI": 0},
                f"{head} --lorma_mode ${{LORMA_MODE:-pre}} --lora_dim {r} --lora_alpha {r // div}")
    if family == "mtlora":
        over = {}
        if size == "base":
            gpus, bs, lr, ep, seed = MTLORA_BASE[task]
            over = {"BATCH_SIZE": bs, "LR": lr, "EPOCHS": ep, "SEED": seed,
                    "OFFICIAL_GPUS": gpus}
        return over, f"{head} --lora_dim {r} --lora_alpha 16"
    if family == "nola":
        return ({"LR": 1e-2, "CLS_LR": None, **({"QBITS": 3} if "${QBITS}" in flags else {})},
                f"{head} --nola_rank {r} --nola_c 1.0 --nola_num_basis 1000 --nola_qv")
    return {}, f"{head} --lora_dim {r} --lora_alpha {LORA_ALPHA[size]}"


def methods():
    return ("ft",) + tuple(lora.script_variants())


def settings(method, size, task):
    bs, ep, lr, length = TABLE[size][task]
    s = {"BATCH_SIZE": bs, "EPOCHS": ep, "LR": lr, "MAX_SEQ_LENGTH": length,
         "WEIGHT_DECAY": 0.1, "WARMUP_RATIO": 0.06, "SEED": 0}
    extra, margs = method_args(method, size, task)
    if "CLS_LR" in extra:
        s["CLS_LR"] = lr          # the head keeps the LoRA learning rate
    s.update({k: v for k, v in extra.items() if k != "CLS_LR"})
    return s, margs


def fmt(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


HEADER = """#!/usr/bin/env bash
# {title}
# Generated by NLU/scripts/make_scripts.py from its hyperparameter table (sources cited there);
# edit the table and re-run it rather than this file.
#
#   bash {name} [extra run_glue.py flags]
#   bash {name} --smoke   (offline on tiny generated data in seconds: run_glue_task.sh --help)
# Settings below can be overridden from the environment (e.g. LR=1e-4 SEED=1 bash {name});
# paths and run length: MODEL_CARD INIT_CHECKPOINT TOKENIZER_DIR DATA_DIR OUTPUT_DIR num_gpus
# MAX_STEPS MAX_TRAIN_SAMPLES MAX_EVAL_SAMPLES RANDOM_INIT=1 MNLI_ADAPTER; PRECISION=fp32|tf32|bf16
# (default fp32, as the official runs; their cost: bash {name} --help, from run_glue_task.sh).
set -euo pipefail
"""


def body(size, task, method_name, s, margs, from_mnli):
    s = dict(s)
    lines = []
    gpus = s.pop("OFFICIAL_GPUS", None)
    if gpus:
        lines.append(f"# The official run used {gpus} GPU(s) x this batch: num_gpus={gpus} "
                     f"for its global batch.")
    lines.append(f"export MODEL_SIZE={size} TASK={task} METHOD_NAME=\"{method_name}\"")
    for k, v in s.items():
        lines.append(f': "${{{k}:={fmt(v)}}}"; export {k}')
    lines.append(f"export FROM_MNLI={1 if from_mnli else 0}")
    lines.append(f'export METHOD_ARGS="{margs}"')
    lines.append('exec bash "$(dirname "${BASH_SOURCE[0]}")/run_glue_task.sh" "$@"')
    return "\n".join(lines) + "\n"


def _write(name, text, out_dir=None):
    path = os.path.join(out_dir or HERE, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return name


def main(out_dir=None):
    """Writes every script into out_dir (default: this folder); returns their names."""
    written = []

    def write(name, text):
        return _write(name, text, out_dir)
    for size in ("base", "large"):
        for method in methods():
            for task in TASKS:
                s, margs = settings(method, size, task)
                name = f"roberta_{size}_{method}_{task}.sh"
                title = f"RoBERTa-{size}, {method}, GLUE {task}: train -> dev evaluation."
                from_mnli = task in FROM_MNLI and method != "ft" and s.pop("FROM_MNLI", 1)
                written.append(write(name, HEADER.format(title=title, name=name)
                                     + body(size, task, method, s, margs, from_mnli)))

    # MTLoRA README: roberta_base_<task>.sh (its repo swaps structures by copying files).
    for task in TASKS:
        s, _ = settings("mtlora_icfm", "base", task)
        name = f"roberta_base_{task}.sh"
        title = (f"MTLoRA's roberta_base_{task}.sh: RoBERTa-base, MTLoRA (MTLORA_STRUCTURE="
                 f"SHIM|ICFM|CTCM|DTSM, default ICFM: the file the official code ships), GLUE {task}.")
        text = HEADER.format(title=title, name=name)
        text += ': "${MTLORA_STRUCTURE:=ICFM}"\n'
        text += 'struct_lc=$(printf %s "$MTLORA_STRUCTURE" | tr "[:upper:]" "[:lower:]")\n'
        margs = (f"--method mtlora --mtlora_structure ${{MTLORA_STRUCTURE}} --lora_dim {RANK} "
                 f"--lora_alpha 16")
        text += body("base", task, "mtlora_${struct_lc}", s, margs, task in FROM_MNLI)
        written.append(write(name, text))

    # LoRMA README: ./roberta_large_plus_cola.sh MODE R DO_PI SEED
    name = "roberta_large_plus_cola.sh"
    text = HEADER.format(title="LoRMA's roberta_large_plus_cola.sh MODE R DO_PI SEED: RoBERTa-large,"
                         " CoLA, LoRMA_+.\n# As in the official plus scripts, DO_PI has no effect"
                         " (they pass --do_rri $do_rri with do_rri unset, so rank inflation is"
                         " always on); LoRMA_pi: roberta_large_lorma_pi_cola.sh.", name=name + " pre 8 True 42")
    text += """if [ $# -lt 4 ]; then
  echo "usage: $0 MODE(pre|post) R DO_PI(True|False) SEED [extra run_glue.py flags | --smoke]" >&2; exit 2
fi
lorma_mode=$1; lorma_r=$2; do_pi=$3; seed=$4; shift 4
case "$lorma_mode" in pre|post) ;; *) echo "$0: MODE must be pre or post, got '$lorma_mode'" >&2; exit 2;; esac
case "$lorma_r" in ''|*[!0-9]*) echo "$0: R must be a positive integer, got '$lorma_r'" >&2; exit 2;; esac
case "$do_pi" in True|true|1|False|false|0) ;;
  *) echo "$0: DO_PI must be True or False, got '$do_pi'" >&2; exit 2;; esac
echo "note: DO_PI=$do_pi has no effect, as in LoRMA's official roberta_large_plus_cola.sh" \
  "(LoRMA_+ always); for LoRMA_pi run roberta_large_lorma_pi_cola.sh" >&2
kind=rri; variant=lorma_plus
alpha=$((lorma_r / 2))   # the official script's integer arithmetic
export MODEL_SIZE=large TASK=cola METHOD_NAME="${variant}_${lorma_mode}_r${lorma_r}"
: "${BATCH_SIZE:=8}"; export BATCH_SIZE
: "${EPOCHS:=20}"; export EPOCHS
: "${LR:=3e-4}"; export LR
: "${MAX_SEQ_LENGTH:=128}"; export MAX_SEQ_LENGTH
: "${WEIGHT_DECAY:=0.2}"; export WEIGHT_DECAY
: "${WARMUP_RATIO:=0.06}"; export WARMUP_RATIO
export SEED=$seed FROM_MNLI=0
export METHOD_ARGS="--method lorma --lorma_type $kind --lorma_mode $lorma_mode --lora_dim $lorma_r --lora_alpha $alpha"
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_glue_task.sh" "$@"
"""
    written.append(write(name, text))
    return written


if __name__ == "__main__":
    out = main()
    print(f"wrote {len(out)} scripts in {HERE}")
