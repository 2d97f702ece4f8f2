"""Adapters on 4-bit and 8-bit frozen bases: bitsandbytes `Linear4bit` (NF4 / FP4, with or
without double quantization) and `Linear8bitLt`, as QLoRA and NOLA's LLaMA runs train them.

loralib needs torch alone: a bitsandbytes layer is recognised by its class name and module path
(as `inject` recognises Hugging Face's Conv1D), and bitsandbytes is imported here only where a
weight is dequantized or quantized again.

A k-bit adapted layer is the method's own layer class with `KbitLayer` in front (`kbit_class`):
- the bitsandbytes module is its child `base_layer` (PEFT's name): it keeps its packed weight
  and quantization state, moves with `.to()`, and writes its own state-dict entries; the
  layer's `weight` and `bias` read through to it.
- the frozen product W0 x + b is the base module's own forward (its quantized kernel), as in
  PEFT and the official code, given the input as it came (under autocast too: the kernel casts
  it to the compute dtype and returns the input's dtype); the update is added to it.
- `frozen_weight()` is W0 dequantized, in the layer's compute dtype: what a method that reads W0
  uses (LoRMA's T W0 and A W0), and merging. The forward asks for it every time, so it is
  dequantized once per forward whatever the method (one weight at a time, freed after the
  layer: bitsandbytes' own 4-bit product dequantizes the same weight again inside).
- `merge()` in place is refused (packed storage cannot hold W0 + delta W);
  `loralib.merge_and_unload` replaces the layer by an `nn.Linear` holding dequantize(W0) +
  delta W in the compute dtype, or (`requantize=True`) by a module of the base's kind holding
  W0 + delta W quantized again.
"""
from typing import Optional

import torch
import torch.nn as nn

KINDS = {"Linear4bit": "4bit", "Linear8bitLt": "8bit"}


def kind(module: nn.Module) -> Optional[str]:
    """'4bit' / '8bit' for a bitsandbytes Linear4bit (LinearNF4, LinearFP4) / Linear8bitLt,
    else None."""
    for cls in type(module).__mro__:
        if cls.__name__ in KINDS and cls.__module__.split(".")[0] == "bitsandbytes":
            return KINDS[cls.__name__]
    return None


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a k-bit module's product runs in (4-bit: its compute_dtype, else the dtype its
    weight was quantized from); for 8-bit, whose int8 kernel returns the input's dtype, its
    bias's dtype, else float32."""
    if kind(module) == "4bit":
        if getattr(module, "compute_dtype", None) is not None:
            return module.compute_dtype
        return _quant_state(module).dtype
    bias = getattr(module, "bias", None)
    return bias.dtype if bias is not None else torch.float32


def _quant_state(module: nn.Module):
    state = getattr(module.weight, "quant_state", None) or getattr(module, "quant_state", None)
    if state is None:
        raise ValueError(f"{type(module).__name__}: its weight is not quantized yet (bitsandbytes "
                         f"quantizes on .to(device)); quantize the model before adapting it")
    return state


@torch.no_grad()
def dequantize(module: nn.Module) -> torch.Tensor:
    """W0 of a k-bit module, (out, in), in its compute dtype."""
    import bitsandbytes.functional as bnbf
    w = module.weight
    if kind(module) == "4bit":
        state = _quant_state(module)
        if getattr(state, "packing_format_for_cpu", False):
            raise ValueError(f"{type(module).__name__}: bitsandbytes repacked its weight for CPU "
                             f"inference (an eval forward on an AVX512-BF16 CPU), rounding its "
                             f"block scales to bf16; adapt the model before running it in eval "
                             f"mode (an adapted layer keeps the training format)")
        out = bnbf.dequantize_4bit(w.data, state)
    elif module.state.has_fp16_weights:        # an 8-bit layer that keeps its float weight
        out = w.data
    else:
        scb = getattr(w, "SCB", None)
        if scb is None:
            scb = module.state.SCB      # moved there by the module's first forward
        if scb is None:
            raise ValueError(f"{type(module).__name__}: its weight is not quantized yet "
                             f"(bitsandbytes quantizes on .to(device))")
        out = bnbf.int8_vectorwise_dequant(w.data, scb)
    return out.to(compute_dtype(module))


class KbitLayer:
    """Put in front of a method's layer class (see `kbit_class`): the frozen part is the
    bitsandbytes module `base_layer`."""

    def _frozen(self, name: str):
        base = self._modules.get("base_layer")
        if base is not None:
            return getattr(base, name)
        if name not in self._parameters:    # (nn.Linear.__init__ asks before registering it)
            raise AttributeError(name)
        return self._parameters[name]       # before `attach`: the method's own meta tensor

    weight = property(lambda self: self._frozen("weight"))
    bias = property(lambda self: self._frozen("bias"))

    @property
    def kbit_kind(self) -> str:
        return kind(self.base_layer)

    frozen_takes_cast_input = False     # (base.py) the kernel gets the input as it came

    def frozen_weight(self) -> torch.Tensor:
        return dequantize(self.base_layer)

    def frozen_product(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        # The update is added in place (LowRankAdapter); autograd forbids that on a view made
        # inside a custom Function (bitsandbytes' matmul returns one for some shapes), so a
        # view is copied first, as PEFT's "defensive clone" of the 4-bit output.
        return out.clone() if out._base is not None else out

    def merge(self) -> None:
        raise ValueError(f"{type(self).__name__}: cannot merge in place into a {self.kbit_kind} "
                         f"quantized weight (its packed storage cannot hold W0 + delta W); use "
                         f"loralib.merge_and_unload(model), which replaces the layer by an "
                         f"nn.Linear holding dequantize(W0) + delta W (or requantize=True)")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", base={self.kbit_kind}"


_CLASSES = {}


def kbit_class(cls: type) -> type:
    """`cls` (a method's AdaptedLinear subclass) on a k-bit base; one class per method class,
    registered in this module under its name so that the layers pickle."""
    if cls not in _CLASSES:
        name = f"Kbit{cls.__name__}"
        new = type(name, (KbitLayer, cls), {"__module__": __name__, "__qualname__": name,
                                            "method_class": cls})
        globals()[name] = _CLASSES[cls] = new
    return _CLASSES[cls]


def attach(layer: nn.Module, module: nn.Module) -> None:
    """Make the k-bit `module` the frozen part of `layer` (built by kbit_class(...))."""
    for name in ("weight", "bias"):
        layer._parameters.pop(name, None)
    layer.base_layer = module
    module.weight.requires_grad = False
    if hasattr(module, "support_avx512bf16_for_cpu"):
        # Else an eval forward on an AVX512-BF16 CPU repacks the weight for bitsandbytes' CPU
        # kernel with bf16 block scales: W0 would differ between training and evaluation, and
        # from what dequantize() reads.
        module.support_avx512bf16_for_cpu = False


@torch.no_grad()
def unloaded(layer: nn.Module, merged: torch.Tensor, dtype: Optional[torch.dtype] = None,
             requantize: bool = False) -> nn.Module:
    """The module that replaces a k-bit adapted `layer` once its merged weight `merged` (out, in)
    is computed: an nn.Linear in `dtype` (default: the compute dtype), or with `requantize` a
    module of the base's kind and settings holding `merged` quantized."""
    base = layer.base_layer
    device = merged.device
    bias = base.bias
    if not requantize:
        dtype = dtype or compute_dtype(base)
        plain = nn.Linear(base.in_features, base.out_features, bias=bias is not None,
                          device="meta")
        plain.weight = nn.Parameter(merged.to(dtype), requires_grad=False)
        if bias is not None:
            plain.bias = nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        return plain
    import bitsandbytes as bnb
    w = base.weight
    if kind(base) == "4bit":
        state = _quant_state(base)
        new = bnb.nn.Linear4bit(base.in_features, base.out_features, bias=bias is not None,
                                compute_dtype=base.compute_dtype,
                                compress_statistics=w.compress_statistics,
                                quant_type=w.quant_type, quant_storage=w.quant_storage,
                                device="meta")
        new.weight = bnb.nn.Params4bit(merged.to("cpu", state.dtype), requires_grad=False,
                                       blocksize=w.blocksize,
                                       compress_statistics=w.compress_statistics,
                                       quant_type=w.quant_type, quant_storage=w.quant_storage)
    else:
        new = bnb.nn.Linear8bitLt(base.in_features, base.out_features, bias=bias is not None,
                                  has_fp16_weights=False, threshold=base.state.threshold,
                                  device="meta")
        new.weight = bnb.nn.Int8Params(merged.to("cpu"), requires_grad=False,
                                       has_fp16_weights=False)
    if bias is not None:
        new.bias = nn.Parameter(bias.detach().cpu(), requires_grad=False)
    return new.to(device)          # bitsandbytes quantizes here
