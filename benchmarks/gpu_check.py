"""The CUDA paths end to end, with the figures the README's speed table reports.

    bash benchmarks/gpu_check.sh [--out DIR]          (at most ~8 minutes on one GPU)

On a CUDA machine:
  1. a GEMM probe: the bf16 (and fp16) matmul throughput this GPU reaches, measured here;
  2. GPT-2 M LoRA (q, v, r=4) training through gpt2_ft.py with random weights: bf16 autocast,
     fp16 autocast with the loss scaler, the fused optimizer path, and one NCCL process started
     by torchrun; tokens/s, MFU against the probe's bf16 peak, peak memory;
  3. beam-10 decoding with gpt2_beam.py of 630 distinct E2E-test-sized contexts (20-60 tokens)
     by the trained GPT-2 M, its LoRA merged into the weights: wall time.
On a CPU machine the same steps run on a tiny model in seconds (fp32, bf16 and fp16 autocast on
the CPU, gloo instead of NCCL), each CUDA-only part skipped with a line saying so; the tests run
this mode. Everything is written to DIR/report.json and printed as a table.

MFU counts the model FLOPs of a LoRA step: a frozen matmul costs 2 FLOPs per weight and token
forward and 2 more for the input gradient (no weight gradient); attention 4 * T * d per layer and
token forward (scores and values), doubled for the backward; the LM head only where the loss is.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import gemm_probe

ROOT = Path(__file__).resolve().parents[1]
NLG = ROOT / "NLG"
CARDS = {"gpt2.md": (1024, 24, 50257), "gpt2.tiny": (64, 2, 50257)}   # n_embd, n_layer, vocab


def ddp_one_process(device):
    """A process group of one (NCCL on CUDA, gloo on CPU) and one DDP step over it: what a
    torchrun launch of N processes does, at N = 1 (the trainers skip DDP for one process)."""
    import torch.distributed as dist
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29600 + os.getpid() % 1000))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        model = torch.nn.Linear(64, 64).to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index or 0] if device.type == "cuda" else None)
        ddp(torch.randn(8, 64, device=device)).square().mean().backward()
        t = torch.ones(4, device=device)
        dist.all_reduce(t)
        ok = bool(torch.equal(t, torch.ones(4, device=device))) and model.weight.grad is not None
    finally:
        dist.destroy_process_group()
    return {"backend": backend, "all_reduce_and_ddp_step": ok}


def fmt_flops(x):
    return f"{x / 1e12:.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def write_data(path, n, ctx_len, comp_len, vocab, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            c = rng.randint(*ctx_len) if isinstance(ctx_len, tuple) else ctx_len
            f.write(json.dumps({"context": [rng.randrange(vocab) for _ in range(c)],
                                "completion": [rng.randrange(vocab) for _ in range(comp_len)]})
                    + "\n")


def run(cmd, log_path, env=None):
    t0 = time.time()
    with open(log_path, "w") as log:
        r = subprocess.run(cmd, cwd=NLG, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, **(env or {})})
    text = Path(log_path).read_text()
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed (exit {r.returncode}); "
                           f"last lines of {log_path}:\n" + "\n".join(text.splitlines()[-15:]))
    return time.time() - t0, text


def train(name, out, card, data, steps, batch, seq, precision_flags, launcher, cfg):
    work = out / name
    cmd = launcher + ["src/gpt2_ft.py", "--train_data", data, "--valid_data", data,
                      "--train_batch_size", str(batch), "--valid_batch_size", str(batch),
                      "--seq_len", str(seq), "--model_card", card, "--random_init",
                      "--lora_dim", "4", "--lora_alpha", "32", "--lr", "0.0002",
                      "--max_step", str(steps), "--log_interval", str(max(1, steps // 3)),
                      "--eval_interval", str(10 ** 6), "--save_interval", str(steps),
                      "--work_dir", str(work), "--overwrite", "--no_tensorboard",
                      "--no_progress"] + precision_flags
    wall, text = run(cmd, out / f"{name}.log")
    rows = [json.loads(line) for line in (work / "train_log.jsonl").read_text().splitlines()]
    last = rows[-1]
    d, layers, vocab = cfg
    ctx, comp = seq // 2, seq // 2
    n_block = 12 * layers * d * d
    tokens = ctx + comp
    # model FLOPs of one step per loss token (see the module docstring)
    per_seq = 4 * n_block * tokens + 8 * layers * d * tokens * tokens / 2 + 4 * d * vocab * comp
    step_flops = per_seq * batch
    steps_per_s = last["tokens_per_s"] / (batch * comp)
    return {"run": name, "tokens_per_s": round(last["tokens_per_s"], 1),
            "model_flops_per_s": step_flops * steps_per_s,
            "peak_mem_mb": round(last["peak_mem_mb"], 1), "final_loss": round(last["loss"], 4),
            "wall_s": round(wall, 1),
            "checkpoint": str(work / f"model.{steps}.pt")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check_out", help="folder for logs, runs and report.json")
    ap.add_argument("--contexts", type=int, default=None, help="beam contexts (default 630; CPU 12)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    report = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "cuda": cuda,
              "device": torch.cuda.get_device_name(0) if cuda else "cpu", "skipped": []}
    skip = report["skipped"].append
    print(f"gpu_check: {report['device']} (torch {torch.__version__})")
    if not cuda:
        skip("no CUDA device: the CUDA parts (bf16/fp16 on the GPU, NCCL, GPU memory) are "
             "skipped; the same steps run on the CPU with a tiny model")
        print(f"skipped: {report['skipped'][-1]}")

    # 1. GEMM probe
    if cuda:
        report["gemm_flops_per_s"] = {"bf16": gemm_probe(dev, torch.bfloat16, 8192, 20),
                                      "fp16": gemm_probe(dev, torch.float16, 8192, 20)}
    else:
        report["gemm_flops_per_s"] = {"fp32": gemm_probe(dev, torch.float32, 512, 5)}
    peak = report["gemm_flops_per_s"].get("bf16") or report["gemm_flops_per_s"]["fp32"]
    print("GEMM probe: " + ", ".join(f"{k} {fmt_flops(v)}" for k, v in
                                     report["gemm_flops_per_s"].items()))

    # 2. training
    card = "gpt2.md" if cuda else "gpt2.tiny"
    cfg = CARDS[card]
    steps, batch, seq = (60, 8, 128) if cuda else (3, 2, 32)
    data = out / "train.jsonl"
    write_data(data, 256 if cuda else 16, seq // 2, seq // 2, cfg[2], 0)
    py = [sys.executable]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
                "--master_port", str(29500 + os.getpid() % 1000)]
    plans = [("bf16", ["--bf16"], py), ("fp16_scaler", ["--fp16"], py),
             ("torchrun_1proc", ["--bf16"], torchrun)]
    if not cuda:
        plans.insert(0, ("fp32", [], py))
        skip("NCCL: no CUDA device, the one-process group uses gloo")
        print(f"skipped: {report['skipped'][-1]}")
    report["train"] = []
    for name, flags, launcher in plans:
        r = train(name, out, card, str(data), steps, batch, seq, flags, launcher, cfg)
        r["mfu"] = r["model_flops_per_s"] / peak
        report["train"].append(r)
        print(f"train {name}: {r['tokens_per_s']} tokens/s, MFU {r['mfu']:.1%} of the probe's "
              f"{fmt_flops(peak)}, peak memory {r['peak_mem_mb']} MB")

    # 3. beam search with the merged LoRA
    n_ctx = args.contexts or (630 if cuda else 12)
    beam, eval_len = (10, 64) if cuda else (4, 8)
    test = out / "test.jsonl"
    write_data(test, n_ctx, (20, 60) if cuda else (5, 12), 1, cfg[2], 1)
    wall, text = run([sys.executable, "src/gpt2_beam.py", "--data", str(test), "--model_card", card,
                      "--init_checkpoint", report["train"][0]["checkpoint"], "--beam", str(beam),
                      "--eval_len", str(eval_len), "--seq_len", str(60 + eval_len),
                      "--length_penalty", "0.8", "--work_dir", str(out / "beam"),
                      "--output_file", "predict.jsonl"], out / "beam.log")
    decode = re.search(r"saved (\d+) predictions to .* \(([\d.]+)s", text)
    merged = re.search(r"merged (\d+) adapted layer", text)
    report["beam"] = {"contexts": n_ctx, "beam": beam, "eval_len": eval_len,
                      "predictions": int(decode.group(1)), "decode_s": float(decode.group(2)),
                      "command_wall_s": round(wall, 1),
                      "merged_layers": int(merged.group(1)) if merged else 0}
    b = report["beam"]
    print(f"beam {beam}: {b['predictions']} contexts decoded in {b['decode_s']} s "
          f"({b['command_wall_s']} s with start-up), LoRA merged into {b['merged_layers']} layers")
    report["ddp_one_process"] = ddp_one_process(dev)
    print(f"one-process group: {report['ddp_one_process']}")
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"report: {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
