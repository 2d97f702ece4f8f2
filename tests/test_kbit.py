"""loralib on 4-bit and 8-bit bases (bitsandbytes Linear4bit NF4 / FP4, with and without double
quantization, and Linear8bitLt), quantized on the CPU as transformers loads QLoRA's bases: every
method through `inject`, against the same adapter on the dequantized twin of the model."""
import copy
import json
import subprocess
import sys

import pytest
import torch

import loralib as lora
from kbit_cases import KINDS, dequantized_twin, load_quantized, tiny_llama
from loralib_cases import VARIANT_IDS, VARIANTS, identity_at_init

transformers = pytest.importorskip("transformers")
bnb = pytest.importorskip("bitsandbytes")

TARGETS = ["q_proj", "v_proj", "down_proj"]
X = torch.randint(2, 128, (2, 9), generator=torch.Generator().manual_seed(3))
# one variant of each family, LoRMA's weight-space path (shift, post) among them
FAMILIES = [("lora", {}), ("lorma", {"kind": "rri", "mode": "pre"}),
            ("lorma", {"kind": "shift", "mode": "post"}), ("mtlora", {"structure": "ICFM"}),
            ("nola", {"num_basis_A": 40, "num_basis_B": 30})]
CASES = [("nf4-dq", m, o, i) for (m, o), i in zip(VARIANTS, VARIANT_IDS)] + \
    [(k, m, o, "-".join([m] + [f"{a}={b}" for a, b in o.items() if "basis" not in a]))
     for k in KINDS if k != "nf4-dq" for m, o in FAMILIES]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("kbit") / "base")


_MODELS = {}


def quantized(base_dir, kind, dtype=torch.float32):
    """A fresh copy of the tiny model quantized as `kind` (loaded once per kind)."""
    key = (str(base_dir), kind, dtype)
    if key not in _MODELS:
        _MODELS[key] = load_quantized(base_dir, kind, dtype).eval()
    return copy.deepcopy(_MODELS[key])


def logits(model):
    return model(X).logits


def perturb(model, seed=1, scale=0.2):
    """Move every trainable tensor away from its initial value (a trained adapter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * scale)


def close(a, b, rel=1e-5):
    err = (a - b).abs().max() / b.abs().max()
    assert err < rel, f"relative difference {err:.2e}"


@pytest.mark.parametrize("kind,method,options", [c[:3] for c in CASES],
                         ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_every_method_on_every_kbit_base(base_dir, kind, method, options):
    model = quantized(base_dir, kind)
    base_out = logits(model).detach()
    twin = dequantized_twin(model)
    cfg = lora.MethodConfig(method=method, r=2, alpha=4.0, options=options)
    names = lora.inject(model, cfg, TARGETS)
    layer = model.get_submodule(names[0])
    assert isinstance(layer, lora.kbit.KbitLayer) and layer.kbit_kind == ("8bit" if kind == "int8"
                                                                        else "4bit")
    assert isinstance(layer.base_layer, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))
    assert layer.weight is layer.base_layer.weight        # the packed weight, not a copy
    torch.manual_seed(0)
    lora.inject(twin, cfg, TARGETS)
    # the same adapter tensors (and NOLA seeds, offsets) in both: the k-bit model's state loads
    # into the plain twin
    lora.load_lora_state_dict(twin, lora.lora_state_dict(model))
    # W0 through the base's kernel (LoRA, NOLA, MTLoRA, LoRMA_+) or dequantized (LoRMA's
    # weight-space kinds): identity at init against the quantized model itself, or its twin
    through_kernel = not (method == "lorma" and options.get("kind") != "rri")
    # LLM.int8() also quantizes the activations: no dequantized model computes its product, and
    # the layers left int8 keep the k-bit model's logits off its twin's; there the adapted
    # layers are compared alone
    whole = kind != "int8"
    h = torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(4))
    if identity_at_init(method, options):
        if whole or through_kernel:
            close(logits(model), base_out)
        else:
            close(layer(h), twin.get_submodule(names[0])(h))
    # only the adapter trains, and its gradients are those of the plain twin
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(lora.is_adapter_key(n) for n in trainable)
    perturb(model)
    lora.load_lora_state_dict(twin, lora.lora_state_dict(model))
    packed = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    logits(model).pow(2).mean().backward()
    assert all((p.grad is not None) == (n in trainable) for n, p in model.named_parameters())
    adapted = logits(model).detach()
    twin_out = logits(twin)
    if not whole and not through_kernel:
        close(layer(h), twin.get_submodule(names[0])(h))
    if whole:
        close(adapted, twin_out)
        twin_out.pow(2).mean().backward()
        grads = {n: p.grad for n, p in twin.named_parameters() if p.requires_grad}
        for n, p in model.named_parameters():
            if p.requires_grad:
                close(p.grad, grads[n], rel=1e-4)
    assert (adapted - base_out).abs().max() > 1e-3 * base_out.abs().max()
    # merging: nn.Linear layers holding dequantize(W0) + delta W, in the compute dtype: the
    # twin's merged weights
    lora.merge_and_unload(model)
    lora.merge_and_unload(twin)
    for n in names:
        layer = model.get_submodule(n)
        assert type(layer) is torch.nn.Linear and layer.weight.dtype == torch.float32
        close(layer.weight, twin.get_submodule(n).weight)
    assert not any(lora.is_adapter_key(n) for n in model.state_dict())
    assert all(torch.equal(p, packed[n]) for n, p in model.named_parameters() if n in packed)
    if whole:
        close(logits(model), twin_out)
        close(logits(model), adapted)


def test_bf16_compute_keeps_fp32_adapters_unless_told(base_dir):
    """A bf16 4-bit base (QLoRA's --bf16): fp32 adapters by default, identity at init without
    autocast; adapter_dtype=None gives the compute dtype (never the packed uint8)."""
    model = quantized(base_dir, "nf4-dq", torch.bfloat16)
    base_out = logits(model).detach()
    lora.inject(model, lora.MethodConfig(method="nola", r=2, alpha=4.0,
                                         options={"num_basis_A": 8, "num_basis_B": 8}), TARGETS)
    dtypes = {p.dtype for n, p in model.named_parameters() if lora.is_adapter_key(n)}
    assert dtypes == {torch.float32}
    out = logits(model)
    assert out.dtype == base_out.dtype and torch.equal(out, base_out)
    other = quantized(base_dir, "nf4-dq", torch.bfloat16)
    lora.inject(other, lora.MethodConfig(method="lora", r=2), TARGETS, adapter_dtype=None)
    assert {p.dtype for n, p in other.named_parameters() if lora.is_adapter_key(n)} == \
        {torch.bfloat16}
    perturb(other)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits(other).float().pow(2).mean().backward()


@pytest.mark.parametrize("method,options", [("lora", {}), ("nola", {"num_basis_A": 16,
                                                                    "num_basis_B": 16}),
                                            ("lorma", {"kind": "shift"})], ids=str)
def test_adapter_folder_round_trip(base_dir, tmp_path, method, options):
    model = quantized(base_dir, "nf4-dq")
    lora.inject(model, lora.MethodConfig(method=method, r=2, alpha=4.0, options=options),
                TARGETS)
    perturb(model)
    lora.save_adapter(model, tmp_path / "a")
    again = quantized(base_dir, "nf4-dq")
    lora.load_adapter(again, tmp_path / "a")
    assert isinstance(again.get_submodule("model.layers.0.self_attn.q_proj"), lora.kbit.KbitLayer)
    mine, theirs = lora.lora_state_dict(model), lora.lora_state_dict(again)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert torch.equal(logits(again), logits(model))


def test_peft_reads_and_writes_lora_on_a_4bit_base(base_dir, tmp_path):
    peft = pytest.importorskip("peft")
    model = quantized(base_dir, "nf4-dq")
    lora.inject(model, lora.MethodConfig(method="lora", r=2, alpha=4.0), TARGETS)
    perturb(model)
    ours = logits(model).detach()
    lora.save_adapter(model, tmp_path / "ours")
    cfg = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA"
    theirs = peft.PeftModel.from_pretrained(quantized(base_dir, "nf4-dq"), tmp_path / "ours")
    assert torch.equal(logits(theirs), ours)
    # and back: a folder PEFT wrote on the 4-bit base loads here with PEFT's logits
    pm = peft.get_peft_model(quantized(base_dir, "nf4-dq"), peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    pm.save_pretrained(tmp_path / "peft")
    back = quantized(base_dir, "nf4-dq")
    lora.load_adapter(back, tmp_path / "peft")
    close(logits(back), logits(pm).detach())


def test_merge_in_place_is_refused_with_the_way_out(base_dir):
    model = quantized(base_dir, "int8")
    lora.inject(model, lora.MethodConfig(method="lora", r=2), TARGETS)
    with pytest.raises(ValueError, match="merge_and_unload"):
        model.model.layers[0].self_attn.q_proj.merge()
    with pytest.raises(ValueError, match="cannot merge in place into a 8bit"):
        lora.merge_all(model)


@pytest.mark.parametrize("kind", ["nf4-dq", "fp4", "int8"])
def test_requantized_merge_keeps_the_base_kind(base_dir, kind):
    model = quantized(base_dir, kind)
    lora.inject(model, lora.MethodConfig(method="lora", r=2, alpha=4.0), TARGETS)
    perturb(model)
    layer = model.model.layers[0].self_attn.q_proj
    old = layer.base_layer
    merged = layer._merged_value()
    lora.merge_and_unload(model, requantize=True)
    new = model.model.layers[0].self_attn.q_proj
    assert type(new) is type(old)
    # what a fresh quantization of dequantize(W0) + delta W gives, with the base's settings
    if kind == "int8":
        fresh = bnb.nn.Int8Params(merged.cpu(), requires_grad=False, has_fp16_weights=False)
        fresh = fresh.to("cpu")
        assert torch.equal(new.weight.data, fresh.data) and torch.equal(new.weight.SCB, fresh.SCB)
        return
    w = old.weight
    assert (new.weight.quant_type, new.weight.compress_statistics, new.weight.blocksize) == \
        (w.quant_type, w.compress_statistics, w.blocksize)
    fresh = bnb.nn.Params4bit(merged.to(w.quant_state.dtype), requires_grad=False,
                              blocksize=w.blocksize, compress_statistics=w.compress_statistics,
                              quant_type=w.quant_type).to("cpu")
    assert torch.equal(lora.kbit.dequantize(new),
                       bnb.functional.dequantize_4bit(fresh.data, fresh.quant_state))


def test_the_cpu_inference_repacking_is_kept_off(base_dir):
    """On CPUs with AVX512-BF16 bitsandbytes repacks a 4-bit weight for its CPU kernel at an
    eval forward, rounding the block scales to bf16: W0 would change between training and
    evaluation. An adapted layer keeps the training format; a weight repacked before is refused
    by name."""
    model = quantized(base_dir, "nf4-dq")
    layer = model.model.layers[0].self_attn.q_proj
    layer.support_avx512bf16_for_cpu = True     # as on such a CPU
    lora.inject(model, lora.MethodConfig(method="lora", r=2), TARGETS)
    assert layer.support_avx512bf16_for_cpu is False
    other = quantized(base_dir, "nf4-dq").model.layers[0].self_attn.q_proj
    w = other.weight
    w.data, w.quant_state = bnb.functional._convert_weight_packed_for_cpu(w.data, w.quant_state)
    with pytest.raises(ValueError, match="repacked .* for CPU inference"):
        lora.kbit.dequantize(other)


def test_kbit_modules_are_known_by_class_and_package():
    class Linear4bit(torch.nn.Linear):      # a user's own class of that name
        pass
    assert lora.kbit.kind(Linear4bit(4, 4)) is None
    assert lora.kbit.kind(bnb.nn.LinearNF4(64, 64)) == "4bit"
    assert lora.kbit.kind(bnb.nn.Linear8bitLt(64, 64)) == "8bit"
    with pytest.raises(ValueError, match="not quantized yet"):
        lora.inject(torch.nn.Sequential(bnb.nn.LinearNF4(64, 64)),
                    lora.MethodConfig(method="lora", r=2), ["0"], adapter_dtype=None)


def test_loralib_needs_no_bitsandbytes(repo_root):
    """loralib (inject, its k-bit file included) imports with bitsandbytes unavailable."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'bitsandbytes': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch, loralib as lora, loralib.kbit\n"
        "m = torch.nn.Sequential(torch.nn.Linear(8, 8))\n"
        "lora.inject(m, lora.MethodConfig(method='nola', r=2), ['0'])\n"
        "m(torch.randn(2, 8)); lora.merge_and_unload(m)\n"
        "assert 'bitsandbytes' not in sys.modules\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_under_autocast_the_4bit_layer_answers_in_its_input_dtype_as_peft(base_dir, tmp_path):
    """PEFT's (and NOLA's official) LoRA on a Linear4bit under autocast: the base kernel gets
    the fp32 input (qlora.py's fp32 norms feed it) and returns fp32, the update is added in
    fp32. loralib's k-bit layer does the same (not the autocast dtype of a plain layer)."""
    peft = pytest.importorskip("peft")
    model = quantized(base_dir, "nf4-dq", torch.bfloat16)
    lora.inject(model, lora.MethodConfig(method="lora", r=2, alpha=4.0), TARGETS)
    perturb(model)
    lora.save_adapter(model, tmp_path / "a")
    theirs = peft.PeftModel.from_pretrained(quantized(base_dir, "nf4-dq", torch.bfloat16),
                                            tmp_path / "a")
    h = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = model.model.layers[0].self_attn.q_proj(h)
        want = theirs.base_model.model.model.layers[0].self_attn.q_proj(h)
    assert ours.dtype == want.dtype == torch.float32
    close(ours.detach(), want.detach(), rel=2e-2)       # (PEFT's update is a bf16 product)
