"""NOLA: LoRA factors as linear combinations of fixed random bases (Koohpayegani et al., ICLR 2024).

As the official code (UCDvision/NOLA, gpt/examples/NLG/src/model_nola.py) computes it, per
adapted projection:

    A = A0 + sum_i alpha_i UA_i / sqrt(kA)     (r, in)       UA: uniform(-1, 1), seed sA
    B = B0 + sum_j beta_j  UB_j / sqrt(kB)     (out, r)      UB: uniform(-1, 1), seed sB
    Delta W = s B A,  s = nola_c / rank   (the official scripts' --lora_alpha / --lora_rank)

Only alpha and beta train (kA + kB numbers per projection); they start at 0. A0 and B0 are
frozen offsets (`offsets`): "normal" is the official GPT-2 code, whose `_init_weights` re-draws
both from N(0, 0.02) (the layers holding them are nn.Linear), so Delta W is small but not zero
at init; "kaiming" is the official LLaMA code (A0 kaiming-uniform, B0 = 0: identity at init);
"none" is the project's variant without offsets (alpha = 1/kA, beta = 0 at init: identity, and
an adapter file of coefficients alone).

Bases: each factor of each projection has its own seed, an int64 in [0, 1e10) drawn from torch's
global generator when the layer is built (as the official `torch.randint(int(1e10), (1,))`; with
`seed=<int>` from a generator seeded by it instead), kept in the `nola_seed` buffer and so saved
with the adapter. A basis is `torch.manual_seed(seed)` then `uniform_(-1, 1)` over (k, rows,
cols) on the coefficients' device and dtype, times 1/sqrt(k): given the same seed and device
type, the same numbers as the official code. The official code regenerates them on every
forward and backward; here they are cached per (seed, shape, device, dtype) up to
BASIS_CACHE_BYTES, beyond which they are regenerated on use.

Quantized NOLA (`qbits`) is this project's implementation of the paper's description, not the
released code's: the official GPT-2 code parses --qnola / --qbits and never uses them. alpha and
beta go through straight-through fake quantization in the forward; `lora_state_dict` saves them
as packed b-bit codes plus one scale per vector.
"""
import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from . import quant
from .base import LowRankAdapter
from .methods.nola import OFFSETS

QCODES, QSCALE = "_qcodes", "_qscale"
CONFIG_FIELDS = ("rank", "num_basis_A", "num_basis_B", "qbits", "offsets")
SEED_RANGE = int(1e10)
BASIS_CACHE_BYTES = 2 * 2 ** 30   # per process; the official code caches nothing

_BASES: Dict[Tuple, torch.Tensor] = {}


def basis(seed: int, num: int, rows: int, cols: int, device, dtype) -> torch.Tensor:
    """The fixed random basis of one factor: (num, rows, cols), as the official GenerateParams."""
    key = (int(seed), num, rows, cols, str(device), dtype)
    t = _BASES.get(key)
    if t is not None:
        return t
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    t = torch.empty((num, rows, cols), device=device, dtype=dtype).uniform_(-1.0, 1.0, generator=g)
    t = t * (1.0 / math.sqrt(num))
    used = sum(v.numel() * v.element_size() for v in _BASES.values())
    if used + t.numel() * t.element_size() <= BASIS_CACHE_BYTES:
        _BASES[key] = t
    return t


def clear_basis_cache() -> None:
    _BASES.clear()


class NOLALinear(LowRankAdapter):
    def __init__(self, in_features: int, out_features: int, r: int = 0, lora_alpha: float = 1,
                 lora_dropout: float = 0.0, enable_lora=None, fan_in_fan_out: bool = False,
                 merge_weights: bool = False, num_basis_A: int = 1024, num_basis_B: int = 1024,
                 qbits: Optional[int] = None, seed: Optional[int] = None,
                 offsets: str = "kaiming", offset_std: float = 0.02, **kwargs):
        for name, k in (("num_basis_A", num_basis_A), ("num_basis_B", num_basis_B)):
            if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
                raise ValueError(f"NOLA {name} must be a positive integer, got {k!r}")
        if qbits is not None:
            quant.levels(qbits)
        if offsets not in OFFSETS:
            raise ValueError(f"unknown NOLA offsets {offsets!r} (choose from {OFFSETS})")
        self.num_basis_A, self.num_basis_B = num_basis_A, num_basis_B
        self.qbits, self.seed, self.offsets = qbits, seed, offsets
        self.offset_std = float(offset_std)
        super().__init__(in_features, out_features, r=r, lora_alpha=lora_alpha,
                         lora_dropout=lora_dropout, enable_lora=enable_lora,
                         fan_in_fan_out=fan_in_fan_out, merge_weights=merge_weights, **kwargs)

    def config_values(self):
        return [self.r, self.num_basis_A, self.num_basis_B, self.qbits or 0,
                OFFSETS.index(self.offsets)]

    def build_adapter(self) -> None:
        n, r, d, k = self.n_enabled, self.r, self.slice_size, self.in_features
        self.nola_alpha = nn.Parameter(self.weight.new_zeros((n, self.num_basis_A)))
        self.nola_beta = nn.Parameter(self.weight.new_zeros((n, self.num_basis_B)))
        gen = None if self.seed is None else torch.Generator().manual_seed(int(self.seed))
        seeds = torch.cat([torch.randint(SEED_RANGE, (1,), generator=gen, device="cpu")
                           for _ in range(2 * n)])
        self._seeds = [tuple(p) for p in seeds.view(n, 2).tolist()]
        # On the meta device (a layer loralib.inject is about to fill) the seeds stay on the
        # CPU: they are values, not storage to allocate later.
        dev = self.weight.device
        self.register_buffer("nola_seed", seeds.view(n, 2).to("cpu" if dev.type == "meta" else dev))
        self.register_buffer("nola_config", torch.tensor(self.config_values(), dtype=torch.int64))
        if self.offsets != "none":
            self.register_buffer("nola_A0", self.weight.new_zeros((n * r, k)))
            self.register_buffer("nola_B0", self.weight.new_zeros((n * d, r)))

    @torch.no_grad()
    def reset_adapter_parameters(self) -> None:
        nn.init.zeros_(self.nola_beta)
        if self.offsets == "none":
            nn.init.constant_(self.nola_alpha, 1.0 / self.num_basis_A)
            return
        nn.init.zeros_(self.nola_alpha)
        if self.offsets == "normal":
            self.nola_A0.normal_(0.0, self.offset_std)
            self.nola_B0.normal_(0.0, self.offset_std)
        else:
            n, r = self.n_enabled, self.r
            for j in range(n):
                nn.init.kaiming_uniform_(self.nola_A0[j * r:(j + 1) * r], a=math.sqrt(5))
            self.nola_B0.zero_()

    @torch.no_grad()
    def init_like_backbone(self, std: float) -> None:
        if self.has_adapter and self.offsets == "normal":
            self.nola_A0.normal_(0.0, std)
            self.nola_B0.normal_(0.0, std)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", nola kA={self.num_basis_A} kB={self.num_basis_B}"
                                       f" qbits={self.qbits} offsets={self.offsets}")

    def coefficients(self):
        a, b = self.nola_alpha, self.nola_beta
        if self.qbits is not None:
            a, b = quant.fake_quantize(a, self.qbits), quant.fake_quantize(b, self.qbits)
        return a, b

    def factors(self, w):
        a, b = self.coefficients()
        n, r, k, d = self.n_enabled, self.r, self.in_features, self.slice_size
        kA, kB = self.num_basis_A, self.num_basis_B
        As, Bs = [], []
        for j, (sa, sb) in enumerate(self._seeds):
            ua = basis(sa, kA, r, k, a.device, a.dtype)
            ub = basis(sb, kB, d, r, b.device, b.dtype)
            As.append((a[j] @ ua.view(kA, r * k)).view(r, k))
            Bs.append((b[j] @ ub.view(kB, d * r)).view(d, r))
        A, B = torch.cat(As), torch.stack(Bs)
        if self.offsets != "none":
            A = A + self.nola_A0
            B = B + self.nola_B0.view(n, d, r)
        return A, B

    _COEFS = ("nola_alpha", "nola_beta")

    def pack_adapter_state(self, state):
        if self.qbits is None:
            return state
        state = dict(state)
        for coef in self._COEFS:
            if coef in state:
                codes, scale = quant.quantize(state.pop(coef), self.qbits)
                state[coef + QCODES] = quant.pack_codes(codes, self.qbits)
                state[coef + QSCALE] = scale
        return state

    def unpack_adapter_state(self, state, where: str = ""):
        state = dict(state)
        for key in [k for k in state if k.endswith(QCODES)]:
            coef = key[: -len(QCODES)]
            full = f"{where}.{key}" if where else key
            if self.qbits is None or coef not in self._COEFS:
                raise KeyError(f"unexpected key {full!r}: {where or 'the layer'} is not a "
                               f"quantized NOLA layer")
            if coef + QSCALE not in state:
                raise KeyError(f"missing key {full[:-len(QCODES)] + QSCALE!r} (the scales of "
                               f"{full!r})")
            scale = state.pop(coef + QSCALE)
            codes = quant.unpack_codes(state.pop(key), self.qbits, getattr(self, coef).shape)
            state[coef] = quant.stable_dequantize(codes, scale.to(torch.float32), self.qbits)
        return state

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "nola_config"
        if key in state_dict:
            got = [int(v) for v in state_dict[key].tolist()]
            mine = self.config_values()
            if len(got) != len(mine):
                raise ValueError(f"{key}: written by another loralib version ({got}); this "
                                 f"version records {CONFIG_FIELDS}: retrain or convert it")
            if got != mine:
                diff = ", ".join(f"{f} {g} (model has {m})"
                                 for f, g, m in zip(CONFIG_FIELDS, got, mine) if g != m)
                raise ValueError(f"{key}: the adapter was trained with {diff}; "
                                 f"build the model with the same NOLA settings")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if hasattr(self, "nola_seed") and not self.nola_seed.is_meta:
            self._seeds = [tuple(p) for p in self.nola_seed.tolist()]
