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
    ulp, so the row maximum is nudged to a neighbouring float for which the division is exact.
    """
    L = levels(bits)
    x = dequantize(codes, scale)
    for row in range(x.shape[0]):
        peak = codes[row].abs().to(torch.int64)
        if int(peak.max()) != L:      # all-zero row: scale 1 by convention, nothing to fix
            continue
        target = scale[row]
        cand = x[row][peak == L].abs()[0]
        for _ in range(4):
            if cand / L == target:
                break
            direction = torch.tensor(float("inf") if cand / L < target else 0.0, dtype=cand.dtype)
            cand = torch.nextafter(cand, direction)
        at_peak = peak == L
        x[row][at_peak] = torch.sign(x[row][at_peak]) * cand
    return x


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack signed codes in [-L, L] into a flat uint8 tensor, `bits` bits each."""
    L = levels(bits)
    u = (codes.reshape(-1).to(torch.int64) + L)                      # 0 .. 2L < 2^bits
    bitplanes = (u[:, None] >> torch.arange(bits)) & 1                # (N, bits), LSB first
    flat = bitplanes.reshape(-1)
    pad = (-flat.numel()) % 8
    flat = torch.cat([flat, flat.new_zeros(pad)]).view(-1, 8)
    return (flat << torch.arange(8)).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, shape) -> torch.Tensor:
    L = levels(bits)
    n = 1
    for s in shape:
        n *= int(s)
    if packed.dtype != torch.uint8 or packed.numel() != (n * bits + 7) // 8:
        raise ValueError(f"packed codes hold {packed.numel()} bytes of {packed.dtype}, "
                         f"expected {(n * bits + 7) // 8} uint8 for {n} {bits}-bit codes")
    flat = ((packed.to(torch.int64)[:, None] >> torch.arange(8)) & 1).reshape(-1)[: n * bits]
    u = (flat.view(n, bits) << torch.arange(bits)).sum(dim=1)
    return (u - L).to(torch.int8).view(*shape)
