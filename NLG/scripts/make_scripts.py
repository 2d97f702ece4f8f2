#!/usr/bin/env python
"""Write NLG/scripts/<task>_<method>.sh from the hyperparameter table below.

    python NLG/scripts/make_scripts.py          # (re)write the scripts
    python NLG/scripts/make_scripts.py --check  # exit 1 if a committed script differs from the table

Each generated script only sets hyperparameters (overridable from the environment) and calls
run_task.sh, which holds the pipeline. Sources:
- LoRA paper (Hu et al., 2021), Table 11, GPT-2 M/L on E2E / WebNLG / DART: AdamW, lr 2e-4, batch 8,
  5 epochs, 500 warmup steps, linear schedule, r = 4, alpha = 32; weight decay 0.01 / 0.01 / 0.0,
  dropout 0.1 / 0.1 / 0.0, label smoothing 0.1 / 0.1 / 0.0; beam 10, no-repeat n-gram 4,
  length penalty 0.9 / 0.8 / 0.8. The LoRMA and MTLoRA papers train GPT-2 with LoRA's setup
  (their READMEs' commands are LoRA's), so they take the same numbers.
- LoRMA README (Exploration-Lab/LoRMA, README.md lines 48-95; its repo has no GPT-2 launch scripts):
  LoRA's training command and an E2E beam with length penalty 0.8 (not LoRA's 0.9).
- MTLoRA README (YaoLiang2023/MTLoRA, README.md lines 172-222; no NLG launch scripts): LoRA's
  training command (r 4, alpha 32, dropout 0.1) and an E2E beam with length penalty 0.9.
- NOLA (UCDvision/NOLA) gpt/examples/NLG/scripts/finetune_gpt2m_e2e_qv_nola.sh, lines 1-58: lr
  0.005, weight decay 0.0, rank 8, alpha 8 (here --nola_c 8: s = 8 / 8), 512 bases, q and v,
  label smoothing 0.1, beam length penalty 0.8. Its README gives other values (lr 0.1, nola_c 1.0,
  0.01 when quantized) for flags its scripts do not have; the paper does not settle it here, so
  the official script wins and the README's values are noted. The official code has no quantizer
  (--qnola is parsed and unused): qnola takes the float settings plus the README's --qbits 3.
  NOLA reports no WebNLG/DART runs; those keep NOLA's optimiser settings and LoRA's task settings.
  finetune_gpt2{m,l}_e2e_qv_nola.sh, the official entry points, are written here too.
- Full fine-tuning: the LoRA paper quotes the fine-tuning baseline of Li & Liang (2021), trained
  with lr 5e-5; the rest as LoRA's Table 11.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import loralib as lora
    lora.script_variants
except (ImportError, AttributeError):   # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    sys.modules.pop("loralib", None)
    import loralib as lora

from nlg.tasks import TASKS as NLG_TASKS  # noqa: E402

# weight decay, dropout, label smoothing, length penalty per task (the task table, nlg/tasks.py)
TASKS = {name: dict(task.defaults) for name, task in NLG_TASKS.items()}
COMMON = dict(LR="0.0002", WARMUP_STEP="500", MAX_EPOCH="5", TRAIN_BATCH_SIZE="8", BEAM="10",
              NO_REPEAT_NGRAM_SIZE="4")
LORA_R = "--lora_dim 4 --lora_alpha 32 --lora_dropout ${DROPOUT}"

# The scripts are one per task and per variant the loralib registry lists (loralib.script_variants:
# lora, lorma_plus, mtlora_icfm, nola, qnola, ...), plus full fine-tuning. What the papers set per
# variant: (title, flags beside --method and the variant's own, overrides of the task/common
# settings). A variant missing here (a newly registered method) gets LoRA's settings.
SETTINGS = {
    "lora": ("LoRA", LORA_R, {}),
    "lorma_plus": ("LoRMA_+ (rank-inflated multiplicative, code name rri)",
                   "--lorma_mode ${LORMA_MODE} " + LORA_R,
                   {"LORMA_MODE": "pre", "E2E_LENGTH_PENALTY": "0.8"}),
    "lorma_pi": ("LoRMA_pi (permutation-based multiplicative, code name shift)",
                 "--lorma_mode ${LORMA_MODE} " + LORA_R,
                 {"LORMA_MODE": "pre", "E2E_LENGTH_PENALTY": "0.8"}),
    "nola": ("NOLA (float coefficients)",
             "--nola_rank 8 --nola_c ${NOLA_C} --nola_num_basis ${NOLA_NUM_BASIS} --nola_qv",
             {"LR": "0.005", "WEIGHT_DECAY": "0.0", "NOLA_C": "8", "NOLA_NUM_BASIS": "512",
              "LENGTH_PENALTY": "0.8"}),
    "qnola": ("quantized NOLA (3-bit coefficients; the project's quantizer)",
              "--nola_rank 8 --nola_c ${NOLA_C} --nola_num_basis ${NOLA_NUM_BASIS} --nola_qv",
              {"LR": "0.005", "WEIGHT_DECAY": "0.0", "NOLA_C": "8", "NOLA_NUM_BASIS": "512",
               "QBITS": "3", "LENGTH_PENALTY": "0.8"}),
}
for s in ("SHIM", "ICFM", "CTCM", "DTSM"):
    SETTINGS["mtlora_" + s.lower()] = (f"MTLoRA, {s} transform", LORA_R, {})


def methods():
    """script name -> (title, METHOD_ARGS, overrides), from the registry plus full fine-tuning."""
    out = {}
    for variant, (method, flags) in lora.script_variants().items():
        title, extra, over = SETTINGS.get(variant, (f"{variant} (LoRA's settings)", LORA_R, {}))
        out[variant] = (title, " ".join(x for x in (f"--method {method}", flags, extra) if x),
                        over)
    out["ft"] = ("full fine-tuning", "--method full", {"LR": "0.00005"})
    return out


ORDER = ["LR", "WEIGHT_DECAY", "DROPOUT", "LABEL_SMOOTH", "WARMUP_STEP", "MAX_EPOCH", "TRAIN_BATCH_SIZE",
         "LORMA_MODE", "NOLA_C", "NOLA_NUM_BASIS", "QBITS", "BEAM", "LENGTH_PENALTY", "NO_REPEAT_NGRAM_SIZE"]
TASK_TITLE = {name: task.title for name, task in NLG_TASKS.items()}


# fp32, the official runs' precision; tf32 / bf16 are faster settings a user names (their cost:
# run_task.sh --help).
PRECISION_LINE = ': "${PRECISION:=fp32}"; export PRECISION'.ljust(55) + \
    " # fp32|tf32|bf16: fp32 as the official runs (run_task.sh --help)"

LORA_TABLE = "LoRA paper Table 11"
NOLA_SCRIPT = "NOLA finetune_gpt2m_e2e_qv_nola.sh:1-35"


def source(method, task, key, over):
    """Where a script's value comes from (printed beside it)."""
    if key in ("LORMA_MODE",):
        return "LoRMA README (pre)"
    if method.startswith("lorma") and key == "LENGTH_PENALTY" and task == "e2e":
        return "LoRMA README.md:48-95 beam command"
    if method == "ft" and key == "LR":
        return "LoRA paper: FT baseline of Li & Liang (2021)"
    if method in ("nola", "qnola") and key in over:
        if key == "QBITS":
            return "NOLA README --qnola --qbits 3 (the official code has no quantizer)"
        if key == "LENGTH_PENALTY" and task != "e2e":
            return "NOLA (no WebNLG/DART run): its E2E beam"
        if key == "LENGTH_PENALTY":
            return NOLA_SCRIPT.replace("1-35", "39-58")
        return NOLA_SCRIPT + (" (--lora_alpha 8)" if key == "NOLA_C" else "")
    if method in ("nola", "qnola") and task == "e2e":
        beam = key in ("BEAM", "LENGTH_PENALTY", "NO_REPEAT_NGRAM_SIZE")
        return NOLA_SCRIPT.replace("1-35", "39-58") if beam else NOLA_SCRIPT
    if method.startswith("mtlora") and task == "e2e":
        return "MTLoRA README.md:172-222 (LoRA's command)"
    return LORA_TABLE + ("" if method in SETTINGS or method == "ft"
                         else " (a method without its own settings here)")


def render(task, method):
    title, flags, over = methods()[method]
    settings = {**COMMON, **TASKS[task], **over}
    e2e_lp = settings.pop("E2E_LENGTH_PENALTY", None)
    if task == "e2e" and e2e_lp:
        settings["LENGTH_PENALTY"] = e2e_lp
    if "${DROPOUT}" not in flags:  # NOLA and full fine-tuning have no adapter dropout
        settings.pop("DROPOUT")
    lines = [
        "#!/usr/bin/env bash",
        f"# {TASK_TITLE[task]} with {title} on GPT-2: train -> beam search -> decode -> score.",
        "# Generated by scripts/make_scripts.py from its hyperparameter table (sources cited there);",
        "# edit the table and re-run it rather than this file.",
        "#",
        f"#   bash scripts/{task}_{method}.sh [--num_gpus N] [--seed S] [--model_card gpt2.md] [--work_dir DIR] ...",
        "#   (bash scripts/run_task.sh --help lists the options; each setting below can be overridden",
        "#    from the environment, e.g. LR=1e-4 bash scripts/" + f"{task}_{method}.sh, or PRECISION=bf16)",
        "set -euo pipefail",
        f'export TASK={task} METHOD_NAME={method} RUN_TASK_CALLER="$0"',
    ]
    for k in ORDER:
        if k in settings:
            lines.append(f': "${{{k}:={settings[k]}}}"; export {k}'.ljust(55)
                         + f" # {source(method, task, k, over)}")
    lines.append(PRECISION_LINE)
    lines.append(f'export METHOD_ARGS="{flags}"')
    lines.append('exec bash "$(dirname "${BASH_SOURCE[0]}")/run_task.sh" "$@"')
    return "\n".join(lines) + "\n"


# NOLA's official launch scripts, by the names its users run (bash scripts/<name>): their values,
# their flag spellings (gpt/examples/NLG/scripts/finetune_gpt2{m,l}_e2e_qv_nola.sh, lines 1-58).
OFFICIAL = {
    "finetune_gpt2m_e2e_qv_nola.sh": dict(MODEL_CARD="gpt2.md", NUM_BASIS="512", RANK="8",
                                          LORA_ALPHA="8", LR="0.005", TRAIN_BATCH_SIZE="8",
                                          GRAD_ACC="1"),
    "finetune_gpt2l_e2e_qv_nola.sh": dict(MODEL_CARD="gpt2.lg", NUM_BASIS="256", RANK="8",
                                          LORA_ALPHA="2", LR="0.01", TRAIN_BATCH_SIZE="4",
                                          GRAD_ACC="4"),
}


def render_official(name):
    v = OFFICIAL[name]
    lines = [
        "#!/usr/bin/env bash",
        f"# NOLA's {name} (UCDvision/NOLA gpt/examples/NLG/scripts), with its values and flag",
        "# spellings, run by this project's pipeline: train -> beam search -> decode -> score on E2E.",
        "# Generated by scripts/make_scripts.py; run from NLG/ as in NOLA's repository:",
        f"#   bash scripts/{name} [run_task.sh options, e.g. --num_gpus 2 --work_dir DIR]",
        "# (the official L script's first argument, a master port, is accepted and not needed).",
        "set -euo pipefail",
        'case "${1:-}" in [0-9]*) shift ;; esac',
        'export TASK=e2e METHOD_NAME=nola_official RUN_TASK_CALLER="$0"',
    ]
    settings = {"LR": v["LR"], "WEIGHT_DECAY": "0.0", "LABEL_SMOOTH": "0.1", "WARMUP_STEP": "500",
                "MAX_EPOCH": "5", "TRAIN_BATCH_SIZE": v["TRAIN_BATCH_SIZE"], "GRAD_ACC": v["GRAD_ACC"],
                "MODEL_CARD": v["MODEL_CARD"], "BEAM": "10", "LENGTH_PENALTY": "0.8",
                "NO_REPEAT_NGRAM_SIZE": "4"}
    for k, val in settings.items():
        lines.append(f': "${{{k}:={val}}}"; export {k}')
    lines.append(PRECISION_LINE)
    lines.append(f'export METHOD_ARGS="--lora_qv --use_nola --nola_num_basis {v["NUM_BASIS"]} '
                 f'--lora_rank {v["RANK"]} --lora_alpha {v["LORA_ALPHA"]}"')
    lines.append('exec bash "$(dirname "${BASH_SOURCE[0]}")/run_task.sh" "$@"')
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only compare, write nothing")
    ap.add_argument("--out_dir", default=HERE)
    args = ap.parse_args(argv)
    stale = []
    jobs = [(f"{task}_{method}.sh", render(task, method)) for task in TASKS for method in methods()]
    jobs += [(name, render_official(name)) for name in OFFICIAL]
    for name, text in jobs:
        path = os.path.join(args.out_dir, name)
        old = open(path, encoding="utf-8").read() if os.path.isfile(path) else None
        if old == text:
            continue
        stale.append(path)
        if not args.check:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(path, 0o755)
    if args.check and stale:
        sys.exit("out of date (run python NLG/scripts/make_scripts.py): " + ", ".join(stale))
    print(f"{len(jobs)} scripts {'checked' if args.check else 'written'}"
          + (f", {len(stale)} changed" if stale and not args.check else ""))


if __name__ == "__main__":
    main()
