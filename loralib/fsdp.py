"""Adapters of a model sharded by FSDP: reading them whole is a collective.

Under FSDP each rank holds a slice of every parameter: FSDP2 (`fully_shard`) parameters are
DTensors, FSDP1 (`FullyShardedDataParallel(use_orig_params=True)`) parameters are views into a
flat shard. So `adapter_tensors` must be called by every rank, in the same order (it is what
`lora_state_dict` and `save_adapter` use); it returns whole tensors on the CPU on each rank, and
then one rank writes. The frozen base is never gathered as a whole: FSDP2 gathers each adapter
tensor alone, FSDP1 unshards one wrapped unit at a time (one decoder layer, say).

FSDP1 with `use_orig_params=False` keeps one flat parameter per unit: the adapter and its frozen
weight would share it with mixed requires_grad (FSDP1 refuses to wrap), and their names are gone.
"""
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

# Names that wrappers insert between a module and its children; a state dict leaves them out.
_WRAPPER_NAMES = {"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"}

USE_ORIG_PARAMS = ("loralib's adapters under FSDP1 need FullyShardedDataParallel(..., "
                   "use_orig_params=True) (with an accelerate / Trainer config: "
                   "fsdp_use_orig_params: true), or FSDP2 (fully_shard), which needs nothing: "
                   "with use_orig_params=False FSDP1 keeps one flat parameter per unit, where "
                   "the adapter's tensors have lost their names (and it refuses to wrap a "
                   "trainable adapter with its frozen weight)")


def clean_name(name: str) -> str:
    """A parameter or module name as the unwrapped model names it."""
    return ".".join(p for p in name.split(".") if p not in _WRAPPER_NAMES)


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def sharding(model: nn.Module) -> Optional[str]:
    """'fsdp1', 'fsdp2' or None (not sharded)."""
    if not _dist_ready():
        return None
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor
    for m in model.modules():
        if isinstance(m, FullyShardedDataParallel):
            return "fsdp1"
    if any(isinstance(p, DTensor) for p in model.parameters()):
        return "fsdp2"
    return None


def check_shardable(model: nn.Module) -> Optional[str]:
    """sharding(model), after refusing FSDP1 without use_orig_params (clear ValueError)."""
    kind = sharding(model)
    if kind == "fsdp1" and any("_flat_param" in n for n, _ in model.named_parameters()):
        raise ValueError(USE_ORIG_PARAMS)
    return kind


def class_name(module: nn.Module) -> str:
    """The class name of `module` before wrapping (FSDP1 wraps it, FSDP2 subclasses it)."""
    if type(module).__name__ == "FullyShardedDataParallel":
        module = module.module
    if not torch.distributed.is_available():
        return type(module).__name__
    from torch.distributed.fsdp import FSDPModule
    return next(c.__name__ for c in type(module).__mro__ if not issubclass(c, FSDPModule))


def is_writer() -> bool:
    """Whether this process writes files: rank 0, or the only process."""
    return not _dist_ready() or torch.distributed.get_rank() == 0


def tensor_names(model: nn.Module):
    """The state-dict names (unwrapped) of the parameters and persistent buffers, read without
    any communication."""
    names = [clean_name(n) for n, _ in model.named_parameters()]
    for name, m in model.named_modules():
        names += [clean_name(f"{name}.{n}" if name else n) for n, b in m._buffers.items()
                  if b is not None and n not in m._non_persistent_buffers_set]
    return names


def _own_parameters(unit: nn.Module):
    """(module, local name, parameter) of the parameters one FSDP1 unit's flat parameter holds:
    its module's, not those of the FSDP units nested in it."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    stack = [unit.module]
    while stack:
        m = stack.pop()
        for n, p in m.named_parameters(recurse=False):
            yield m, n, p
        stack.extend(c for c in m.children() if not isinstance(c, FullyShardedDataParallel))


def _fsdp1_params(model: nn.Module, keep: Callable[[str], bool]) -> Dict[str, torch.Tensor]:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    name_of = {id(m): clean_name(n) for n, m in model.named_modules()}
    out = {}

    def collect(unit):
        for m, n, p in _own_parameters(unit):
            prefix = name_of[id(m)]
            key = f"{prefix}.{n}" if prefix else n
            if keep(key):
                out[key] = p.detach().to("cpu", copy=True)

    # The outermost units first (entering one runs FSDP's lazy initialisation from the root),
    # then each nested unit alone inside it: one unit's weights are whole at a time.
    for root in FSDP.fsdp_modules(model, root_only=True):
        with FSDP.summon_full_params(root, recurse=False, writeback=False):
            collect(root)
            for unit in FSDP.fsdp_modules(root):
                if unit is root:
                    continue
                with FSDP.summon_full_params(unit, recurse=False, writeback=False):
                    collect(unit)
    return out


def adapter_tensors(model: nn.Module, keep: Callable[[str], bool]) -> Dict[str, torch.Tensor]:
    """{name: tensor} of the parameters and persistent buffers whose unwrapped name passes
    `keep`, in state-dict order. Unsharded: the model's own tensors. Under FSDP: whole CPU
    copies, gathered collectively (every rank must call this)."""
    kind = check_shardable(model)
    if kind is None:
        state = model.state_dict(keep_vars=False)
        return {k: v for k, v in state.items() if keep(k)}
    if kind == "fsdp2":
        from torch.distributed.tensor import DTensor
        out = {}
        for k, v in model.state_dict(keep_vars=True).items():   # FSDP2: no communication
            k = clean_name(k)
            if keep(k):   # full_tensor() is the all-gather: the same keys in the same order
                v = v.full_tensor() if isinstance(v, DTensor) else v
                out[k] = v.detach().to("cpu", copy=True)
        return out
    out = _fsdp1_params(model, keep)
    for name, m in model.named_modules():   # FSDP1 does not shard buffers
        for n, b in m._buffers.items():
            key = clean_name(f"{name}.{n}" if name else n)
            if b is not None and n not in m._non_persistent_buffers_set and keep(key):
                out[key] = b.detach().to("cpu", copy=True)
    return out
