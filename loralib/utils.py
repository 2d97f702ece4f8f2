"""Training and checkpoint helpers: which parameters train, what an adapter file holds.

Adapter parameters are recognized by name, as in Microsoft's loralib ('lora_' in the key), plus
NOLA's 'nola_' (its coefficients and config). `lora_state_dict` / `load_lora_state_dict` are the
adapter checkpoint format; loading is strict and names every missing or unexpected key.
"""
from typing import Dict, Iterable, List, Tuple

import torch
import torch.nn as nn

from . import quant
from .base import LoRALayer
from .nola import NOLALinear

QCODES, QSCALE = "_qcodes", "_qscale"
_NOLA_COEFS = ("nola_alpha", "nola_beta")


def is_adapter_key(name: str) -> bool:
    return "lora_" in name or "nola_" in name


def mark_only_lora_as_trainable(model: nn.Module, bias: str = "none") -> None:
    """Freeze everything but adapter parameters; bias='all' | 'lora_only' also trains biases."""
    if bias not in ("none", "all", "lora_only"):
        raise ValueError(f"bias must be 'none', 'all' or 'lora_only', got {bias!r}")
    for n, p in model.named_parameters():
        p.requires_grad = is_adapter_key(n)
    if bias == "all":
        for n, p in model.named_parameters():
            if "bias" in n:
                p.requires_grad = True
    elif bias == "lora_only":
        for m in model.modules():
            if isinstance(m, LoRALayer) and getattr(m, "bias", None) is not None:
                m.bias.requires_grad = True


def _bias_keys(state: Dict[str, torch.Tensor], adapter_keys: Iterable[str], bias: str) -> List[str]:
    if bias == "none":
        return []
    if bias == "all":
        return [k for k in state if "bias" in k and not is_adapter_key(k)]
    if bias == "lora_only":
        out = []
        for k in adapter_keys:
            b = k.split("lora_")[0].split("nola_")[0] + "bias"
            if b in state and b not in out:
                out.append(b)
        return out
    raise ValueError(f"bias must be 'none', 'all' or 'lora_only', got {bias!r}")


def _quantized_nola(model: nn.Module):
    for name, m in model.named_modules():
        if isinstance(m, NOLALinear) and m.has_adapter and m.qbits is not None:
            yield (name + "." if name else ""), m


def lora_state_dict(model: nn.Module, bias: str = "none", quantized: bool = True
                    ) -> Dict[str, torch.Tensor]:
    """The adapter alone (plus biases when asked), as Microsoft's `lora_state_dict`.

    Quantized NOLA coefficients are stored as packed b-bit codes (`<key>_qcodes`, uint8) and
    per-vector scales (`<key>_qscale`) unless `quantized=False` (a resumable training state
    needs the float latents).
    """
    state = model.state_dict()
    keys = [k for k in state if is_adapter_key(k)]
    out = {k: state[k] for k in keys + _bias_keys(state, keys, bias)}
    if quantized:
        for prefix, m in _quantized_nola(model):
            for coef in _NOLA_COEFS:
                key = prefix + coef
                codes, scale = quant.quantize(out.pop(key), m.qbits)
                out[key + QCODES] = quant.pack_codes(codes, m.qbits)
                out[key + QSCALE] = scale
    return out


def _dequantize_incoming(model: nn.Module, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    sd = dict(sd)
    modules = dict(_quantized_nola(model))
    for key in [k for k in sd if k.endswith(QCODES)]:
        base = key[: -len(QCODES)]
        prefix, coef = base.rsplit(".", 1) if "." in base else ("", base)
        prefix = prefix + "." if prefix else ""
        m = modules.get(prefix)
        if m is None or coef not in _NOLA_COEFS:
            raise KeyError(f"unexpected key {key!r}: no quantized NOLA layer "
                           f"{prefix.rstrip('.')!r} in the model")
        if base + QSCALE not in sd:
            raise KeyError(f"missing key {base + QSCALE!r} (the scales of {key!r})")
        scale = sd.pop(base + QSCALE)
        shape = getattr(m, coef).shape
        codes = quant.unpack_codes(sd.pop(key), m.qbits, shape)
        sd[base] = quant.stable_dequantize(codes, scale.to(torch.float32), m.qbits)
    return sd


def load_lora_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                         source: str = "adapter state dict") -> List[str]:
    """Load an adapter (and any biases it carries) strictly; returns the keys loaded.

    Every adapter key of the model must be present; every key must exist in the model with
    the same shape. Anything else raises a KeyError / ValueError naming the keys and `source`.
    """
    sd = _dequantize_incoming(model, state_dict)
    own = model.state_dict()
    expected = [k for k in own if is_adapter_key(k)]
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key(s) {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append(f"unexpected key(s) {unexpected[:10]}"
                         + (" ..." if len(unexpected) > 10 else ""))
        raise KeyError(f"{source}: " + "; ".join(parts))
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{source}: key {k!r} has shape {tuple(v.shape)}, "
                             f"the model expects {tuple(own[k].shape)}")
    model.load_state_dict(sd, strict=False)
    return list(sd)


def _mergeable(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, LoRALayer) and hasattr(m, "merge")]


def merge_all(model: nn.Module) -> int:
    """Fold every adapter into its weight (e.g. before decoding); returns how many layers."""
    layers = _mergeable(model)
    for m in layers:
        m.merge()
    return sum(1 for m in layers if m.merged)


def unmerge_all(model: nn.Module) -> None:
    for m in _mergeable(model):
        m.unmerge()


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts; NOLA's fixed bases are not parameters."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def parameter_report(model: nn.Module) -> str:
    trainable, total = count_parameters(model)
    pct = 100.0 * trainable / total if total else 0.0
    return f"trainable params: {trainable:,} / {total:,} ({pct:.4f}%)"
