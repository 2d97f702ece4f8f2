"""Peak memory of one LoRMA training step on a Llama-shaped model, and what Llama-3-8B needs.

The official math run (NLG/MetaMathQA/run_math_lorma.sh) adapts up_proj, down_proj, o_proj and
gate_proj of Llama-3-8B with r = 8, alpha = 16, mode pre, fp32 weights under bf16 autocast, a
batch of 2 x 512 tokens, AdamW, no gradient checkpointing. This script runs one such step
(forward, loss, backward, AdamW) with `loralib.inject` on transformers' LlamaForCausalLM for each
setup and reports its peak memory:

  lora              LoRA on the same projections (the reference)
  lorma_pi          LoRMA_pi (shift): T applied where this version of loralib decides (auto)
  lorma_pi_weight   LoRMA_pi forced to the official weight-space product (T W0 formed)
  lorma_none        LoRMA rank inflation `none`
  lorma_plus        LoRMA_+ (rri)

How memory is counted (--count):
  tensors   every live tensor storage (parameters, Adam states, gradients, what autograd keeps,
            temporaries), summed after every op by a dispatch mode; the peak of that sum is what
            torch.cuda.max_memory_allocated reports, less the caching allocator's rounding.
            With --fake no tensor is allocated (FakeTensorMode: shapes only), so the real
            Llama-3-8B shapes run on any machine in seconds: --llama3_8b.
  rss       the peak resident memory (ru_maxrss) of a fresh process per setup, on the CPU;
            really allocated, so it checks the tensor count (allocator and library overhead
            included).
  cuda      torch.cuda.max_memory_allocated, one step on the GPU.

Each setup runs in its own process. --loralib_root DIR imports loralib from another checkout
(e.g. `git worktree add /tmp/before <commit>` to measure an earlier version).

    python benchmarks/bench_lorma_memory.py                         # scaled model, tensors, fp32
    python benchmarks/bench_lorma_memory.py --count rss             # the same, measured RSS
    python benchmarks/bench_lorma_memory.py --llama3_8b --fake      # Llama-3-8B, bf16 autocast
    python benchmarks/bench_lorma_memory.py --llama3_8b --fake --per_layer   # 2, 3 layers -> 32
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {
    "lora": ("lora", {}, "auto"),
    "lorma_pi": ("lorma", {"kind": "shift", "mode": "pre"}, "auto"),
    "lorma_pi_weight": ("lorma", {"kind": "shift", "mode": "pre"}, "weight"),
    "lorma_none": ("lorma", {"kind": "none", "mode": "pre"}, "auto"),
    "lorma_plus": ("lorma", {"kind": "rri", "mode": "pre"}, "auto"),
}
TARGETS = ["up_proj", "down_proj", "o_proj", "gate_proj"]
LLAMA3_8B = dict(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256)
SCALED = dict(hidden=1024, intermediate=3584, layers=4, heads=8, kv_heads=2, vocab=32064)
GiB = 2 ** 30


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    # default: Llama-3-8B scaled by 4 in width (every weight 16x smaller, every activation 4x)
    for name in SCALED:
        p.add_argument(f"--{name}", type=int, default=None, help=f"(default {SCALED[name]})")
    p.add_argument("--llama3_8b", action="store_true",
                   help="Llama-3-8B's shapes, for those of the above not given")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="fp32 weights with no autocast, or under bf16 autocast (the official run; "
                        "default bf16 on a GPU or with --fake, fp32 on a CPU, whose bf16 matmuls "
                        "are slow without native support)")
    p.add_argument("--count", choices=["tensors", "rss", "cuda"], default="tensors")
    p.add_argument("--per_layer", action="store_true",
                   help="run 2 and 3 layers and extrapolate the peak to --layers")
    p.add_argument("--fake", action="store_true", help="shapes only (FakeTensorMode), --count tensors")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--loralib_root", default=None, help="import loralib from this checkout")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)     # a child process's setup
    a = p.parse_args(argv)
    for k, v in (LLAMA3_8B if a.llama3_8b else SCALED).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.fake and a.count != "tensors":
        p.error("--fake counts tensors (nothing is allocated to measure otherwise)")
    return a


# ---------------------------------------------------------------------------- in the child

def live_tensor_counter():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.weak import WeakIdKeyDictionary

    class LiveTensors(TorchDispatchMode):
        """Bytes of live tensor storages (each storage once, views included), its peak."""

        def __init__(self, existing=()):
            super().__init__()
            self.live = WeakIdKeyDictionary()
            self.peak = 0
            for t in existing:
                self.add(t)

        def add(self, t):
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if st not in self.live:
                    self.live[st] = st.nbytes()

        def now(self):
            return sum(self.live.values())

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                self.add(t)
            self.peak = max(self.peak, self.now())
            return out
    return LiveTensors


def run_one(a):
    if a.loralib_root:
        sys.path.insert(0, str(Path(a.loralib_root).resolve()))
    import resource
    from contextlib import nullcontext

    import torch
    import transformers

    import loralib as lora
    if a.threads:
        torch.set_num_threads(a.threads)
    method, options, side = SETUPS[a.one]
    dev = torch.device(a.device)
    fake = None
    if a.fake:
        from torch._subclasses.fake_tensor import FakeTensorMode
        fake = FakeTensorMode(allow_non_fake_inputs=False)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with (fake or nullcontext()), torch.device(dev):
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(
            hidden_size=a.hidden, intermediate_size=a.intermediate, num_hidden_layers=a.layers,
            num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, vocab_size=a.vocab,
            max_position_embeddings=max(2048, a.seq), attn_implementation="sdpa")
        model = transformers.LlamaForCausalLM(cfg)
        mcfg = lora.MethodConfig(method=method, r=a.r, alpha=2.0 * a.r, options=options,
                                 pipeline="llm")
        if fake is None:
            lora.inject(model, mcfg, TARGETS)
        else:
            # inject ends with layer.to(weight.device), already the adapter's device: on fake
            # tensors nn.Module._apply swaps every parameter, which a weight shared with the
            # original module refuses. Nothing has to move, so .to is skipped.
            from unittest import mock
            with mock.patch.object(torch.nn.Module, "to", lambda self, *args, **kw: self):
                lora.inject(model, mcfg, TARGETS)
        for m in model.modules():
            if isinstance(m, lora.LoRMALinear):
                m.compute_side = side
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
        ids = torch.randint(a.vocab, (a.batch, a.seq))
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        trainable = sum(p.numel() for p in params)

        counter = None
        if a.count == "tensors":
            existing = list(model.parameters()) + list(model.buffers()) + [ids]
            counter = live_tensor_counter()(existing)
        elif a.count == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if a.precision == "bf16"
                    else nullcontext())
        with (counter or nullcontext()):
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    out = {"setup": a.one, "weights": weights, "trainable": trainable}
    if counter is not None:
        out["peak"] = counter.peak
    elif a.count == "cuda":
        torch.cuda.synchronize()
        out["peak"] = torch.cuda.max_memory_allocated()
    else:   # KiB on Linux; the step's peak over the process's start-up
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak"] = (rss1 - rss0) * 1024
        out["rss_before_step"] = (rss_before - rss0) * 1024
    print("RESULT " + json.dumps(out))


# ---------------------------------------------------------------------------- the parent

def main(argv=None):
    a = parse(argv)
    if a.device is None:
        try:
            import torch
            a.device = "cuda" if torch.cuda.is_available() and not a.fake else "cpu"
        except ImportError:
            a.device = "cpu"
    if a.precision is None:
        a.precision = "bf16" if (a.device == "cuda" or a.fake) else "fp32"
    if a.one:
        return run_one(a)
    shape = (f"{a.layers} layers, hidden {a.hidden}, intermediate {a.intermediate}, heads "
             f"{a.heads}/{a.kv_heads}, vocab {a.vocab}; batch {a.batch} x {a.seq}; r {a.r}; "
             f"{a.precision}{' autocast' if a.precision == 'bf16' else ''}; targets "
             f"{' '.join(TARGETS)}; count {a.count}{' (fake)' if a.fake else ''}; {a.device}"
             + (f"; loralib from {a.loralib_root}" if a.loralib_root else ""))
    base = [sys.executable, os.path.abspath(__file__)] + list(argv or sys.argv[1:])
    base += ["--device", a.device, "--precision", a.precision]
    if a.per_layer:
        # Peak = what every layer adds (its weights, what autograd keeps of it) times the layer
        # count, plus the rest (embeddings, logits, one layer's backward temporaries): two
        # depths give both, and the estimate at a.layers.
        print(shape.replace(f"{a.layers} layers", f"2 and 3 layers -> {a.layers}"))
        print("| setup | peak GiB, 2 layers | 3 layers | per layer | estimate, "
              f"{a.layers} layers |")
        print("|---|---:|---:|---:|---:|")
        for name in a.setups:
            got = [child(base + ["--layers", str(n)], name) for n in (2, 3)]
            if any(isinstance(g, str) for g in got):
                print(f"| {name} | failed: {[g for g in got if isinstance(g, str)][0]} | | | |")
                continue
            p2, p3 = (g["peak"] for g in got)
            est = p2 + (a.layers - 2) * (p3 - p2)
            print(f"| {name} | {p2 / GiB:.3f} | {p3 / GiB:.3f} | {(p3 - p2) / GiB:.3f} | "
                  f"{est / GiB:.2f} |")
        return
    print(shape)
    print("| setup | peak GiB | over the weights GiB | trainable |")
    print("|---|---:|---:|---:|")
    for name in a.setups:
        r = child(base, name)
        if isinstance(r, str):
            print(f"| {name} | failed: {r} | | |")
            continue
        over = r["peak"] - r["weights"]
        print(f"| {name} | {r['peak'] / GiB:.3f} | {over / GiB:.3f} | {r['trainable']:,} |")


def child(cmd, name):
    """One setup in a fresh process: its RESULT, or the error's last line."""
    res = subprocess.run(cmd + ["--one", name], capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode or not lines:
        return (res.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(lines[-1][len("RESULT "):])


if __name__ == "__main__":
    main()
