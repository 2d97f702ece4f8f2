"""Adapters in any PyTorch model: `inject` wraps existing projections in place,
`merge_and_unload` gives plain layers back with the adapter folded in.

A projection is an `nn.Linear` (weight (out, in)), a Hugging Face `Conv1D` (GPT-2; weight
(in, out), detected by class name as PEFT does, so loralib needs no transformers import), or a
bitsandbytes `Linear4bit` / `Linear8bitLt` (a 4-bit / 8-bit base as QLoRA's; also detected by
class name, see kbit.py). The adapted layer holds the very weight and bias Parameters of the
original module, not copies (a k-bit module itself becomes its child `base_layer`): it is built
on the meta device and only its adapter tensors are allocated, on the weight's device, in
float32 by default whatever the weight's dtype: a bf16, fp16 or k-bit base keeps fp32 adapters
and fp32 optimizer moments (what the official LoRMA / PEFT recipes train with:
`weight.new_zeros` on an fp32 base; PEFT upcasts adapters on a half base). `adapter_dtype=None`
follows the weight's dtype instead (a k-bit weight's compute dtype).
"""
import re
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from . import kbit
from .base import AdaptedLinear
from .registry import MethodConfig, get_spec
from .utils import mark_only_lora_as_trainable, refuse_sharded

Targets = Union[str, Sequence[str]]


def _projection_shape(module: nn.Module):
    """(in, out, fan_in_fan_out) of a supported projection, else None."""
    if isinstance(module, AdaptedLinear):
        return None
    if kbit.kind(module) is not None:       # (an nn.Linear subclass whose weight is packed)
        return module.in_features, module.out_features, False
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None \
            and module.weight.dim() == 2:
        n_in, n_out = module.weight.shape
        return n_in, n_out, True
    return None


def _matcher(target_modules: Targets):
    if isinstance(target_modules, str):
        pattern = re.compile(target_modules)
        return lambda name: pattern.fullmatch(name) is not None
    suffixes = list(target_modules)
    if not suffixes:
        raise ValueError("target_modules is empty")
    return lambda name: any(name == s or name.endswith("." + s) for s in suffixes)


def _enable_for(name: str, enable) -> Optional[List[bool]]:
    if enable is None:
        return None
    if isinstance(enable, dict):
        for suffix, mask in enable.items():
            if name == suffix or name.endswith("." + suffix):
                return list(mask)
        return None
    return list(enable)


def _adapter_dtype(dtype: Optional[torch.dtype], module: nn.Module) -> torch.dtype:
    if dtype is None:
        return module.weight.dtype if kbit.kind(module) is None else kbit.compute_dtype(module)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"adapter_dtype must be a floating torch.dtype or None (the weight's "
                        f"dtype), got {dtype!r}")
    return dtype


def adapted_layer(module: nn.Module, config: MethodConfig, enable=None,
                  adapter_dtype: Optional[torch.dtype] = torch.float32) -> AdaptedLinear:
    """`module` (nn.Linear, Conv1D, bitsandbytes Linear4bit / Linear8bitLt) wrapped by
    `config`'s method, sharing its weight; its adapter tensors are `adapter_dtype` (None: the
    weight's dtype, for a k-bit weight its compute dtype)."""
    shape = _projection_shape(module)
    if shape is None:
        raise TypeError(f"cannot adapt a {type(module).__name__}: loralib wraps nn.Linear, "
                        f"Hugging Face Conv1D and bitsandbytes Linear4bit / Linear8bitLt")
    n_in, n_out, fan_in_fan_out = shape
    weight = module.weight
    float_dtype = _adapter_dtype(adapter_dtype, module)
    spec = get_spec(config.method)
    quantized = kbit.kind(module) is not None
    cls = kbit.kbit_class(spec.layer) if quantized else spec.layer
    layer = cls(n_in, n_out, r=config.r, lora_alpha=config.alpha,
                lora_dropout=config.dropout, enable_lora=enable or [True],
                fan_in_fan_out=fan_in_fan_out, merge_weights=False,
                bias=module.bias is not None, device="meta", **config.options)
    if not layer.has_adapter:
        raise ValueError(f"enable mask {enable} adapts no slice")
    if quantized:
        kbit.attach(layer, module)
    else:
        layer.weight = weight
        layer.bias = module.bias
    # Allocate the adapter's own tensors (made on meta above) where the weight lives.
    for owner in layer.modules():
        for store in (owner._parameters, owner._buffers):
            for key, t in list(store.items()):
                if t is None or not t.is_meta:
                    continue
                dtype = float_dtype if t.is_floating_point() else t.dtype
                new = torch.empty(t.shape, device=weight.device, dtype=dtype)
                store[key] = nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) \
                    else new
    layer.reset_adapter_parameters()
    layer.to(weight.device)
    layer.train(module.training)
    # Kept for merge_and_unload: the original module (it shares the weight) and its trainability.
    layer.__dict__["_loralib_base"] = (module, weight.requires_grad)
    weight.requires_grad = False
    return layer


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def inject(model: nn.Module, config: MethodConfig, target_modules: Targets,
           enable: Union[None, Sequence[bool], Dict[str, Sequence[bool]]] = None,
           freeze: bool = True,
           adapter_dtype: Optional[torch.dtype] = torch.float32) -> List[str]:
    """Put `config`'s method into `model` in place; returns the names of the adapted modules.

    target_modules: module-name suffixes (["q_proj", "v_proj"], as PEFT and LoRMA's math script
    take them) or one regular expression matched against whole names. enable: a slice mask for
    fused projections, for all targets or per suffix ({"c_attn": [True, False, True]}: q and v
    of GPT-2's fused c_attn). freeze: leave only adapter parameters trainable (as PEFT does).
    adapter_dtype: the dtype of the adapter tensors, float32 by default whatever the base's
    dtype (train them under autocast); None makes them the dtype of the weight they adapt.
    """
    if not config.is_adapter:
        raise ValueError(f"method {config.method!r} adds no adapter to inject")
    match = _matcher(target_modules)
    names = [n for n, m in model.named_modules() if n and match(n)]
    if not names:
        raise ValueError(f"target_modules {target_modules!r} matched no module of "
                         f"{type(model).__name__}")
    unsupported = [f"{n} ({type(model.get_submodule(n)).__name__})" for n in names
                   if _projection_shape(model.get_submodule(n)) is None]
    if unsupported:
        raise TypeError(f"target_modules {target_modules!r} matched modules loralib cannot "
                        f"wrap (nn.Linear, Conv1D, bitsandbytes Linear4bit / Linear8bitLt "
                        f"only): {', '.join(unsupported[:5])}")
    for n in names:
        _set_submodule(model, n, adapted_layer(model.get_submodule(n), config,
                                               _enable_for(n, enable), adapter_dtype))
    if freeze:
        mark_only_lora_as_trainable(model)
    previous = getattr(model, "loralib_adapter", None)
    model.loralib_adapter = {
        "config": config, "modules": (previous["modules"] if previous else []) + names,
        "target_modules": target_modules if isinstance(target_modules, str)
        else list(target_modules),
        "enable": enable if not isinstance(enable, tuple) else list(enable)}
    return names


@torch.no_grad()
def merge_and_unload(model: nn.Module, requantize: bool = False,
                     kbit_dtype: Optional[torch.dtype] = None) -> nn.Module:
    """Replace every adapted layer by a plain one holding the merged weight; returns `model`.

    Layers made by `inject` give back their original module (nn.Linear, Conv1D), whose weight
    now holds the merged value; layers built by this project's own models become plain
    projections of the same layout. A layer on a k-bit base becomes an nn.Linear holding
    dequantize(W0) + delta W in `kbit_dtype` (default: the base's compute dtype), or with
    `requantize` a module of the base's kind holding it quantized again (which rounds the
    update). A model sharded by FSDP is refused with what to do instead (save the adapter,
    merge it on an unsharded copy).
    """
    refuse_sharded(model, "merge_and_unload")
    for name, m in list(model.named_modules()):
        if not isinstance(m, AdaptedLinear) or not m.has_adapter:
            continue
        m.unmerge()
        if isinstance(m, kbit.KbitLayer):
            _set_submodule(model, name, kbit.unloaded(m, m._merged_value(), kbit_dtype,
                                                      requantize))
            continue
        merged = m._merged_value().to(m.weight.dtype)
        base = m.__dict__.get("_loralib_base")
        if base is not None:
            plain, trainable = base
            with torch.no_grad():
                plain.weight.copy_(merged)          # bumps the version (see AdaptedLinear.merge)
            plain.weight.requires_grad = trainable
        else:
            from .registry import adapt_linear
            plain = adapt_linear(m.in_features, m.out_features, None,
                                 fan_in_fan_out=m.fan_in_fan_out, bias=m.bias is not None,
                                 device="meta")
            plain.weight = nn.Parameter(merged, requires_grad=False)
            plain.bias = m.bias
        _set_submodule(model, name, plain)
    if hasattr(model, "loralib_adapter"):
        del model.loralib_adapter
    return model
