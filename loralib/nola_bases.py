"""NOLA's fixed random bases: which random stream makes them, where they are cached, and the
product coefficients @ basis as one opaque op that fetches the basis again in backward.

A basis is `uniform_(-1, 1)` over (k, rows, cols) from a generator seeded by the factor's seed,
times 1/sqrt(k) (the official GenerateParams). The numbers depend on the generator's device: the
CPU's Mersenne Twister and CUDA's Philox give different tensors for one seed, and CUDA's differ
between GPU models too (each thread of the uniform kernel draws its own subsequence, and the
kernel's grid is sized from the GPU's SM count and threads per SM). An adapter decoded with other
bases than it trained with computes noise, so each NOLA layer records its bases' *origin*:

  cpu          generated on the CPU, then copied to the coefficients' device and cached there
               (basis_device="cpu", the default): the same numbers on every machine, and the
               official code's numbers wherever it ran on a CPU
  cuda, ...    generated on the coefficients' own device (basis_device="native": the official
               code's behaviour); for CUDA with the GPU's SM count and threads per SM, so that
               decoding elsewhere stops with an error naming both devices
  unrecorded   a native layer before its first forward, or a file written before origins were
               recorded (the official checkpoints): the first device that generates them is
               recorded

Bases are never parameters and never saved: the product runs as `loralib::nola_combine`, whose
backward fetches the basis again (from the cache, else regenerated, as the official backward
always does) instead of keeping it, in fp32 whatever autocast says, so no bf16 copy of a basis is
kept for backward either. torch.compile sees each product as one node (no graph break).
"""
import contextlib
import math
from typing import Dict, List, Tuple

import torch

ORIGINS = ("unrecorded", "cpu", "cuda", "xpu", "mps", "hpu")
UNRECORDED, CPU = (0, 0, 0), (1, 0, 0)
BASIS_CACHE_BYTES = 2 * 2 ** 30   # per process; the official code caches nothing

_BASES: Dict[Tuple, torch.Tensor] = {}
_cached_bytes = [0]


def stream_of(device) -> Tuple[int, int, int]:
    """The origin record (kind, SMs, threads per SM) of bases generated natively on `device`."""
    device = torch.device(device)
    if device.type not in ORIGINS[1:]:
        raise ValueError(f"NOLA cannot record bases generated on a {device.type!r} device "
                         f"(known: {ORIGINS[1:]}); use basis_device='cpu'")
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return (ORIGINS.index("cuda"), int(p.multi_processor_count),
                int(p.max_threads_per_multi_processor))
    return (ORIGINS.index(device.type), 0, 0)


def describe(origin) -> str:
    kind, sm, threads = (int(v) for v in origin)
    if not 0 <= kind < len(ORIGINS):
        return f"unknown origin code {kind}"
    if ORIGINS[kind] == "cuda":
        return f"cuda ({sm} SMs, {threads} threads per SM)"
    return ORIGINS[kind]


def generate(seed: int, num: int, rows: int, cols: int, device) -> torch.Tensor:
    """One basis drawn on `device` by that device's generator (fp32, the official dtype)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    t = torch.empty((num, rows, cols), device=device, dtype=torch.float32)
    t.uniform_(-1.0, 1.0, generator=g)
    return t * (1.0 / math.sqrt(num))


def basis(seed: int, num: int, rows: int, cols: int, device, native: bool = False) -> torch.Tensor:
    """The basis of one factor, (num, rows, cols) fp32 on `device`: drawn on the CPU and copied
    (native=False), or drawn on `device` itself. Cached per (seed, shape, stream, device)."""
    device = torch.device(device)
    key = (int(seed), num, rows, cols, bool(native), str(device))
    t = _BASES.get(key)
    if t is not None:
        return t
    if native and device.type == "meta":
        t = torch.empty((num, rows, cols), device=device)     # no values to draw
    else:
        t = generate(seed, num, rows, cols, device if native else "cpu").to(device)
    size = 0 if t.is_meta else t.numel() * t.element_size()
    if _cached_bytes[0] + size <= BASIS_CACHE_BYTES:
        _BASES[key] = t
        _cached_bytes[0] += size
    return t


def clear_basis_cache() -> None:
    _BASES.clear()
    _cached_bytes[0] = 0


def _fp32(device):
    """No autocast inside: it would run the product in bf16 (autocast reaches into a custom
    op's body) and so keep bf16 copies of the bases."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _combine(coef: torch.Tensor, seeds: List[int], rows: int, cols: int, native: bool):
    k = coef.shape[-1]
    with _fp32(coef.device):
        c = coef.float()
        return torch.stack([(c[j] @ basis(s, k, rows, cols, coef.device, native).view(k, -1))
                            .view(rows, cols) for j, s in enumerate(seeds)])


def _combine_backward(grad: torch.Tensor, seeds: List[int], num: int, native: bool):
    rows, cols = grad.shape[1], grad.shape[2]
    with _fp32(grad.device):
        g = grad.float()
        return torch.stack([basis(s, num, rows, cols, grad.device, native).view(num, -1)
                            @ g[j].reshape(-1) for j, s in enumerate(seeds)])


@torch.library.custom_op("loralib::nola_combine", mutates_args=())
def combine(coef: torch.Tensor, seeds: List[int], rows: int, cols: int,
            native: bool) -> torch.Tensor:
    """(n, k) coefficients -> (n, rows, cols) fp32: factor j = sum_i coef[j, i] basis(seeds[j])_i."""
    return _combine(coef, seeds, rows, cols, native)


@combine.register_fake
def _(coef, seeds, rows, cols, native):
    return coef.new_empty((len(seeds), rows, cols), dtype=torch.float32)


@torch.library.custom_op("loralib::nola_combine_backward", mutates_args=())
def combine_backward(grad: torch.Tensor, seeds: List[int], num: int,
                     native: bool) -> torch.Tensor:
    """d loss / d coef of `combine`: (n, num) fp32, each basis fetched again."""
    return _combine_backward(grad, seeds, num, native)


@combine_backward.register_fake
def _(grad, seeds, num, native):
    return grad.new_empty((len(seeds), num), dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    coef, seeds, _, _, native = inputs
    ctx.seeds, ctx.num, ctx.native, ctx.dtype = seeds, coef.shape[-1], native, coef.dtype


def _backward(ctx, grad):
    return combine_backward(grad, ctx.seeds, ctx.num, ctx.native).to(ctx.dtype), None, None, \
        None, None


combine.register_autograd(_backward, setup_context=_setup_context)
