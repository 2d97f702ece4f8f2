"""Forward+backward time of one adapted GPT-2-M fused c_attn (1024 -> 3072, q/v adapted).

Batch 8 x 512 tokens on the CPU by default. The frozen layer alone is the floor: its backward
still computes the input gradient, as inside a network. Prints the median time per method and its
ratio to the frozen layer and to LoRA.

    python benchmarks/bench_loralib.py [--tokens 4096] [--reps 7] [--device cpu]
"""
import argparse
import statistics
import time

import torch

import loralib as lora

METHODS = [
    ("frozen layer", None),
    ("LoRA r=4", ("lora", {})),
    ("LoRMA_+ r=4 pre", ("lorma", {"kind": "rri", "mode": "pre"})),
    ("LoRMA_+ r=4 post", ("lorma", {"kind": "rri", "mode": "post"})),
    ("MTLoRA r=4 SHIM", ("mtlora", {"structure": "SHIM"})),
    ("MTLoRA r=4 CTCM", ("mtlora", {"structure": "CTCM"})),
    ("NOLA r=8 1000+1000", ("nola", {"num_basis_A": 1000, "num_basis_B": 1000})),
    ("qNOLA r=8 3-bit", ("nola", {"num_basis_A": 1000, "num_basis_B": 1000, "qbits": 3})),
    ("LoRMA_pi r=4 pre", ("lorma", {"kind": "shift", "mode": "pre"})),
]


def build(spec, d, device):
    if spec is None:
        return lora.adapt_linear(d, 3 * d, None, enable=[True, False, True],
                                 fan_in_fan_out=True).to(device).requires_grad_(False)
    method, options = spec
    r = 8 if method == "nola" else 4
    cfg = lora.MethodConfig(method=method, r=r, alpha=32, options=options)
    layer = lora.adapt_linear(d, 3 * d, cfg, enable=[True, False, True], fan_in_fan_out=True)
    with torch.no_grad():   # away from init, as mid-training
        for n, p in layer.named_parameters():
            if lora.is_adapter_key(n):
                p.add_(torch.randn_like(p) * 1e-3)
    lora.mark_only_lora_as_trainable(layer)    # bias frozen too, as in training
    return layer.to(device)


def step(layer, x, device):
    """One forward+backward; returns its wall time in seconds."""
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    y = layer(x)
    y.backward(torch.ones_like(y))
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    x.grad = None
    for p in layer.parameters():
        p.grad = None
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8 * 512)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.tokens, args.d, device=args.device, requires_grad=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"x = {args.tokens} x {args.d}, fused 1024->3072 with q,v adapted")
    layers = {name: build(spec, args.d, args.device) for name, spec in METHODS}
    for layer in layers.values():          # warm-up (NOLA bases get cached here)
        step(layer, x, args.device)
    # Methods take turns within each repetition, so a machine whose load drifts slows them alike.
    times = {name: [] for name in layers}
    for _ in range(args.reps):
        for name, layer in layers.items():
            times[name].append(step(layer, x, args.device))
    results = {name: statistics.median(t) for name, t in times.items()}
    floor, lora_t = results["frozen layer"], results["LoRA r=4"]
    print(f"{'method':<22}{'ms/step':>10}{'x frozen':>10}{'x LoRA':>9}")
    for name, t in results.items():
        print(f"{name:<22}{t * 1e3:>10.1f}{t / floor:>10.3f}{t / lora_t:>9.3f}")


if __name__ == "__main__":
    main()
