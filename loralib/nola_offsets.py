"""NOLA's frozen offsets A0, B0, drawn from a per-module seed so that an adapter file need not
carry them.

The official GPT-2 code draws them from the global RNG (its `_init_weights`: N(0, 0.02) for both),
the official LLaMA code draws A0 kaiming-uniform and sets B0 = 0. Here each module draws an offset
seed from the global RNG and the offsets from a CPU generator seeded by it: the same
distributions, other numbers, and the same numbers on every machine. The layer keeps
`nola_offset_init` = (seed, std as the bits of a float64; an int64 buffer, so that casting a
model to half precision cannot touch it) and an adapter file leaves A0, B0 out whenever they are
what the seed gives; loading regenerates them. Files that carry them (official checkpoints, files
written before this, resumable training states) load them as they are; offsets that came from
such a file have the seed FROM_FILE and are written out again.
"""
import math
import struct
from typing import Tuple

import torch
import torch.nn as nn

FROM_FILE = -1


def std_bits(std: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(std)))[0]


def bits_std(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", int(bits)))[0]


def draw(kind: str, seed: int, std: float, A0: torch.Tensor, B0: torch.Tensor) -> None:
    """Fill A0 (n * r, k) and B0 (n * d, r), CPU float32, as offsets `kind` from `seed`."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    if kind == "normal":
        A0.normal_(0.0, std, generator=g)
        B0.normal_(0.0, std, generator=g)
        return
    r = B0.shape[1]
    for j in range(A0.shape[0] // r):      # one kaiming block (fan-in k) per projection
        nn.init.kaiming_uniform_(A0[j * r:(j + 1) * r], a=math.sqrt(5), generator=g)
    B0.zero_()


def drawn(kind: str, seed: int, std: float, shape_A: Tuple[int, int],
          shape_B: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    A0, B0 = torch.empty(shape_A, device="cpu"), torch.empty(shape_B, device="cpu")
    draw(kind, seed, std, A0, B0)
    return A0, B0
