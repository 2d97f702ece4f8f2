"""Training and checkpoint helpers: which parameters train, what an adapter file holds.

Adapter parameters are recognized by name, as in Microsoft's loralib ('lora_' in the key), plus
NOLA's 'nola_' (its coefficients and config). `lora_state_dict` / `load_lora_state_dict` are the
adapter checkpoint format; loading is strict and names every missing or unexpected key.
"""
from typing import Dict, Iterable, List, Tuple

import torch
import torch.nn as nn

from .base import LoRALayer
from .registry import adapter_prefixes


def is_adapter_key(name: str) -> bool:
    """Adapter state is named by its method's registered prefix ('lora_' in Microsoft's loralib,
    'nola_' for NOLA, whatever a new method registers)."""
    return any(p in name for p in adapter_prefixes())


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
            b = k
            for p in adapter_prefixes():
                b = b.split(p)[0]
            b += "bias"
            if b in state and b not in out:
                out.append(b)
        return out
    raise ValueError(f"bias must be 'none', 'all' or 'lora_only', got {bias!r}")


def _layer_groups(model: nn.Module, keys):
    """(module prefix, layer, {local name: full key}) for every LoRALayer owning some of `keys`."""
    keys = set(keys)
    for name, m in model.named_modules():
        if not isinstance(m, LoRALayer):
            continue
        prefix = name + "." if name else ""
        local = {k[len(prefix):]: k for k in keys
                 if k.startswith(prefix) and "." not in k[len(prefix):]}
        if local:
            yield prefix, m, local


def lora_state_dict(model: nn.Module, bias: str = "none", quantized: bool = True
                    ) -> Dict[str, torch.Tensor]:
    """The adapter alone (plus biases when asked), as Microsoft's `lora_state_dict`.

    Each layer decides how its adapter is stored (`pack_adapter_state`): quantized NOLA keeps
    packed b-bit codes (`<key>_qcodes`, uint8) and per-vector scales (`<key>_qscale`) unless
    `quantized=False` (a resumable training state needs the float latents).
    """
    state = model.state_dict()
    keys = [k for k in state if is_adapter_key(k)]
    out = {k: state[k] for k in keys + _bias_keys(state, keys, bias)}
    if quantized:
        for prefix, m, local in _layer_groups(model, keys):
            packed = m.pack_adapter_state({n: out.pop(k) for n, k in local.items()})
            out.update({prefix + n: v for n, v in packed.items()})
    return out


def _unpack_incoming(model: nn.Module, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    sd = dict(sd)
    for prefix, m, local in list(_layer_groups(model, sd)):
        unpacked = m.unpack_adapter_state({n: sd.pop(k) for n, k in local.items()},
                                          where=prefix.rstrip("."))
        sd.update({prefix + n: v for n, v in unpacked.items()})
    return sd


def load_lora_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                         source: str = "adapter state dict") -> List[str]:
    """Load an adapter (and any biases it carries) strictly; returns the keys loaded.

    Every adapter key of the model must be present; every key must exist in the model with
    the same shape. Anything else raises a KeyError / ValueError naming the keys and `source`.
    """
    sd = _unpack_incoming(model, state_dict)
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
    for k, v in sorted(sd.items()):
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
