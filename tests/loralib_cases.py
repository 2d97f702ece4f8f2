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
    ("lorma", {"kind": "rri", "mode": "pre", "init": "a_zero"}),
    ("lorma", {"kind": "rri", "mode": "post", "dropout_site": "adapter"}),
    ("lorma", {"kind": "shift", "mode": "pre"}),
    ("lorma", {"kind": "shift", "mode": "post"}),
    ("lorma", {"kind": "none", "mode": "pre"}),
    ("lorma", {"kind": "none", "mode": "post"}),
    ("lorma", {"kind": "shift", "mode": "complete_pre"}),
    ("lorma", {"kind": "shift", "mode": "complete_post"}),
    ("mtlora", {"structure": "SHIM"}),
    ("mtlora", {"structure": "ICFM"}),
    ("mtlora", {"structure": "CTCM"}),
    ("mtlora", {"structure": "DTSM"}),
    ("mtlora", {"structure": "ICFM", "shared_t": True}),
    ("mtlora", {"structure": "DTSM", "shared_t": True}),
    ("nola", {"num_basis_A": 40, "num_basis_B": 30}),
    ("nola", {"num_basis_A": 40, "num_basis_B": 30, "offsets": "normal"}),
    ("nola", {"num_basis_A": 40, "num_basis_B": 30, "offsets": "none"}),
    ("nola", {"num_basis_A": 40, "num_basis_B": 30, "qbits": 3}),
    ("nola", {"num_basis_A": 40, "num_basis_B": 30, "qbits": 3, "offsets": "normal"}),
]
VARIANT_IDS = ["-".join([m] + [f"{k}={v}" for k, v in o.items() if not k.startswith("num_basis")])
               for m, o in VARIANTS]


def identity_at_init(method, options):
    """Whether the official method starts at the frozen model. Two do not: LoRMA without rank
    inflation (s B pinv(B) is a projector) and NOLA with GPT-2's N(0, 0.02) offsets."""
    if method == "lorma":
        return options.get("kind") != "none" or options.get("mode", "").startswith("complete")
    if method == "nola":
        return options.get("offsets", "kaiming") != "normal"
    return True


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


def official_nola_generate(coefficients, out_dim, in_dim, seed):
    """NOLA's GenerateParams.forward (model_nola.py), transcribed: reseed the global generator,
    fill a (k, out, in) tensor with uniform(-1, 1), scale by 1/sqrt(k), combine."""
    state = torch.get_rng_state()
    try:
        k = coefficients.shape[0]
        torch.manual_seed(int(seed))
        W = torch.zeros(k, out_dim, in_dim, dtype=coefficients.dtype)
        torch.nn.init.uniform_(W, a=-1.0, b=1.0)
        W = W * (1.0 / math.sqrt(k))
        return torch.einsum("b,boi->oi", coefficients, W)
    finally:
        torch.set_rng_state(state)


def lorma_weight(layer, j, w0i):
    s, r = layer.scaling, layer.r
    D = layer.side
    if layer.mode.startswith("complete"):
        T = layer.lora_A.detach()[j * D:(j + 1) * D]
        return T @ w0i if layer.mode == "complete_pre" else w0i @ T
    A = layer.lora_A.detach()[j * r:(j + 1) * r]
    B = layer.lora_B.detach()[j * D:(j + 1) * D]
    T = {"rri": lambda: torch.eye(D) + s * B @ A, "shift": lambda: s * rotate(B @ A),
         "none": lambda: s * B @ A}[layer.kind]()
    return T @ w0i if layer.mode == "pre" else w0i @ T


# layer class -> reference formula, for methods a test registers itself (tests/test_toy_method.py)
EXTRA_REFERENCES = {}


def reference_weight(layer):
    """The adapted weight (out, in) by the weight-space formulas of the official code."""
    if type(layer) in EXTRA_REFERENCES:
        return EXTRA_REFERENCES[type(layer)](layer)
    w0 = frozen_w(layer).detach().clone()
    s, r, d, k = layer.scaling, layer.r, layer.slice_size, layer.in_features
    W = w0.clone()
    T_shared = None
    if isinstance(layer, lora.MTLoRALinear) and layer.shared_t:
        C = layer.lora_C.detach()
        D = getattr(layer, "lora_D", None)
        T_shared = {"SHIM": lambda: C, "ICFM": lambda: C @ C.T, "CTCM": lambda: C @ D.detach(),
                    "DTSM": lambda: C + D.detach()}[layer.structure]()
    for j, i in enumerate(layer.enabled_slices):
        rows = slice(i * d, (i + 1) * d)
        w0i = w0[rows]
        if isinstance(layer, lora.NOLALinear):
            a, b = layer.nola_alpha.detach()[j], layer.nola_beta.detach()[j]
            if layer.qbits:
                a, b = qdq(a[None], layer.qbits)[0], qdq(b[None], layer.qbits)[0]
            seed_a, seed_b = layer.nola_seed[j].tolist()
            A = official_nola_generate(a, r, k, seed_a)
            B = official_nola_generate(b, d, r, seed_b)
            if layer.offsets != "none":
                A = A + layer.nola_A0.detach()[j * r:(j + 1) * r]
                B = B + layer.nola_B0.detach()[j * d:(j + 1) * d]
            W[rows] = w0i + s * B @ A
        elif isinstance(layer, lora.LoRMALinear):
            W[rows] = lorma_weight(layer, j, w0i)
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
