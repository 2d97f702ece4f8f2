"""Training speed for benchmarks/gpu_check.py: the GEMM probe (what this card's matmuls reach per
precision), then GPT-2 LoRA (r=4 on q, v; the E2E recipe's optimizer) training steps as
gpt2_ft.py runs them (traincore.TrainLoop, the same batches, loss and precision settings):
tokens/s, MFU against the probe of the same precision, the profiler's split of GPU-busy time
against wall time, and peak memory; for GPT-2 M and L, at 8 x 512 and at E2E batches (8
examples of E2E's lengths, padded to the longest), fp32 / tf32 / bf16, eager and compiled.

The compiled configurations run in a worker process of their own, so that a compilation that
hangs, or breaks the CUDA context, costs only its own rows:
    python benchmarks/gpu_check_train.py --worker CONFIG.json
"""
import argparse
import json
import time
from pathlib import Path

import torch

from common import gemm_probe
from gpu_check_core import (Setting, e2e_examples, fixed_examples, fmt_rate, lora_step_flops,
                            native_stderr_to, one_line, python, run_command, write_jsonl)

# name -> (examples per batch, context, completion); None: E2E's lengths
SHAPES = {"8x512": (8, 256, 256), "8xE2E": (8, None, None),
          "2x128": (2, 64, 64), "4xE2E": (4, None, None)}
PRECISIONS = ("fp32", "tf32", "bf16")


def precision_of(name, device):
    from traincore import Precision
    return Precision.from_flags(False, name == "bf16", device, tf32=name == "tf32")


def check_gemm(setting: Setting, part):
    """The matmul throughput this device reaches now, per precision: MFU's denominator."""
    dev = setting.device
    n_big, n, reps = setting.pick((8192, 4096, 10), tiny=(256, 256, 3))
    peaks = {}
    for name in PRECISIONS:
        torch.set_float32_matmul_precision("high" if name == "tf32" else "highest")
        dtype = torch.bfloat16 if name == "bf16" else torch.float32
        peaks[name] = gemm_probe(dev, dtype, n_big if name == "bf16" else n, reps)
    torch.set_float32_matmul_precision("highest")
    setting.peaks.update(peaks)
    note = "" if setting.gpu else setting.skip(
        "TF32: a CPU has no TF32 matmuls (tf32 rows compute fp32 there)")
    part.passed("gemm probe", ", ".join(f"{k} {fmt_rate(v)}" for k, v in peaks.items()),
                note, **{f"{k}_flops_per_s": v for k, v in peaks.items()})


# ----------------------------------------------------------------------------------------------

def build_model(card, device):
    import loralib as lora
    from nlg.model import GPT2LMModel, config_from_card
    cfg = config_from_card(card, method=lora.MethodConfig(method="lora", r=4, alpha=32, dropout=0.1))
    torch.manual_seed(0)
    with torch.device(device):          # GPT-2 L's 774M weights drawn on the GPU, not the CPU
        model = GPT2LMModel(cfg)
    lora.mark_only_lora_as_trainable(model)
    return model.to(device).train()


def make_batches(shape, count, setting: Setting, pin=True):
    """`count` batches as gpt2_ft.py builds them (FT_Dataset items, collate_pad; pinned on a
    GPU), each with its unpadded lengths for the FLOP count."""
    from nlg.data_utils import FT_Dataset, collate_pad
    b, ctx, comp = SHAPES[shape]
    examples = (e2e_examples(b * count, seed=3, vocab=setting.vocab) if ctx is None
                else fixed_examples(b * count, ctx, comp, seed=3, vocab=setting.vocab))
    path = write_jsonl(setting.work / f"train_{shape}.jsonl", examples)
    ds = FT_Dataset(str(path), b, 1024)
    out = []
    for i in range(count):
        items = [ds[j] for j in range(i * b, (i + 1) * b)]
        batch = collate_pad(items)
        if setting.gpu and pin:
            batch = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}
        batch["lengths"] = [len(it["input"]) for it in items]
        out.append(batch)
    return out


GPU_WORK = {"kernel", "gpu_memcpy", "gpu_memset"}     # kineto's kinds of work on the device


def busy_seconds(prof, gpu: bool) -> float:
    """Device time in a profile: on a GPU the time during which at least one kernel or copy
    ran (the union of their intervals: streams may overlap; the GPU-side copies of
    record_function ranges are not work), on a CPU the ops' own (self) time."""
    from torch.autograd import DeviceType
    if not gpu:
        return sum(e.self_cpu_time_total for e in prof.events() if e.device_type == DeviceType.CPU) / 1e6
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == DeviceType.CUDA
                   and (e.activity_type is None or e.activity_type in GPU_WORK))
    busy, end = 0.0, float("-inf")
    for a, b in spans:
        if b > end:
            busy += b - max(a, end)
            end = b
    return busy / 1e6


def measure(model, batches, precision_name, setting: Setting, max_s: float, backend=None,
            log=None):
    """Train on `batches` as gpt2_ft.py does and time it: warm-up steps (compilation included
    when `backend` is given), timed steps, then two steps under the profiler."""
    from nlg.optimizer import AdamW
    from traincore import TrainLoop, compiled
    dev = setting.device
    precision = precision_of(precision_name, dev)
    precision.apply()
    net = compiled(model, backend) if backend else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = AdamW(params, lr=2e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, correct_bias=True)
    loop = TrainLoop(net, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), precision)
    state = {"i": 0, "tokens": 0, "loss_tokens": 0, "flops": 0.0, "loss": None}

    def loss_of(net, batch):
        b = {k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        _, loss_sum = net(b["input"], lm_labels=b["target"], lm_mask=b["mask"], label_smooth=0.1,
                          reduction="sum", loss_positions=b["loss_positions"])
        state["loss"] = loss_sum.detach()
        return loss_sum / (batch["n_tokens"] + 1e-4)

    def steps(k):
        group = []
        for _ in range(k):
            batch = batches[state["i"] % len(batches)]
            state["i"] += 1
            state["tokens"] += sum(batch["lengths"])
            state["loss_tokens"] += batch["n_tokens"]
            state["flops"] += lora_step_flops(model.config, batch["lengths"], int(batch["n_tokens"]))
            group.append((state["i"], [batch]))
        loop.run(group, loss_of, lambda *a: False)
        setting.sync()

    warm, least, profiled = setting.pick((3 if backend else 2, 3, 2), tiny=(2 if backend else 1, 2, 1))
    if setting.gpu:
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    steps(warm)
    warm_s = time.perf_counter() - t0
    for k in state:
        if k not in ("i", "loss"):
            state[k] = 0
    t0, n = time.perf_counter(), 0
    while n < 10 and (n < least or time.perf_counter() - t0 < max_s):
        steps(1)
        n += 1
    dt = time.perf_counter() - t0
    loss = float(state["loss"]) / max(batches[(state["i"] - 1) % len(batches)]["n_tokens"], 1)
    if loss != loss or loss in (float("inf"), float("-inf")):
        raise FloatingPointError(f"loss {loss} after {state['i']} steps")
    result = {"steps": n, "step_s": dt / n, "tokens_per_s": state["tokens"] / dt,
              "loss_tokens_per_s": state["loss_tokens"] / dt, "model_flops_per_s": state["flops"] / dt,
              "warmup_s": warm_s, "loss": loss}
    peak = setting.peaks.get(precision_name)
    if peak:
        result["mfu"] = result["model_flops_per_s"] / peak
    if setting.gpu:
        result["peak_mem_gb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    try:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setting.gpu else [])
        with native_stderr_to(log or setting.work / "profiler.log"), profile(activities=acts) as prof:
            t0 = time.perf_counter()
            steps(profiled)
            wall = time.perf_counter() - t0
        result["busy_share"] = busy_seconds(prof, setting.gpu) / wall
    except Exception as e:           # the figures above stand without the split
        result["busy_error"] = one_line(e)
    torch.set_float32_matmul_precision("highest")
    return result


def describe(r, gpu: bool, eager=None) -> str:
    parts = [f"{fmt_rate(r['tokens_per_s'], 'tok/s')}", f"{r['step_s'] * 1e3:.1f} ms/step"]
    if "mfu" in r:
        parts.append(f"MFU {100 * r['mfu']:.1f}%")
    if "busy_share" in r:
        parts.append(f"{'GPU' if gpu else 'op'}-busy {100 * r['busy_share']:.0f}% of wall")
    if "peak_mem_gb" in r:
        parts.append(f"peak {r['peak_mem_gb']:.1f} GiB")
    if eager:
        parts.append(f"{eager['step_s'] / r['step_s']:.2f}x eager, compile {r['warmup_s']:.0f} s")
    return ", ".join(parts)


def _cards_and_shapes(setting: Setting):
    cards = setting.pick(["gpt2.md", "gpt2.lg"], quick=["gpt2.md"], tiny=[setting.small_card()])
    shapes = setting.pick(["8x512", "8xE2E"], tiny=["2x128", "4xE2E"])
    return cards, shapes


def check_train_eager(setting: Setting, part):
    cards, shapes = _cards_and_shapes(setting)
    if not setting.gpu:
        setting.skip("GPT-2 M / L training speed: no GPU (the toy model at 2 x 128 and 4 E2E "
                     "examples instead; no GPU-busy split, no GPU memory)")
    last = 0.0
    for card in cards:
        model = part.attempt(f"train {setting.card_name(card)} (model)", build_model, card,
                             setting.device)
        if model is None:
            continue
        for shape in shapes:
            batches = make_batches(shape, 16, setting)
            for prec in PRECISIONS:
                name = f"train {setting.card_name(card)} {shape} {prec} eager"
                if part.left() < 1.5 * last + 2:
                    part.skipped(name, "the part's time budget is spent")
                    continue
                t0 = time.perf_counter()
                r = part.attempt(name, measure, model, batches, prec, setting,
                                 setting.pick(3.0, tiny=0.5), None, part.log)
                last = time.perf_counter() - t0
                if r:
                    setting.train_eager[(card, shape, prec)] = r
                    part.passed(name, describe(r, setting.gpu), **r)
        del model
        if setting.gpu:
            torch.cuda.empty_cache()


def check_train_compiled(setting: Setting, part):
    """torch.compile (traincore.compiled, as gpt2_ft.py --compile) in a worker process on a GPU
    (in this one on a CPU, where a hang is what the part's hard limit is for); each row: speed,
    the speed-up over the same eager configuration, the compilation's seconds."""
    cards, _ = _cards_and_shapes(setting)
    if setting.gpu:
        backend = "inductor"
        # one compilation per model and precision: the E2E batches reuse the 8 x 512 one's
        # graphs (dynamic shapes), as a training run's changing batch lengths do
        configs = setting.pick([("gpt2.md", "8x512", "bf16"), ("gpt2.md", "8xE2E", "bf16"),
                                ("gpt2.lg", "8x512", "bf16")],
                               quick=[("gpt2.md", "8x512", "bf16")])
    else:
        backend = "aot_eager"
        configs = [(cards[0], "4xE2E", "fp32")]
        setting.skip("inductor on a CPU (minutes of C++ code generation): the compiled step "
                     "runs with aot_eager (the same graphs, eager kernels)")
    out = setting.work / "compiled.jsonl"
    out.write_text("")
    cfg = setting.work / "compiled_config.json"
    cfg.write_text(json.dumps({"configs": configs, "backend": backend, "gpu": setting.gpu,
                               "peaks": setting.peaks, "work": str(setting.work), "out": str(out),
                               "max_s": setting.pick(3.0, tiny=0.5)}))
    error = None
    try:
        if setting.gpu:
            run_command([python(), Path(__file__).resolve(), "--worker", cfg], part.log,
                        timeout=part.left() - 2)
        else:
            worker(cfg, setting)
    except RuntimeError as e:
        error = str(e)
    done = {tuple(r["config"]): r for r in map(json.loads, out.read_text().splitlines())}
    eager = setting.train_eager
    for c in map(tuple, configs):
        name = f"train {setting.card_name(c[0])} {c[1]} {c[2]} compiled ({backend})"
        r = done.get(c)
        if r is None:
            reason = ("not reached within the part's time budget" if error and "ran past" in error
                      else error or "the worker wrote no result")
            (part.skipped if "ran past" in reason or "not reached" in reason else part.failed)(name, reason)
        elif not r["ok"]:
            part.failed(name, r["error"])
        else:
            res = r["result"]
            if c in eager:
                res["speedup_vs_eager"] = eager[c]["step_s"] / res["step_s"]
            part.passed(name, describe(res, setting.gpu, eager.get(c)), backend=backend, **res)


def worker(config_path, setting=None):
    cfg = json.loads(Path(config_path).read_text())
    if setting is None:
        setting = Setting(Path(cfg["work"]), tiny=not cfg["gpu"])
        setting.peaks = cfg["peaks"]
    models, previous = {}, None
    for card, shape, prec in cfg["configs"]:
        try:
            if card not in models:
                models.clear()
                models[card] = build_model(card, setting.device)
            batches = make_batches(shape, 16, setting)
            if (card, prec) != previous:     # a new model or precision pays its compilation
                torch._dynamo.reset()
            previous = (card, prec)
            row = {"config": [card, shape, prec], "ok": True,
                   "result": measure(models[card], batches, prec, setting, cfg["max_s"],
                                     backend=cfg["backend"], log=Path(cfg["out"]).with_suffix(".log"))}
        except Exception as e:
            row = {"config": [card, shape, prec], "ok": False, "error": one_line(e)}
        with open(cfg["out"], "a") as f:
            f.write(json.dumps(row) + "\n")
        if setting.gpu:
            print(row, flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", required=True)
    worker(ap.parse_args().worker)
