"""Each method's default, per pipeline, against what that pipeline's official code computes.

The references here are transcriptions written from reading the official repositories
(Exploration-Lab/LoRMA, YaoLiang2023/MTLoRA, UCDvision/NOLA, microsoft/LoRA; file:line in the
README's fidelity table), independent of loralib's code: initial values (which factor is zero,
the distribution's bounds), dropout placement in train and eval mode, the adapted projections
and the exact trainable counts of the official GPT-2 M/L and RoBERTa-base/large settings.
"""
import argparse
import math

import pytest
import torch
import torch.nn.functional as F

import loralib as lora
from loralib_cases import official_nola_generate
from nlg.model import GPT2LMModel, config_from_card
from nlu.roberta import RobertaForSequenceClassification, config_from_card as roberta_card


def gpt2(card, method, **kw):
    with torch.device("meta"):
        return GPT2LMModel(config_from_card(card, method=method, **kw))


def roberta(card, method, labels=2):
    with torch.device("meta"):
        return RobertaForSequenceClassification(roberta_card(card, num_labels=labels,
                                                             method=method))


def trainable(model, head=False):
    lora.mark_only_lora_as_trainable(model)
    if head:
        for p in model.classifier.parameters():
            p.requires_grad = True
    return lora.count_parameters(model)[0]


def cfg(method, pipeline, r=4, alpha=32, **options):
    return lora.MethodConfig(method=method, r=r, alpha=alpha, options=options, pipeline=pipeline)


# ---------------------------------------------------------------------------- exact counts

@pytest.mark.parametrize("card,method,r,options,expected", [
    ("gpt2.md", "lora", 4, {}, 393_216),
    ("gpt2.md", "lorma_plus", 4, {}, 393_216),                  # q, v hard-coded (model_lorma_*.py)
    ("gpt2.md", "lorma_pi", 4, {}, 393_216),
    ("gpt2.md", "mtlora", 4, {}, 1_085_184),                   # ICFM, q/k/v shared T + c_fc
    ("gpt2.md", "mtlora", 4, {"structure": "SHIM"}, 1_085_184),
    ("gpt2.md", "mtlora", 4, {"structure": "CTCM"}, 1_089_024),
    ("gpt2.md", "mtlora", 4, {"structure": "DTSM"}, 1_089_024),
    ("gpt2.md", "nola", 8, {"num_basis_A": 512, "num_basis_B": 512}, 49_152),   # official M script
    ("gpt2.lg", "nola", 8, {"num_basis_A": 256, "num_basis_B": 256}, 36_864),   # official L script
    ("gpt2.lg", "lora", 4, {}, 737_280),
])
def test_official_gpt2_trainable_counts(card, method, r, options, expected):
    assert trainable(gpt2(card, cfg(method, "gpt2", r=r, **options))) == expected


@pytest.mark.parametrize("card,method,options,labels,expected", [
    # LoRMA NLU: q, v + classifier head (run_glue_lorma_plus.py 236-302, 409-411)
    ("roberta-base", "lorma_plus", {}, 2, 294_912 + 590_592 + 1_538),
    ("roberta-large", "lorma_plus", {}, 2, 786_432 + 1_049_600 + 2_050),
    ("roberta-large", "lorma_pi", {}, 2, 786_432 + 1_049_600 + 2_050),
    # MTLoRA NLU: query, value, intermediate.dense, output.dense + head; the official model's
    # dead key_proj adapter (built, never in the forward) is not reproduced: these are the
    # parameters the official run actually trains
    ("roberta-base", "mtlora", {}, 2, 1_627_394),
    ("roberta-large", "mtlora", {}, 2, 3_810_306),
    ("roberta-base", "lora", {}, 3, 294_912 + 590_592 + 2_307),
])
def test_official_roberta_trainable_counts(card, method, options, labels, expected):
    alpha = 16
    model = roberta(card, cfg(method, "roberta", r=8, alpha=alpha, **options), labels)
    assert trainable(model, head=True) == expected


def test_lorma_complete_modes_train_a_dense_t():
    model = roberta("roberta-base", cfg("lorma_pi", "roberta", r=8, mode="complete_pre"))
    assert trainable(model) == 12 * 2 * 768 * 768                 # 14,155,776 as official


# ---------------------------------------------------------------------------- LoRMA

def layer(config, fin=16, fout=12, seed=0, **kw):
    torch.manual_seed(seed)
    return lora.adapt_linear(fin, fout, config, **kw)


def test_lorma_plus_gpt2_init_a_zero_b_uniform_over_sqrt_r():
    # LoRMA NLG/Language-generation/src/model_lorma_plus.py:113-120
    m = layer(cfg("lorma_plus", "gpt2", r=4), fin=32, fout=96, enable=[True, False, True],
              fan_in_fan_out=True)
    assert torch.count_nonzero(m.lora_A) == 0
    B = m.lora_B.detach()
    assert B.abs().max() <= 1 / math.sqrt(4) and B.abs().max() > 0.4 / math.sqrt(4)


@pytest.mark.parametrize("pipeline", ["roberta", "llm"])
@pytest.mark.parametrize("mode,side", [("pre", 12), ("post", 16)])
def test_lorma_plus_nlu_and_math_init_b_zero_a_uniform_over_sqrt_d(pipeline, mode, side):
    # LoRMA NLU/run_glue_lorma_plus.py:207-215, NLG/MetaMathQA/train_math_lorma.py:310-332
    m = layer(cfg("lorma_plus", pipeline, r=4, mode=mode))
    assert torch.count_nonzero(m.lora_B) == 0
    A = m.lora_A.detach()
    assert A.shape == (4, side)
    assert A.abs().max() <= 1 / math.sqrt(side) and A.abs().max() > 0.5 / math.sqrt(side)


def test_lorma_pi_init_is_exactly_the_identity():
    # LoRMA model_lorma_pi.py:120-133 (init), :139-150 (shift)
    m = layer(cfg("lorma_pi", "roberta", r=4, alpha=8))
    s = 8 / 4
    A, B = m.lora_A.detach(), m.lora_B.detach()
    assert torch.allclose(B[:, 0], torch.full((12,), 1 / math.sqrt(s)))
    want_A = torch.zeros(4, 12)
    want_A[0, 0] = 1 / math.sqrt(s)
    assert torch.equal(A, want_A)
    BA = B @ A
    T = s * torch.stack([torch.roll(BA[i], i) for i in range(12)])
    torch.testing.assert_close(T, torch.eye(12))


def test_lorma_none_starts_at_a_rank_r_projector():
    # LoRMA train_math_lorma.py:310-332 (none: A = pinv(B), both / sqrt(s))
    m = layer(cfg("lorma", "llm", r=3, alpha=6, kind="none"))
    P = (6 / 3) * m.lora_B.detach() @ m.lora_A.detach()          # s B pinv(B), official init
    torch.testing.assert_close(P @ P, P, atol=1e-5, rtol=1e-5)
    assert torch.linalg.matrix_rank(P) == 3
    x = torch.randn(5, 16)
    torch.testing.assert_close(m(x), F.linear(x, P @ m.weight, m.bias))


def _train_output(m, x, seed):
    m.train()
    torch.manual_seed(seed)
    return m(x)


def test_lorma_dropout_on_the_whole_input_in_nlu_and_math():
    # LoRMA run_glue_lorma_plus.py:217-233, train_math_lorma.py:347-371
    m = layer(lora.MethodConfig(method="lorma_plus", r=4, alpha=8, dropout=0.5,
                                pipeline="roberta"), seed=1)
    with torch.no_grad():
        m.lora_B.normal_()
    x = torch.randn(6, 16)
    W = (torch.eye(12) + 2.0 * m.lora_B @ m.lora_A) @ m.weight
    torch.manual_seed(9)
    want = F.linear(F.dropout(x, 0.5, training=True), W, m.bias)   # frozen path dropped too
    torch.testing.assert_close(_train_output(m, x, 9), want)
    m.eval()
    torch.testing.assert_close(m(x), F.linear(x, W, m.bias))


def test_lorma_gpt2_stores_dropout_and_never_applies_it_and_says_so():
    # LoRMA gpt2_ft_lorma_plus.py:76-77 stores it; model_lorma_plus.py never reads it
    c = lora.MethodConfig(method="lorma_plus", r=4, alpha=32, dropout=0.1, pipeline="gpt2")
    m = layer(c)
    with torch.no_grad():
        m.lora_A.normal_()
    x = torch.randn(6, 16)
    assert torch.equal(_train_output(m, x, 1), _train_output(m, x, 2))
    assert any("never" in n and "--lorma_dropout_site" in n for n in c.notes())
    applied = layer(lora.MethodConfig(method="lorma_plus", r=4, alpha=32, dropout=0.5,
                                      options={"dropout_site": "adapter"}, pipeline="gpt2"))
    with torch.no_grad():
        applied.lora_A.normal_()
    assert not torch.equal(_train_output(applied, x, 1), _train_output(applied, x, 2))


# ---------------------------------------------------------------------------- MTLoRA

def test_mtlora_gpt2_one_shared_t_over_qkv_and_c_fc_adapted():
    # MTLoRA NLG/src/model.py:94-102,189-196; xtuninglib/xtuning_layers.py:237-331
    model = gpt2("gpt2.tiny", cfg("mtlora", "gpt2", r=2))
    attn = model.transformer.h[0].attn.c_attn
    assert attn.enable_lora == [True, True, True] and attn.shared_t
    assert tuple(attn.lora_C.shape) == (6, 6)                        # (r*n, r*n), ICFM
    assert isinstance(model.transformer.h[0].mlp.c_fc, lora.MTLoRALinear)
    assert not isinstance(model.transformer.h[0].mlp.c_proj, lora.MTLoRALinear)


def test_mtlora_official_init_and_dropout_off_in_eval():
    # MTLoRA xtuning_layers.py:275-281 (init), :321-331 (forward); :203-218 is the eval bug
    m = layer(cfg("mtlora", "gpt2", r=4), fin=32, fout=96, enable=[True, True, True],
              fan_in_fan_out=True)
    assert torch.count_nonzero(m.lora_B) == 0
    assert m.lora_A.abs().max() <= 1 / math.sqrt(32)
    assert m.lora_C.abs().max() <= 1 / math.sqrt(12)              # kaiming, fan-in 3r
    m.lora_dropout = torch.nn.Dropout(0.5)
    with torch.no_grad():
        m.lora_B.normal_()
    x = torch.randn(4, 32)
    # dropout acts on the adapter input only
    Tm = m.lora_C @ m.lora_C.T
    A = m.lora_A
    Bd = torch.block_diag(*m.lora_B.view(3, 32, 4))
    delta = (32 / 4) * Bd @ Tm @ A
    torch.manual_seed(3)
    xd = F.dropout(x, 0.5, training=True)
    want = F.linear(x, m.weight.T, m.bias) + F.linear(xd, delta)
    torch.testing.assert_close(_train_output(m, x, 3), want, rtol=1e-5, atol=1e-5)
    m.eval()        # the official Linear4Module keeps it on here: a bug, not copied
    torch.testing.assert_close(m(x), F.linear(x, m.weight.T, m.bias) + F.linear(x, delta),
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- NOLA

def test_nola_gpt2_offsets_seeds_and_bases_as_the_official_model():
    # NOLA gpt/examples/NLG/src/model_nola.py:78-118 (GenerateParams), :121-198, :470, :591
    torch.manual_seed(110)
    c = lora.MethodConfig(method="nola", r=4, alpha=4.0, pipeline="gpt2",
                          options={"num_basis_A": 16, "num_basis_B": 16})
    model = GPT2LMModel(config_from_card("gpt2.tiny", method=c))
    layers = [b.attn.c_attn for b in model.transformer.h]
    # one block deep-copied: every layer has the same four seeds (q-A, q-B, v-A, v-B) ...
    assert all(torch.equal(m.nola_seed, layers[0].nola_seed) for m in layers)
    assert len(set(layers[0].nola_seed.flatten().tolist())) == 4
    # ... while _init_weights re-draws each layer's frozen offsets from N(0, 0.02)
    A0 = torch.stack([m.nola_A0 for m in layers])
    assert not torch.equal(layers[0].nola_A0, layers[1].nola_A0)
    assert 0.015 < float(A0.std()) < 0.025 and 0.015 < float(layers[0].nola_B0.std()) < 0.025
    assert all(torch.count_nonzero(m.nola_alpha) == torch.count_nonzero(m.nola_beta) == 0
               for m in layers)
    # delta W = s (B0 + G_B)(A0 + G_A) with G the official GenerateParams: not zero at init
    m = layers[1]
    with torch.no_grad():
        m.nola_alpha.normal_()
        m.nola_beta.normal_()
    w0 = m.weight.T
    x = torch.randn(3, 64)
    W = w0.clone()
    for j, i in enumerate(m.enabled_slices):
        sa, sb = m.nola_seed[j].tolist()
        A = m.nola_A0[4 * j:4 * (j + 1)] + official_nola_generate(m.nola_alpha[j].detach(), 4, 64, sa)
        B = m.nola_B0[64 * j:64 * (j + 1)] + official_nola_generate(m.nola_beta[j].detach(), 64, 4, sb)
        W[64 * i:64 * (i + 1)] += (4.0 / 4) * B @ A
    torch.testing.assert_close(m(x), F.linear(x, W, m.bias), rtol=1e-5, atol=1e-6)


def test_nola_gpt2_offsets_are_regenerated_per_layer_from_the_checkpoint(tmp_path):
    # model_nola.py:591 (_init_weights) draws each layer's A0, B0 from N(0, 0.02) with the global
    # RNG; here each layer draws an offset seed from it and the offsets from that seed (the same
    # distribution, checked above), so a checkpoint keeps the seed instead of the offsets
    from nlg.checkpoint import load_model_weights, training_state_dict
    c = lora.MethodConfig(method="nola", r=4, alpha=4.0, pipeline="gpt2",
                          options={"num_basis_A": 16, "num_basis_B": 16})
    torch.manual_seed(110)
    model = GPT2LMModel(config_from_card("gpt2.tiny", method=c))
    layers = [b.attn.c_attn for b in model.transformer.h]
    assert len({int(m.nola_offset_init[0]) for m in layers}) == len(layers)
    with torch.no_grad():
        for m in layers:
            m.nola_alpha.normal_()
            m.nola_beta.normal_()
    sd = training_state_dict(model)
    assert not any(k.endswith(("nola_A0", "nola_B0")) for k in sd)
    torch.save({"model_state_dict": sd}, tmp_path / "model.pt")
    torch.manual_seed(111)
    fresh = GPT2LMModel(config_from_card("gpt2.tiny", method=c))
    load_model_weights(fresh, tmp_path / "model.pt", require_adapter=True)
    for m, f in zip(layers, [b.attn.c_attn for b in fresh.transformer.h]):
        assert torch.equal(m.nola_A0, f.nola_A0) and torch.equal(m.nola_B0, f.nola_B0)
    x = torch.randint(0, 100, (2, 7))
    model.eval(), fresh.eval()
    assert torch.equal(fresh(x)[0], model(x)[0])


def test_gpt2_layers_start_from_one_copied_block_unless_told():
    c = cfg("lora", "gpt2", r=2)
    torch.manual_seed(0)
    copied = GPT2LMModel(config_from_card("gpt2.tiny", method=c))
    h = copied.transformer.h
    assert torch.equal(h[0].attn.c_attn.lora_A, h[1].attn.c_attn.lora_A)   # Microsoft's deepcopy
    assert not torch.equal(h[0].attn.c_attn.weight, h[1].attn.c_attn.weight)
    own = GPT2LMModel(config_from_card("gpt2.tiny", method=c, independent_layer_init=True))
    assert not torch.equal(own.transformer.h[0].attn.c_attn.lora_A,
                           own.transformer.h[1].attn.c_attn.lora_A)


def test_nola_quantized_says_it_is_the_projects_own():
    c = lora.MethodConfig(method="nola", r=8, alpha=8.0, options={"qbits": 3}, pipeline="gpt2")
    assert any("this project's implementation" in n for n in c.notes())


# ---------------------------------------------------------------------------- flag dialects

def parse(*argv, pipeline="gpt2"):
    p = lora.add_method_args(argparse.ArgumentParser())
    return lora.method_config_from_args(p.parse_args(list(argv)), pipeline=pipeline)


def test_official_flag_spellings_are_accepted():
    c = parse("--xtuning_dim", "4", "--xtuning_alpha", "32", "--xtuning_dropout", "0.1")
    assert (c.method, c.r, c.alpha, c.dropout, c.options["structure"]) == \
        ("mtlora", 4, 32.0, 0.1, "ICFM")
    assert c.targets == ("q", "k", "v", "c_fc") and c.options["shared_t"]
    c = parse("--mult_lora_dim", "4", "--mult_lora_alpha", "32", "--mult_lora_dropout", "0.1")
    assert (c.method, c.r, c.alpha, c.options["init"], c.options["dropout_site"]) == \
        ("lorma", 4, 32.0, "a_zero", "none")
    c = parse("--lora_qv", "--use_nola", "--nola_num_basis", "512", "--lora_rank", "8",
              "--lora_alpha", "8")
    assert (c.method, c.r, c.alpha, c.options["num_basis_A"], c.options["offsets"]) == \
        ("nola", 8, 8.0, 512, "normal")
    c = parse("--apply_lorma", "--lorma_r", "8", "--lorma_alpha", "8", "--do_pi", "True",
              "--adapted_weights", "qv", pipeline="roberta")
    assert (c.method, c.r, c.options["kind"], c.targets) == ("lorma", 8, "shift", ("q", "v"))
    assert parse("--lorma_r", "8", "--do_rri", "False", pipeline="roberta").options["kind"] == "none"
    assert parse("--lorma_r", "8", "--rank_inflation", "shift", pipeline="llm").options["kind"] \
        == "shift"
    c = parse("--apply_lora", "--lora_r", "8", "--lora_alpha", "16", "--method", "mtlora",
              pipeline="roberta")
    assert c.targets == ("q", "v", "c_fc", "mlp_proj") and c.r == 8


@pytest.mark.parametrize("argv,match", [
    (["--lora_dim", "4", "--xtuning_dim", "8"], "--lora_dim 4 and --xtuning_dim 8 disagree"),
    (["--use_nola", "--lora_rank", "8", "--nola_rank", "4"], "disagree"),
    (["--use_nola", "--nola_rank", "8", "--lora_alpha", "8", "--nola_c", "1"], "disagree"),
    (["--xtuning_dim", "4", "--mult_lora_alpha", "2"], "several methods"),
    (["--method", "lora", "--mult_lora_dim", "4"], "flags of 'lorma' given"),
    (["--lorma_r", "8", "--adapted_weights", "qx"], "unknown letter"),
])
def test_official_flag_spellings_that_disagree_are_errors(argv, match):
    with pytest.raises(ValueError, match=match):
        parse(*argv)


# ---------------------------------------------------------------------------- official files

def _official_file(model, method):
    """Our model's adapter written in the official code's key layout (its state_dict names)."""
    sd = {}
    for i, block in enumerate(model.transformer.h):
        a = block.attn.c_attn
        pre = f"module.transformer.h.{i}"
        if method == "lorma":
            r, D = a.r, a.slice_size
            for j, p in enumerate("qv"):
                sd[f"{pre}.attn.lora_A_{p}"] = a.lora_A[j * r:(j + 1) * r].detach().clone()
                sd[f"{pre}.attn.lora_B_{p}"] = a.lora_B[j * D:(j + 1) * D].detach().clone()
        elif method == "mtlora":
            for name, m in (("attn.c_attn", a), ("mlp.c_fc", block.mlp.c_fc)):
                for f in "ABC":
                    sd[f"{pre}.{name}.xtuning_{f}"] = getattr(m, f"lora_{f}").detach().clone()
        else:
            r, d = a.r, a.slice_size
            for j, p in enumerate(("nola_query", "nola_value")):
                sd[f"{pre}.attn.{p}.lora_A.weight"] = a.nola_A0[j * r:(j + 1) * r].clone()
                sd[f"{pre}.attn.{p}.lora_B.weight"] = a.nola_B0[j * d:(j + 1) * d].clone()
                sd[f"{pre}.attn.{p}.lora_A.seed"] = a.nola_seed[j, :1].clone()
                sd[f"{pre}.attn.{p}.lora_B.seed"] = a.nola_seed[j, 1:].clone()
                sd[f"{pre}.attn.{p}.lora_A.coefficients"] = a.nola_alpha[j].detach().clone()
                sd[f"{pre}.attn.{p}.lora_B.coefficients"] = a.nola_beta[j].detach().clone()
    from nlg.checkpoint import backbone_state_dict
    sd.update({f"module.transformer.{k}": v for k, v in backbone_state_dict(model).items()})
    return {"model_state_dict": sd}


@pytest.mark.parametrize("method,options", [
    ("lorma", {"kind": "rri"}), ("lorma", {"kind": "shift"}), ("mtlora", {"structure": "ICFM"}),
    # NOLA's official bases were drawn on the training device: its files load with that option
    ("nola", {"num_basis_A": 16, "num_basis_B": 16, "basis_device": "native"})])
@pytest.mark.filterwarnings("ignore:NOLA adapter written before")
def test_checkpoints_of_the_official_gpt2_code_load_and_compute_the_same(method, options,
                                                                       tmp_path):
    from nlg.checkpoint import load_model_weights
    c = lora.MethodConfig(method=method, r=2, alpha=4, options=options, pipeline="gpt2")
    torch.manual_seed(0)
    trained = GPT2LMModel(config_from_card("gpt2.tiny", method=c))
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if lora.is_adapter_key(n):
                p.normal_(0, 0.1)
    path = tmp_path / "official.pt"
    torch.save(_official_file(trained, method), path)
    torch.manual_seed(1)
    fresh = GPT2LMModel(config_from_card("gpt2.tiny", method=c))
    info = load_model_weights(fresh, path, require_adapter=True)
    assert info["adapter_loaded"] > 0 and info["backbone_missing"] == 0
    x = torch.randint(0, 100, (2, 7))
    trained.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x)[0], trained(x)[0])


def test_official_nola_checkpoint_with_default_bases_names_the_option(tmp_path):
    # the official file records no origin for its bases: the default (drawn on the CPU) could
    # silently compute with other bases than a GPU-trained file's, so it asks for the option
    from nlg.checkpoint import load_model_weights
    c = lora.MethodConfig(method="nola", r=2, alpha=4, pipeline="gpt2",
                          options={"num_basis_A": 16, "num_basis_B": 16})
    trained = GPT2LMModel(config_from_card("gpt2.tiny", method=c))
    path = tmp_path / "official.pt"
    torch.save(_official_file(trained, "nola"), path)
    with pytest.raises(ValueError, match="official.pt.*nola_config.*--nola_basis_device native"):
        load_model_weights(GPT2LMModel(config_from_card("gpt2.tiny", method=c)), path)


@pytest.mark.parametrize("method,options", [("lorma_plus", {}), ("mtlora", {})])
def test_adapters_of_the_official_nlu_code_load_and_compute_the_same(method, options, tmp_path):
    """LoRMA's NLU files name the wrapped weight `original_layer`; MTLoRA's name the factors
    xtuning_* and carry a never-used key_proj adapter."""
    from nlu.roberta import load_weights
    c = lora.MethodConfig(method=method, r=2, alpha=4, options=options, pipeline="roberta")
    torch.manual_seed(0)
    trained = RobertaForSequenceClassification(roberta_card("roberta-tiny", num_labels=2,
                                                            method=c))
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if lora.is_adapter_key(n):
                p.normal_(0, 0.1)
    official = {}
    for k, v in trained.state_dict().items():
        if method == "lorma_plus" and k.endswith((".query.weight", ".query.bias",
                                                  ".value.weight", ".value.bias")):
            k = k.rsplit(".", 1)[0] + ".original_layer." + k.rsplit(".", 1)[1]
        if method == "mtlora" and ".lora_" in k:
            k = k.replace(".lora_", ".xtuning_")
            if ".attention.self.query." in k:
                official[k.replace(".query.", ".key_proj.")] = torch.zeros_like(v)
        official[k] = v
    path = tmp_path / "official.bin"
    torch.save(official, path)
    torch.manual_seed(1)
    fresh = RobertaForSequenceClassification(roberta_card("roberta-tiny", num_labels=2, method=c))
    load_weights(fresh, path, log=lambda *a: None)
    x = torch.randint(3, 100, (2, 9))
    trained.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), trained(x))


@pytest.mark.parametrize("mode,expected", [("pre", 18_874_368), ("post", 13_631_488)])
def test_official_llama3_8b_math_counts(mode, expected):
    """LoRMA's run_math_lorma.sh: r=8 on up/down/o/gate of Llama-3-8B (train_math_lorma.py
    prints 'Trainable Parameters: N')."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8,
                                   vocab_size=128256)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg)
    c = lora.MethodConfig(method="lorma", r=8, alpha=16, options={"kind": "rri", "mode": mode},
                          pipeline="llm")
    assert len(lora.inject(model, c, ["up_proj", "down_proj", "o_proj", "gate_proj"])) == 128
    assert lora.count_parameters(model)[0] == expected
