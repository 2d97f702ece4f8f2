"""NOLA: LoRA factors as linear combinations of fixed random bases (Koohpayegani et al., ICLR 2024).

A = sum_i alpha_i A_i (i < kA), B = sum_j beta_j B_j (j < kB), Delta W = s B A, s = nola_c / rank.
Only alpha and beta train (kA + kB numbers per adapted projection). alpha = 1/kA and beta = 0 at
init (as the reference), so Delta W = 0 while alpha still gets gradient once beta moves.

The bases are uniform(-1, 1) / sqrt(k) as in the official code, drawn from a CPU
`torch.Generator` seeded from (seed, role, shape): the same numbers on every machine and device.
They are shared by every layer with the same role and shape, generated once per process and
device, and never stored: a checkpoint holds the coefficients plus `nola_config`
(seed, rank, kA, kB, qbits), which is checked on load.

Quantized NOLA (`qbits`): alpha and beta go through straight-through fake quantization in the
forward; `lora_state_dict` saves them as packed b-bit codes plus one scale per vector.
"""
import zlib
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from . import quant
from .base import LowRankAdapter

_BASES: Dict[Tuple, torch.Tensor] = {}
CONFIG_FIELDS = ("seed", "rank", "num_basis_A", "num_basis_B", "qbits")


def basis(role: str, seed: int, num: int, rows: int, cols: int, device, dtype) -> torch.Tensor:
    """The fixed random basis of one role: (num, rows, cols), cached per device and dtype."""
    key = (role, seed, num, rows, cols, str(device), dtype)
    t = _BASES.get(key)
    if t is None:
        cpu_key = (role, seed, num, rows, cols, "cpu", torch.float32)
        t = _BASES.get(cpu_key)
        if t is None:
            g = torch.Generator(device="cpu")
            g.manual_seed(zlib.crc32(f"nola:{role}:{seed}:{num}x{rows}x{cols}".encode()))
            t = (torch.rand(num, rows, cols, generator=g) * 2 - 1) / num ** 0.5
            _BASES[cpu_key] = t
        t = t.to(device=device, dtype=dtype)
        _BASES[key] = t
    return t


def clear_basis_cache() -> None:
    _BASES.clear()


class NOLALinear(LowRankAdapter):
    def __init__(self, in_features: int, out_features: int, r: int = 0, lora_alpha: float = 1,
                 lora_dropout: float = 0.0, enable_lora=None, fan_in_fan_out: bool = False,
                 merge_weights: bool = False, num_basis_A: int = 1000, num_basis_B: int = 1000,
                 qbits: Optional[int] = None, seed: int = 0, **kwargs):
        for name, k in (("num_basis_A", num_basis_A), ("num_basis_B", num_basis_B)):
            if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
                raise ValueError(f"NOLA {name} must be a positive integer, got {k!r}")
        if qbits is not None:
            quant.levels(qbits)
        self.num_basis_A, self.num_basis_B = num_basis_A, num_basis_B
        self.qbits, self.seed = qbits, int(seed)
        super().__init__(in_features, out_features, r=r, lora_alpha=lora_alpha,
                         lora_dropout=lora_dropout, enable_lora=enable_lora,
                         fan_in_fan_out=fan_in_fan_out, merge_weights=merge_weights, **kwargs)

    def config_values(self):
        return [self.seed, self.r, self.num_basis_A, self.num_basis_B, self.qbits or 0]

    def build_adapter(self) -> None:
        n = self.n_enabled
        self.nola_alpha = nn.Parameter(self.weight.new_zeros((n, self.num_basis_A)))
        self.nola_beta = nn.Parameter(self.weight.new_zeros((n, self.num_basis_B)))
        self.register_buffer("nola_config", torch.tensor(self.config_values(), dtype=torch.int64))

    def reset_adapter_parameters(self) -> None:
        nn.init.constant_(self.nola_alpha, 1.0 / self.num_basis_A)
        nn.init.zeros_(self.nola_beta)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", nola kA={self.num_basis_A} kB={self.num_basis_B}"
                                       f" qbits={self.qbits} seed={self.seed}")

    def coefficients(self):
        a, b = self.nola_alpha, self.nola_beta
        if self.qbits is not None:
            a, b = quant.fake_quantize(a, self.qbits), quant.fake_quantize(b, self.qbits)
        return a, b

    def factors(self, w):
        a, b = self.coefficients()
        n, r, k, d = self.n_enabled, self.r, self.in_features, self.slice_size
        basis_a = basis("A", self.seed, self.num_basis_A, r, k, a.device, a.dtype)
        basis_b = basis("B", self.seed, self.num_basis_B, d, r, b.device, b.dtype)
        A = (a @ basis_a.view(self.num_basis_A, r * k)).view(n * r, k)
        B = (b @ basis_b.view(self.num_basis_B, d * r)).view(n, d, r)
        return A, B

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "nola_config"
        if key in state_dict:
            got = [int(v) for v in state_dict[key].tolist()]
            mine = self.config_values()
            if got != mine:
                diff = ", ".join(f"{f} {g} (model has {m})"
                                 for f, g, m in zip(CONFIG_FIELDS, got, mine) if g != m)
                raise ValueError(f"{key}: the adapter was trained with {diff}; "
                                 f"build the model with the same NOLA settings")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
