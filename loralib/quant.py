"""Symmetric per-vector fake quantization and b-bit packing (quantized NOLA).

Each row is scaled by max|row| / L with L = 2^(b-1) - 1 and rounded to integer codes in [-L, L].
Training sees the dequantized values through a straight-through estimator. A row of zeros (NOLA's
beta at init) gets scale 1 and codes 0: the official code left that scale undefined (0/0).
"""
import torch


def levels(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"qbits must be an integer in 2..8, got {bits!r}")
    return 2 ** (bits - 1) - 1


def quantize(x: torch.Tensor, bits: int):
    """Codes (int8, same shape) and per-row scales (x.shape[:-1]) of a 2-d tensor."""
    L = levels(bits)
    amax = x.detach().abs().amax(dim=-1)
    scale = torch.where(amax > 0, amax / L, torch.ones_like(amax))
    codes = torch.round(x.detach() / scale[..., None]).clamp_(-L, L).to(torch.int8)
    return codes, scale


def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return codes.to(scale.dtype) * scale[..., None]


def fake_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Forward: the dequantized codes; backward: identity (straight-through)."""
    codes, scale = quantize(x, bits)
    return x + (dequantize(codes, scale) - x).detach()


def stable_dequantize(codes: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Dequantize so that quantizing the result gives back exactly `codes` and `scale`.

    A loaded adapter must save back bit for bit. max|code * scale| / L can miss `scale` by one
    ulp, so each row's peak (the entries with |code| = L) is nudged to a neighbouring float for
    which the division is exact. Whole-tensor arithmetic on the codes' device: no per-row host
    reads.
    """
    L = levels(bits)
    x = dequantize(codes, scale)
    at_peak = codes.abs() == L
    cand = (scale * L).abs()            # what |L * scale| rounds to: the peak's magnitude
    for _ in range(4):
        low = cand / L < scale
        away = torch.where(low, torch.full_like(cand, float("inf")), torch.zeros_like(cand))
        cand = torch.where(cand / L == scale, cand, torch.nextafter(cand, away))
    # rows without a code at L (all zero: scale 1 by convention) keep their values
    return torch.where(at_peak, torch.sign(x) * cand[..., None], x)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack signed codes in [-L, L] into a flat uint8 tensor, `bits` bits each."""
    L = levels(bits)
    u = (codes.reshape(-1).to(torch.int64) + L)                      # 0 .. 2L < 2^bits
    # (N, bits), LSB first; every index tensor on the codes' device (they may live on a GPU)
    bitplanes = (u[:, None] >> torch.arange(bits, device=u.device)) & 1
    flat = bitplanes.reshape(-1)
    pad = (-flat.numel()) % 8
    flat = torch.cat([flat, flat.new_zeros(pad)]).view(-1, 8)
    return (flat << torch.arange(8, device=flat.device)).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, shape) -> torch.Tensor:
    L = levels(bits)
    n = 1
    for s in shape:
        n *= int(s)
    if packed.dtype != torch.uint8 or packed.numel() != (n * bits + 7) // 8:
        raise ValueError(f"packed codes hold {packed.numel()} bytes of {packed.dtype}, "
                         f"expected {(n * bits + 7) // 8} uint8 for {n} {bits}-bit codes")
    byte_bits = torch.arange(8, device=packed.device)
    flat = ((packed.to(torch.int64)[:, None] >> byte_bits) & 1).reshape(-1)[: n * bits]
    u = (flat.view(n, bits) << torch.arange(bits, device=packed.device)).sum(dim=1)
    return (u - L).to(torch.int8).view(*shape)
