"""LoRMA_pi (shift) and `none` on the cheaper side: T applied to activations without forming it
(loralib/rotation.py), or the official weight-space product, chosen by shape. Both sides give
the official values (loralib_cases.reference_weight) and the same gradients; the activation
side allocates nothing of size D x D or D x in; the rotation needs no D^2 index."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import loralib as lora
from loralib.rotation import rotate_rows, rotated_lowrank
from tests.loralib_cases import adapter_params, perturb, reference_weight, rotate


class OpOutputs(TorchDispatchMode):
    """(op name, output numel, dtype) of every non-view op."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    self.seen.append((str(func), t.numel(), t.dtype))
        return out


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_rotate_rows_is_pi_with_one_copy_and_no_index(n):
    M = torch.randn(3, n, n)
    with OpOutputs() as ops:
        got = rotate_rows(M)
    for b in range(3):
        assert torch.equal(got[b], rotate(M[b]))
    assert [name for name, _, _ in ops.seen] == ["aten.cat.default"]
    assert all(dt != torch.int64 for _, _, dt in ops.seen)


@pytest.mark.parametrize("n", [7, 8])
def test_rotated_lowrank_is_the_dense_product_and_its_gradient(n):
    g = torch.Generator().manual_seed(n)
    V, A, B = (torch.randn(*s, generator=g, dtype=torch.double, requires_grad=True)
               for s in ((2, 4, n), (2, 3, n), (2, n, 3)))
    T = 1.5 * rotate_rows(B @ A)
    torch.testing.assert_close(rotated_lowrank(V, A, B, 1.5), V @ T.transpose(1, 2))
    assert torch.autograd.gradcheck(lambda V, A, B: rotated_lowrank(V, A, B, 1.5), (V, A, B))


def build(kind, mode, layout, dropout=0.0, site="input"):
    fin, fout, enable, fio = {"linear": (24, 20, None, False),
                              "fused_qkv": (24, 48, [True, False, True], True)}[layout]
    cfg = lora.MethodConfig(method="lorma", r=3, alpha=6.0, dropout=dropout,
                            options={"kind": kind, "mode": mode, "dropout_site": site})
    torch.manual_seed(0)
    layer = lora.adapt_linear(fin, fout, cfg, enable=enable, fan_in_fan_out=fio)
    perturb(layer)
    return layer


def run(layer, x, side, seed=5):
    layer.compute_side = side
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)                   # the same dropout masks on both sides
    y = layer(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
    return y.detach(), x.grad, {n: p.grad.clone() for n, p in adapter_params(layer).items()}


def close(a, b):
    return ((a - b).abs().max() / b.abs().max()).item() < 1e-5


@pytest.mark.parametrize("layout", ["linear", "fused_qkv"])
@pytest.mark.parametrize("mode", ["pre", "post"])
@pytest.mark.parametrize("kind", ["shift", "none"])
def test_both_sides_give_the_official_values_and_gradients(kind, mode, layout):
    layer = build(kind, mode, layout)
    x = torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(3))
    want = torch.nn.functional.linear(x, reference_weight(layer), layer.bias)
    y_act, gx_act, g_act = run(layer, x, "activation")
    y_w, gx_w, g_w = run(layer, x, "weight")
    assert close(y_act, want) and close(y_w, want)
    assert close(gx_act, gx_w)
    for name in g_w:
        assert close(g_act[name], g_w[name]), name


@pytest.mark.parametrize("mode", ["pre", "post"])
@pytest.mark.parametrize("kind", ["shift", "none"])
def test_dropout_on_the_adapter_input_only_is_the_same_on_both_sides(kind, mode):
    """W0 x + (W - W0) drop(x), with the same masks, whichever side computes it."""
    layer = build(kind, mode, "fused_qkv", dropout=0.3, site="adapter").train()
    x = torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    x_a = layer.lora_dropout(x)
    W0, W = layer.frozen_weight().detach(), reference_weight(layer)
    want = torch.nn.functional.linear(x, W0, layer.bias) + torch.nn.functional.linear(x_a, W - W0)
    for side in ("activation", "weight"):
        y, _, _ = run(layer, x, side)
        assert close(y, want), side


@pytest.mark.parametrize("mode", ["pre", "post"])
@pytest.mark.parametrize("kind", ["shift", "none"])
def test_activation_side_allocates_nothing_of_weight_size(kind, mode):
    """The official code forms T (D x D) and T W0 (D x in); with few tokens, nothing that big is
    made here, forward or backward (D = 48, in = 40, 6 tokens, r = 3)."""
    cfg = lora.MethodConfig(method="lorma", r=3, alpha=6.0, options={"kind": kind, "mode": mode})
    torch.manual_seed(0)
    layer = lora.adapt_linear(40, 48, cfg) if mode == "pre" else lora.adapt_linear(48, 40, cfg)
    perturb(layer)
    D, other = 48, 40
    x = torch.randn(1, 6, layer.in_features, requires_grad=True)
    with OpOutputs() as ops:
        layer(x).sum().backward()
    biggest = max(numel for _, numel, _ in ops.seen)
    assert biggest < D * other, [op for op in ops.seen if op[1] == biggest]
    # the same call with more tokens than `other` takes the weight side: T W0 is formed
    with OpOutputs() as ops:
        layer(torch.randn(1, other + 1, layer.in_features)).sum().backward()
    assert max(numel for _, numel, _ in ops.seen) >= D * other


def test_compute_side_must_be_known():
    layer = build("shift", "pre", "linear")
    layer.compute_side = "both"
    with pytest.raises(ValueError, match="compute_side"):
        layer(torch.randn(2, layer.in_features))


def weight_sized_saves(layer, x):
    """Distinct storages of weight size or more that autograd keeps for the backward, the
    layer's own parameters excluded (they are kept anyway)."""
    own = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    big = layer.weight.numel()
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in own and st.nbytes() // t.element_size() >= big:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(x)
    return len(seen)


@pytest.mark.parametrize("method,options,tokens,copies", [
    ("lora", {}, 6, 1),
    ("lorma", {"kind": "rri"}, 6, 1),                # was 2: A W0 cast W0 again
    ("lorma", {"kind": "shift"}, 6, 1),              # T on the activations
    ("lorma", {"kind": "shift"}, 41, 2),             # T W0, and W0 for T's gradient
    ("lorma", {"kind": "none"}, 6, 1),
], ids=["lora", "lorma_plus", "lorma_pi_activation", "lorma_pi_weight", "lorma_none"])
def test_autocast_keeps_one_low_precision_copy_of_the_frozen_weight(method, options, tokens,
                                                                    copies):
    """fp32 weights under bf16 autocast (the official LLM run): autocast casts W0 for each
    product that reads it and autograd keeps each cast; the layers cast it once per forward."""
    cfg = lora.MethodConfig(method=method, r=3, alpha=6.0, options=options)
    torch.manual_seed(0)
    layer = lora.adapt_linear(40, 48, cfg)
    x = torch.randn(1, tokens, 40, requires_grad=True)    # as inside a model: W0 is kept for x's grad
    assert weight_sized_saves(layer, x) == copies
