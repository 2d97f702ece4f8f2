"""The machinery every adapted projection shares.

`AdaptedLinear` wraps a frozen projection: an `nn.Linear`-style weight (out, in), or GPT-2's
Conv1D layout (in, out) with `fan_in_fan_out=True`. Its output may be split into equal slices
(GPT-2's fused q/k/v) with an enable mask choosing which slices are adapted. A method subclasses it
and supplies either low-rank factors (`LowRankAdapter`: LoRA, LoRMA_+, MTLoRA, NOLA, all computed
in activation space) or its own forward and merged weight (LoRMA_pi).

Merging is explicit (`merge()` / `unmerge()`), or through `train()`/`eval()` when
`merge_weights=True` as in Microsoft's loralib. `merge()` keeps a copy of the frozen weight so
that `unmerge()` restores it bit for bit, however many times one toggles (subtracting the delta
back, as Microsoft does, drifts in floating point).

Precision: adapter tensors may have another dtype than the frozen weight (fp32 adapters on a
bf16 / fp16 base, as `loralib.inject` allocates them). The rule is PEFT's: the adapter's products
run in the adapter's dtype (their other operands are cast to it), and the adapted output goes back
to the frozen product's dtype; under autocast no cast is made (autocast picks every product's
dtype, and a cast here would be undone). Merging computes in at least fp32 and `merge()` writes
the result in the weight's dtype.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import cpu_linear


class LoRALayer:
    """Microsoft's mixin: hyper-parameters, dropout and merge state of an adapted layer.

    It also carries merging for every layer, which folds its adapter into one frozen weight:
    a layer names that weight (`_merge_target`), says whether it has an adapter to fold
    (`_mergeable`) and computes the adapted value in the weight's own layout (`_merged_value`).
    It comes first among a layer's bases so that its `train` wraps nn.Module's.
    """

    def __init__(self, r: int, lora_alpha: float, lora_dropout: float, merge_weights: bool):
        self.r = r
        self.lora_alpha = lora_alpha
        # A module rather than Microsoft's lambda, so that layers pickle and deep-copy.
        self.lora_dropout = nn.Dropout(p=lora_dropout) if lora_dropout > 0.0 else nn.Identity()
        self.merged = False
        self.merge_weights = merge_weights
        # Non-persistent: the frozen weight saved by merge(); moves with .to() and never
        # reaches a state dict.
        self.register_buffer("_merge_backup", None, persistent=False)

    def init_like_backbone(self, std: float) -> None:
        """Re-draw the adapter tensors that the official GPT-2 code's `_init_weights` re-draws
        (it runs normal_(0, std) over every nn.Linear after building the model). That touches
        no adapter factor of LoRA, LoRMA or MTLoRA, but it does re-draw NOLA's frozen offsets,
        which the official code keeps in nn.Linear modules; NOLA overrides this."""

    def pack_adapter_state(self, state):
        """How this layer's adapter tensors ({local name: tensor}) are written to an adapter
        file; `unpack_adapter_state` reverses it on load. Identity unless a method stores
        its state otherwise (quantized NOLA: packed codes)."""
        return state

    def unpack_adapter_state(self, state, where: str = ""):
        return state

    def _merge_target(self) -> nn.Parameter:
        return self.weight

    def _mergeable(self) -> bool:
        return self.r > 0

    def _merged_value(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged or not self._mergeable():
            return
        target = self._merge_target()
        new = self._merged_value().to(target.dtype)
        self._merge_backup = target.detach().clone()
        # Through the parameter, not .data: the write bumps its version counter, which is how
        # cpu_linear.packed_weights knows its packed copy is stale.
        target.copy_(new)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        self._merge_target().copy_(self._merge_backup)      # bumps the version (see merge)
        self._merge_backup = None
        self.merged = False

    def train(self, mode: bool = True):
        nn.Module.train(self, mode)
        if self.merge_weights:
            self.unmerge() if mode else self.merge()
        return self


def autocasting(t: torch.Tensor) -> bool:
    # A device without autocast (meta: tests of device placement) is never autocasting; asking
    # torch.is_autocast_enabled about it raises.
    kind = t.device.type
    return torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind)


def in_dtype(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """`t` cast to `dtype` for an adapter product (see the module's note on precision); left
    alone under autocast, which casts the operands of a product itself."""
    if t is None or t.dtype == dtype or autocasting(t):
        return t
    return t.to(dtype)


_CONSTANTS: Dict[tuple, torch.Tensor] = {}


def _constant(key: tuple, make) -> torch.Tensor:
    """A small constant tensor, made once per key (which names its device): no host-to-device
    copy per forward. Its public makers are `assume_constant_result` for torch.compile: the
    tensor goes into the graph as a constant, where tracing the cache would guard on its
    contents and compile a second time once the first trace had filled it."""
    t = _CONSTANTS.get(key)
    if t is None:
        t = _CONSTANTS[key] = make()
    return t


@torch.compiler.assume_constant_result
def enabled_index(enable: Sequence[bool], device) -> torch.Tensor:
    """The positions of the enabled slices, int64."""
    key = ("enabled", tuple(enable), str(device))
    return _constant(key, lambda: torch.tensor([i for i, e in enumerate(enable) if e],
                                               dtype=torch.long, device=device))


@torch.compiler.assume_constant_result
def block_mask(enable: Sequence[bool], d: int, Rb: int, device) -> torch.Tensor:
    """(n_slices, d, n_enabled, Rb) bool: True at [i, :, j, :] when slice i is the j-th enabled
    one. Full-size (out x R bytes, not a broadcast) on purpose: an elementwise op lays its output
    out like its first fully strided operand, so `mask * B.transpose(0, 1)` comes out contiguous
    in the (out, R) order full_b needs, with no copy after it."""
    key = ("block", tuple(enable), d, Rb, str(device))

    def make():
        n_slices, n = len(enable), sum(map(bool, enable))
        sel = torch.zeros(n_slices, 1, n, 1, dtype=torch.bool)
        for j, i in enumerate(i for i, e in enumerate(enable) if e):
            sel[i, 0, j, 0] = True
        return sel.expand(n_slices, d, n, Rb).contiguous().to(device)
    return _constant(key, make)


def cast_once_for_autocast(t: torch.Tensor) -> torch.Tensor:
    """Under autocast, an fp32 tensor that several products read (the frozen weight, the input)
    cast to autocast's dtype once per forward: autocast would make, and autograd keep, one copy
    per product, as it caches the casts of trainable leaves only. The values are autocast's."""
    if t.dtype == torch.float32 and autocasting(t):
        return t.to(torch.get_autocast_dtype(t.device.type))
    return t


def check_enable(enable: Optional[Sequence[bool]], out_features: int) -> List[bool]:
    enable = [True] if enable is None else [bool(e) for e in enable]
    if len(enable) == 0:
        raise ValueError("enable mask must not be empty")
    if out_features % len(enable) != 0:
        raise ValueError(
            f"enable mask of length {len(enable)} does not divide out_features={out_features}")
    return enable


class AdaptedLinear(LoRALayer, nn.Linear):
    """A frozen projection plus an optional adapter on some of its output slices.

    Subclasses register their parameters in `build_adapter()` and initialize them in
    `reset_adapter_parameters()`; then either inherit `LowRankAdapter` or override
    `adapted_forward` and `merged_weight`.
    """

    def __init__(self, in_features: int, out_features: int, r: int = 0, lora_alpha: float = 1,
                 lora_dropout: float = 0.0, enable_lora: Optional[Sequence[bool]] = None,
                 fan_in_fan_out: bool = False, merge_weights: bool = True, **kwargs):
        self._adapter_ready = False
        nn.Linear.__init__(self, in_features, out_features, **kwargs)
        LoRALayer.__init__(self, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                           merge_weights=merge_weights)
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"rank must be a non-negative integer, got {r!r}")
        self.enable_lora = check_enable(enable_lora, out_features)
        self.fan_in_fan_out = fan_in_fan_out
        self.slice_size = out_features // len(self.enable_lora)
        self.enabled_slices = [i for i, e in enumerate(self.enable_lora) if e]
        self.has_adapter = r > 0 and len(self.enabled_slices) > 0
        self.scaling = self.lora_alpha / r if r > 0 else 0.0
        if self.has_adapter:
            self.weight.requires_grad = False
            self.build_adapter()
            self._adapter_ready = True
        self.reset_parameters()
        if fan_in_fan_out:
            self.weight.data = self.weight.data.transpose(0, 1)

    # -- to be provided by a method ------------------------------------------------------
    def build_adapter(self) -> None:
        raise NotImplementedError

    def reset_adapter_parameters(self) -> None:
        raise NotImplementedError

    def adapted_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def merged_weight(self, w: torch.Tensor) -> torch.Tensor:
        """The adapted weight (out, in), computed from the frozen weight `w` (out, in)."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    @property
    def n_enabled(self) -> int:
        return len(self.enabled_slices)

    def reset_parameters(self) -> None:
        nn.Linear.reset_parameters(self)
        if getattr(self, "_adapter_ready", False):
            self.reset_adapter_parameters()

    def frozen_weight(self) -> torch.Tensor:
        """The weight in F.linear orientation (out, in); a view, not a copy."""
        return self.weight.transpose(0, 1) if self.fan_in_fan_out else self.weight

    def enabled_weight_slices(self, w: torch.Tensor) -> torch.Tensor:
        """(n_enabled, slice_size, in) rows of `w` that the adapter acts on."""
        v = w.view(len(self.enable_lora), self.slice_size, w.shape[1])
        if self.n_enabled == len(self.enable_lora):
            return v
        return v[self.enabled_slices]

    def slice_range(self, i: int) -> slice:
        return slice(i * self.slice_size, (i + 1) * self.slice_size)

    # Whether the frozen product may get the input already cast for autocast (the copy A x
    # reads too). A quantized base (kbit.py) takes it as it came: its kernel casts to its
    # compute dtype and returns the input's dtype, as the official QLoRA layers do.
    frozen_takes_cast_input = True

    def frozen_product(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """W0 x + b, the frozen layer's own output (w = frozen_weight()). The one place it is
        computed: a quantized base (loralib/kbit.py) runs its own kernel here instead."""
        return cpu_linear.linear(x, w, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.frozen_weight()
        if not self.has_adapter or self.merged:
            return self.frozen_product(x, w)
        return self.adapted_forward(x, w)

    def forward_gelu_tanh(self, x: torch.Tensor) -> torch.Tensor:
        """gelu (tanh approximation) of forward(x): one oneDNN call for both where the plain
        product runs on a CPU (see cpu_linear), GPT-2's MLP at inference."""
        if not self.has_adapter or self.merged:
            return cpu_linear.linear(x, self.frozen_weight(), self.bias, gelu_tanh=True)
        return F.gelu(self.forward(x), approximate="tanh")

    def _mergeable(self) -> bool:
        return self.has_adapter

    def _merged_value(self) -> torch.Tensor:
        w = self.frozen_weight()
        # In fp32 at least: a bf16 weight plus a small update would lose most of the update to
        # rounding before merge() rounds the sum once.
        new = self.merged_weight(w.to(torch.promote_types(w.dtype, torch.float32)))
        return new.transpose(0, 1) if self.fan_in_fan_out else new

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.has_adapter:
            s += f", r={self.r}, alpha={self.lora_alpha}, enable={self.enable_lora}"
        if self.fan_in_fan_out:
            s += ", fan_in_fan_out=True"
        return s


class LowRankAdapter(AdaptedLinear):
    """Methods whose update is s * B_eff A_eff, computed in activation space.

    `factors(w)` returns A of shape (R, in) and B of shape (n_enabled, slice, Rb). When
    Rb == R // n_enabled, enabled slice j uses rows j*Rb:(j+1)*Rb of A (one rank block per
    projection, as in Microsoft's MergedLinear); when Rb == R, every slice reads all R ranks
    (MTLoRA's shared transformation). No dense delta-W is formed during training.
    """

    def factors(self, w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def full_b(self, B: torch.Tensor, R: int) -> torch.Tensor:
        """B spread over every output row, (out, R): zero rows for disabled slices and, with
        one rank block per slice, zeros outside the slice's own block. It is tiny (out x R),
        but it is rebuilt on every forward, so it takes one kernel (not a pad and a cat per
        slice): a product with a constant 0/1 mask (see `block_mask`)."""
        n_slices, d = len(self.enable_lora), self.slice_size
        n, Rb = B.shape[0], B.shape[-1]
        if n == n_slices and Rb == R:         # every slice enabled, all reading every rank
            return B.reshape(n_slices * d, R)
        if Rb == R and n > 1:
            # MTLoRA's shared T on some slices: rows of B, zero rows elsewhere (zeros and a copy;
            # a where would need B's rows moved first).
            idx = enabled_index(self.enable_lora, B.device)
            return B.new_zeros(n_slices, d, R).index_copy(0, idx, B).view(n_slices * d, R)
        # Block-diagonal (one enabled slice of several included): [i, a, j, rb] = B[j, a, rb]
        # where slice i is the j-th enabled one, else 0. B times a bool mask, the mask first
        # (see block_mask); exact: B * 1 = B, B * 0 = +-0, which adds as 0.
        mask = block_mask(self.enable_lora, d, Rb, B.device)
        return (mask * B.transpose(0, 1)).reshape(n_slices * d, R)

    def adapted_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.low_rank_forward(x, self.lora_dropout(x), w)

    def low_rank_forward(self, x: torch.Tensor, x_adapter: torch.Tensor,
                         w: torch.Tensor) -> torch.Tensor:
        """W0 x + b + s B_eff A_eff x_adapter (x_adapter: x, or x after the adapter's dropout)."""
        # W0 is read twice by LoRMA_+ (the frozen product, A W0), x by every method (the frozen
        # product, A x): under autocast, one low-precision copy of each (autocast's values)
        w = cast_once_for_autocast(w)
        A, B = self.factors(w)
        x2 = x.reshape(-1, x.shape[-1])
        xc = cast_once_for_autocast(x2)
        # The scale goes on the rank-sized activation, the cheapest place for it. The update is
        # one thin GEMM over all output columns accumulated in place onto the frozen product
        # (addmm_): no dense delta-W, no second full-size tensor, and no in-place writes into
        # column slices, whose backward would copy the full-size gradient once per slice.
        # In place is safe: the frozen product is not saved for backward.
        xa = xc if x_adapter is x else x_adapter.reshape(-1, x.shape[-1])
        after_a = F.linear(in_dtype(xa, A.dtype), A) * self.scaling
        # F.linear unless inference on a CPU or k-bit
        out = self.frozen_product(xc if self.frozen_takes_cast_input else x2, w)
        b = self.full_b(B, A.shape[0]).t()
        if out.dtype == after_a.dtype or autocasting(out):
            # addmm_ is not autocast-aware: under bf16/fp16 autocast F.linear gave `out` in
            # the low precision while B is still fp32.
            out.addmm_(after_a.to(out.dtype), b.to(out.dtype))
        else:
            # An fp32 adapter on a bf16 base: the update in fp32, then one rounding of the sum
            # to the frozen dtype (add_ computes in the promoted dtype), as PEFT's
            # (result + update).to(result.dtype).
            out.add_(after_a @ b.to(after_a.dtype))
        return out.view(*x.shape[:-1], self.out_features)

    def merged_weight(self, w: torch.Tensor) -> torch.Tensor:
        A, B = self.factors(w)
        return w + (self.full_b(B, A.shape[0]) @ A) * self.scaling


def kaiming_uniform_rows(t: torch.Tensor, fan_in: int) -> None:
    """kaiming_uniform_(a=sqrt(5)) with an explicit fan-in (nn.Linear's default init).

    Needed where one parameter stacks several matrices, so torch's own fan-in would be wrong.
    """
    gain = math.sqrt(2.0 / (1 + 5))
    bound = math.sqrt(3.0) * gain / math.sqrt(fan_in)
    with torch.no_grad():
        t.uniform_(-bound, bound)
