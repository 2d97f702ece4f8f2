"""loralib.cpu_linear: oneDNN's matmul where it computes F.linear's product, F.linear elsewhere."""
import pytest
import torch
import torch.nn.functional as F

import loralib as lora
from loralib import cpu_linear

needs_onednn = pytest.mark.skipif(not cpu_linear._onednn_op(), reason="this torch has no oneDNN linear")


@needs_onednn
@pytest.mark.parametrize("shape", [(7, 48), (3, 5, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_product_equals_f_linear(shape, bias):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(*shape, generator=g), torch.randn(33, 48, generator=g)
    b = torch.randn(33, generator=g) if bias else None
    with torch.no_grad():
        assert cpu_linear.uses_onednn(x, w)
        got = cpu_linear.linear(x, w, b)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert torch.allclose(got.double(), ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        fused = cpu_linear.linear(x, w, b, gelu_tanh=True)
    assert torch.allclose(fused.double(), F.gelu(ref, approximate="tanh"), rtol=1e-5, atol=1e-5)
    # a transposed view (GPT-2's Conv1D layout) is the same product, and so is a strided input
    with torch.no_grad():
        assert torch.allclose(cpu_linear.linear(x, w.t().contiguous().t(), b), got, rtol=1e-6, atol=1e-6)
        strided = torch.stack((x, torch.zeros_like(x)), dim=-1)[..., 0]
        assert not strided.is_contiguous()
        assert torch.allclose(cpu_linear.linear(strided, w, b), got, rtol=1e-6, atol=1e-6)


def test_f_linear_wherever_onednn_would_differ():
    x, w = torch.randn(4, 8, requires_grad=True), torch.randn(3, 8)
    assert not cpu_linear.uses_onednn(x, w)                     # a gradient is being recorded
    y = cpu_linear.linear(x, w)
    y.sum().backward()
    assert torch.equal(x.grad, w.sum(0).expand(4, 8))
    with torch.no_grad():
        assert not cpu_linear.uses_onednn(x.double(), w.double())   # float64: F.linear, exactly
        assert torch.equal(cpu_linear.linear(x.double(), w.double()), F.linear(x.double(), w.double()))
        assert not cpu_linear.uses_onednn(x[0], w)                  # 1-d input
        with torch.autocast("cpu", dtype=torch.bfloat16):          # autocast would cast the operands
            assert not cpu_linear.uses_onednn(x, w)
            assert cpu_linear.linear(x, w).dtype == torch.bfloat16
        cpu_linear.set_enabled(False)
        try:
            assert not cpu_linear.uses_onednn(x, w)
            assert torch.equal(cpu_linear.linear(x, w), F.linear(x, w))
            assert torch.equal(cpu_linear.linear(x, w, gelu_tanh=True), F.gelu(F.linear(x, w), approximate="tanh"))
        finally:
            cpu_linear.set_enabled(True)


@needs_onednn
def test_a_merged_layer_evaluates_through_onednn_as_it_trains():
    layer = lora.adapt_linear(48, 96, lora.MethodConfig(method="lora", r=4, alpha=8), fan_in_fan_out=True)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(2, 6, 48)
    train_out = layer(x)                        # grad enabled: the adapter path, F.linear
    lora.merge_all(layer)
    with torch.no_grad():
        assert torch.allclose(layer(x), train_out, rtol=1e-5, atol=1e-5)


needs_packing = pytest.mark.skipif(not cpu_linear._can_pack(), reason="this torch cannot reorder a linear weight")


@needs_packing
def test_packed_weights_give_the_same_product_and_follow_in_place_changes():
    g = torch.Generator().manual_seed(1)
    x, b = torch.randn(2, 5, 48, generator=g), torch.randn(33, generator=g)
    base = torch.randn(48, 33, generator=g)
    with torch.no_grad():
        plain = cpu_linear.linear(x, base.t(), b)
        with cpu_linear.packed_weights(rows=10):
            with cpu_linear.packed_weights(rows=999):          # nested: part of the outer block
                first = cpu_linear.linear(x, base.t(), b)      # a fresh transposed view each call
                cache = cpu_linear._scope["cache"]
                assert len(cache) == 1 and next(iter(cache.values()))[2] is None   # used once
                again = cpu_linear.linear(x, base.t(), b, gelu_tanh=True)
            assert len(cache) == 1 and next(iter(cache.values()))[2].is_mkldnn     # twice: packed
            third = cpu_linear.linear(x, base.t(), b)
            base.mul_(2)                                       # e.g. a merge: packed again
            doubled = cpu_linear.linear(x, base.t(), b)
            assert next(iter(cache.values()))[2] is None
            doubled_packed = cpu_linear.linear(x, base.t(), b)
        assert cpu_linear._scope is None                       # the copies are freed on exit
    ref = F.linear(x.double(), base.double().t() / 2, b.double())
    assert torch.allclose(first.double(), ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(first, plain, rtol=1e-6, atol=1e-6)
    assert torch.allclose(third, plain, rtol=1e-6, atol=1e-6)
    assert torch.allclose(again.double(), F.gelu(ref, approximate="tanh"), rtol=1e-5, atol=1e-5)
    for d in (doubled, doubled_packed):
        assert torch.allclose(d.double(), F.linear(x.double(), base.double().t(), b.double()),
                              rtol=1e-5, atol=1e-5)


@needs_packing
def test_packing_stays_out_of_products_that_record_a_gradient():
    x, w = torch.randn(4, 8, requires_grad=True), torch.randn(3, 8)
    with cpu_linear.packed_weights(rows=4):
        cpu_linear.linear(x, w).sum().backward()
        assert not cpu_linear._scope["cache"]
    assert torch.equal(x.grad, w.sum(0).expand(4, 8))


@needs_packing
def test_merge_and_unmerge_inside_a_block_never_leave_a_stale_packed_weight():
    layer = lora.Linear(48, 33, r=4, lora_alpha=8, merge_weights=False).eval()
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(5, 48)
    with torch.no_grad():
        plain = F.linear(x, layer.weight, layer.bias)
        unmerged = layer(x)
        with cpu_linear.packed_weights(rows=5):
            layer.merge()
            merged = [layer(x), layer(x)]                    # the second reads the packed copy
            layer.unmerge()
            again = layer(x)
            lora.merge_all(layer)
            layer.unmerge()
            twice = [layer(x), layer(x)]
    assert not torch.allclose(unmerged, plain, atol=1e-3)    # the adapter does something
    for y in merged:
        assert torch.allclose(y, unmerged, rtol=1e-5, atol=1e-5)
    for y in [again, *twice]:
        assert torch.allclose(y, unmerged, rtol=1e-5, atol=1e-5)


@needs_packing
def test_inference_mode_weights_are_used_unpacked():
    with torch.inference_mode():
        w, x = torch.randn(33, 48), torch.randn(5, 48)
    with torch.no_grad(), cpu_linear.packed_weights(rows=5):
        ys = [cpu_linear.linear(x, w) for _ in range(2)]
        assert not cpu_linear._scope["cache"]
    for y in ys:
        assert torch.allclose(y, F.linear(x, w), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_bf16_products_equal_f_linear_on_this_cpu():
    """bf16 goes to oneDNN only where this CPU's oneDNN has a bf16 product; elsewhere (an AVX2
    CPU: 'could not create a primitive descriptor') F.linear computes it."""
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(2, 5, 48, generator=g).bfloat16(), torch.randn(33, 48, generator=g).bfloat16()
    b = torch.randn(33, generator=g).bfloat16()
    with torch.no_grad():
        got, fused = cpu_linear.linear(x, w, b), cpu_linear.linear(x, w, b, gelu_tanh=True)
        with cpu_linear.packed_weights(rows=10):                 # as decoding calls it
            packed = [cpu_linear.linear(x, w, b) for _ in range(2)]
        assert cpu_linear.uses_onednn(x, w) == cpu_linear.bf16_supported()
    ref = F.linear(x, w, b)
    assert got.dtype == torch.bfloat16
    if cpu_linear.bf16_supported():      # oneDNN's sums in another order: bf16 rounding apart
        assert torch.allclose(got.float(), ref.float(), rtol=2e-2, atol=2e-2)
    else:
        assert torch.equal(got, ref) and all(torch.equal(p, ref) for p in packed)
        assert torch.equal(fused, F.gelu(ref, approximate="tanh"))
    # a bf16 adapted layer, merged, evaluated without a gradient (a bf16 decode's products)
    layer = lora.adapt_linear(48, 96, lora.MethodConfig(method="lora", r=4, alpha=8),
                              fan_in_fan_out=True).to(torch.bfloat16).eval()
    torch.nn.init.normal_(layer.lora_B)
    lora.merge_all(layer)
    with torch.no_grad():
        out = layer(x)
    assert torch.allclose(out.float(), F.linear(x, layer.weight.t(), layer.bias).float(),
                          rtol=2e-2, atol=2e-2)


def test_bf16_falls_back_to_f_linear_where_onednn_cannot(monkeypatch):
    """A oneDNN whose bf16 product fails (as on a CPU without AVX512 / AMX) is found out once,
    and bf16 products go to F.linear while float32 ones still take oneDNN."""
    calls = []

    def op(x, w, b, attr, scalars, algorithm):
        calls.append(x.dtype)
        if x.dtype == torch.bfloat16:
            raise RuntimeError("could not create a primitive descriptor for the inner product")
        y = F.linear(x, w, b)
        return F.gelu(y, approximate="tanh") if attr == "gelu" else y

    monkeypatch.setattr(cpu_linear, "_op", op)
    monkeypatch.setattr(cpu_linear, "_bf16", None)
    monkeypatch.setattr(cpu_linear, "_enabled", True)
    x, w = torch.randn(4, 8).bfloat16(), torch.randn(3, 8).bfloat16()
    with torch.no_grad():
        assert not cpu_linear.uses_onednn(x, w)
        assert torch.equal(cpu_linear.linear(x, w), F.linear(x, w))
        assert torch.equal(cpu_linear.linear(x, w, gelu_tanh=True),
                           F.gelu(F.linear(x, w), approximate="tanh"))
        assert calls.count(torch.bfloat16) <= 1                # tried once, then remembered
        assert cpu_linear.uses_onednn(x.float(), w.float())
        assert torch.equal(cpu_linear.linear(x.float(), w.float()), F.linear(x.float(), w.float()))
    assert calls[-1] == torch.float32
