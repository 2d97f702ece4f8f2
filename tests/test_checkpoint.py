"""checkpoint.py: file formats, clear errors, atomic writes, the published export."""
import datetime
import os

import pytest
import torch

import loralib as lora
from nlg.checkpoint import (export_published, load_model_weights, load_state_file, save_atomic,
                        training_state_dict)
from nlg.model import GPT2Config, GPT2LMModel

TINY = dict(vocab_size=61, n_positions=32, n_embd=16, n_layer=2, n_head=2)
LORA = lora.MethodConfig(method="lora", r=2, alpha=4)


def _model(method=None, seed=0):
    torch.manual_seed(seed)
    m = GPT2LMModel(GPT2Config(**TINY, method=method)).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.normal_(0, 0.3)  # adapters nonzero too, so that loading them matters
    return m


def _logits(m, x):
    with torch.no_grad():
        return m(x)[0]


X = torch.randint(0, 61, (2, 7))


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt: not a PyTorch checkpoint"):
        load_state_file(text)

    bad = tmp_path / "object.pt"
    # an arbitrary pickled object: weights_only refuses to unpickle it
    torch.save({"x": datetime.date(2020, 1, 1)}, bad)
    with pytest.raises(ValueError, match=r"object\.pt: not a PyTorch checkpoint.*datetime\.date"):
        load_state_file(bad)
    lst = tmp_path / "list.pt"
    torch.save([1, 2], lst)
    with pytest.raises(ValueError, match=r"list\.pt: expected a state dict"):
        load_state_file(lst)
    with pytest.raises(FileNotFoundError, match="nothere.bin"):
        load_state_file(tmp_path / "nothere.bin")
    with pytest.raises(ValueError, match="--random_init"):
        load_model_weights(_model())


def test_export_published_roundtrip_and_huggingface_reads_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    m = _model()
    path = export_published(m, tmp_path / "pytorch_model.bin")
    sd = torch.load(path, weights_only=True)
    assert "h.0.attn.c_attn.weight" in sd and sd["h.0.attn.c_attn.weight"].shape == (16, 48)
    assert not any(k.startswith("transformer.") for k in sd)
    again = GPT2LMModel(GPT2Config(**TINY))
    load_model_weights(again, path)
    assert torch.equal(_logits(again, X), _logits(m, X))
    hc = transformers.GPT2Config(vocab_size=61, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                 resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
                                 bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(hc).eval()
    missing, unexpected = hf.transformer.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith(("attn.bias", "attn.masked_bias")) for k in missing)
    with torch.no_grad():
        assert (hf(X).logits - _logits(m, X)).abs().max() < 1e-4


def test_safetensors_roundtrip(tmp_path):
    pytest.importorskip("safetensors")
    m = _model(seed=1)
    path = export_published(m, tmp_path / "model.safetensors")
    again = GPT2LMModel(GPT2Config(**TINY))
    load_model_weights(again, path)
    assert torch.equal(_logits(again, X), _logits(m, X))


def test_microsoft_layouts_with_adapter(tmp_path):
    """Microsoft's periodic file (module.transformer.*lora_*) + the published backbone, and its
    final file (module.transformer.* everything + module.lm_head.decoder.weight)."""
    m = _model(LORA, seed=2)
    backbone = export_published(m, tmp_path / "gpt2-pytorch_model.bin")
    adapter = {"module." + k: v for k, v in lora.lora_state_dict(m).items()}
    torch.save({"model_state_dict": adapter}, tmp_path / "model.100.pt")
    full = {"module." + k: v for k, v in m.state_dict().items()}
    full["module.lm_head.decoder.weight"] = m.transformer.wte.weight.detach()
    torch.save({"model_state_dict": full}, tmp_path / "model.200.pt")
    ref = _logits(m, X)
    for files in ({"init_checkpoint": tmp_path / "model.100.pt", "backbone_checkpoint": backbone},
                  {"init_checkpoint": backbone, "adapter_checkpoint": tmp_path / "model.100.pt"},
                  {"init_checkpoint": tmp_path / "model.200.pt"}):
        again = GPT2LMModel(GPT2Config(**TINY, method=LORA)).eval()
        info = load_model_weights(again, **files)
        assert info["adapter_loaded"] == 4
        assert torch.equal(_logits(again, X), ref), files
    # our own final layout (training_state_dict) too
    torch.save({"model_state_dict": training_state_dict(m)}, tmp_path / "final.pt")
    again = GPT2LMModel(GPT2Config(**TINY, method=LORA)).eval()
    load_model_weights(again, tmp_path / "final.pt")
    assert torch.equal(_logits(again, X), ref)


def test_adapter_mismatch_names_the_keys(tmp_path):
    m = _model(LORA)
    sd = training_state_dict(m)
    del sd["transformer.h.1.attn.c_attn.lora_B"]
    torch.save({"model_state_dict": sd}, tmp_path / "partial.pt")
    again = GPT2LMModel(GPT2Config(**TINY, method=LORA))
    with pytest.raises(KeyError, match=r"partial\.pt.*h\.1\.attn\.c_attn\.lora_B"):
        load_model_weights(again, tmp_path / "partial.pt")
    bigger = lora.MethodConfig(method="lora", r=3, alpha=4)
    again = GPT2LMModel(GPT2Config(**TINY, method=bigger))
    torch.save({"model_state_dict": training_state_dict(m)}, tmp_path / "r2.pt")
    with pytest.raises(ValueError, match=r"r2\.pt.*lora_A.*shape"):
        load_model_weights(again, tmp_path / "r2.pt")
    # an adapter model given only a backbone is fine for training, an error when asked
    backbone = export_published(m, tmp_path / "b.bin")
    with pytest.raises(ValueError, match="no adapter tensors"):
        load_model_weights(GPT2LMModel(GPT2Config(**TINY, method=LORA)), backbone,
                           require_adapter=True)


def test_save_atomic_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "model.10.pt"
    save_atomic({"w": torch.ones(3)}, target)
    real_save = torch.save

    def crash(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"w": torch.zeros(3)}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["model.10.pt"]  # no temporary file left behind
    with pytest.raises(OSError):
        monkeypatch.setattr(torch, "save", crash)
        save_atomic({"w": torch.zeros(3)}, tmp_path / "new.pt")
    assert not (tmp_path / "new.pt").exists()


def test_export_commands_write_the_merged_model(tmp_path):
    """gpt2_ft.py --export_published and `checkpoint.py export --merge` both write a published
    file whose plain model reproduces the trained adapter model."""
    from nlg import checkpoint
    from nlg.model import config_from_card
    from test_train_helpers import base_args, run_script, write_backbone, write_card, write_random_data
    card = write_card(tmp_path)
    data = write_random_data(tmp_path / "d.jsonl", 8)
    backbone = write_backbone(tmp_path / "b.bin", card)
    w = tmp_path / "w"
    run_script("gpt2_ft.py", base_args(tmp_path, data, card, backbone, w,
                                       **{"--lora_dim": 2, "--lora_alpha": 8, "--max_step": 3,
                                          "--lr": 0.05, "--save_interval": 2,
                                          "--export_published": tmp_path / "merged.bin"}))
    cfg = lora.MethodConfig(method="lora", r=2, alpha=8)
    trained = GPT2LMModel(config_from_card(card, method=cfg)).eval()
    load_model_weights(trained, w / "model.3.pt")
    x = torch.randint(0, 200, (2, 9))
    ref = _logits(trained, x)
    checkpoint.main(["export", "--model_card", card, "--init_checkpoint", str(w / "model.2.pt"),
                     "--backbone_checkpoint", backbone, "--lora_dim", "2", "--lora_alpha", "8",
                     "--merge", "--output", str(tmp_path / "cli.safetensors")])
    at2 = GPT2LMModel(config_from_card(card, method=cfg)).eval()
    load_model_weights(at2, w / "model.2.pt", backbone_checkpoint=backbone)
    for path, want in ((tmp_path / "merged.bin", ref), (tmp_path / "cli.safetensors", _logits(at2, x))):
        plain = GPT2LMModel(config_from_card(card)).eval()
        load_model_weights(plain, path)
        assert (_logits(plain, x) - want).abs().max() < 1e-5
    assert (_logits(at2, x) - ref).abs().max() > 1e-6  # step 2 and step 3 differ
    assert __import__("json").loads((w / "run_info.json").read_text())["exported_published"]
