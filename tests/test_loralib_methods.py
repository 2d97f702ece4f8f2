"""Parameter counts, NOLA's bases and quantized files, bad input, and the shared CLI flags."""
import argparse
import io
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import loralib as lora
from loralib import quant
from loralib.nola_bases import basis, clear_basis_cache
from loralib_cases import official_nola_generate


def gpt2_stack(n_layer, d, cfg):
    """GPT-2 attention c_attn layers (fused q/k/v, Conv1D layout) on the meta device."""
    return nn.ModuleList(lora.adapt_linear(d, 3 * d, cfg, enable=[True, False, True],
                                           fan_in_fan_out=True, device="meta")
                         for _ in range(n_layer))


def roberta_stack(n_layer, d, cfg):
    return nn.ModuleList(nn.ModuleDict({"query": lora.adapt_linear(d, d, cfg, device="meta"),
                                        "value": lora.adapt_linear(d, d, cfg, device="meta")})
                         for _ in range(n_layer))


NOLA = {"num_basis_A": 1000, "num_basis_B": 1000}


@pytest.mark.parametrize("stack,n_layer,d,method,options,r,expected", [
    (gpt2_stack, 24, 1024, "lora", {}, 4, 393_216),
    (gpt2_stack, 24, 1024, "lorma", {"kind": "rri", "mode": "pre"}, 4, 393_216),
    (gpt2_stack, 24, 1024, "lorma", {"kind": "shift", "mode": "pre"}, 4, 393_216),
    (gpt2_stack, 24, 1024, "mtlora", {"structure": "SHIM"}, 4, 393_984),
    (gpt2_stack, 24, 1024, "mtlora", {"structure": "ICFM"}, 4, 393_984),
    (gpt2_stack, 24, 1024, "mtlora", {"structure": "CTCM"}, 4, 394_752),
    (gpt2_stack, 24, 1024, "mtlora", {"structure": "DTSM"}, 4, 394_752),
    (gpt2_stack, 24, 1024, "nola", NOLA, 8, 96_000),
    (gpt2_stack, 36, 1280, "lora", {}, 4, 737_280),
    (gpt2_stack, 36, 1280, "nola", NOLA, 8, 144_000),
    (roberta_stack, 12, 768, "lora", {}, 8, 294_912),
    (roberta_stack, 12, 768, "lorma", {"kind": "rri"}, 8, 294_912),
    (roberta_stack, 24, 1024, "lora", {}, 8, 786_432),
    (roberta_stack, 24, 1024, "lorma", {"kind": "shift"}, 8, 786_432),
])
def test_exact_trainable_parameter_counts(stack, n_layer, d, method, options, r, expected):
    model = stack(n_layer, d, lora.MethodConfig(method=method, r=r, alpha=32, options=options))
    lora.mark_only_lora_as_trainable(model)
    trainable, total = lora.count_parameters(model)
    assert trainable == expected
    assert f"{expected:,}" in lora.parameter_report(model)


def _basis_bytes_in_fresh_process():
    code = ("from loralib.nola_bases import basis;"
            "import sys; sys.stdout.buffer.write(basis(1234567, 5, 3, 4, 'cpu')"
            ".numpy().tobytes())")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout


def test_nola_bases_are_the_official_ones_deterministic_and_cached():
    clear_basis_cache()
    a = basis(1234567, 5, 3, 4, "cpu")
    # NOLA's GenerateParams: torch.manual_seed(seed); uniform_(-1, 1) on (k, out, in); * 1/sqrt(k)
    coef = torch.randn(5)
    torch.testing.assert_close(torch.einsum("b,boi->oi", coef, a),
                               official_nola_generate(coef, 3, 4, 1234567), rtol=0, atol=0)
    assert _basis_bytes_in_fresh_process() == a.numpy().tobytes()
    assert a.abs().max() <= 1 / 5 ** 0.5 and a.std() > 0
    assert basis(1234567, 5, 3, 4, "cpu") is a           # cached
    assert not torch.equal(basis(1234568, 5, 3, 4, "cpu"), a)   # seed matters


def test_nola_seeds_are_per_module_drawn_from_torch_and_saved():
    cfg = lora.MethodConfig(method="nola", r=2, alpha=1.0,
                            options={"num_basis_A": 6, "num_basis_B": 5})
    torch.manual_seed(0)
    l1, l2 = (lora.adapt_linear(8, 24, cfg, enable=[True, False, True], fan_in_fan_out=True)
              for _ in range(2))
    torch.manual_seed(0)
    l3 = lora.adapt_linear(8, 24, cfg, enable=[True, False, True], fan_in_fan_out=True)
    seeds = l1.nola_seed.flatten().tolist()
    assert len(set(seeds)) == 4 and all(0 <= v < 10 ** 10 for v in seeds)   # qA qB vA vB
    assert not torch.equal(l1.nola_seed, l2.nola_seed)     # each module draws its own
    assert torch.equal(l1.nola_seed, l3.nola_seed)          # from torch's seeded generator
    sd = lora.lora_state_dict(l1)
    # the frozen offsets are regenerated from their seed (nola_offset_init), not stored ...
    assert set(sd) == {"nola_alpha", "nola_beta", "nola_seed", "nola_config", "nola_offset_init"}
    # ... except in a resumable training state, which keeps everything as it is
    assert set(lora.lora_state_dict(l1, quantized=False)) == set(sd) | {"nola_A0", "nola_B0"}
    assert tuple(sd["nola_alpha"].shape) == (2, 6) and tuple(sd["nola_beta"].shape) == (2, 5)
    with torch.no_grad():
        l1.nola_alpha.normal_()
        l1.nola_beta.normal_()
    with torch.no_grad():
        l2.weight.copy_(l1.weight)
        l2.bias.copy_(l1.bias)
    lora.load_lora_state_dict(l2, lora.lora_state_dict(l1))   # the seeds travel with the file
    x = torch.randn(3, 8)
    assert torch.equal(l2(x), l1(x))


def test_nola_config_mismatch_on_load_is_an_error():
    def mk(k):
        return lora.adapt_linear(8, 8, lora.MethodConfig(
            method="nola", r=2, options={"num_basis_A": k, "num_basis_B": 4}))
    # nola_config is read before the shapes: the error names the setting, not a shape
    with pytest.raises(ValueError, match="nola_config.*num_basis_A 5 \\(model has 4\\)"):
        lora.load_lora_state_dict(mk(4), lora.lora_state_dict(mk(5)))
    sd = lora.lora_state_dict(mk(5))
    del sd["nola_config"]
    with pytest.raises(KeyError, match="missing key.*nola_config"):
        lora.load_lora_state_dict(mk(4), sd)
    # same shapes, other settings: nola_config names the difference
    layer = mk(4)
    sd = lora.lora_state_dict(layer)
    sd["nola_config"] = sd["nola_config"].clone()
    sd["nola_config"][3] = 3
    with pytest.raises(ValueError, match="nola_config.*qbits 3 \\(model has 0\\)"):
        lora.load_lora_state_dict(mk(4), sd)


def _file_size(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.tell()


def _tensor_bytes(sd):
    return sum(t.numel() * t.element_size() for t in sd.values())


@pytest.mark.parametrize("offsets", ["none", "normal", "kaiming"])
def test_quantized_nola_file_holds_codes_and_seeds_alone(offsets):
    # What cannot be regenerated, and nothing else: per layer 2 x kA b-bit codes, 2 + 2 scales,
    # 4 basis seeds, nola_config (8 int64) and, with offsets, their seed and std (2 int64).
    def model(qbits):
        cfg = lora.MethodConfig(method="nola", r=8, alpha=1.0,
                                options={**NOLA, "qbits": qbits, "offsets": offsets})
        m = nn.ModuleList(lora.adapt_linear(32, 96, cfg, enable=[True, False, True],
                                            fan_in_fan_out=True) for _ in range(24))
        with torch.no_grad():
            for layer in m:
                layer.nola_beta.normal_()
                layer.nola_alpha.normal_()
        return m
    extra = 0 if offsets == "none" else 2 * 8
    fl = lora.lora_state_dict(model(None))
    q3 = lora.lora_state_dict(model(3))
    assert q3["0.nola_alpha_qcodes"].dtype == torch.uint8
    assert q3["0.nola_alpha_qcodes"].numel() == (2 * 1000 * 3 + 7) // 8
    assert _tensor_bytes(fl) == 24 * (2 * 2 * 1000 * 4 + 4 * 8 + 8 * 8 + extra)
    assert _tensor_bytes(q3) == 24 * (2 * 750 + 2 * 2 * 4 + 4 * 8 + 8 * 8 + extra)
    assert _file_size(fl) / _file_size(q3) > 3


@pytest.mark.parametrize("options", [{"offsets": "normal", "offset_std": 0.037},
                                     {"offsets": "kaiming"}, {"offsets": "normal", "qbits": 3}])
def test_nola_offsets_are_regenerated_from_their_seed(options):
    cfg = lora.MethodConfig(method="nola", r=2, alpha=2.0,
                            options={"num_basis_A": 6, "num_basis_B": 5, **options})
    torch.manual_seed(0)
    layer = lora.adapt_linear(8, 24, cfg, enable=[True, False, True], fan_in_fan_out=True)
    with torch.no_grad():
        layer.nola_alpha.normal_()
        layer.nola_beta.normal_()
    if "offset_std" in options:
        drawn = torch.cat([layer.nola_A0.flatten(), layer.nola_B0.flatten()])
        assert 0.028 < float(drawn.std()) < 0.046
    sd = lora.lora_state_dict(layer)
    assert "nola_A0" not in sd and "nola_B0" not in sd
    torch.manual_seed(1)                 # another model: other offsets until the file is loaded
    fresh = lora.adapt_linear(8, 24, cfg, enable=[True, False, True], fan_in_fan_out=True)
    with torch.no_grad():
        fresh.weight.copy_(layer.weight)
        fresh.bias.copy_(layer.bias)
    assert not torch.equal(fresh.nola_A0, layer.nola_A0)
    lora.load_lora_state_dict(fresh, sd)
    assert torch.equal(fresh.nola_A0, layer.nola_A0) and torch.equal(fresh.nola_B0, layer.nola_B0)
    x = torch.randn(3, 8)
    assert torch.equal(fresh(x), layer(x))
    again = lora.lora_state_dict(fresh)
    assert again.keys() == sd.keys() and all(torch.equal(again[k], sd[k]) for k in sd)
    # the same through a plain load_state_dict of the file
    plain = lora.adapt_linear(8, 24, cfg, enable=[True, False, True], fan_in_fan_out=True)
    plain.load_state_dict(sd, strict=False)
    assert torch.equal(plain.nola_A0, layer.nola_A0) and torch.equal(plain.nola_B0, layer.nola_B0)


def test_nola_offsets_from_a_file_are_kept_and_written_again():
    cfg = lora.MethodConfig(method="nola", r=2, alpha=2.0,
                            options={"num_basis_A": 6, "num_basis_B": 5, "offsets": "normal"})
    layer = lora.adapt_linear(8, 24, cfg, enable=[True, False, True], fan_in_fan_out=True)
    full = lora.lora_state_dict(layer, quantized=False)
    older = {k: v for k, v in full.items() if k != "nola_offset_init"}   # official / older file
    fresh = lora.adapt_linear(8, 24, cfg, enable=[True, False, True], fan_in_fan_out=True)
    lora.load_lora_state_dict(fresh, older)
    assert torch.equal(fresh.nola_A0, layer.nola_A0)
    sd = lora.lora_state_dict(fresh)           # no seed gives these offsets: they stay in
    assert torch.equal(sd["nola_A0"], layer.nola_A0) and int(sd["nola_offset_init"][0]) == -1
    with pytest.raises(KeyError, match="missing key.*'nola_A0'.*came from a file"):
        lora.load_lora_state_dict(fresh, {k: v for k, v in sd.items() if k != "nola_A0"
                                           and k != "nola_B0"})
    # offsets changed after they were drawn are not what their seed gives: written out
    with torch.no_grad():
        layer.nola_A0[0, 0] += 1.0
    assert torch.equal(lora.lora_state_dict(layer)["nola_A0"], layer.nola_A0)


@pytest.mark.parametrize("bits", range(2, 9))
def test_quantization_pack_roundtrip_and_grid(bits):
    torch.manual_seed(bits)
    x = torch.randn(3, 101)
    x[1] = 0.0                       # an all-zero vector (beta at init) has a defined scale
    codes, scale = quant.quantize(x, bits)
    L = 2 ** (bits - 1) - 1
    assert codes.abs().max() <= L and scale[1] == 1.0
    assert torch.equal(quant.unpack_codes(quant.pack_codes(codes, bits), bits, codes.shape), codes)
    deq = quant.stable_dequantize(codes, scale, bits)
    c2, s2 = quant.quantize(deq, bits)
    assert torch.equal(c2, codes) and torch.equal(s2, scale)
    # straight-through: the forward is quantized, the gradient is the identity
    x.requires_grad_(True)
    y = quant.fake_quantize(x, bits)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert (y.detach() - x.detach()).abs().max() <= scale.max() / 2 + 1e-6


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="lora", r=0), "rank"),
    (dict(method="lora", r=-2), "rank"),
    (dict(method="nola", r=0), "rank"),
    (dict(method="nola", r=4, options={"qbits": 1}), "qbits"),
    (dict(method="nola", r=4, options={"qbits": 9}), "qbits"),
    (dict(method="nola", r=4, options={"num_basis_A": 0}), "num_basis_A"),
    (dict(method="dora", r=4), "unknown method 'dora'"),
    (dict(method="lorma", r=4, options={"kind": "mul"}), "kind"),
    (dict(method="lorma", r=4, options={"mode": "middle"}), "mode"),
    (dict(method="mtlora", r=4, options={"structure": "XYZ"}), "structure"),
    (dict(method="lora", r=4, options={"structure": "SHIM"}), "unknown option"),
    (dict(method="lorma_pi", r=4, options={"kind": "rri"}), "fixes"),
    (dict(method="lora", r=4, targets=("q", "attn")), "target"),
])
def test_bad_config_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lora.MethodConfig(**kwargs)


def test_bad_layer_arguments_are_clear_errors():
    cfg = lora.MethodConfig(method="lora", r=4)
    with pytest.raises(ValueError, match="does not divide out_features=10"):
        lora.adapt_linear(8, 10, cfg, enable=[True, False, True])
    with pytest.raises(ValueError, match="qbits"):
        lora.NOLALinear(8, 8, r=2, qbits=10)
    with pytest.raises(ValueError, match="rank"):
        lora.Linear(8, 8, r=-1)


def parse(*argv, default="full"):
    p = lora.add_method_args(argparse.ArgumentParser())
    return lora.method_config_from_args(p.parse_args(list(argv)), default=default)


def test_cli_flags_from_the_seed_commands():
    c = parse("--lora_dim", "4", "--lora_alpha", "32", "--lora_dropout", "0.1")
    assert (c.method, c.r, c.alpha, c.dropout, c.targets) == ("lora", 4, 32.0, 0.1, ("q", "v"))
    c = parse("--nola_rank", "8", "--nola_c", "1.0", "--nola_qv")
    assert (c.method, c.r, c.alpha, c.options["qbits"]) == ("nola", 8, 1.0, None)
    assert c.options["num_basis_A"] == c.options["num_basis_B"] == 1024   # NOLA's gpt2_ft.py
    c = parse("--nola_rank", "8", "--nola_c", "0.01", "--qnola", "--qbits", "3", "--nola_qv")
    assert (c.method, c.options["qbits"]) == ("nola", 3)
    c = parse("--method", "lorma_pi", "--lora_dim", "4", "--lorma_mode", "post")
    assert (c.method, c.options["kind"], c.options["mode"]) == ("lorma_pi", "shift", "post")
    c = parse("--method", "mtlora", "--lora_dim", "4", "--mtlora_structure", "ctcm")
    assert c.options["structure"] == "CTCM"
    assert parse().method == "full" and parse(default="none").method == "none"
    assert parse("--nola_qv").method == "nola"          # a NOLA flag alone selects NOLA
    assert parse("--nola_rank", "8", "--nola_mlp").targets == ("q", "v", "c_fc", "mlp_proj")
    c = parse("--lora_dim", "4", "--adapt_targets", "q,k,v,c_proj")
    assert c.targets == ("q", "k", "v", "c_proj")


@pytest.mark.parametrize("argv,match", [
    (["--method", "lora"], "--lora_dim must be > 0"),
    (["--method", "lora", "--lora_dim", "4", "--qnola"], "not 'nola'"),
    (["--lora_dim", "4", "--mtlora_structure", "SHIM"], "not 'mtlora'"),
    (["--method", "mtlora", "--lora_dim", "4", "--lorma_mode", "pre"], "not 'lorma'"),
    (["--nola_rank", "8", "--lora_dim", "4"], "not --lora_dim"),
    (["--method", "nola", "--qbits", "3"], "without --qnola"),
    (["--method", "full", "--lora_dim", "4"], "the method is 'full'"),
    (["--nola_rank", "8", "--qnola", "--qbits", "12"], "qbits"),
    (["--method", "lora", "--lora_dim", "4", "--nola_qv"], "not 'nola'"),
])
def test_cli_nonsense_combinations_are_errors(argv, match):
    with pytest.raises(ValueError, match=match):
        parse(*argv)
