"""MTLoRA: a transformation matrix in the rank space (Liang, Wang, Zeng, arXiv 2403.07440).

Delta W = s B T A with T built from trainable C (and D) by one of four structures:
SHIM T = C; ICFM T = C C^T; CTCM T = C D; DTSM T = C + D. A, C, D kaiming-uniform (C and D with
the fan-in of T's size), B zeros; dropout on the adapter input only. It is LoRA with
B_eff = B T, so it runs in activation space: s ((x A^T) T^T) B^T.

The official code (YaoLiang2023/MTLoRA, xtuninglib/xtuning_layers.py) ships ICFM (the other
structures are files one copies over it), so ICFM is the default structure. Its fused GPT-2
layer (MergedLinear) has ONE (r*n) x (r*n) T shared by the n enabled slices, so each slice's
update reads the ranks of every slice: `shared_t=True`, the GPT-2 pipeline's default. One r x r
T per projection (the paper's prose) is `shared_t=False`. On a plain linear (n = 1) both are
the same. Not copied from the official code: `Linear4Module.train` never switching dropout off
in eval, and its merge adding an (out, in) delta to an (in, out) weight (both plain bugs).
"""
import torch
import torch.nn as nn

from .base import kaiming_uniform_rows
from .layers import MergedLinear
from .methods.mtlora import STRUCTURES

_TWO_MATRICES = ("CTCM", "DTSM")


def transformation(structure: str, C: torch.Tensor, D: torch.Tensor = None) -> torch.Tensor:
    """T from C (and D), batched over leading dimensions."""
    if structure == "SHIM":
        return C
    if structure == "ICFM":
        return C @ C.transpose(-2, -1)
    if structure == "CTCM":
        return C @ D
    if structure == "DTSM":
        return C + D
    raise ValueError(f"unknown MTLoRA structure {structure!r} (choose from {STRUCTURES})")


class MTLoRALinear(MergedLinear):
    def __init__(self, in_features: int, out_features: int, r: int = 0, lora_alpha: float = 1,
                 lora_dropout: float = 0.0, enable_lora=None, fan_in_fan_out: bool = False,
                 merge_weights: bool = False, structure: str = "ICFM", shared_t: bool = False,
                 **kwargs):
        structure = str(structure).upper()
        if structure not in STRUCTURES:
            raise ValueError(f"unknown MTLoRA structure {structure!r} (choose from {STRUCTURES})")
        self.structure, self.shared_t = structure, bool(shared_t)
        super().__init__(in_features, out_features, r=r, lora_alpha=lora_alpha,
                         lora_dropout=lora_dropout, enable_lora=enable_lora or [True],
                         fan_in_fan_out=fan_in_fan_out, merge_weights=merge_weights, **kwargs)

    def _t_shape(self):
        n, r = self.n_enabled, self.r
        return (n * r, n * r) if self.shared_t else (n, r, r)

    def build_adapter(self) -> None:
        super().build_adapter()
        self.lora_C = nn.Parameter(self.weight.new_zeros(self._t_shape()))
        if self.structure in _TWO_MATRICES:
            self.lora_D = nn.Parameter(self.weight.new_zeros(self._t_shape()))

    def reset_adapter_parameters(self) -> None:
        super().reset_adapter_parameters()
        fan_in = self._t_shape()[-1]
        kaiming_uniform_rows(self.lora_C, fan_in)
        if self.structure in _TWO_MATRICES:
            kaiming_uniform_rows(self.lora_D, fan_in)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mtlora={self.structure}, shared_t={self.shared_t}"

    def factors(self, w):
        A, B = super().factors(w)            # A (n*r, in), B (n, slice, r)
        T = transformation(self.structure, self.lora_C, getattr(self, "lora_D", None))
        if not self.shared_t:
            return A, torch.bmm(B, T)         # B_eff_j = B_j T_j
        n, r = self.n_enabled, self.r
        # B_eff_j = B_j T[j*r:(j+1)*r, :]: slice j reads every rank of every projection.
        return A, torch.bmm(B, T.view(n, r, n * r))
