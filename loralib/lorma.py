"""LoRMA: multiplicative low-rank adaptation (Bihany et al., ACL Findings 2025).

W = T W0 ("pre": T is slice x slice, on the output side) or W = W0 T ("post": T is in x in, on
the input side); the bias is never transformed. W0 here is the frozen weight of one enabled
output slice. Factors are B (D, r) and A (r, D), D the side T acts on. s = alpha / r.

Kinds (Exploration-Lab/LoRMA; `rank_inflation` in its math code):
- `rri`, LoRMA_+: T = I + s B A. Then T W0 x = W0 x + s B (A W0) x and W0 T x = W0 x +
  s (W0 B) A x: a LoRA update with one factor pre-multiplied by the frozen slice, so it runs in
  activation space. Which factor starts at zero differs by pipeline in the official code:
  `init="a_zero"` (GPT-2, model_lorma_plus.py: A = 0, B kaiming U(+-1/sqrt r)) or
  `init="b_zero"` (NLU run_glue_lorma_plus.py and train_math_lorma.py: B = 0, A kaiming).
- `shift`, LoRMA_pi: T = s pi(B A), pi rotating row i right by i places. T is full rank, so it is
  formed densely (D x D) once per forward. Init: B kaiming with column 0 set to 1, A zero but
  A[0, 0] = 1, both divided by sqrt(s): then s pi(B A) = I.
- `none`: T = s B A, with B kaiming and A = pinv(B), both divided by sqrt(s). Not the identity at
  init: s B A = B pinv(B) is a rank-r projector, as in the official code.
Modes `complete_pre` / `complete_post` (the NLU pi code): T is a dense trainable matrix (stored
as lora_A, D x D per slice) starting at I, without scaling; `kind` plays no part there.

Dropout placement (`dropout_site`) also differs by pipeline in the official code: `none` (GPT-2:
`--mult_lora_dropout` is stored and never applied), `input` (NLU and math code: dropout on the
input of the whole adapted linear, frozen path included). `adapter` (the project's variant)
drops the input of the update only: W0 x + (W - W0) drop(x).
"""
import math
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import LowRankAdapter, autocasting, in_dtype, kaiming_uniform_rows
from .methods.lorma import DROPOUT_SITES, INITS, KINDS, MODES


_ROTATION_INDEX: Dict[Tuple[int, str], torch.Tensor] = {}


@torch.compiler.assume_constant_result      # a graph constant, no guard on the cache
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
                 merge_weights: bool = False, kind: str = "rri", mode: str = "pre",
                 init: str = "b_zero", dropout_site: str = "input", **kwargs):
        for name, value, allowed in (("kind", kind, KINDS), ("mode", mode, MODES),
                                     ("init", init, INITS),
                                     ("dropout_site", dropout_site, DROPOUT_SITES)):
            if value not in allowed:
                raise ValueError(f"unknown LoRMA {name} {value!r} (choose from {allowed})")
        self.kind, self.mode, self.init, self.dropout_site = kind, mode, init, dropout_site
        super().__init__(in_features, out_features, r=r, lora_alpha=lora_alpha,
                         lora_dropout=lora_dropout, enable_lora=enable_lora,
                         fan_in_fan_out=fan_in_fan_out, merge_weights=merge_weights, **kwargs)

    @property
    def complete(self) -> bool:
        return self.mode.startswith("complete_")

    @property
    def output_side(self) -> bool:
        return self.mode in ("pre", "complete_pre")

    @property
    def side(self) -> int:
        """Size of T: the slice's output size (pre) or the input size (post)."""
        return self.slice_size if self.output_side else self.in_features

    def build_adapter(self) -> None:
        n, D = self.n_enabled, self.side
        if self.complete:
            self.lora_A = nn.Parameter(self.weight.new_zeros((D * n, D)))
            return
        self.lora_A = nn.Parameter(self.weight.new_zeros((self.r * n, D)))
        self.lora_B = nn.Parameter(self.weight.new_zeros((D * n, self.r)))

    @torch.no_grad()
    def reset_adapter_parameters(self) -> None:
        n, D, r = self.n_enabled, self.side, self.r
        if self.complete:
            self.lora_A.copy_(torch.eye(D, dtype=self.lora_A.dtype).repeat(n, 1))
            return
        if self.kind == "rri":
            if self.init == "b_zero":
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # U(+-1/sqrt(D))
                nn.init.zeros_(self.lora_B)
            else:
                nn.init.zeros_(self.lora_A)
                nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))   # U(+-1/sqrt(r))
            return
        inv = 1.0 / math.sqrt(self.scaling)
        A, B = self._ab()
        for j in range(n):
            kaiming_uniform_rows(B[j], fan_in=r)
        if self.kind == "shift":
            B[:, :, 0] = 1.0
            A.zero_()
            A[:, 0, 0] = 1.0
        elif not self.lora_A.is_meta:     # none: A = pinv(B), taken before the 1/sqrt(s)
            for j in range(n):
                A[j] = torch.linalg.pinv(B[j].float()).to(A.dtype)
        A.mul_(inv)
        B.mul_(inv)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", lorma={self.kind}/{self.mode}, init={self.init}, "
                f"dropout_site={self.dropout_site}")

    def _ab(self):
        n, D, r = self.n_enabled, self.side, self.r
        return self.lora_A.view(n, r, D), self.lora_B.view(n, D, r)

    # -- weight space: T for shift / none / complete -----------------------------------------
    def transforms(self) -> torch.Tensor:
        """T for every enabled slice, (n_enabled, D, D) (not for rri)."""
        if self.complete:
            D = self.side
            return self.lora_A.view(self.n_enabled, D, D)
        A, B = self._ab()
        BA = torch.bmm(B, A)
        return (rotate_rows(BA) if self.kind == "shift" else BA) * self.scaling

    def _slice_weights(self, w: torch.Tensor) -> torch.Tensor:
        """The adapted weight of every enabled slice, (n_enabled, slice, in)."""
        w0 = self.enabled_weight_slices(w)
        if self.kind == "rri" and not self.complete:
            A, B = self.factors(w)
            delta = torch.bmm(B, A.view(self.n_enabled, self.r, self.in_features))
            return w0 + delta * self.scaling
        T = self.transforms()
        w0 = in_dtype(w0, T.dtype)
        return torch.bmm(T, w0) if self.output_side else torch.bmm(w0, T)

    # -- activation space: rri ---------------------------------------------------------------
    def factors(self, w: torch.Tensor):
        A, B = self._ab()
        w0 = in_dtype(self.enabled_weight_slices(w), A.dtype)
        if self.mode == "pre":       # s B (A W0): A_eff_j = A_j W0_j, (r, in)
            return torch.bmm(A, w0).reshape(-1, self.in_features), B
        return A.reshape(-1, self.in_features), torch.bmm(w0, B)   # B_eff_j = W0_j B_j

    def adapted_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        site = self.dropout_site
        if site == "input":
            x = self.lora_dropout(x)
        if self.kind == "rri" and not self.complete:
            x_adapter = self.lora_dropout(x) if site == "adapter" else x
            return self.low_rank_forward(x, x_adapter, w)
        # Weight space is the cheaper side here: forming T_j W0_j costs D*D*in once, while
        # applying T_j to activations costs tokens*D*D forward and twice that backward.
        wj = self._slice_weights(w)
        # An adapted slice computes in the adapter's dtype, and its output goes back to the
        # frozen product's (see loralib/base.py on precision).
        dt, out_dt = wj.dtype, w.dtype
        cast_back = not autocasting(x)
        x_adapter = self.lora_dropout(x) if site == "adapter" else None
        parts, j = [], 0
        for i in range(len(self.enable_lora)):
            rows = self.slice_range(i)
            b = None if self.bias is None else self.bias[rows]
            if not self.enable_lora[i]:
                parts.append(F.linear(x, w[rows], b))
                continue
            if x_adapter is None:
                y = F.linear(in_dtype(x, dt), wj[j], in_dtype(b, dt))
            else:
                y = F.linear(x, w[rows], b) + F.linear(in_dtype(x_adapter, dt), wj[j] - w[rows])
            parts.append(y.to(out_dt) if cast_back else y)
            j += 1
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def merged_weight(self, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "rri" and not self.complete:
            return super().merged_weight(w)
        new, wj = w.clone(), self._slice_weights(w)
        for j, i in enumerate(self.enabled_slices):
            new[self.slice_range(i)] = wj[j]
        return new
