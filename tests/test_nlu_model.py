"""NLU RoBERTa: Hugging Face equality, checkpoint formats, Microsoft's released adapter, counts."""
import warnings

import pytest
import torch

import loralib as lora  # noqa: E402
from nlu.roberta import (RobertaForSequenceClassification, config_from_card, load_weights,  # noqa: E402
                     trainable_state_dict)

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=40, type_vocab_size=1,
            layer_norm_eps=1e-5, pad_token_id=1)


def _hf_model(num_labels, cls=None):
    cls = cls or transformers.RobertaForSequenceClassification
    cfg = transformers.RobertaConfig(**TINY, num_labels=num_labels)
    torch.manual_seed(0)
    hf = cls(cfg).eval()
    # Random, non-trivial values everywhere (HF's init zeroes biases and sets LayerNorm to 1).
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return hf


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, TINY["vocab_size"], (3, 12), generator=g)
    ids[:, 0] = 0
    mask = torch.ones_like(ids)
    for row, n in ((1, 7), (2, 4)):          # right padding, as the GLUE collator writes
        ids[row, n:] = TINY["pad_token_id"]
        mask[row, n:] = 0
    return ids, mask


def _ours(num_labels, method=None):
    cfg = config_from_card("roberta-tiny", **TINY, num_labels=num_labels, method=method)
    return RobertaForSequenceClassification(cfg).eval()


@pytest.mark.parametrize("num_labels", [3, 1])   # classification, STS-B regression
def test_logits_equal_huggingface(num_labels):
    hf = _hf_model(num_labels)
    ours = _ours(num_labels)
    sd = hf.state_dict()
    assert set(sd) == set(ours.state_dict())        # the same parameter names
    ours.load_state_dict(sd)
    ids, mask = _batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        got = ours(ids, mask)
    assert got.shape == (3, num_labels)
    assert (got - ref).abs().max().item() < 1e-4
    # Padding is masked: a row's logits do not depend on what sits in its padded positions.
    ids2 = ids.clone()
    ids2[2, 4:] = 7
    with torch.no_grad():
        assert torch.allclose(ours(ids2, mask)[2], got[2], atol=1e-5)


def test_published_checkpoint_and_adapted_model_load_hf_keys(tmp_path):
    """A RobertaForMaskedLM file (the published layout: lm_head, maybe a pooler) loads into every
    projection choice, and an adapter at init leaves the logits of the plain model unchanged."""
    mlm = _hf_model(2, transformers.RobertaForMaskedLM)
    sd = dict(mlm.state_dict())
    sd["roberta.pooler.dense.weight"] = torch.zeros(32, 32)
    sd["roberta.pooler.dense.bias"] = torch.zeros(32)
    path = tmp_path / "pytorch_model.bin"
    torch.save(sd, path)
    plain = _ours(2)
    info = load_weights(plain, str(path), log=lambda *a: None)
    assert len(info["backbone"]) == len([k for k in plain.state_dict()
                                         if not k.startswith("classifier.")])
    method = lora.MethodConfig(method="lora", r=4, alpha=8,
                               targets=("q", "k", "v", "c_proj", "c_fc", "mlp_proj"))
    adapted = _ours(2, method)
    load_weights(adapted, str(path), log=lambda *a: None)
    adapted.classifier.load_state_dict(plain.classifier.state_dict())
    names = [n for n, _ in adapted.named_parameters() if "lora_" in n]
    assert "roberta.encoder.layer.1.attention.output.dense.lora_A" in names
    assert "roberta.encoder.layer.0.output.dense.lora_B" in names
    assert len(names) == 2 * 6 * 2
    ids, mask = _batch()
    with torch.no_grad():
        assert torch.allclose(adapted(ids, mask), plain(ids, mask), atol=1e-6)


def test_backbone_missing_is_an_error_unless_random_init(tmp_path):
    method = lora.MethodConfig(method="lora", r=4, alpha=8)
    src = _ours(2, method)
    with torch.no_grad():
        for n, p in src.named_parameters():
            if "lora_B" in n:
                p.normal_()
    path = tmp_path / "adapter.bin"
    torch.save(trainable_state_dict(src), path)
    assert all("lora_" in k or k.startswith("classifier.") for k in torch.load(path))
    dst = _ours(2, method)
    with pytest.raises(ValueError, match=r"backbone tensors missing.*roberta\.embeddings"):
        load_weights(dst, str(path))
    info = load_weights(dst, None, str(path), random_init=True, log=lambda *a: None)
    assert len(info["adapter"]) == 8 and len(info["classifier"]) == 4
    for k, v in trainable_state_dict(src).items():
        assert torch.equal(dst.state_dict()[k], v)
    # An adapter file for a model without adapters, or of another rank: clear errors.
    with pytest.raises(KeyError, match="no adapter"):
        load_weights(_ours(2), None, str(path), random_init=True)
    with pytest.raises(ValueError, match="lora_A"):
        load_weights(_ours(2, lora.MethodConfig(method="lora", r=2, alpha=8)), None, str(path),
                     random_init=True, log=lambda *a: None)
    bad = tmp_path / "bad.bin"
    torch.save({"roberta.encoder.layer.0.attention.self.qkv.weight": torch.zeros(3)}, bad)
    with pytest.raises(KeyError, match="qkv"):
        load_weights(_ours(2), str(bad))


def test_microsoft_mnli_adapter_loads_into_roberta_base(shared_data):
    """Microsoft's released roberta_base_lora_mnli.bin (r=8 q/v + a 3-way head) against a
    roberta-base-shaped model built on the meta device (names and shapes, no 500 MB)."""
    path = shared_data / "checkpoints" / "roberta_base_lora_mnli.bin"
    method = lora.MethodConfig(method="lora", r=8, alpha=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # copying into meta tensors is a no-op, by design here
        with torch.device("meta"):
            mnli = RobertaForSequenceClassification(
                config_from_card("roberta-base", num_labels=3, method=method))
            mrpc = RobertaForSequenceClassification(
                config_from_card("roberta-base", num_labels=2, method=method))
        with pytest.raises(ValueError, match=r"197 of 197.*--random_init"):
            load_weights(mnli, str(path))
        info = load_weights(mnli, None, str(path), random_init=True, log=lambda *a: None)
        assert len(info["adapter"]) == 48 and len(info["classifier"]) == 4
        notes = []
        info = load_weights(mrpc, None, str(path), random_init=True, log=notes.append)
        assert len(info["adapter"]) == 48 and info["classifier"] == []
        assert "classifier.out_proj.weight" in info["skipped"]
        assert any("not loaded" in n for n in notes)


@pytest.mark.parametrize("card,count", [("roberta-base", 294_912), ("roberta-large", 786_432)])
def test_trainable_count_closed_form(card, count):
    method = lora.MethodConfig(method="lora", r=8, alpha=8)
    with torch.device("meta"):
        m = RobertaForSequenceClassification(config_from_card(card, num_labels=2, method=method))
    lora.mark_only_lora_as_trainable(m)
    h = m.config.hidden_size
    assert lora.count_parameters(m)[0] == count == m.config.num_hidden_layers * 2 * 2 * 8 * h
    for p in m.classifier.parameters():
        p.requires_grad = True
    assert lora.count_parameters(m)[0] == count + h * h + h + 2 * h + 2


def test_config_json_card(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"architectures": ["RobertaForMaskedLM"], "hidden_size": 64, '
                 '"num_attention_heads": 4, "num_hidden_layers": 1, "intermediate_size": 16}')
    cfg = config_from_card(str(p), num_labels=3)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_labels) == (64, 1, 3)
    with pytest.raises(ValueError, match="unknown model card"):
        config_from_card("roberta-huge")
    p.write_text('{"hidden_size": 64,')
    with pytest.raises(ValueError, match="config.json:1"):
        config_from_card(str(p))


def test_bf16_autocast_and_length_guard():
    """Under autocast q/k/v change dtype; the boolean padding mask stays valid for SDPA."""
    ours = _ours(2)
    ids, mask = _batch()
    with torch.no_grad():
        ref = ours(ids, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = ours(ids, mask)
    assert torch.allclose(low.float(), ref, atol=5e-2, rtol=5e-2)
    too_long = torch.full((1, TINY["max_position_embeddings"]), 5)
    with pytest.raises(ValueError, match="lower --max_seq_length"):
        ours(too_long)


def test_padding_costs_nothing_and_changes_nothing():
    """Token-wise layers run on the real tokens only (roberta.Layout): a padded batch gives each
    example what it gives alone, in training (gradients) as in evaluation, and the hidden states
    of padding are zero."""
    from nlu.roberta import Layout
    torch.manual_seed(0)
    model = _ours(2, lora.MethodConfig(method="lora", r=2, alpha=4, pipeline="roberta"))
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    ids, mask = _batch()
    assert int(mask.sum()) < mask.numel()                    # the batch has padding
    feats = model.roberta(ids, mask)
    assert torch.equal(feats[mask == 0], torch.zeros_like(feats[mask == 0]))
    logits = []
    for i in range(ids.shape[0]):
        n = int(mask[i].sum())
        out = model(ids[i:i + 1, :n], mask[i:i + 1, :n])
        out.sum().backward()
        logits.append(out)
    alone = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    batch = model(ids, mask)
    batch.sum().backward()
    torch.testing.assert_close(batch, torch.cat(logits), rtol=1e-5, atol=1e-5)
    for a, b in zip(alone, [p.grad for p in model.parameters() if p.requires_grad]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    x = torch.randn(3, 5, 4)
    lay = Layout(3, 5, mask[:, :5])
    assert torch.equal(lay.pad(lay.unpad(x)), x * mask[:, :5, None])


@pytest.mark.parametrize("method", ["lora", "nola"])
def test_a_checkpointed_backbone_is_not_drawn_at_build(monkeypatch, tmp_path, method):
    """run_glue with --init_checkpoint builds with init_backbone=False: the RNG draws go to the
    adapters and the classifier head only, then the checkpoint sets the whole backbone."""
    cfg = config_from_card("roberta-tiny", **TINY, num_labels=2,
                           method=lora.MethodConfig(method=method, r=4, alpha=8, pipeline="roberta"))
    drawn = []

    def recorded(fill):                 # what torch.nn.init's functions call to draw
        def draw(t, *a, **k):
            drawn.append(t.data_ptr())
            return fill(t, *a, **k)
        return draw
    for fn in ("normal_", "uniform_"):
        monkeypatch.setattr(torch.Tensor, fn, recorded(getattr(torch.Tensor, fn)))

    def drawn_names(model):
        where = {t.data_ptr(): k for k, t in model.state_dict().items()}
        return {where.get(p, "<not kept>") for p in drawn}

    full = RobertaForSequenceClassification(cfg)
    assert any(k.startswith("roberta.") and not lora.is_adapter_key(k) for k in drawn_names(full))
    drawn.clear()
    torch.manual_seed(0)
    lean = RobertaForSequenceClassification(cfg, init_backbone=False)
    names = drawn_names(lean)
    assert names and all(lora.is_adapter_key(k) or k.startswith("classifier.") for k in names), names
    assert {"classifier.dense.weight", "classifier.out_proj.weight"} <= names
    assert any(lora.is_adapter_key(k) for k in names)          # LoRA's A, NOLA's coefficients / offsets
    torch.manual_seed(0)
    again = RobertaForSequenceClassification(cfg, init_backbone=False)
    for k, v in lean.state_dict().items():
        if lora.is_adapter_key(k) or k.startswith("classifier."):
            assert torch.isfinite(v).all() and torch.equal(v, again.state_dict()[k]), k
    path = tmp_path / "pytorch_model.bin"
    torch.save({k: v for k, v in full.state_dict().items() if not lora.is_adapter_key(k)
                and not k.startswith("classifier.")}, path)
    info = load_weights(lean, str(path), log=lambda *a: None)
    assert info["backbone"]
    for k in info["backbone"]:
        assert torch.equal(lean.state_dict()[k], full.state_dict()[k]), k
