"""What a GPU user needs to know about this codebase on one card, in at most 8 minutes, and the
GPU bugs it would catch.

    bash benchmarks/gpu_check.sh [--quick] [--out gpu_check.json] [--work_dir DIR]

On a GPU (GPT-2 weights are random: nothing is downloaded), in this order, each part within
its time budget (PARTS in gpu_check.py; what one part overruns comes off the later ones):
  gemm         the bf16 / tf32 / fp32 matmul throughput this card reaches: MFU's denominator
  methods      every method (LoRA, LoRMA_+, LoRMA_pi, MTLoRA x4, NOLA, NOLA native, qNOLA)
               trains 3 steps with gpt2_ft.py, saves, and gpt2_beam.py decodes the file in a
               fresh process: its predictions must equal the live model's (gpu_check_methods.py
               says which old NOLA / qNOLA bugs this catches)
  parity       GPT-2 M on the CPU and on the GPU in fp32: step-0 loss and gradients, beam
               predictions on a dozen contexts
  distributed  torchrun: 2 NCCL processes (1 with one GPU, plus an NCCL group of one) against
               one process with their global batch
  nlu, llm     one run_glue.py run, one train_math_lorma.py run (bf16 base, fp32 adapters)
  decode       beam 10 on 630 distinct contexts by GPT-2 M, fp32 and bf16, against Hugging Face
               `generate` on the same weights and contexts
  train        GPT-2 M and L LoRA training at 8 x 512 and at E2E batches, fp32 / tf32 / bf16:
               tokens/s, MFU, GPU-busy share of wall time (profiler), peak memory
  compiled     the same under torch.compile (inductor) for bf16, with the speed-up over eager
               and the compilation's time
Every part is guarded: one that fails is a FAIL row with its one-line reason (the traceback in
DIR/<part>.log) and the next one runs; one that runs past its hard limit is stopped. The end:
a table of every check with its result, figure and PASS / FAIL / SKIPPED (with the reason),
the total time, and the figures as JSON in --out.

On a CPU (or with --tiny) every part runs on a toy GPT-2 (gpu_check_core.TOY_CARD: 2 layers of
64, a 1,024-token vocabulary; small shapes, few contexts, aot_eager for the compiled step, gloo
for the processes), and what needs a GPU is listed as skipped: about a minute on 2 cores.
--quick: fewer configurations (GPT-2 M only, one compiled configuration, the six main
variants, 120 contexts to decode); about 4 minutes on a GPU.
The budgets were set from the work's size, not yet timed on an H100 (no GPU was lent when this
was written): the first GPU run's part_s figures in the JSON are the ones to calibrate with.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from gpu_check_core import Plan, Setting, run_parts, summary, write_report
from gpu_check_decode import check_decode, check_parity
from gpu_check_methods import check_methods
from gpu_check_runs import check_distributed, check_llm_step, check_nlu_step
from gpu_check_train import check_gemm, check_train_compiled, check_train_eager

# part, check, budget on a GPU (s), --quick budget (s), minimum (s): the correctness parts first,
# then the timings, and the compilation (the least predictable) last
PARTS = (("gemm", check_gemm, 15, 10, 5),
         ("methods", check_methods, 70, 45, 25),
         ("parity", check_parity, 30, 25, 15),
         ("distributed", check_distributed, 35, 30, 20),
         ("nlu", check_nlu_step, 15, 15, 8),
         ("llm", check_llm_step, 20, 20, 10),
         ("decode", check_decode, 90, 35, 30),
         ("train", check_train_eager, 100, 40, 30),
         ("compiled", check_train_compiled, 95, 60, 40))
TOTAL = {"gpu": 470, "quick": 280, "tiny": 900}      # seconds; 8 minutes = 480


def plans(setting: Setting):
    if not setting.gpu:        # a CPU: small work, but a slow machine; every part gets room
        return [Plan(name, fn, 300, 1) for name, fn, *_ in PARTS]
    return [Plan(name, fn, quick if setting.quick else full, minimum)
            for name, fn, full, quick, minimum in PARTS]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--out", default="gpu_check.json", help="the figures as JSON (default: %(default)s)")
    ap.add_argument("--work_dir", default=None,
                    help="logs, data and runs (default: <out without .json>_work)")
    ap.add_argument("--quick", action="store_true", help="fewer configurations (see above)")
    ap.add_argument("--tiny", action="store_true", help="the CPU mode (the toy model) even on a GPU")
    ap.add_argument("--only", default=None,
                    help="comma-separated parts to run (default: all): " + ",".join(p[0] for p in PARTS))
    ap.add_argument("--budget", type=float, default=None, help="total seconds (default: by mode)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    work = Path(args.work_dir).resolve() if args.work_dir else out.with_name(out.stem + "_work")
    only = set(args.only.split(",")) if args.only else None
    if only and only - {p[0] for p in PARTS}:
        ap.error(f"--only: unknown part(s) {sorted(only - {p[0] for p in PARTS})}")
    setting = Setting(work, quick=args.quick, tiny=args.tiny)
    print(f"gpu_check: {setting.name} ({setting.gpus} GPU(s)), torch {torch.__version__}, "
          f"{'GPU' if setting.gpu else 'tiny model on the CPU'}{', --quick' if args.quick else ''}; "
          f"work dir {work}", flush=True)
    if not setting.gpu:
        print(setting.skip("no GPU: every part runs on a toy GPT-2; the GPU figures (GPT-2 M / L "
                           "speed, MFU, memory, NCCL) are not measured"), flush=True)
    selected = [p for p in plans(setting) if only is None or p.name in only]
    budget = args.budget or TOTAL["tiny" if not setting.gpu else "quick" if args.quick else "gpu"]
    rows = run_parts(selected, setting, budget)
    total = time.perf_counter() - t0
    print(summary(rows, setting, total), flush=True)
    write_report(out, rows, setting, total, sys.argv[1:] if argv is None else argv)
    print(f"figures: {out}")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
