"""fp32 adapters on a bf16 / fp16 frozen weight (what loralib.inject allocates on a low-precision
Hugging Face model), for every registered variant: the forward, the gradients and merging.

The reference is the all-fp32 layer holding the same weights rounded to the low dtype, fed the
same (rounded) input: what the mixed layer computes exactly except for the rounding of its frozen
product and of its output, so the two agree within the low dtype's resolution. Rule (PEFT's): the
update computes in the adapter's dtype, the output comes back in the frozen product's.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import loralib as lora
from tests.loralib_cases import VARIANT_IDS, VARIANTS, adapter_params, make_layer, perturb

LOW = [torch.bfloat16, torch.float16]
# fp16 / bf16 keep 11 / 8 significant bits; the outputs are rounded once or twice.
TOL = {torch.bfloat16: 1.2e-2, torch.float16: 2e-3}


def rel_err(got, want):
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def pair(method, options, layout, low):
    """(all-fp32 reference on rounded weights, the same layer with a `low` weight and bias)."""
    ref = make_layer(method, options, layout)
    perturb(ref)
    with torch.no_grad():
        for p in (ref.weight, ref.bias):
            p.copy_(p.to(low).float())
    mixed = copy.deepcopy(ref)
    mixed.weight.data = mixed.weight.data.to(low)
    mixed.bias.data = mixed.bias.data.to(low)
    for name, t in list(mixed.named_parameters()) + list(mixed.named_buffers()):
        if lora.is_adapter_key(name) and t.is_floating_point():
            assert t.dtype == torch.float32, name
    return ref, mixed


def inputs(layer, low, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, layer.in_features, generator=g).to(low)
    return x, x.float()


@pytest.mark.parametrize("low", LOW, ids=["bf16", "fp16"])
@pytest.mark.parametrize("layout", ["linear", "fused_qkv"])
@pytest.mark.parametrize("method,options", VARIANTS, ids=VARIANT_IDS)
def test_fp32_adapter_on_low_precision_weight(method, options, layout, low):
    ref, mixed = pair(method, options, layout, low)
    x_low, x = inputs(ref, low)
    want = ref(x)
    got = mixed(x_low)
    assert got.dtype == low
    assert rel_err(got, want) < TOL[low]

    # Gradients reach the fp32 adapter tensors, in fp32, and agree with the reference's.
    g = torch.randn(want.shape, generator=torch.Generator().manual_seed(4))
    (want * g).sum().backward()
    (got.float() * g).sum().backward()
    ref_params, params = adapter_params(ref), adapter_params(mixed)
    assert params and set(params) == set(ref_params)
    for name, p in params.items():
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert rel_err(p.grad, ref_params[name].grad) < 2 * TOL[low], name
    assert mixed.weight.grad is None

    # Merging writes the weight in its own dtype; the merged layer gives the adapted output;
    # unmerging restores the weight bit for bit. (The forward runs with grad mode on: this
    # checks merging, not cpu_linear's inference path.)
    before = mixed.weight.detach().clone()
    mixed.eval()
    mixed.merge()
    assert mixed.merged and mixed.weight.dtype == low
    merged = mixed(x_low)
    assert merged.dtype == low
    assert rel_err(merged, want) < TOL[low]
    mixed.unmerge()
    assert torch.equal(mixed.weight, before)


@pytest.mark.parametrize("low", LOW, ids=["bf16", "fp16"])
@pytest.mark.parametrize("method,options", VARIANTS, ids=VARIANT_IDS)
def test_fp32_adapter_under_autocast(method, options, low):
    """Under autocast every product runs in autocast's dtype, adapter included (as PEFT): the
    output is in that dtype and within its resolution of the fp32 reference."""
    ref, mixed = pair(method, options, "fused_qkv", low)
    x_low, x = inputs(ref, low)
    want = ref(x)
    with torch.autocast("cpu", dtype=low):
        got = mixed(x_low)
    assert got.dtype == low
    assert rel_err(got, want) < 2 * TOL[low]
    got.float().sum().backward()
    for name, p in adapter_params(mixed).items():
        assert p.grad is not None and p.grad.dtype == torch.float32, name


def test_embedding_and_conv_fp32_adapter_on_bf16():
    low = torch.bfloat16
    emb = lora.Embedding(20, 8, r=3, lora_alpha=6)
    with torch.no_grad():
        emb.lora_A.normal_()
        emb.weight.copy_(emb.weight.to(low).float())
    mixed = copy.deepcopy(emb)
    mixed.weight.data = mixed.weight.data.to(low)
    ids = torch.tensor([[1, 5, 19], [0, 2, 7]])
    got = mixed(ids)
    assert got.dtype == low and rel_err(got, emb(ids)) < TOL[low]
    mixed.eval()
    assert mixed.merged and mixed.weight.dtype == low and rel_err(mixed(ids), emb(ids)) < TOL[low]

    conv = lora.Conv2d(4, 6, 3, r=2, lora_alpha=4)
    with torch.no_grad():
        conv.lora_B.normal_()
        for p in (conv.conv.weight, conv.conv.bias):
            p.copy_(p.to(low).float())
    mixed = copy.deepcopy(conv)
    mixed.conv.weight.data = mixed.conv.weight.data.to(low)
    mixed.conv.bias.data = mixed.conv.bias.data.to(low)
    x = torch.randn(2, 4, 7, 7).to(low)
    got = mixed(x)
    want = conv(x.float())
    assert got.dtype == low and rel_err(got, want) < TOL[low]
    got.float().sum().backward()
    assert mixed.lora_A.grad.dtype == torch.float32
    mixed.eval()
    assert mixed.conv.weight.dtype == low and rel_err(mixed(x), want) < TOL[low]


def test_low_rank_update_is_computed_in_fp32():
    """LoRA's output is the frozen bf16 product plus the fp32 update, rounded once (PEFT's
    (result + update).to(result.dtype)), not an update rounded to bf16 before it is added."""
    ref, mixed = pair("lora", {}, "linear", torch.bfloat16)
    with torch.no_grad():
        mixed.lora_B.mul_(1e-3)       # an update far below the frozen output's bf16 resolution
    x_low, _ = inputs(ref, torch.bfloat16)
    frozen = F.linear(x_low, mixed.weight, mixed.bias)
    update = (x_low.float() @ mixed.lora_A.t() * mixed.scaling) @ mixed.lora_B.t()
    got = mixed(x_low)
    torch.testing.assert_close(got, (frozen.float() + update).to(torch.bfloat16), rtol=0, atol=0)


@pytest.mark.parametrize("side", ["activation", "weight"])
@pytest.mark.parametrize("options", [{"kind": "shift", "mode": "pre"}, {"kind": "shift", "mode": "post"},
                                     {"kind": "none", "mode": "pre"}, {"kind": "none", "mode": "post"}],
                         ids=["shift-pre", "shift-post", "none-pre", "none-post"])
def test_lorma_either_side_fp32_adapter_on_bf16(options, side):
    """LoRMA_pi / none apply T to the activations or to the weight (by shape, or forced): both
    sides follow the precision rule."""
    low = torch.bfloat16
    ref, mixed = pair("lorma", options, "fused_qkv", low)
    mixed.compute_side = side
    x_low, x = inputs(ref, low)
    want = ref(x)
    got = mixed(x_low)
    assert got.dtype == low and rel_err(got, want) < TOL[low]
    got.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in adapter_params(mixed).values())
    with torch.autocast("cpu", dtype=low):
        assert mixed(x_low).dtype == low


@pytest.mark.parametrize("method,options", [("lora", {}), ("lorma", {"kind": "rri"}),
                                            ("mtlora", {"structure": "ICFM"}),
                                            ("nola", {"num_basis_A": 40, "num_basis_B": 30})],
                         ids=["lora", "lorma_plus", "mtlora", "nola"])
def test_autocast_casts_the_input_and_weight_once(method, options):
    """fp32 input and weight under bf16 autocast: the frozen product and the adapter's A x read
    x (and LoRMA_+'s A W0 reads W0 too); autocast would cast them for each product. One cast
    kernel each."""
    from torch.utils._python_dispatch import TorchDispatchMode

    layer = make_layer(method, options, "linear")
    x = torch.randn(7, layer.in_features, requires_grad=True)
    casts = []

    class Casts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten._to_copy.default and out.dtype == torch.bfloat16:
                casts.append(tuple(out.shape))
            return out

    with Casts(), torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    assert casts.count(tuple(x.shape)) == 1
    assert casts.count(tuple(layer.weight.shape)) == 1
