"""Reading a checkpoint file of any layout the pipelines accept, safely and without a full copy.

torch.save's zip format is memory-mapped (tensors are read from the page cache when used, the
file is not copied into memory first); an old pickle is read whole; `.safetensors` needs the
`safetensors` package. Nothing is unpickled beyond tensors (weights_only=True).
"""
import os
import re
from typing import Dict, Iterable, List

import torch


def read_checkpoint(path):
    """The object a checkpoint file holds; a clear error naming the file otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"checkpoint {path}: reading .safetensors needs the `safetensors` "
                              f"package (pip install safetensors)") from None
        try:
            return load_file(path)
        except Exception as e:
            raise ValueError(f"checkpoint {path}: not a readable safetensors file ({e})") from None
    with open(path, "rb") as f:
        head = f.read(4)
    zipped = head.startswith(b"PK\x03\x04")
    if not (zipped or head[:1] == b"\x80"):
        raise ValueError(f"checkpoint {path}: not a PyTorch checkpoint (neither torch.save's "
                         f"zip format nor a pickle; starts with {head!r})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as e:
        # torch's own message suggests weights_only=False, which we never do
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise ValueError(f"checkpoint {path}: not a PyTorch checkpoint of tensors: it holds "
                         f"objects that torch.load(weights_only=True) refuses to unpickle"
                         f"{what}, or it is damaged ({type(e).__name__})") from None


def unwrap_state_dict(obj, source: str, containers: Iterable[str] = ("model_state_dict",),
                      tensors_only: bool = False) -> Dict[str, object]:
    """The state dict inside a training checkpoint ({'model_state_dict': ...}), DDP's `module.`
    prefixes dropped; keys must be strings."""
    for key in containers:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"checkpoint {source}: expected a state dict (name -> tensor), got "
                         f"{type(obj).__name__}{' (empty)' if isinstance(obj, dict) else ''}")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ValueError(f"checkpoint {source}: key {key!r} is not a string")
        if tensors_only and not torch.is_tensor(value):
            raise ValueError(f"checkpoint {source}: key {key!r} holds a {type(value).__name__}, "
                             f"not a tensor")
        k = key
        while k.startswith("module."):
            k = k[len("module."):]
        if k in out:
            raise ValueError(f"checkpoint {source}: keys {key!r} and another one both map to {k!r}")
        out[k] = value
    return out


def few(keys, n: int = 5) -> str:
    """'a, b, c, ... (N in all)': key lists in error messages."""
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


class UnexpectedKeys(KeyError, ValueError):
    """Tensors a model does not have: a KeyError (a key problem) and a ValueError (bad input),
    printed without KeyError's quotes."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def check_backbone(want: Dict[str, torch.Size], got: Dict[str, torch.Tensor], source: str,
                   random_init: bool = False, hint: str = "") -> List[str]:
    """The strict checks every backbone load makes: no tensor the model lacks (KeyError), no
    shape that differs, no tensor missing unless random_init (ValueError, with `hint` on what
    to give). Returns the missing keys (left random with random_init)."""
    unexpected = set(got) - set(want)
    if unexpected:
        raise UnexpectedKeys(f"checkpoint {source}: {len(unexpected)} tensor(s) this model does not "
                       f"have (wrong --model_card?): {few(unexpected)}")
    for k, v in got.items():
        if tuple(v.shape) != tuple(want[k]):
            raise ValueError(f"checkpoint {source}: {k} has shape {tuple(v.shape)}, the model "
                             f"expects {tuple(want[k])} (wrong --model_card?)")
    missing = sorted(set(want) - set(got))
    if missing and not random_init:
        raise ValueError(f"checkpoint {source}: backbone tensors missing: missing {len(missing)} "
                         f"of {len(want)} backbone tensor(s) the model needs ({few(missing)})."
                         f"{hint} Pass --random_init to start those from random weights on "
                         f"purpose.")
    return missing
