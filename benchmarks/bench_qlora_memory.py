"""Peak memory of a QLoRA / NOLA training step (NLG/llama/qlora.py) on Llama-shaped models:
--bits 16 / 8 / 4, with and without gradient checkpointing, at two model sizes; and what
LLaMA-2 7B / 13B / 70B need at NOLA's scripts' settings (--estimate).

Each case runs in its own process through qlora.py's own model code (load_base: bitsandbytes
quantizes at load; adapt: k-bit preparation, the adapters, qlora.py's casts) on a random model
saved once per size, then two training steps (forward with labels, backward, paged AdamW):

  cpu   peak resident memory of the steps: the peak (VmHWM) is reset after loading (Linux's
        /proc/self/clear_refs), so loading's transient full-precision weights do not count;
        glibc's mmap threshold is fixed (MALLOC_MMAP_THRESHOLD_) so that freed tensors leave
        the resident set
  cuda  torch.cuda.max_memory_allocated over the steps (reset after loading)

Columns: weights (every parameter's and 4-bit quantization constant's bytes: packed codes,
block maxima, double quantization's second level), peak, and step = peak minus the memory held
before the steps (activations, gradients, optimizer state, temporaries).

    python benchmarks/bench_qlora_memory.py                  # both sizes, 16/8/4 bit, +-ckpt
    python benchmarks/bench_qlora_memory.py --estimate       # LLaMA-2 7B / 13B / 70B, closed form
    python benchmarks/bench_qlora_memory.py --model meta-llama/Llama-2-7b-hf --bits 4 \
        --checkpointing on --batch 16 --seq 896 --device cuda   # the 7B script's step, measured

The "model" column is the closed form of --estimate for the same shapes (its activation terms
count every saved activation in fp32, as qlora.py's fp32 residual stream has them).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GiB = 2 ** 30
# (hidden, intermediate, layers, heads, kv heads, vocab)
SIZES = {"S": (512, 1376, 4, 8, 8, 8000), "M": (1024, 2752, 4, 16, 16, 8000)}
LLAMA2 = {"7B": (4096, 11008, 32, 32, 32, 32000), "13B": (5120, 13824, 40, 40, 40, 32000),
          "70B": (8192, 28672, 80, 64, 8, 32000)}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--bits", nargs="+", type=int, default=[16, 8, 4], choices=(16, 8, 4))
    p.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=("off", "on"))
    p.add_argument("--method", default="nola", choices=("nola", "lora"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--bf16", action="store_true", help="--bf16 as the scripts (default on CUDA; "
                   "on a CPU without native bf16 the steps are slow)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--estimate", action="store_true", help="LLaMA-2 7B / 13B / 70B, closed form")
    p.add_argument("--model", default=None,
                   help="measure this checkpoint (a hub id or folder) instead of the random sizes")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)   # a child's case (JSON)
    return p.parse_args(argv)


# ------------------------------------------------------------------------ closed forms

def nf4_bytes(n: int, double_quant: bool = True, blocksize: int = 64) -> int:
    """Bytes of one 4-bit weight of n numbers in bitsandbytes: packed codes (2 per byte), one
    maximum per block of 64 (fp32; with double quantization uint8, plus the second level: an
    fp32 per 256 blocks, its 256-entry fp32 code and an fp32 offset), the 16-entry code."""
    blocks = math.ceil(n / blocksize)
    consts = blocks + 4 * math.ceil(blocks / 256) + 4 * 256 + 4 if double_quant else 4 * blocks
    return math.ceil(n / 2) + consts + 4 * 16


def llama_linears(h, inter, layers, heads, kv):
    """(out, in) of every linear layer but lm_head."""
    kvw = h // heads * kv
    one = [(h, h), (kvw, h), (kvw, h), (h, h), (inter, h), (inter, h), (h, inter)]
    return one * layers


def weight_bytes(model) -> int:
    """Every parameter's storage plus the 4-bit quantization constants held beside them."""
    import torch
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)
        if state is not None:
            for t in (state.absmax, state.code, getattr(state, "offset", None)):
                total += t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0
            if state.state2 is not None:
                total += sum(t.numel() * t.element_size()
                             for t in (state.state2.absmax, state.state2.code))
        scb = getattr(p, "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += scb.numel() * scb.element_size()
    return total


def estimate(shape, batch, seq, nola_k=512, r=16, lora_r=None, pad=True):
    """Bytes of a 4-bit training step with checkpointing of a LLaMA of `shape` (hidden,
    intermediate, layers, heads, kv heads, vocab) at NOLA's script settings, by part."""
    h, inter, layers, heads, kv, vocab = shape
    lin = llama_linears(h, inter, layers, heads, kv)
    base = sum(nf4_bytes(o * i) for o, i in lin)
    vocab += int(pad)                            # qlora.py's [PAD]
    other = 2 * (2 * vocab * h) + 4 * (2 * layers + 1) * h   # embed, lm_head bf16; norms fp32
    if lora_r:
        adapter = sum(lora_r * (o + i) for o, i in lin)
    else:
        adapter = 2 * nola_k * len(lin)
    adapter_bytes = adapter * (2 + 2 + 8)        # bf16 weights, bf16 grads, two fp32 moments
    # NOLA's bases: drawn per module on the device (fp32, k x r x width), cached up to 2 GiB
    # (loralib.nola_bases.BASIS_CACHE_BYTES), one factor's drawn again beyond that
    widest = max(max(o, i) for o, i in lin)
    every = sum(4 * nola_k * r * (o + i) for o, i in lin)
    bases = 0 if lora_r else min(2 * GiB, every) + 2 * 4 * nola_k * r * widest
    tokens = batch * seq
    # checkpointing keeps each layer's input: the residual stream, fp32 once it meets the fp32
    # norm outputs (qlora.py's casts); backward recomputes one layer at a time
    ckpt = layers * tokens * h * 4
    # one layer recomputed: fp32 activations of the 7 products' inputs / outputs, the MLP's
    # gate, up, act and product, attention under sdpa (no T x T scores), and their grads
    layer = 4 * tokens * (6 * h + 2 * (h // heads * kv) + 5 * inter) * 2
    # lm_head: bf16 logits, their fp32 upcast in the loss, its log-softmax and gradient
    logits = tokens * vocab * (2 + 4 + 4 + 4)
    parts = {"4-bit base": base, "embeddings, lm_head, norms": other,
             "adapter + optimizer": adapter_bytes, "NOLA bases (cache + one)": bases,
             "checkpointed layer inputs": ckpt, "one layer recomputed": layer,
             "logits and loss": logits}
    return parts


# ------------------------------------------------------------------------ in the child

def _reset_peak_rss():
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)    # freed heap back to the system first
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:  # Linux >= 4.0: VmHWM := VmRSS
        f.write("5")


def _rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_one(case):
    sys.path.insert(0, str(ROOT / "NLG" / "llama"))
    import torch
    import qlora
    import qlora_model
    flags = ["--model_name_or_path", case["folder"], "--bits", str(case["bits"]),
             "--gradient_checkpointing", "True" if case["ckpt"] else "False",
             "--lora_r", "16", "--seed", "0"]
    if case["method"] == "nola":
        flags += ["--use_nola", "--nola_num_basis", "512", "--lora_alpha", "4"]
    if case["bf16"]:
        flags += ["--bf16"]
    args = qlora.build_parser().parse_args(flags)
    method = qlora.method_from_args(args)
    model = qlora_model.load_base(args)
    qlora.adapt(args, model, method)
    model.config.use_cache = False
    model.train()
    dev = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        import bitsandbytes as bnb
        opt = bnb.optim.PagedAdamW32bit(params, lr=1e-3)
    except ImportError:
        opt = torch.optim.AdamW(params, lr=1e-3)
    ids = torch.randint(model.config.vocab_size, (case["batch"], case["seq"]), device=dev)
    weights = weight_bytes(model)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        before = _rss("VmRSS")
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=case["bf16"])
    for _ in range(2):
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _rss("VmHWM")
    print("RESULT " + json.dumps({"weights": weights, "before": before, "peak": peak,
                                  "trainable": sum(p.numel() for p in params)}))


# ------------------------------------------------------------------------ the parent

def step_model(shape, case):
    """The closed form's step bytes (activations, logits, adapter state, NOLA's bases) for a
    measured case, checkpointed 4-bit ones only (what it describes)."""
    if case["bits"] != 4 or not case["ckpt"]:
        return None
    parts = estimate(shape, case["batch"], case["seq"], r=16,
                     lora_r=16 if case["method"] == "lora" else None, pad=False)
    return sum(v for k, v in parts.items() if k not in ("4-bit base",
                                                        "embeddings, lm_head, norms"))


def save_models(sizes, folder):
    import torch
    import transformers
    out = {}
    for name in sizes:
        h, inter, layers, heads, kv, vocab = SIZES[name]
        cfg = transformers.LlamaConfig(hidden_size=h, intermediate_size=inter,
                                       num_hidden_layers=layers, num_attention_heads=heads,
                                       num_key_value_heads=kv, vocab_size=vocab,
                                       max_position_embeddings=4096)
        torch.manual_seed(0)
        out[name] = os.path.join(folder, name)
        transformers.LlamaForCausalLM(cfg).save_pretrained(out[name])
    return out


def print_estimates():
    print("LLaMA-2 at NOLA's scripts' settings: 4-bit NF4 with double quantization, bf16 "
          "compute, gradient checkpointing, sequences of 384 + 512 tokens (the longest "
          "batch: --group_by_length puts it first); GiB")
    for name, batch, lora_r in (("7B", 16, None), ("13B", 16, None), ("70B", 2, None),
                                ("7B", 16, 1), ("70B", 2, 1)):
        parts = estimate(LLAMA2[name], batch, 384 + 512, lora_r=lora_r)
        what = f"LoRA r {lora_r}" if lora_r else "NOLA r 16, k 512"
        print(f"\n{name}, {what}, batch {batch} x 896: total "
              f"{sum(parts.values()) / GiB:.1f} GiB")
        for k, v in parts.items():
            print(f"  {k:28s} {v / GiB:8.2f}")


def main(argv=None):
    a = parse(argv)
    if a.one:
        return run_one(json.loads(a.one))
    if a.estimate:
        return print_estimates()
    if a.device is None:
        import torch
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = a.bf16 or a.device == "cuda"
    print(f"{a.method}, r 16; batch {a.batch} x {a.seq} tokens; "
          f"{'bf16 (autocast, bf16 adapters)' if bf16 else 'fp32'}; {a.device}; peak of two "
          f"steps ({'max_memory_allocated' if a.device == 'cuda' else 'RSS'})")
    print("| size | bits | checkpointing | weights MiB | peak MiB | step MiB | model MiB | "
          "trainable |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    env = dict(os.environ)
    if a.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        # a fixed mmap threshold: glibc would otherwise raise it after the first large free and
        # keep later freed tensors in its heap, counted in the RSS as if still alive
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    with tempfile.TemporaryDirectory() as tmp:
        if a.model:
            import transformers
            c = transformers.AutoConfig.from_pretrained(a.model)
            shapes = {a.model: (c.hidden_size, c.intermediate_size, c.num_hidden_layers,
                                c.num_attention_heads, c.num_key_value_heads, c.vocab_size)}
            folders = {a.model: a.model}
        else:
            folders = save_models(a.sizes, tmp)
            shapes = {k: SIZES[k] for k in a.sizes}
        for size in folders:
            for bits in a.bits:
                for ck in a.checkpointing:
                    case = {"folder": folders[size], "bits": bits, "ckpt": ck == "on",
                            "method": a.method, "batch": a.batch, "seq": a.seq, "bf16": bf16}
                    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--one",
                                          json.dumps(case)], capture_output=True, text=True,
                                         cwd=ROOT, env=env)
                    lines = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
                    if res.returncode or not lines:
                        err = (res.stderr.strip().splitlines() or ["?"])[-1]
                        print(f"| {size} | {bits} | {ck} | failed: {err} | | | | |")
                        continue
                    r = json.loads(lines[-1][len("RESULT "):])
                    mib = 2 ** 20
                    model = step_model(shapes[size], case)
                    print(f"| {size} | {bits} | {ck} | {r['weights'] / mib:.1f} | "
                          f"{r['peak'] / mib:.1f} | {(r['peak'] - r['before']) / mib:.1f} | "
                          f"{'-' if model is None else f'{model / mib:.1f}'} | "
                          f"{r['trainable']:,} |", flush=True)


if __name__ == "__main__":
    main()
