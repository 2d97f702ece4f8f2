"""LoRA layers with Microsoft loralib 0.1.2's API, parameter names and shapes.

Code written against `import loralib as lora` runs unchanged and Microsoft's released adapter
checkpoints load. One difference on purpose: `MergedLinear` computes its update in activation
space (x A^T, then B per enabled slice) instead of forming the dense delta-W on every forward
(the regression of their PR 107).
"""
import math
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import LoRALayer, LowRankAdapter, autocasting


class MergedLinear(LowRankAdapter):
    """LoRA: h = W0 x + b + s * B(A(drop(x))), per enabled output slice.

    lora_A: (r * n_enabled, in); lora_B: (slice * n_enabled, r). A kaiming-uniform, B zeros.
    """

    def __init__(self, in_features: int, out_features: int, r: int = 0, lora_alpha: float = 1,
                 lora_dropout: float = 0.0, enable_lora: List[bool] = [False],
                 fan_in_fan_out: bool = False, merge_weights: bool = True, **kwargs):
        super().__init__(in_features, out_features, r=r, lora_alpha=lora_alpha,
                         lora_dropout=lora_dropout, enable_lora=enable_lora,
                         fan_in_fan_out=fan_in_fan_out, merge_weights=merge_weights, **kwargs)

    def build_adapter(self) -> None:
        n = self.n_enabled
        self.lora_A = nn.Parameter(self.weight.new_zeros((self.r * n, self.in_features)))
        self.lora_B = nn.Parameter(self.weight.new_zeros((self.slice_size * n, self.r)))

    def reset_adapter_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def factors(self, w):
        return self.lora_A, self.lora_B.view(self.n_enabled, self.slice_size, self.r)


class Linear(MergedLinear):
    """LoRA on a whole linear layer (Microsoft's `lora.Linear`): lora_A (r, in), lora_B (out, r)."""

    def __init__(self, in_features: int, out_features: int, r: int = 0, lora_alpha: float = 1,
                 lora_dropout: float = 0.0, fan_in_fan_out: bool = False,
                 merge_weights: bool = True, **kwargs):
        super().__init__(in_features, out_features, r=r, lora_alpha=lora_alpha,
                         lora_dropout=lora_dropout, enable_lora=[True],
                         fan_in_fan_out=fan_in_fan_out, merge_weights=merge_weights, **kwargs)


class Embedding(LoRALayer, nn.Embedding):
    """LoRA on an embedding: lora_A (r, num_embeddings) zeros, lora_B (dim, r) normal."""

    def __init__(self, num_embeddings: int, embedding_dim: int, r: int = 0,
                 lora_alpha: float = 1, merge_weights: bool = True, **kwargs):
        self._adapter_ready = False
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, **kwargs)
        LoRALayer.__init__(self, r=r, lora_alpha=lora_alpha, lora_dropout=0.0,
                           merge_weights=merge_weights)
        if r > 0:
            self.lora_A = nn.Parameter(self.weight.new_zeros((r, num_embeddings)))
            self.lora_B = nn.Parameter(self.weight.new_zeros((embedding_dim, r)))
            self.scaling = self.lora_alpha / self.r
            self.weight.requires_grad = False
            self._adapter_ready = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.Embedding.reset_parameters(self)
        if getattr(self, "_adapter_ready", False):
            nn.init.zeros_(self.lora_A)
            nn.init.normal_(self.lora_B)

    def _merged_value(self) -> torch.Tensor:
        return self.weight + (self.lora_B @ self.lora_A).transpose(0, 1) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = nn.Embedding.forward(self, x)
        if self.r > 0 and not self.merged:
            after_a = F.embedding(x, self.lora_A.transpose(0, 1), self.padding_idx,
                                  self.max_norm, self.norm_type, self.scale_grad_by_freq,
                                  self.sparse)
            # The update in the adapter's dtype, the sum back in the frozen lookup's (fp32
            # adapters on a bf16 table; see loralib/base.py on precision).
            result = (result + (after_a @ self.lora_B.transpose(0, 1)) * self.scaling).to(result.dtype)
        return result


class ConvLoRA(LoRALayer, nn.Module):
    """LoRA on a convolution, wrapping it as `self.conv` (Microsoft 0.1.2 names and shapes).

    lora_A: (r * k, in * k); lora_B: (out // groups * k^(d-1), r * k) for a d-dimensional kernel
    of size k, so that B @ A reshapes to the conv weight (Microsoft's shapes for Conv2d; for 1-d
    and 3-d kernels theirs do not reshape, ours do).
    """

    def __init__(self, conv_module, in_channels: int, out_channels: int, kernel_size: int,
                 r: int = 0, lora_alpha: float = 1, lora_dropout: float = 0.0,
                 merge_weights: bool = True, **kwargs):
        nn.Module.__init__(self)
        self.conv = conv_module(in_channels, out_channels, kernel_size, **kwargs)
        LoRALayer.__init__(self, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                           merge_weights=merge_weights)
        if not isinstance(kernel_size, int):
            raise ValueError(f"kernel_size must be an int, got {kernel_size!r}")
        if r > 0:
            dims = self.conv.weight.dim() - 2
            k = kernel_size
            self.lora_A = nn.Parameter(self.conv.weight.new_zeros((r * k, in_channels * k)))
            self.lora_B = nn.Parameter(self.conv.weight.new_zeros(
                (out_channels // self.conv.groups * k ** (dims - 1), r * k)))
            self.scaling = self.lora_alpha / self.r
            self.conv.weight.requires_grad = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        if hasattr(self, "lora_A"):
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A).view(self.conv.weight.shape) * self.scaling

    def _merge_target(self) -> nn.Parameter:
        return self.conv.weight

    def _merged_value(self) -> torch.Tensor:
        return self.conv.weight + self.delta_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.r > 0 and not self.merged:
            # A convolution is linear in its weight; with a kernel-sized update the dense
            # form is as cheap as any, so this keeps Microsoft's formulation. It runs in the
            # adapter's dtype when that is wider than the frozen weight's (fp32 adapters on a
            # bf16 base), the output going back to the frozen dtype (see loralib/base.py).
            w0, bias = self.conv.weight, self.conv.bias
            delta = self.delta_weight()
            if autocasting(x) or delta.dtype == w0.dtype:
                return self.conv._conv_forward(x, w0 + delta, bias)
            dt = delta.dtype
            y = self.conv._conv_forward(x.to(dt), w0.to(dt) + delta,
                                        None if bias is None else bias.to(dt))
            return y.to(w0.dtype)
        return self.conv(x)


class Conv1d(ConvLoRA):
    def __init__(self, *args, **kwargs):
        super().__init__(nn.Conv1d, *args, **kwargs)


class Conv2d(ConvLoRA):
    def __init__(self, *args, **kwargs):
        super().__init__(nn.Conv2d, *args, **kwargs)


class Conv3d(ConvLoRA):
    def __init__(self, *args, **kwargs):
        super().__init__(nn.Conv3d, *args, **kwargs)
