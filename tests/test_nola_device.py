"""NOLA on any device: quantized files written from any device, bases that are the same wherever an
adapter is decoded (or an error naming both devices), bases regenerated in backward, and one
compiled graph. This machine has no GPU: placement is checked on the `meta` device, and another
device's random stream is simulated by the origin record it would leave."""
import copy

import pytest
import torch

import loralib as lora
from loralib import nola_bases, quant
from loralib.nola import CONFIG_FIELDS
from loralib_cases import official_nola_generate

KA, KB, R = 40, 30, 4


def nola(fused=True, **options):
    cfg = lora.MethodConfig(method="nola", r=R, alpha=8.0,
                            options={"num_basis_A": KA, "num_basis_B": KB, **options})
    if fused:      # GPT-2's c_attn: q and v of a fused (in, 3 * out) Conv1D weight
        return lora.adapt_linear(24, 48, cfg, enable=[True, False, True], fan_in_fan_out=True)
    return lora.adapt_linear(24, 20, cfg)


@torch.no_grad()
def trained(layer, seed=1):
    g = torch.Generator().manual_seed(seed)
    layer.nola_alpha.copy_(torch.randn(layer.nola_alpha.shape, generator=g))
    layer.nola_beta.copy_(torch.randn(layer.nola_beta.shape, generator=g))
    return layer


@pytest.fixture(autouse=True)
def fresh_cache():
    nola_bases.clear_basis_cache()
    yield
    nola_bases.clear_basis_cache()


# ------------------------------------------------------------------ quantized files, any device

def test_quantized_nola_adapter_state_is_written_on_the_layers_device():
    layer = trained(nola(qbits=3)).to("meta")
    sd = lora.lora_state_dict(layer)        # packs the codes on the meta device
    codes = sd["nola_alpha_qcodes"]
    assert codes.is_meta and codes.dtype == torch.uint8 and codes.numel() == (2 * KA * 3 + 7) // 8
    assert sd["nola_beta_qscale"].is_meta and tuple(sd["nola_beta_qscale"].shape) == (2,)
    # and read back there: unpacking and the exact dequantization are whole-tensor arithmetic
    back = quant.unpack_codes(codes, 3, (2, KA))
    x = quant.stable_dequantize(back, sd["nola_alpha_qscale"], 3)
    assert x.is_meta and x.dtype == torch.float32 and tuple(x.shape) == (2, KA)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_stable_dequantize_on_any_scale_keeps_codes_and_gives_back_the_scale_where_it_can(bits):
    # Whole-tensor arithmetic (it runs on the codes' device); its values checked on the CPU, with
    # scales of any float value, for many of which no float peak p has p / L == scale.
    g = torch.Generator().manual_seed(bits)
    L = 2 ** (bits - 1) - 1
    codes = torch.randint(-L, L + 1, (4000, 33), generator=g).to(torch.int8)
    codes[:, 0] = L
    codes[7] = 0
    scale = torch.rand(4000, generator=g) * 10 + 1e-3
    scale[7] = 1.0
    deq = quant.stable_dequantize(codes, scale, bits)
    plain = quant.dequantize(codes, scale)
    peak = codes.abs() == L
    assert torch.equal(deq[~peak], plain[~peak])           # only the peaks may move ...
    mag = torch.where(peak, deq.abs(), 0.0).amax(dim=1)
    assert torch.equal(torch.where(peak, deq.abs(), mag[:, None]), mag[:, None].expand_as(deq))
    assert torch.equal(torch.sign(deq), torch.sign(plain))
    # ... to a float within 4 ulps of L * scale whose division by L is the scale, if one is
    near = [(scale * L).abs()]
    for step in (float("inf"), 0.0):
        c = near[0]
        for _ in range(4):
            c = torch.nextafter(c, torch.full_like(c, step))
            near.append(c)
    assert ((torch.stack(near) - mag).abs() == 0).any(dim=0)[peak.any(dim=1)].all()
    exact = torch.stack([c / L == scale for c in near]).any(dim=0) & peak.any(dim=1)
    assert 0 < int(exact.sum()) < len(scale) - 1 and torch.equal(mag / L == scale, exact)
    c2, s2 = quant.quantize(deq, bits)
    assert torch.equal(c2, codes) and torch.equal(s2[exact], scale[exact])


# ------------------------------------------------------------------ where the bases come from

def test_default_bases_are_drawn_on_the_cpu_and_cached_per_device(monkeypatch):
    layer = trained(nola())
    x = torch.randn(3, 24)
    y = layer(x)
    # the CPU numbers are the official GenerateParams' on a CPU (global manual_seed, uniform_)
    sa = layer.nola_seed[0, 0].item()
    coef = layer.nola_alpha[0].detach()
    A = nola_bases.basis(sa, KA, R, 24, "cpu")
    torch.testing.assert_close(torch.einsum("b,boi->oi", coef, A),
                               official_nola_generate(coef, R, 24, sa), rtol=0, atol=0)
    # placement: the whole forward on another device creates nothing elsewhere
    assert copy.deepcopy(layer).to("meta")(x.to("meta")).is_meta
    drawn = []
    real = nola_bases.generate

    def spy(seed, num, rows, cols, device):
        drawn.append((seed, torch.device(device).type))
        return real(seed, num, rows, cols, device)
    monkeypatch.setattr(nola_bases, "generate", spy)
    # the op's body on another device (meta runs the op's shape function, not its body)
    seeds = [s for s, _ in layer.nola_seed.tolist()]
    out = nola_bases._combine(layer.nola_alpha.detach().to("meta"), seeds, R, 24, False)
    assert out.is_meta and drawn == [(s, "cpu") for s in seeds]     # drawn on the CPU ...
    meta = {k: v for k, v in nola_bases._BASES.items() if k[-1] == "meta"}
    cpu = {k: v for k, v in nola_bases._BASES.items() if k[-1] == "cpu"}
    assert len(meta) == 2 and len(cpu) == 4          # ... and kept on each device apart
    assert all(v.is_meta for v in meta.values()) and not any(v.is_meta for v in cpu.values())
    assert {k[:-1] for k in meta} < {k[:-1] for k in cpu}
    drawn.clear()
    assert torch.equal(layer(x), y) and drawn == []     # the CPU copies are reused


def test_native_bases_are_drawn_on_the_layers_device_as_the_official_code(monkeypatch):
    layer = trained(nola(basis_device="native"))
    assert layer._origin == nola_bases.UNRECORDED
    A, B = layer.factors(layer.frozen_weight())
    sa, sb = layer.nola_seed[1].tolist()
    torch.testing.assert_close(A[R:] - layer.nola_A0[R:],
                               official_nola_generate(layer.nola_alpha[1].detach(), R, 24, sa))
    torch.testing.assert_close(B[1] - layer.nola_B0[16:],
                               official_nola_generate(layer.nola_beta[1].detach(), 16, R, sb))
    # the first use records where they were drawn, and the file carries it
    assert layer._origin == nola_bases.stream_of("cpu")
    cfg = lora.lora_state_dict(layer)["nola_config"]
    assert cfg[len(CONFIG_FIELDS):].tolist() == list(nola_bases.stream_of("cpu"))
    # on another device they are drawn there, not on the CPU
    drawn = []
    monkeypatch.setattr(nola_bases, "generate", lambda *a: drawn.append(a))
    coef = layer.nola_alpha.detach().to("meta")
    assert nola_bases._combine(coef, [sa], R, 24, True).is_meta and drawn == []
    assert copy.deepcopy(layer).to("meta")(torch.randn(3, 24, device="meta")).is_meta


def test_adapter_from_another_device_stops_with_an_error_naming_both(monkeypatch):
    layer = trained(nola())
    sd = lora.lora_state_dict(layer)
    sd["nola_config"] = sd["nola_config"].clone()
    sd["nola_config"][len(CONFIG_FIELDS):] = torch.tensor([2, 132, 2048])   # an H100, native
    for basis_device in ("cpu", "native"):
        fresh = nola(basis_device=basis_device)
        lora.load_lora_state_dict(fresh, sd)
        with pytest.raises(RuntimeError, match=r"drawn on cuda \(132 SMs, 2048 threads per SM\)"
                                               r".*runs on cpu, cpu"):
            fresh.merge()
        with pytest.raises(RuntimeError, match="132 SMs.*runs on cpu"):
            fresh(torch.randn(2, 24))
        assert not fresh.merged
    # another GPU model: the same device type, another launch grid
    monkeypatch.setattr(nola_bases, "stream_of", lambda device: (2, 114, 2048))
    with pytest.raises(RuntimeError, match="132 SMs.*114 SMs"):
        fresh.merge()
    monkeypatch.setattr(nola_bases, "stream_of", lambda device: (2, 132, 2048))
    fresh.merge()       # the same GPU model draws the same numbers
    # a file naming no known device
    sd["nola_config"][len(CONFIG_FIELDS)] = 17
    with pytest.raises(ValueError, match="nola_config: unknown basis origin code 17"):
        lora.load_lora_state_dict(nola(), sd)


def test_adapter_files_without_an_origin_load_as_official_native_ones():
    layer = trained(nola(basis_device="native"))
    x = torch.randn(3, 24)
    y = layer(x)
    sd = lora.lora_state_dict(layer)
    sd["nola_config"] = sd["nola_config"][:len(CONFIG_FIELDS)]        # an older file
    with pytest.raises(ValueError, match="nola_config: written before.*--nola_basis_device native"):
        lora.load_lora_state_dict(nola(), sd)
    for load in (lora.load_lora_state_dict, lambda m, s: m.load_state_dict(s, strict=False)):
        fresh = nola(basis_device="native")
        with torch.no_grad():
            fresh.weight.copy_(layer.weight)
            fresh.bias.copy_(layer.bias)
        with pytest.warns(UserWarning, match="cannot be checked"):
            load(fresh, dict(sd))
        assert fresh._origin == nola_bases.UNRECORDED
        assert torch.equal(fresh(x), y)
        assert fresh._origin == nola_bases.stream_of("cpu")        # recorded from now on
        assert lora.lora_state_dict(fresh)["nola_config"].numel() == len(sd["nola_config"]) + 3


# ------------------------------------------------------------------ backward and compile

def _explicit_delta(layer, bases):
    """Delta W by the old explicit formula, bases as plain (saved) tensors of the graph."""
    n, r, d = layer.n_enabled, layer.r, layer.slice_size
    a, b = layer.coefficients()
    A = torch.cat([torch.einsum("b,boi->oi", a[j], bases[j][0]) for j in range(n)])
    B = torch.stack([torch.einsum("b,boi->oi", b[j], bases[j][1]) for j in range(n)])
    A, B = A + layer.nola_A0, B + layer.nola_B0.view(n, d, r)
    return layer.scaling * layer.full_b(B, A.shape[0]) @ A


@pytest.mark.parametrize("cache_bytes", [nola_bases.BASIS_CACHE_BYTES, 0])
@pytest.mark.parametrize("qbits", [None, 3])
def test_backward_keeps_no_basis_and_gives_the_explicit_gradient(monkeypatch, cache_bytes, qbits):
    monkeypatch.setattr(nola_bases, "BASIS_CACHE_BYTES", cache_bytes)   # 0: drawn again
    layer = trained(nola(qbits=qbits))
    x = torch.randn(5, 24)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t,
                                                  lambda t: t):
        for autocast in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                layer(x).float().square().sum().backward()
    assert saved and not {KA * R * 24, KB * 16 * R} & set(saved)    # no basis, in any dtype
    assert (len(nola_bases._BASES) == 4) == (cache_bytes > 0)
    layer.zero_grad()
    layer(x).square().sum().backward()
    got = (layer.nola_alpha.grad.clone(), layer.nola_beta.grad.clone())
    layer.zero_grad()
    bases = [(nola_bases.generate(sa, KA, R, 24, "cpu"), nola_bases.generate(sb, KB, 16, R, "cpu"))
             for sa, sb in layer.nola_seed.tolist()]
    w = layer.frozen_weight()
    torch.nn.functional.linear(x, w + _explicit_delta(layer, bases), layer.bias).square().sum() \
        .backward()
    for g, want in zip(got, (layer.nola_alpha.grad, layer.nola_beta.grad)):   # fp32 sums
        torch.testing.assert_close(g, want, rtol=0, atol=1e-5 * float(want.abs().max()))


def test_factors_are_fp32_under_autocast():
    layer = trained(nola())
    w = layer.frozen_weight()
    A, B = layer.factors(w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        A2, B2 = layer.factors(w)
    assert A2.dtype == B2.dtype == torch.float32 and torch.equal(A, A2) and torch.equal(B, B2)


@pytest.mark.parametrize("fused,options", [(False, {}), (True, {}), (True, {"qbits": 3}),
                                           (True, {"basis_device": "native"})])
def test_forward_is_one_graph(fused, options):
    layer = trained(nola(fused=fused, **options))
    x = torch.randn(3, 24)
    layer(x)
    for _ in range(2):        # with the bases cached, then with an empty cache
        torch._dynamo.reset()
        explained = torch._dynamo.explain(layer)(x)
        assert explained.graph_break_count == 0, explained.break_reasons
        nola_bases.clear_basis_cache()
    # the custom op's backward through AOTAutograd (the inductor's code generation adds nothing
    # to what is checked here and costs seconds)
    compiled = torch.compile(layer, backend="aot_eager")
    compiled(x).square().sum().backward()
    got = layer.nola_alpha.grad.clone()
    layer.zero_grad()
    layer(x).square().sum().backward()
    torch.testing.assert_close(got, layer.nola_alpha.grad)
    torch._dynamo.reset()


def test_basis_device_flag_picks_the_official_behaviour_and_is_recorded():
    import argparse
    p = lora.add_method_args(argparse.ArgumentParser())
    c = lora.method_config_from_args(p.parse_args(["--nola_rank", "2", "--nola_basis_device",
                                                   "native"]), pipeline="gpt2")
    assert c.options["basis_device"] == "native"
    assert lora.adapt_linear(8, 8, c).basis_device == "native"
    default = lora.method_config_from_args(p.parse_args(["--nola_rank", "2"]), pipeline="gpt2")
    assert default.options["basis_device"] == "cpu"
    assert lora.MethodConfig.from_dict(c.to_dict()).options["basis_device"] == "native"
    # where a fresh adapter draws its bases is not a difference a decoder has to repeat: the
    # file's recorded origin decides
    assert default.differences(c) == ()
    with pytest.raises(ValueError, match="basis_device"):
        lora.MethodConfig(method="nola", r=2, options={"basis_device": "gpu"})
