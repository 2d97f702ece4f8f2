"""LoRMA: multiplicative low-rank adaptation (Bihany et al., ACL Findings 2025).

W = T W0 ("pre": T is slice x slice, on the output side) or W = W0 T ("post": T is in x in, on
the input side); the bias is not transformed. Both factors are (D, r) and (r, D) with D the side
T acts on. W0 here is the frozen weight of one enabled output slice.

LoRMA_+ (`kind="rri"`): T = I + s B A, B = 0 at init. Then T W0 x = W0 x + s B (A W0) x and
W0 T x = W0 x + s (W0 B) A x: a LoRA update with one factor pre-multiplied by the frozen slice,
so it runs in activation space like LoRA. Dropout acts on the layer input x, as for every
additive method here.

LoRMA_pi (`kind="shift"`): T = s pi(B A) with pi rotating row i right by i places. The rotation
makes T full rank, so it has to be formed densely (D x D) once per forward; pi is a fixed gather
and gradients pass through it. Init: B kaiming with column 0 set to 1, A zero but A[0, 0] = 1,
both divided by sqrt(s): then s pi(B A) = I.
"""
import math
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import LowRankAdapter, kaiming_uniform_rows

KINDS = ("rri", "shift")
MODES = ("pre", "post")

_ROTATION_INDEX: Dict[Tuple[int, str], torch.Tensor] = {}


def rotation_index(n: int, device) -> torch.Tensor:
    """idx[i, j] = (j - i) mod n, so that M.gather(1, idx) = pi(M). Cached per size and device."""
    key = (n, str(device))
    idx = _ROTATION_INDEX.get(key)
    if idx is None:
        ar = torch.arange(n, device=device)
        idx = (ar[None, :] - ar[:, None]) % n
        _ROTATION_INDEX[key] = idx
    return idx


def rotate_rows(m: torch.Tensor) -> torch.Tensor:
    """pi(M)[..., i, j] = M[..., i, (j - i) mod n] for square M (batched over leading dims)."""
    n = m.shape[-1]
    idx = rotation_index(n, m.device).expand(m.shape)
    return m.gather(-1, idx)


class LoRMALinear(LowRankAdapter):
    def __init__(self, in_features: int, out_features: int, r: int = 0, lora_alpha: float = 1,
                 lora_dropout: float = 0.0, enable_lora=None, fan_in_fan_out: bool = False,
                 merge_weights: bool = False, kind: str = "rri", mode: str = "pre", **kwargs):
        if kind not in KINDS:
            raise ValueError(f"unknown LoRMA kind {kind!r} (choose from {KINDS})")
        if mode not in MODES:
            raise ValueError(f"unknown LoRMA mode {mode!r} (choose from {MODES})")
        self.kind, self.mode = kind, mode
        super().__init__(in_features, out_features, r=r, lora_alpha=lora_alpha,
                         lora_dropout=lora_dropout, enable_lora=enable_lora,
                         fan_in_fan_out=fan_in_fan_out, merge_weights=merge_weights, **kwargs)

    @property
    def side(self) -> int:
        """Size of T: the slice's output size (pre) or the input size (post)."""
        return self.slice_size if self.mode == "pre" else self.in_features

    def build_adapter(self) -> None:
        n, D = self.n_enabled, self.side
        self.lora_A = nn.Parameter(self.weight.new_zeros((self.r * n, D)))
        self.lora_B = nn.Parameter(self.weight.new_zeros((D * n, self.r)))

    def reset_adapter_parameters(self) -> None:
        if self.kind == "rri":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)
            return
        n, D, r = self.n_enabled, self.side, self.r
        inv = 1.0 / math.sqrt(self.scaling)
        with torch.no_grad():
            B = self.lora_B.view(n, D, r)
            for j in range(n):
                kaiming_uniform_rows(B[j], fan_in=r)
            B[:, :, 0] = 1.0
            B.mul_(inv)
            A = self.lora_A.view(n, r, D)
            A.zero_()
            A[:, 0, 0] = inv

    def extra_repr(self) -> str:
        return super().extra_repr() + f", lorma={self.kind}/{self.mode}"

    def _ab(self):
        n, D, r = self.n_enabled, self.side, self.r
        return self.lora_A.view(n, r, D), self.lora_B.view(n, D, r)

    # -- LoRMA_pi: dense T -----------------------------------------------------------------
    def transforms(self) -> torch.Tensor:
        """T for every enabled slice, (n_enabled, D, D)."""
        A, B = self._ab()
        return rotate_rows(torch.bmm(B, A)) * self.scaling

    def _shift_slice_weights(self, w: torch.Tensor) -> torch.Tensor:
        T, w0 = self.transforms(), self.enabled_weight_slices(w)
        return torch.bmm(T, w0) if self.mode == "pre" else torch.bmm(w0, T)

    # -- dispatch ---------------------------------------------------------------------------
    def factors(self, w: torch.Tensor):
        A, B = self._ab()
        w0 = self.enabled_weight_slices(w)
        if self.mode == "pre":       # s B (A W0): A_eff_j = A_j W0_j, (r, in)
            return torch.bmm(A, w0).reshape(-1, self.in_features), B
        return A.reshape(-1, self.in_features), torch.bmm(w0, B)   # B_eff_j = W0_j B_j

    def adapted_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "rri":
            return super().adapted_forward(x, w)
        # No dropout here: the update is not a separate branch one could drop.
        # Weight space is the cheaper side here: forming T_j W0_j costs D*D*in once, while
        # applying T_j to activations costs tokens*D*D forward and twice that backward.
        wj = self._shift_slice_weights(w)
        parts, j = [], 0
        for i in range(len(self.enable_lora)):
            rows = self.slice_range(i)
            b = None if self.bias is None else self.bias[rows]
            if self.enable_lora[i]:
                parts.append(F.linear(x, wj[j], b))
                j += 1
            else:
                parts.append(F.linear(x, w[rows], b))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def merged_weight(self, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "rri":
            return super().merged_weight(w)
        new, wj = w.clone(), self._shift_slice_weights(w)
        for j, i in enumerate(self.enabled_slices):
            new[self.slice_range(i)] = wj[j]
        return new
