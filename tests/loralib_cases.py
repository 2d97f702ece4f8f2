"""The method matrix the loralib tests run over, and reference formulas written from DESIGN.md.

The formulas here are deliberately naive (explicit loops, dense matrices) and independent of the
library's activation-space code, so comparing the two checks the library.
"""
import math

import torch

import loralib as lora

VARIANTS = [
    ("lora", {}),
    ("lorma", {"kind": "rri", "mode": "pre"}),
    ("lorma", {"kind": "rri", "mode": "post"}),
    ("lorma", {"kind": "shift", "mode": "pre"}),
    ("lorma", {"kind": "shift", "mode": "post"}),
    ("mtlora", {"structure": "SHIM"}),
    ("mtlora", {"structure": "ICFM"}),
    ("mtlora", {"structure": "CTCM"}),
    ("mtlora", {"structure": "DTSM"}),
    ("mtlora", {"structure": "DTSM", "shared_t": True}),
    ("nola", {"num_basis_A": 40, "num_basis_B": 30}),
    ("nola", {"num_basis_A": 40, "num_basis_B": 30, "qbits": 3}),
]
VARIANT_IDS = ["-".join([m] + [f"{k}={v}" for k, v in o.items() if not k.startswith("num_basis")])
               for m, o in VARIANTS]

# (in_features, out_features, enable, fan_in_fan_out): RoBERTa-style q/v, GPT-2's fused c_attn.
LAYOUTS = {"linear": (24, 20, None, False), "fused_qkv": (24, 48, [True, False, True], True)}


def make_layer(method, options, layout, r=4, alpha=8.0, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    fin, fout, enable, fio = LAYOUTS[layout]
    cfg = lora.MethodConfig(method=method, r=r, alpha=alpha, dropout=dropout, options=dict(options))
    return lora.adapt_linear(fin, fout, cfg, enable=enable, fan_in_fan_out=fio)


def adapter_params(layer):
    return {n: p for n, p in layer.named_parameters() if lora.is_adapter_key(n)}


@torch.no_grad()
def perturb(layer, scale=0.2, seed=1):
    """Move every adapter parameter away from its (identity) init."""
    g = torch.Generator().manual_seed(seed)
    for p in adapter_params(layer).values():
        p.add_(torch.randn(p.shape, generator=g) * scale)


def frozen_w(layer):
    return layer.weight.t() if layer.fan_in_fan_out else layer.weight


def rotate(m):
    """pi(M)[i, j] = M[i, (j - i) mod n], row by row."""
    return torch.stack([torch.roll(m[i], shifts=i) for i in range(m.shape[0])])


def qdq(v, bits):
    L = 2 ** (bits - 1) - 1
    out = []
    for row in v:
        amax = row.abs().max()
        s = amax / L if amax > 0 else torch.tensor(1.0)
        out.append(torch.clamp(torch.round(row / s), -L, L) * s)
    return torch.stack(out)


def reference_weight(layer):
    """The adapted weight (out, in) by the weight-space formulas of DESIGN.md."""
    w0 = frozen_w(layer).detach().clone()
    s, r, d, k = layer.scaling, layer.r, layer.slice_size, layer.in_features
    n = len(layer.enabled_slices)
    W = w0.clone()
    T_shared = None
    if isinstance(layer, lora.MTLoRALinear) and layer.shared_t:
        C = layer.lora_C.detach(); D = getattr(layer, "lora_D", None)
        T_shared = {"SHIM": lambda: C, "ICFM": lambda: C @ C.T, "CTCM": lambda: C @ D.detach(),
                    "DTSM": lambda: C + D.detach()}[layer.structure]()
    for j, i in enumerate(layer.enabled_slices):
        rows = slice(i * d, (i + 1) * d)
        w0i = w0[rows]
        if isinstance(layer, lora.NOLALinear):
            a, b = layer.nola_alpha.detach(), layer.nola_beta.detach()
            if layer.qbits:
                a, b = qdq(a, layer.qbits), qdq(b, layer.qbits)
            from loralib.nola import basis
            ba = basis("A", layer.seed, layer.num_basis_A, r, k, "cpu", torch.float32)
            bb = basis("B", layer.seed, layer.num_basis_B, d, r, "cpu", torch.float32)
            A = sum(a[j, t] * ba[t] for t in range(layer.num_basis_A))
            B = sum(b[j, t] * bb[t] for t in range(layer.num_basis_B))
            W[rows] = w0i + s * B @ A
        elif isinstance(layer, lora.LoRMALinear):
            D = layer.side
            A = layer.lora_A.detach()[j * r:(j + 1) * r]
            B = layer.lora_B.detach()[j * D:(j + 1) * D]
            T = torch.eye(D) + s * B @ A if layer.kind == "rri" else s * rotate(B @ A)
            W[rows] = T @ w0i if layer.mode == "pre" else w0i @ T
        elif isinstance(layer, lora.MTLoRALinear):
            B = layer.lora_B.detach()[j * d:(j + 1) * d]
            A_all = layer.lora_A.detach()
            if T_shared is not None:
                TA = (T_shared @ A_all)[j * r:(j + 1) * r]
            else:
                C = layer.lora_C.detach()[j]
                Dm = layer.lora_D.detach()[j] if hasattr(layer, "lora_D") else None
                T = {"SHIM": lambda: C, "ICFM": lambda: C @ C.T, "CTCM": lambda: C @ Dm,
                     "DTSM": lambda: C + Dm}[layer.structure]()
                TA = T @ A_all[j * r:(j + 1) * r]
            W[rows] = w0i + s * B @ TA
        else:
            A = layer.lora_A.detach()[j * r:(j + 1) * r]
            B = layer.lora_B.detach()[j * d:(j + 1) * d]
            W[rows] = w0i + s * B @ A
    return W
