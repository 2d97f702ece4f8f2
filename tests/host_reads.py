"""Counting what would make a GPU run wait, on a CPU: the CPU proxy of
torch.cuda.set_sync_debug_mode (which only exists on CUDA).

A host read of a tensor (.item(), .tolist(), bool / int / float / index of a tensor, nonzero's
data-dependent shape) waits for every kernel queued before it; a tensor made from host values on
the device (torch.tensor / torch.as_tensor with device=) is a blocking copy. Counted only when
called from the project's code (NLG/src, NLU/src, traincore, loralib), not from torch's own (the
fused CUDA optimizers do not read on the host) nor from the tests. NLG/src/data_utils.py is left
out: it assembles batches from host lists on the CPU, before their one copy to the device.
"""
import contextlib
import os
import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tuple(str(ROOT / d) + os.sep for d in ("NLG/src", "NLU/src", "traincore", "loralib"))
HOST_SIDE = (str(ROOT / "NLG" / "src" / "data_utils.py"),)

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")


@contextlib.contextmanager
def count_host_reads():
    """Yields a Counter: 'read:<method> <file>:<line>' and 'copy:<function> <file>:<line>'."""
    counts = Counter()

    def where():
        f = sys._getframe(2)
        name = f.f_code.co_filename
        if name.startswith(PROJECT) and name not in HOST_SIDE:
            return f"{os.path.relpath(name, ROOT)}:{f.f_lineno}"
        return None

    def reading(method, original):
        def wrapper(self, *args, **kwargs):
            at = where()
            if at:
                counts[f"read:{method} {at}"] += 1
            return original(self, *args, **kwargs)
        return wrapper

    def copying(fname, original):
        def wrapper(*args, **kwargs):
            at = where()
            if at and kwargs.get("device") is not None:
                counts[f"copy:{fname} {at}"] += 1
            return original(*args, **kwargs)
        return wrapper

    saved = [(torch.Tensor, m, torch.Tensor.__dict__.get(m)) for m in READS]
    saved += [(torch, f, getattr(torch, f)) for f in ("tensor", "as_tensor")]
    try:
        for m in READS:
            setattr(torch.Tensor, m, reading(m, getattr(torch.Tensor, m)))
        for f in ("tensor", "as_tensor"):
            setattr(torch, f, copying(f, getattr(torch, f)))
        yield counts
    finally:
        for owner, name, value in saved:
            if value is None:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


def total(counts) -> int:
    return sum(counts.values())
