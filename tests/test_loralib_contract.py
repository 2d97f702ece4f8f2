"""The pluggable-layer contract (DESIGN.md), checked for every method and variant in both places
a method goes: a plain linear (RoBERTa q/v) and GPT-2's fused c_attn (Conv1D layout, q/v mask)."""
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import loralib as lora
from loralib_cases import (LAYOUTS, VARIANT_IDS, VARIANTS, frozen_w,
                           identity_at_init, make_layer, perturb, reference_weight)

matrix = pytest.mark.parametrize("layout", list(LAYOUTS))
methods = pytest.mark.parametrize("method,options", VARIANTS, ids=VARIANT_IDS)


def inputs(layer, seed=3):
    return torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(seed))


def base_output(layer, x):
    return F.linear(x, frozen_w(layer), layer.bias)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@methods
@matrix
def test_identity_at_init_where_the_official_method_has_it(method, options, layout):
    layer = make_layer(method, options, layout)
    x = inputs(layer)
    if identity_at_init(method, options):
        torch.testing.assert_close(layer(x), base_output(layer, x), rtol=1e-6, atol=1e-6)
    else:   # the official init moves the model: check that it does here too
        assert (layer(x) - base_output(layer, x)).abs().max() > 1e-6
    # and the init matches the weight-space formula either way
    assert rel_err(layer(x), F.linear(x, reference_weight(layer), layer.bias)) < 1e-5


@methods
@matrix
def test_activation_space_equals_weight_space_formula(method, options, layout):
    layer = make_layer(method, options, layout)
    perturb(layer)
    x = inputs(layer)
    expected = F.linear(x, reference_weight(layer), layer.bias)
    assert (layer(x) - base_output(layer, x)).abs().max() > 1e-3, "perturbation had no effect"
    assert rel_err(layer(x), expected) < 1e-5


@methods
@matrix
def test_merge_matches_and_unmerge_restores_exactly(method, options, layout):
    layer = make_layer(method, options, layout)
    perturb(layer)
    x = inputs(layer)
    original = layer.weight.detach().clone()
    unmerged = layer(x)
    layer.merge()
    assert layer.merged
    assert rel_err(layer(x), unmerged) < 1e-5
    layer.unmerge()
    assert torch.equal(layer.weight, original)
    for _ in range(10):
        layer.merge()
        layer.unmerge()
    assert torch.equal(layer.weight, original)
    assert torch.equal(layer(x), unmerged)


@methods
@matrix
def test_only_adapter_parameters_train(method, options, layout):
    torch.manual_seed(0)
    layer = make_layer(method, options, layout)
    model = nn.Sequential(nn.Linear(7, layer.in_features), nn.GELU(), layer)
    lora.mark_only_lora_as_trainable(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in dict(model.named_parameters()) if lora.is_adapter_key(n)}
    assert trainable, "no adapter parameters"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(torch.randn(4, 7)).pow(2).sum().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in trainable), n
    opt.step()
    for n, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[n])
        if n in trainable:
            # beta-like factors that start at zero move as soon as they get gradient
            assert changed or p.grad.abs().max() == 0, f"{n} did not change"
        else:
            assert not changed, f"frozen {n} changed"
    # At least the zero-initialized factor must have moved.
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters()
               if n in trainable)


def _roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@methods
@matrix
def test_adapter_state_dict_roundtrips_bit_exactly(method, options, layout):
    src = make_layer(method, options, layout, seed=0)
    perturb(src, seed=5)
    sd = lora.lora_state_dict(src)
    dst = make_layer(method, options, layout, seed=0)   # same backbone, fresh adapter
    perturb(dst, seed=9)
    lora.load_lora_state_dict(dst, _roundtrip(sd))
    again = lora.lora_state_dict(dst)
    assert sd.keys() == again.keys()
    for k in sd:
        assert sd[k].dtype == again[k].dtype and torch.equal(sd[k], again[k]), k
    x = inputs(src)
    assert torch.equal(dst(x), src(x)) or rel_err(dst(x), src(x)) < 1e-6


@methods
@matrix
def test_adapter_state_dict_missing_or_unexpected_key_is_an_error(method, options, layout):
    layer = make_layer(method, options, layout)
    sd = lora.lora_state_dict(layer)
    victim = sorted(sd)[0]
    broken = {k: v for k, v in sd.items() if k != victim}
    with pytest.raises(KeyError, match=victim.split("_q")[0]):
        lora.load_lora_state_dict(make_layer(method, options, layout), broken)
    extra = dict(sd, **{"lora_Z": torch.zeros(1)})
    with pytest.raises(KeyError, match="lora_Z"):
        lora.load_lora_state_dict(make_layer(method, options, layout), extra)


@methods
def test_adapter_holds_only_adapter_state(method, options):
    layer = make_layer(method, options, "fused_qkv")
    keys = set(lora.lora_state_dict(layer))
    assert "weight" not in keys and "bias" not in keys
    assert keys and all(lora.is_adapter_key(k) for k in keys)


def test_every_registered_method_is_in_the_matrix():
    from loralib_cases import EXTRA_REFERENCES
    covered = {m for m, _ in VARIANTS} | {lora.get_spec(n).family for n in lora.available_methods()
                                          if n not in ("full", "none")
                                          and lora.get_spec(n).layer in EXTRA_REFERENCES}
    missing = set(lora.families()) - covered
    assert not missing, f"registered methods without a row in tests/loralib_cases.py: {missing}"
