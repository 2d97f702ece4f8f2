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
- `shift`, LoRMA_pi: T = s pi(B A), pi rotating row i right by i places. Init: B kaiming with
  column 0 set to 1, A zero but A[0, 0] = 1, both divided by sqrt(s): then s pi(B A) = I.
  T is full rank. The official code forms it densely and multiplies the weight by it (D^2 * in
  multiply-adds per forward, and T W0 kept for the backward). Here each call takes the cheaper
  side by shape: with no more tokens than the weight's other side (in for pre, the slice for
  post: the activations then hold fewer numbers than T W0), T is applied to the activations
  without being formed (loralib/rotation.py: FFTs, O(r D log D) per token, the activations kept
  for the backward); else the dense weight-space product as the official code. Both give the
  official values up to fp32 rounding.
- `none`: T = s B A, with B kaiming and A = pinv(B), both divided by sqrt(s). Not the identity at
  init: s B A = B pinv(B) is a rank-r projector, as in the official code. T is low rank, so
  T W0 x = s B (A W0) x and W0 T x = s (W0 B) (A x): LoRMA_+'s update without the frozen term,
  in activation space (no D x D matrix).
Modes `complete_pre` / `complete_post` (the NLU pi code): T is a dense trainable matrix (stored
as lora_A, D x D per slice) starting at I, without scaling; `kind` plays no part there.

Dropout placement (`dropout_site`) also differs by pipeline in the official code: `none` (GPT-2:
`--mult_lora_dropout` is stored and never applied), `input` (NLU and math code: dropout on the
input of the whole adapted linear, frozen path included). `adapter` (the project's variant)
drops the input of the update only: W0 x + (W - W0) drop(x).

`compute_side` (a layer attribute, not saved: "auto", "weight" or "activation") forces one side
for shift and none, e.g. to follow the official code's order of operations or to measure.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import (LowRankAdapter, autocasting, cast_once_for_autocast, in_dtype,
                   kaiming_uniform_rows)
from .methods.lorma import DROPOUT_SITES, INITS, KINDS, MODES
from .rotation import rotate_rows, rotated_lowrank

SIDES = ("auto", "weight", "activation")


class LoRMALinear(LowRankAdapter):
    compute_side = "auto"

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

    # -- weight space: the official formulation, and merging ---------------------------------
    def transforms(self) -> torch.Tensor:
        """T for every enabled slice, (n_enabled, D, D) (shift, none and complete)."""
        if self.complete:
            D = self.side
            return self.lora_A.view(self.n_enabled, D, D)
        A, B = self._ab()
        BA = torch.bmm(B, A)
        return (rotate_rows(BA) if self.kind == "shift" else BA) * self.scaling

    def _slice_weights(self, w: torch.Tensor) -> torch.Tensor:
        """The adapted weight of every enabled slice, (n_enabled, slice, in) (not rri)."""
        if self.kind == "none" and not self.complete:
            # T W0 = s B (A W0), W0 T = s (W0 B) A: low rank, no D x D matrix needed
            A, B = self.factors(w)
            return torch.bmm(B, A.view(self.n_enabled, self.r, self.in_features)) * self.scaling
        w0 = self.enabled_weight_slices(w)
        T = self.transforms()
        w0 = in_dtype(w0, T.dtype)
        return torch.bmm(T, w0) if self.output_side else torch.bmm(w0, T)

    # -- activation space -------------------------------------------------------------------
    def factors(self, w: torch.Tensor):
        A, B = self._ab()
        w0 = in_dtype(self.enabled_weight_slices(w), A.dtype)
        if self.mode == "pre":       # s B (A W0): A_eff_j = A_j W0_j, (r, in)
            return torch.bmm(A, w0).reshape(-1, self.in_features), B
        return A.reshape(-1, self.in_features), torch.bmm(w0, B)   # B_eff_j = W0_j B_j

    def _side(self, x: torch.Tensor) -> str:
        if self.compute_side not in SIDES:
            raise ValueError(f"LoRMALinear.compute_side must be one of {SIDES}, "
                             f"got {self.compute_side!r}")
        if self.compute_side != "auto":
            return self.compute_side
        if self.kind == "none":
            return "activation"    # low rank: s B (A W0) x is the cheapest order at any shape
        # The activations (tokens x D) or the adapted weight (D x other): whichever holds fewer
        # numbers is what the backward keeps, and the cheaper product.
        tokens = x.numel() // x.shape[-1]
        return "activation" if tokens <= (self.in_features if self.output_side
                                          else self.slice_size) else "weight"

    def adapted_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        site = self.dropout_site
        if site == "input":
            x = self.lora_dropout(x)
        x_adapter = self.lora_dropout(x) if site == "adapter" else x
        if self.kind == "rri" and not self.complete:
            return self.low_rank_forward(x, x_adapter, w)
        w = cast_once_for_autocast(w)
        if self.complete or self._side(x) == "weight":
            return self._weight_space_forward(x, x_adapter, w)
        return self._activation_space_forward(x, x_adapter, w)

    def _assemble(self, x, w, outs, frozen_input=None):
        """The layer's output: each enabled slice's value from `outs` (without bias; plus its
        frozen product of `frozen_input` when given), the other slices' frozen product of x,
        and the bias on every slice. An adapted value goes back to the frozen dtype (see
        loralib/base.py on precision)."""
        parts, j = [], 0
        for i in range(len(self.enable_lora)):
            rows = self.slice_range(i)
            b = None if self.bias is None else self.bias[rows]
            if not self.enable_lora[i]:
                parts.append(F.linear(x, w[rows], b))
                continue
            y = outs[j]
            if not autocasting(y):
                y = y.to(w.dtype)
            if frozen_input is not None:
                y = y + F.linear(frozen_input, w[rows])
            # (under autocast the bias joins in autocast's dtype, as in the frozen product)
            parts.append(y if b is None else y + b.to(y.dtype))
            j += 1
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def _activation_space_forward(self, x, x_adapter, w):
        """none and shift with T applied to activations. With dropout on the adapter's input
        only, W x = W0 x + (W - W0) x_a = W0 (x - x_a) + W x_a."""
        n, d, k = self.n_enabled, self.slice_size, self.in_features
        lead = x.shape[:-1]
        rest = None if x_adapter is x else x - x_adapter
        if self.kind == "none":
            # s B (A W0) x_a (pre) or s (W0 B) (A x_a) (post): one low-rank product per slice.
            A, B = self.factors(w)                                       # (n*r, in), (n, d, r)
            after_a = F.linear(in_dtype(x_adapter, A.dtype), A) * self.scaling
            after_a = after_a.reshape(-1, n, self.r).transpose(0, 1)     # (n, tokens, r)
            out = torch.bmm(after_a, B.transpose(1, 2).to(after_a.dtype))
            return self._assemble(x, w, [o.view(*lead, d) for o in out], rest)
        A, B = self._ab()
        xa = x_adapter.reshape(-1, k)
        if self.output_side:
            # T_j (W0_j x_a): T on each enabled slice's frozen product (views of w, no copy).
            hs = [F.linear(xa, w[self.slice_range(i)]) for i in self.enabled_slices]
            h = hs[0].unsqueeze(0) if n == 1 else torch.stack(hs)        # (n, tokens, d)
            out = rotated_lowrank(h, A, B, self.scaling)
            return self._assemble(x, w, [o.view(*lead, d) for o in out], rest)
        # W0_j (T_j x_a + x - x_a): T on the input, then each slice's frozen product.
        u = rotated_lowrank(xa.unsqueeze(0).expand(n, -1, -1), A, B, self.scaling)
        if rest is not None:
            u = u + rest.reshape(1, -1, k)
        outs = [F.linear(u[j], w[self.slice_range(i)]).view(*lead, d)
                for j, i in enumerate(self.enabled_slices)]
        return self._assemble(x, w, outs)

    def _weight_space_forward(self, x, x_adapter, w):
        """The official formulation: W_j = T_j W0_j (or W0_j T_j) formed, one product per
        slice, in the adapter's dtype."""
        wj = self._slice_weights(w)
        dt = wj.dtype
        if x_adapter is x:
            return self._assemble(x, w, [F.linear(in_dtype(x, dt), wj[j])
                                         for j in range(self.n_enabled)])
        xa = in_dtype(x_adapter, dt)
        outs = [F.linear(xa, wj[j] - in_dtype(w[self.slice_range(i)], dt))
                for j, i in enumerate(self.enabled_slices)]
        return self._assemble(x, w, outs, frozen_input=x)

    def merged_weight(self, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "rri" and not self.complete:
            return super().merged_weight(w)
        new, wj = w.clone(), self._slice_weights(w)
        for j, i in enumerate(self.enabled_slices):
            new[self.slice_range(i)] = wj[j]
        return new
