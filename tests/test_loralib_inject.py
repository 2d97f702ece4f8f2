"""loralib.inject / merge_and_unload / save_adapter / load_adapter on Hugging Face models
(tiny random configs): every method and variant of the contract matrix, and PEFT both ways."""
import json

import pytest
import torch

import loralib as lora
from loralib_cases import VARIANT_IDS, VARIANTS, identity_at_init

transformers = pytest.importorskip("transformers")


def tiny(kind):
    torch.manual_seed(0)
    if kind == "gpt2":
        m = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, vocab_size=96, n_positions=32, bos_token_id=0,
            eos_token_id=0))
        return m, ["c_attn", "c_fc"], {"c_attn": [True, False, True]}
    if kind == "llama":
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=96, max_position_embeddings=32, bos_token_id=0,
            eos_token_id=0, pad_token_id=0))
        return m, ["q_proj", "v_proj", "down_proj"], None
    m = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=96, max_position_embeddings=40, num_labels=3))
    return m, r"roberta\.encoder\.layer\.\d+\.attention\.self\.(query|value)", None


def out(model, x):
    o = model(x)
    return o.logits


INPUT = torch.randint(3, 96, (2, 7), generator=torch.Generator().manual_seed(5))
MODELS = ["gpt2", "llama", "roberta"]


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("method,options", VARIANTS, ids=VARIANT_IDS)
def test_inject_contract_on_hugging_face_models(kind, method, options):
    model, targets, enable = tiny(kind)
    model.eval()
    base = out(model, INPUT).detach()
    weights = {n: p for n, p in model.named_parameters()}
    cfg = lora.MethodConfig(method=method, r=2, alpha=4.0, options=options)
    names = lora.inject(model, cfg, targets, enable=enable)
    assert names and all(isinstance(model.get_submodule(n), lora.AdaptedLinear) for n in names)
    for n in names:   # the frozen weight is kept, not copied
        assert model.get_submodule(n).weight is weights[n + ".weight"]
    if kind == "gpt2":
        assert model.transformer.h[0].attn.c_attn.enable_lora == [True, False, True]
    got = out(model, INPUT)
    if identity_at_init(method, options):
        torch.testing.assert_close(got, base, rtol=1e-5, atol=1e-5)
    # only the adapter trains
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(lora.is_adapter_key(n) for n in trainable)
    got.float().pow(2).mean().backward()
    assert all((p.grad is not None) == (n in trainable) for n, p in model.named_parameters())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in trainable:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.2)
    adapted = out(model, INPUT).detach()
    assert (adapted - base).abs().max() > 1e-3 * base.abs().max()
    lora.merge_and_unload(model)
    assert not any(isinstance(m, lora.AdaptedLinear) and m.has_adapter for m in model.modules())
    assert not any(lora.is_adapter_key(n) for n in model.state_dict())
    merged = out(model, INPUT)
    assert ((merged - adapted).abs().max() / adapted.abs().max()) < 1e-5


def test_inject_errors_name_the_pattern():
    model, _, _ = tiny("llama")
    cfg = lora.MethodConfig(method="lora", r=2)
    with pytest.raises(ValueError, match="'qq_proj'"):
        lora.inject(model, cfg, ["qq_proj"])
    with pytest.raises(TypeError, match="embed_tokens.*Embedding"):
        lora.inject(model, cfg, ["embed_tokens"])
    with pytest.raises(ValueError, match="adds no adapter"):
        lora.inject(model, lora.MethodConfig(method="full"), ["q_proj"])


@pytest.mark.parametrize("method,options", [("lora", {}), ("lorma", {"kind": "shift"}),
                                            ("mtlora", {"shared_t": True}),
                                            ("nola", {"num_basis_A": 8, "num_basis_B": 8,
                                                      "qbits": 3})])
def test_save_and_load_adapter_round_trip(tmp_path, method, options):
    model, targets, enable = tiny("gpt2")
    cfg = lora.MethodConfig(method=method, r=2, alpha=4.0, options=options)
    lora.inject(model, cfg, targets, enable=enable)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.2)
    model.eval()
    want = out(model, INPUT)
    lora.save_adapter(model, tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "adapter_config.json").read_text())["loralib"]
    assert meta["method"] == method and meta["r"] == 2 and meta["alpha"] == 4.0
    assert meta["options"] == cfg.options and meta["loralib_version"] == lora.__version__
    assert meta["base_model"]["class"] == "GPT2LMHeadModel" and meta["enable"] == enable
    fresh, _, _ = tiny("gpt2")           # same base weights, no adapter yet
    got = lora.load_adapter(fresh, tmp_path / "a")
    assert got.to_dict() == cfg.to_dict()
    fresh.eval()
    torch.testing.assert_close(out(fresh, INPUT), want)
    other, _, _ = tiny("llama")
    with pytest.raises(ValueError, match="matched no module"):
        lora.load_adapter(other, tmp_path / "a")


peft = pytest.importorskip("peft")


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_peft_loads_our_lora_folder(tmp_path, kind):
    model, _, _ = tiny(kind)
    targets = ["q_proj", "v_proj"] if kind == "llama" else ["c_attn"]
    lora.inject(model, lora.MethodConfig(method="lora", r=4, alpha=8.0), targets)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    model.eval()
    want = out(model, INPUT)
    lora.save_adapter(model, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["peft_type"] \
        == "LORA"
    base, _, _ = tiny(kind)
    theirs = peft.PeftModel.from_pretrained(base, str(tmp_path / "ours"))
    theirs.eval()
    torch.testing.assert_close(out(theirs, INPUT), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_our_load_adapter_reads_a_folder_peft_saved(tmp_path, kind):
    base, _, _ = tiny(kind)
    targets = ["q_proj", "v_proj"] if kind == "llama" else ["c_attn"]
    pm = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                   fan_in_fan_out=kind == "gpt2",
                                                   init_lora_weights=False))
    pm.eval()
    want = out(pm, INPUT)
    pm.save_pretrained(str(tmp_path / "theirs"))
    ours, _, _ = tiny(kind)
    cfg = lora.load_adapter(ours, tmp_path / "theirs")
    assert (cfg.method, cfg.r, cfg.alpha) == ("lora", 4, 8.0)
    ours.eval()
    torch.testing.assert_close(out(ours, INPUT), want, rtol=1e-5, atol=1e-5)


def test_the_readme_example_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Using loralib in your own model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    meta = json.loads((tmp_path / "my_adapter" / "adapter_config.json").read_text())["loralib"]
    assert meta["method"] == "lorma" and len(meta["modules"]) == 8
    merged = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "merged_model")
    assert not any(lora.is_adapter_key(n) for n in merged.state_dict())


@pytest.mark.parametrize("method,options", VARIANTS, ids=VARIANT_IDS)
def test_adapters_are_fp32_on_a_bf16_base_unless_asked(method, options):
    model, targets, _ = tiny("llama")
    model.to(torch.bfloat16)
    cfg = lora.MethodConfig(method=method, r=2, alpha=4.0, options=options)
    lora.inject(model, cfg, targets)
    adapter = {n: p for n, p in model.state_dict().items() if lora.is_adapter_key(n)}
    floats = {n: p for n, p in adapter.items() if p.is_floating_point()}
    assert floats and all(p.dtype == torch.float32 for p in floats.values()), \
        {n: p.dtype for n, p in floats.items()}
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):      # the bf16 recipe: autocast
        model(INPUT).logits.float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32
               for p in model.parameters() if p.requires_grad)
    same, _, _ = tiny("llama")
    same.to(torch.bfloat16)
    lora.inject(same, cfg, targets, adapter_dtype=None)      # follow the weight's dtype
    assert all(p.dtype == torch.bfloat16 for n, p in same.state_dict().items()
               if lora.is_adapter_key(n) and p.is_floating_point())
    with pytest.raises(TypeError, match="adapter_dtype"):
        lora.inject(tiny("llama")[0], cfg, targets, adapter_dtype=torch.int8)


def test_inject_stays_the_function_after_load_adapter_came_first(tmp_path, repo_root):
    """load_adapter imports the inject machinery; a program that loads an adapter before it
    ever calls loralib.inject must still find the function there, not the submodule."""
    import subprocess
    import sys
    model, targets, _ = tiny("llama")
    model.save_pretrained(tmp_path / "base")
    lora.inject(model, lora.MethodConfig(method="nola", r=2), targets)
    lora.save_adapter(model, tmp_path / "a")
    code = ("import transformers, loralib as lora\n"
            "m = transformers.LlamaForCausalLM.from_pretrained("
            f"{str(tmp_path / 'base')!r})\n"
            f"lora.load_adapter(m, {str(tmp_path / 'a')!r})\n"
            "assert callable(lora.inject), type(lora.inject)\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
