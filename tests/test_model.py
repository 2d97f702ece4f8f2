"""GPT-2 model: equality with Hugging Face, the decoding interface, the loss formulas."""
import json

import pytest
import torch

import loralib as lora
from nlg.model import GPT2Config, GPT2LMModel, config_from_card

TINY = dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4)


def random_model(seed=0, **kw):
    torch.manual_seed(seed)
    m = GPT2LMModel(GPT2Config(**{**TINY, **kw})).eval()
    with torch.no_grad():  # larger weights than the 0.02 init so that differences show
        for n, p in m.named_parameters():
            p.normal_(0, 0.3 if p.dim() > 1 else 0.1)
    return m


def hf_model_and_published_sd(seed=0):
    transformers = pytest.importorskip("transformers")
    hc = transformers.GPT2Config(vocab_size=TINY["vocab_size"], n_positions=TINY["n_positions"],
                                 n_embd=TINY["n_embd"], n_layer=TINY["n_layer"],
                                 n_head=TINY["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                                 attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(hc).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    # published layout: keys without the "transformer." prefix, lm_head tied (absent)
    sd = {k[len("transformer."):]: v.clone() for k, v in hf.state_dict().items()
          if k.startswith("transformer.")}
    return hf, sd


def test_logits_equal_huggingface():
    hf, sd = hf_model_and_published_sd()
    ours = GPT2LMModel(GPT2Config(**TINY)).eval()
    ours.load_weight(sd)
    x = torch.randint(0, TINY["vocab_size"], (3, 21))
    with torch.no_grad():
        ref = hf(x).logits
        got, presents = ours(x)
    assert (ref - got).abs().max().item() < 1e-4
    assert len(presents) == TINY["n_layer"]
    assert presents[0].shape == (2, 3, TINY["n_head"], 21, TINY["n_embd"] // TINY["n_head"])


def test_loads_published_layout_with_attention_buffers_and_prefixes():
    hf, sd = hf_model_and_published_sd(1)
    x = torch.randint(0, TINY["vocab_size"], (2, 9))
    with torch.no_grad():
        ref = hf(x).logits
    variants = {
        "published+buffers": {**sd, **{f"h.{i}.attn.bias": torch.tril(torch.ones(1, 1, 64, 64))
                                       for i in range(2)},
                              **{f"h.{i}.attn.masked_bias": torch.tensor(-1e4) for i in range(2)}},
        "module.transformer.": {"model_state_dict": {"module.transformer." + k: v
                                                     for k, v in sd.items()}},
        "module.": {"module." + k: v for k, v in sd.items()},
        "hf full": {**{"transformer." + k: v for k, v in sd.items()},
                    "lm_head.weight": sd["wte.weight"]},
    }
    for name, state in variants.items():
        m = GPT2LMModel(GPT2Config(**TINY)).eval()
        m.load_weight(state)
        with torch.no_grad():
            assert (m(x)[0] - ref).abs().max().item() < 1e-4, name


def test_missing_backbone_is_an_error_listing_keys():
    _, sd = hf_model_and_published_sd()
    del sd["h.1.mlp.c_fc.weight"], sd["ln_f.bias"]
    m = GPT2LMModel(GPT2Config(**TINY))
    with pytest.raises(ValueError, match=r"missing 2 .*h\.1\.mlp\.c_fc\.weight.*ln_f\.bias"):
        m.load_weight(sd)
    m.load_weight(sd, random_init=True)  # explicit opt-in


def test_wrong_shape_and_unknown_keys_are_errors():
    _, sd = hf_model_and_published_sd()
    m = GPT2LMModel(GPT2Config(**{**TINY, "n_layer": 1}))
    with pytest.raises(ValueError, match=r"does not have.*h\.1\."):
        m.load_weight(sd)
    m = GPT2LMModel(GPT2Config(**{**TINY, "vocab_size": 50}))
    with pytest.raises(ValueError, match=r"wte\.weight has shape"):
        m.load_weight(sd)


def _full_logits(m, ids):
    with torch.no_grad():
        return m(ids)[0]


def test_incremental_decoding_equals_full_forward():
    m = random_model(2)
    ids = torch.randint(0, TINY["vocab_size"], (2, 12))
    full = _full_logits(m, ids)
    with torch.no_grad():
        logits, past = m(ids[:, :7])
        assert (logits - full[:, :7]).abs().max() < 1e-5
        for t in range(7, 12):
            step, past = m(ids[:, t:t + 1], past=past)
            assert (step[:, 0] - full[:, t]).abs().max() < 1e-5
        # several new tokens on top of a cache (causal mask with an offset)
        _, past = m(ids[:, :5])
        chunk, _ = m(ids[:, 5:12], past=past)
        assert (chunk - full[:, 5:12]).abs().max() < 1e-5
        # beam-style reorder of the cache
        idx = torch.tensor([1, 1, 0])
        _, past = m(ids[:, :6])
        past = [p.index_select(1, idx) for p in past]
        step, _ = m(ids[idx, 6:7], past=past)
        assert (step[:, 0] - full[idx, 6]).abs().max() < 1e-5


def test_left_padded_batch_prefill_and_steps_equal_unpadded():
    m = random_model(3)
    V = TINY["vocab_size"]
    lengths = [9, 5, 7]
    seqs = [torch.randint(1, V, (n + 4,)) for n in lengths]  # prompt + 4 generated tokens
    P = max(lengths)
    ids = torch.zeros(3, P, dtype=torch.long)
    am = torch.zeros(3, P, dtype=torch.long)
    for b, (s, n) in enumerate(zip(seqs, lengths)):
        ids[b, P - n:] = s[:n]
        am[b, P - n:] = 1
    with torch.no_grad():
        last, past = m.lm_logits_last(ids, attention_mask=am)
        full0 = [_full_logits(m, s[None])[0] for s in seqs]
        for b, n in enumerate(lengths):
            assert (last[b] - full0[b][n - 1]).abs().max() < 1e-5
            # prefill logits at real positions equal the unpadded forward too
            pre, _ = m(ids[b:b + 1], attention_mask=am[b:b + 1])
            assert (pre[0, P - n:] - full0[b][:n]).abs().max() < 1e-5
        for t in range(4):
            nxt = torch.stack([s[n + t] for s, n in zip(seqs, lengths)])[:, None]
            am = torch.cat([am, torch.ones(3, 1, dtype=torch.long)], 1)
            step, past = m(nxt, past=past, attention_mask=am)
            for b, n in enumerate(lengths):
                assert (step[b, 0] - full0[b][n + t]).abs().max() < 1e-5
        assert torch.isfinite(step).all()


def test_len_past_fixed_cache_matches_full_forward():
    """Microsoft's len_past mode: a preallocated cache written at each row's own length."""
    m = random_model(4)
    V = TINY["vocab_size"]
    seqs = [torch.randint(0, V, (8,)), torch.randint(0, V, (8,))]
    lens = [5, 3]
    with torch.no_grad():
        caches = []
        for s, n in zip(seqs, lens):
            _, p = m(s[None, :n])
            caches.append(p)
        S = 10
        past = []
        for layer in range(TINY["n_layer"]):
            buf = torch.zeros(2, 2, TINY["n_head"], S, TINY["n_embd"] // TINY["n_head"])
            for b, n in enumerate(lens):
                buf[:, b, :, :n] = caches[b][layer][:, 0]
            past.append(buf)
        len_past = torch.tensor(lens)
        for t in range(3):
            tok = torch.stack([s[n + t] for s, n in zip(seqs, lens)])[:, None]
            step, past = m(tok, past=past, len_past=len_past + t)
            for b, (s, n) in enumerate(zip(seqs, lens)):
                ref = _full_logits(m, s[None, :n + t + 1])[0, -1]
                assert (step[b, 0] - ref).abs().max() < 1e-5


def reference_loss(logits, labels, mask, eps):
    """Microsoft's formula, written out: (1-eps) NLL + eps * mean_V(-log p), masked mean."""
    logprobs = torch.log_softmax(logits.reshape(-1, logits.size(-1)).double(), -1)
    nll = -logprobs.gather(-1, labels.reshape(-1, 1)).squeeze(1)
    loss = (1 - eps) * nll + eps * (-logprobs.mean(-1)) if eps > 0.0001 else nll
    loss = loss.view(labels.shape) * mask
    return loss.sum() / (mask.sum() + 0.0001)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_and_masked_logits(eps):
    m = random_model(5)
    ids = torch.randint(0, TINY["vocab_size"], (3, 10))
    labels = torch.randint(0, TINY["vocab_size"], (3, 10))
    mask = torch.zeros(3, 10)
    mask[0, 4:9] = 1
    mask[1, 2:10] = 1
    mask[2, 7:8] = 1
    with torch.no_grad():
        full = m(ids)[0]
        packed, loss = m(ids, lm_labels=labels, lm_mask=mask, label_smooth=eps)
        _, loss_sum = m(ids, lm_labels=labels, lm_mask=mask, label_smooth=eps, reduction="sum")
    ref = reference_loss(full, labels, mask, eps)
    assert abs(loss.item() - ref.item()) < 1e-5
    assert abs(loss_sum.item() - ref.item() * (mask.sum().item() + 0.0001)) < 1e-4
    assert packed.shape == (int(mask.sum()), TINY["vocab_size"])
    assert (packed - full[mask.bool()]).abs().max() < 1e-5
    with torch.no_grad():
        _, loss_nomask = m(ids, lm_labels=labels, label_smooth=eps)
    assert abs(loss_nomask.item() - reference_loss(full, labels, torch.ones(3, 10), eps).item()) < 1e-5


def test_report_accuracy_matches_loop():
    m = random_model(6, vocab_size=5)  # small vocabulary: some predictions are right
    torch.manual_seed(1)
    ids = torch.randint(0, 5, (6, 7))
    mask = (torch.rand(6, 7) > 0.4).float()
    mask[5] = 0  # a row without completion counts as all-correct, first-token miss
    with torch.no_grad():
        full = m(ids)[0]
        labels = full.argmax(-1)
        labels[torch.rand(6, 7) > 0.7] = 0
        _, _, t1, allacc = m(ids, lm_labels=labels, lm_mask=mask, is_report_accuracy=True)
    hit = (full.argmax(-1) == labels)
    for b in range(6):
        cols = [i for i in range(7) if mask[b, i] >= 1]
        assert t1[b].item() == (1.0 if cols and hit[b, cols[0]] else 0.0)
        assert allacc[b].item() == (1.0 if all(hit[b, i] for i in cols) else 0.0)


def test_model_cards(tmp_path):
    assert config_from_card("gpt2.md").n_embd == 1024
    assert config_from_card("gpt2.lg").n_layer == 36
    assert config_from_card("gpt2.sm").n_head == 12
    p = tmp_path / "card.json"
    p.write_text(json.dumps({"vocab_size": 300, "n_embd": 16, "n_layer": 1, "n_head": 2}))
    c = config_from_card(str(p))
    assert (c.vocab_size, c.n_embd, c.n_positions) == (300, 16, 1024)
    p.write_text(json.dumps({"n_embed": 16}))
    with pytest.raises(ValueError, match=r"card\.json.*n_embed"):
        config_from_card(str(p))
    with pytest.raises(ValueError, match="gpt2.xl"):
        config_from_card("gpt2.xl")
    assert GPT2Config(vocab_size_or_config_json_file=123).vocab_size == 123


def test_parameter_count_gpt2_medium():
    # GPT-2 medium has 354,823,168 parameters (head tied to wte): a published number
    with torch.device("meta"):
        m = GPT2LMModel(config_from_card("gpt2.md"))
    assert sum(p.numel() for p in m.parameters()) == 354_823_168


@pytest.mark.parametrize("method", [lora.MethodConfig(method="lora", r=4, alpha=8, pipeline="gpt2"),
                                    lora.MethodConfig(method="nola", r=4, alpha=8, pipeline="gpt2",
                                                      options={"num_basis_A": 8, "num_basis_B": 8})])
def test_skipping_the_backbone_init_keeps_the_adapters_a_seed_gives(method):
    """gpt2_ft builds with init_backbone=False when a checkpoint sets the backbone."""
    models = []
    for init_backbone in (True, False):
        torch.manual_seed(3)
        models.append(GPT2LMModel(GPT2Config(method=method, **TINY), init_backbone=init_backbone))
    full, light = (dict(m.named_parameters()) | dict(m.named_buffers()) for m in models)
    adapter = [k for k in full if lora.is_adapter_key(k)]
    assert adapter and all(torch.equal(full[k], light[k]) for k in adapter)
    # the backbone was drawn only in the full init (it is the checkpoint's to set)
    assert not torch.equal(full["transformer.h.0.attn.c_attn.weight"], light["transformer.h.0.attn.c_attn.weight"])
