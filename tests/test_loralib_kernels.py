"""LowRankAdapter.full_b (B spread over every output row, rebuilt on every forward) takes one
kernel and gives the values of the former pad-and-cat construction (one pad and one cat per
slice: several kernels per layer per step)."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import loralib as lora


def pad_and_cat(B, R, enable, d):
    """The construction full_b replaced, kept as the reference."""
    if len(enable) == 1:
        return B[0]
    Rb = B.shape[-1]
    rows, j = [], 0
    for enabled in enable:
        if not enabled:
            rows.append(B.new_zeros(d, R))
            continue
        rows.append(B[j] if Rb == R else F.pad(B[j], (j * Rb, R - (j + 1) * Rb)))
        j += 1
    return torch.cat(rows, dim=0)


class KernelOps(TorchDispatchMode):
    """The aten ops that compute something (views excluded)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


ENABLES = [[True], [True, False, True], [True, True, True], [False, True, False],
           [True, True, False, True]]


def build(enable, shared):
    method, options = ("mtlora", {"structure": "ICFM", "shared_t": True}) if shared else ("lora", {})
    cfg = lora.MethodConfig(method=method, r=3, alpha=6.0, options=options)
    torch.manual_seed(0)
    return lora.adapt_linear(12, 5 * len(enable), cfg, enable=enable, fan_in_fan_out=True)


@pytest.mark.parametrize("shared", [False, True], ids=["block", "shared_t"])
@pytest.mark.parametrize("enable", ENABLES, ids=lambda e: "".join("TF"[not x] for x in e))
def test_full_b_equals_pad_and_cat(enable, shared):
    layer = build(enable, shared)
    with torch.no_grad():
        layer.lora_B.normal_()
    A, B = layer.factors(layer.frozen_weight())
    R = A.shape[0]
    want = pad_and_cat(B, R, layer.enable_lora, layer.slice_size)
    got = layer.full_b(B, R)
    assert got.shape == want.shape == (layer.out_features, R)
    assert torch.equal(got, want)
    # and the gradient it passes back to B
    g = torch.randn(want.shape)
    grad_want, = torch.autograd.grad((want * g).sum(), layer.lora_B, retain_graph=True)
    grad_got, = torch.autograd.grad((got * g).sum(), layer.lora_B)
    assert torch.equal(grad_got, grad_want)


@pytest.mark.parametrize("shared", [False, True], ids=["block", "shared_t"])
@pytest.mark.parametrize("enable", ENABLES, ids=lambda e: "".join("TF"[not x] for x in e))
def test_full_b_kernel_count(enable, shared):
    layer = build(enable, shared)
    A, B = layer.factors(layer.frozen_weight())
    R = A.shape[0]
    layer.full_b(B, R)                       # the constant mask is made once, before counting
    with KernelOps() as k:
        layer.full_b(B, R)
    if all(enable) and (shared or len(enable) == 1):
        assert k.ops == []                   # B itself, viewed
    elif shared and sum(enable) > 1:         # rows of B gathered under zeros
        assert k.ops == ["aten.new_zeros.default", "aten.index_copy.default"]
    else:                                    # block-diagonal, or one slice of several
        assert k.ops == ["aten.mul.Tensor"]
