"""Training and checkpoint helpers: which parameters train, what an adapter file holds.

Adapter parameters are recognized by name, as in Microsoft's loralib ('lora_' in the key), plus
NOLA's 'nola_' (its coefficients and config). `lora_state_dict` / `load_lora_state_dict` are the
adapter checkpoint format; loading is strict and names every missing or unexpected key.
Under FSDP, reading the adapter is a collective (see fsdp.py); merging needs the whole model.
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .base import LoRALayer
from .fsdp import adapter_tensors, clean_name, sharding, tensor_names
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


def _bias_names(model: nn.Module, bias: str):
    """Which non-adapter keys `bias` adds to an adapter state dict (a predicate on names)."""
    if bias == "none":
        return lambda k: False
    if bias == "all":
        return lambda k: "bias" in k and not is_adapter_key(k)
    if bias == "lora_only":     # the bias of every layer that carries adapter state
        names = set()
        for name, m in model.named_modules():
            own = [n for n, _ in m.named_parameters(recurse=False)] + \
                [n for n, _ in m.named_buffers(recurse=False)]
            if isinstance(m, LoRALayer) and getattr(m, "bias", None) is not None \
                    and any(is_adapter_key(n) for n in own):
                name = clean_name(name)
                names.add(f"{name}.bias" if name else "bias")
        return names.__contains__
    raise ValueError(f"bias must be 'none', 'all' or 'lora_only', got {bias!r}")


def _layer_groups(model: nn.Module, keys):
    """(module prefix, layer, {local name: full key}) for every LoRALayer owning some of `keys`."""
    keys = set(keys)
    for name, m in model.named_modules():
        if not isinstance(m, LoRALayer):
            continue
        name = clean_name(name)
        prefix = name + "." if name else ""
        local = {k[len(prefix):]: k for k in keys
                 if k.startswith(prefix) and "." not in k[len(prefix):]}
        if local:
            yield prefix, m, local


def lora_state_dict(model: nn.Module, bias: str = "none", quantized: bool = True,
                    state_dict: Optional[Dict[str, torch.Tensor]] = None
                    ) -> Dict[str, torch.Tensor]:
    """The adapter alone (plus biases when asked), as Microsoft's `lora_state_dict`.

    Each layer decides how its adapter is stored (`pack_adapter_state`): quantized NOLA keeps
    packed b-bit codes (`<key>_qcodes`, uint8) and per-vector scales (`<key>_qscale`) unless
    `quantized=False` (a resumable training state needs the float latents).

    On a model sharded by FSDP (FSDP2, or FSDP1 with use_orig_params=True) this is a
    collective: every rank calls it, and each gets the whole adapter as CPU tensors.
    state_dict: take the tensors from this whole state dict of `model` (say, the one a
    Hugging Face Trainer gathered) instead of reading the model; every adapter tensor of the
    model must be in it, whole.
    """
    with_bias = _bias_names(model, bias)
    keep = lambda k: is_adapter_key(k) or with_bias(k)   # noqa: E731
    if state_dict is None:
        out = adapter_tensors(model, keep)
    else:
        out = {clean_name(k): v for k, v in state_dict.items() if keep(clean_name(k))}
        missing = [k for k in tensor_names(model) if is_adapter_key(k) and k not in out]
        if missing:
            raise KeyError(f"the state dict given lacks adapter key(s) {missing[:5]}"
                           + (" ..." if len(missing) > 5 else ""))
    empty = [k for k, v in out.items() if v.numel() == 0]
    if empty:   # what a partitioned placeholder looks like (DeepSpeed ZeRO-3)
        raise ValueError(f"adapter tensor(s) {empty[:5]} are empty: the model's parameters are "
                         f"partitioned placeholders (DeepSpeed ZeRO-3?); gather them first, or "
                         f"shard with FSDP, which loralib gathers")
    keys = [k for k in out if is_adapter_key(k)]
    if quantized:
        for prefix, m, local in _layer_groups(model, keys):
            packed = m.pack_adapter_state({n: out.pop(k) for n, k in local.items()})
            out.update({prefix + n: v for n, v in packed.items()})
    return out


def refuse_sharded(model: nn.Module, what: str) -> None:
    """A clear error where `what` needs the whole model in this process."""
    kind = sharding(model)
    if kind is not None:
        raise ValueError(
            f"{what}: the model is sharded by {kind.upper()}; save the adapter first "
            f"(loralib.save_adapter, called by every rank: rank 0 writes), then load it with "
            f"loralib.load_adapter on an unsharded copy of the base model and merge there "
            f"(NLG/MetaMathQA/train_math_lorma.py does this)")


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
    if sharding(model) is not None:
        raise ValueError(f"{source}: load an adapter before sharding the model with FSDP "
                         f"(load_adapter / load_lora_state_dict on the unsharded model, then wrap)")
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
    refuse_sharded(model, "merge_all")
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
