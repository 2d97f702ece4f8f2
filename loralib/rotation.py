"""LoRMA_pi's rotation pi and the product with T = s pi(B A) without forming T.

pi(M)[i, j] = M[i, (j - i) mod n]: row i rotated right by i places (Exploration-Lab/LoRMA,
`model_lorma_pi.py`, builds it with an index tensor; `rotate_rows` here is a view of one copy).

Applied to a vector h, T needs no n x n matrix: (pi(B A) h)[i] = sum_r B[i, r] c_r[i] with
c_r[i] = sum_k A[r, k] h[(i + k) mod n], the circular cross-correlation of A's row r with h, which
an FFT computes in O(n log n). `rotated_lowrank(V, A, B, s)` is V T^T for a batch of rows V, in
O(r n log n) per row instead of n^2, and what it keeps for the backward is V itself (the
intermediates are recomputed there), not an n x n matrix. The values are those of the dense
product up to floating-point rounding (FFT rounding, about 1e-7 relative in fp32).
"""
import torch


def rotate_rows(m: torch.Tensor) -> torch.Tensor:
    """pi(M)[..., i, j] = M[..., i, (j - i) mod n] for square M, batched over leading dims.

    In the row-major copy [M, M] (n x 2n), pi(M)[i, j] sits at i * 2n + n + j - i =
    n + i * (2n - 1) + j: a plain view of it, rows of stride 2n - 1 from offset n. One copy of
    2 n^2 values, no n^2 int64 index."""
    n = m.shape[-1]
    lead = m.shape[:-2]
    flat = torch.cat((m, m), dim=-1).reshape(*lead, 2 * n * n)
    return flat[..., n:].reshape(*lead, n, 2 * n - 1)[..., :n]


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    # FFTs run in fp32 at least: half-precision FFTs exist for power-of-two sizes on CUDA only.
    return torch.promote_types(t.dtype, torch.float32)


def _spectra(V, A, dt):
    n = V.shape[-1]
    return torch.fft.rfft(V.to(dt), n=n), torch.fft.rfft(A.to(dt), n=n)


def _correlations(Vh, Ah, n):
    """c[b, m, r] = corr(A[b, r], V[b, m]), (batch, rows, r, n)."""
    return torch.fft.irfft(Vh.unsqueeze(2) * Ah.conj().unsqueeze(1), n=n)


class _RotatedLowRank(torch.autograd.Function):
    @staticmethod
    def forward(ctx, V, A, B, scale):
        ctx.save_for_backward(V, A, B)
        ctx.scale = scale
        dt, n = _compute_dtype(A), V.shape[-1]
        with torch.autocast(V.device.type, enabled=False):
            Vh, Ah = _spectra(V, A, dt)
            c = _correlations(Vh, Ah, n)                                   # (b, m, r, n)
            Y = torch.einsum("bmrn,bnr->bmn", c, B.to(dt)) * scale
        return Y.to(V.dtype)

    @staticmethod
    def backward(ctx, G):
        V, A, B = ctx.saved_tensors
        scale = ctx.scale
        dt, n = _compute_dtype(A), V.shape[-1]
        with torch.autocast(V.device.type, enabled=False):
            G = G.to(dt)
            Vh, Ah = _spectra(V, A, dt)
            Bt = B.to(dt)
            grad_B = None
            if ctx.needs_input_grad[2]:
                c = _correlations(Vh, Ah, n)
                grad_B = torch.einsum("bmn,bmrn->bnr", G, c) * scale
                del c
            # dL/dc[b, m, r, i] = s G[b, m, i] B[b, i, r]; corr's adjoints are a convolution
            # (in V: g * a) and a correlation (in A: corr(g, v)), both products of spectra.
            Gc = torch.fft.rfft((G * scale).unsqueeze(2) * Bt.transpose(1, 2).unsqueeze(1), n=n)
            grad_V = grad_A = None
            if ctx.needs_input_grad[0]:
                grad_V = torch.fft.irfft(torch.einsum("bmrf,brf->bmf", Gc, Ah), n=n)
            if ctx.needs_input_grad[1]:
                grad_A = torch.fft.irfft(torch.einsum("bmrf,bmf->brf", Gc.conj(), Vh), n=n)
        return (None if grad_V is None else grad_V.to(V.dtype),
                None if grad_A is None else grad_A.to(A.dtype),
                None if grad_B is None else grad_B.to(B.dtype), None)


def rotated_lowrank(V: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """V T^T with T = scale * pi(B A), batched: V (b, m, n), A (b, r, n), B (b, n, r) ->
    (b, m, n) in V's dtype (computed in fp32 at least)."""
    return _RotatedLowRank.apply(V, A, B, scale)
