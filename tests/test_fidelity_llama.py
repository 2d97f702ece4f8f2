"""NOLA on LLaMA as NOLA's official LLaMA code computes it (UCDvision/NOLA @ 03c7027,
llama/peft/tuners/lora.py: its PEFT 0.4 fork), against a transcription of that code kept here
(with file:line citations), not imported; and the trainable counts of NOLA's LLaMA-2 scripts
(the 7B and 70B models built on the meta device: no memory)."""
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import loralib as lora

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
LLAMA = ROOT / "NLG" / "llama"
sys.path.insert(0, str(LLAMA))
import qlora  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ------------------------------------------------------------------ the official code, transcribed

class GenerateParams(torch.autograd.Function):
    """lora.py 692-732."""

    @staticmethod
    def forward(ctx, coefficients, out_dim, in_dim, seed):
        num_basis = coefficients.shape[0]
        rand_seed = torch.randint(int(1e10), (1,))                            # :700
        torch.manual_seed(int(seed))                                          # :701
        W = torch.zeros(num_basis, out_dim, in_dim, device=coefficients.device,
                        dtype=coefficients.dtype)                             # :703-704
        nn.init.uniform_(W, a=-1.0, b=1.0)                                    # :705
        W = W * (1.0 / math.sqrt(num_basis))                                  # :706
        Out = torch.einsum('b,boi->oi', coefficients, W)                     # :707
        ctx.save_for_backward(coefficients, torch.tensor([out_dim, in_dim, int(seed)]))
        torch.manual_seed(int(rand_seed))                                     # :711
        return Out

    @staticmethod
    def backward(ctx, grad_output):
        coefficients, params = ctx.saved_tensors
        num_basis = coefficients.shape[0]
        out_dim, in_dim, seed = (int(v) for v in params)
        rand_seed = torch.randint(int(1e10), (1,))                            # :720
        torch.manual_seed(seed)
        W = torch.zeros(num_basis, out_dim, in_dim, device=coefficients.device,
                        dtype=coefficients.dtype)
        nn.init.uniform_(W, a=-1.0, b=1.0)
        W = W * (1.0 / math.sqrt(num_basis))
        W = W.permute(1, 2, 0).reshape(-1, num_basis)                         # :728
        grad_coefficients = torch.einsum('d,dl->l', grad_output.flatten(), W)  # :729
        torch.manual_seed(int(rand_seed))
        return grad_coefficients, None, None, None


class OfficialNOLALinear(nn.Linear):
    """lora.py 735-760: weight = the frozen offset, a seed, k coefficients."""

    def __init__(self, in_features, out_features, num_basis):
        super().__init__(in_features, out_features, bias=False)
        self.seed = nn.Parameter(torch.randint(int(1e10), (1,)), requires_grad=False)
        self.coefficients = nn.Parameter(torch.zeros(num_basis))
        self.weight.requires_grad = False

    def forward(self, x):
        W = GenerateParams.apply(self.coefficients, self.out_features, self.in_features,
                                 self.seed) + self.weight                    # :756-759
        return x @ W.t()


class OfficialLoraLinear(nn.Module):
    """lora.py Linear (the dense layer, 958-982) with update_layer's NOLA factors (808-834)
    around a frozen nn.Linear; reset_lora_parameters (882-890) on request."""

    def __init__(self, base: nn.Linear, r, lora_alpha, num_basis, dropout=None, reset=True):
        super().__init__()
        self.base = base
        self.lora_A = OfficialNOLALinear(base.in_features, r, num_basis)      # :822-823
        self.lora_B = OfficialNOLALinear(r, base.out_features, num_basis)     # :824-825
        self.scaling = lora_alpha / r                                         # :831
        self.lora_dropout = dropout or nn.Identity()                          # :814-817
        if reset:
            nn.init.zeros_(self.lora_A.coefficients)                          # :886
            nn.init.zeros_(self.lora_B.coefficients)                          # :887
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))      # :889
            nn.init.zeros_(self.lora_B.weight)                                # :890

    def forward(self, x):
        previous_dtype = x.dtype
        result = F.linear(x, self.base.weight, bias=self.base.bias)           # :970
        x = x.to(self.lora_A.weight.dtype)                                    # :972
        result += self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling   # :974-979
        return result.to(previous_dtype)                                      # :983

    def delta_weight(self):
        """get_delta_weight (949-956): the offsets only."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling


# ------------------------------------------------------------------------------ fixtures

def tiny_llama():
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=64, max_position_embeddings=32)).eval()


def official_model(r=4, alpha=4.0, k=24, seed=3, dropout=None):
    """The tiny LLaMA with the official NOLA layer on every linear but lm_head, its adapter
    moved off its initial values (trained coefficients, a non-zero B0)."""
    model = tiny_llama()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for name, m in list(model.named_modules()):
        if name.rsplit(".", 1)[-1] in TARGETS:
            layer = OfficialLoraLinear(m, r, alpha, k, dropout)
            with torch.no_grad():
                for p in (layer.lora_A.coefficients, layer.lora_B.coefficients,
                          layer.lora_B.weight):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
    return model


def official_folder(model, folder, r=4, alpha=4.0, k=24):
    """What the official code saves (PEFT 0.4 save_pretrained: utils/save_and_load.py 19-79):
    every 'lora_' tensor under base_model.model.<name>, the adapter name removed, in
    adapter_model.bin; LoraConfig with NOLA's two fields in adapter_config.json."""
    folder.mkdir()
    state = {f"base_model.model.{key}": v.detach().clone()
             for key, v in model.state_dict().items() if "lora_" in key}
    torch.save(state, folder / "adapter_model.bin")
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
        "lora_dropout": 0.0, "target_modules": TARGETS, "bias": "none", "fan_in_fan_out": False,
        "modules_to_save": None, "init_lora_weights": True, "inference_mode": True,
        "use_nola": True, "nola_num_basis": k, "base_model_name_or_path": "tiny"}))
    return state


X = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(9))


# ------------------------------------------------------------------------------ tests

def test_an_official_nola_llama_adapter_loads_and_computes_as_the_official_layer(tmp_path):
    """Offsets, seeds, bases (uniform(-1, 1) / sqrt(k) from the seed), scaling alpha / r, the
    activation path x A^T B^T, and the coefficients' gradients (the official backward
    regenerates the basis) equal the transcription; the folder is read by load_adapter."""
    official = official_model()
    state = official_folder(official, tmp_path / "official")
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.coefficients" in state
    with torch.random.fork_rng():
        want = official(X).logits
        want.pow(2).mean().backward()
    ours = tiny_llama()
    with pytest.warns(UserWarning, match="written before loralib recorded where"):
        config = lora.load_adapter(ours, str(tmp_path / "official"))
    assert (config.method, config.r, config.alpha) == ("nola", 4, 4.0)
    assert config.options["num_basis_A"] == config.options["num_basis_B"] == 24
    got = ours(X).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got.pow(2).mean().backward()
    layer = ours.model.layers[1].mlp.down_proj
    ref = official.model.layers[1].mlp.down_proj
    torch.testing.assert_close(layer.nola_alpha.grad[0], ref.lora_A.coefficients.grad,
                               rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(layer.nola_beta.grad[0], ref.lora_B.coefficients.grad,
                               rtol=1e-4, atol=1e-7)
    assert {n.rsplit(".", 1)[1] for n, p in ours.named_parameters() if p.requires_grad} == \
        {"nola_alpha", "nola_beta"}


def test_dropout_is_on_the_adapter_input_only():
    """lora.py 974-979: lora_dropout(x) feeds lora_A; the frozen product sees x."""
    class Half(nn.Module):         # a deterministic stand-in for the dropout mask
        def forward(self, x):
            return x * (torch.arange(x.shape[-1]) % 2)
    official = official_model(dropout=Half())
    ours = tiny_llama()
    cfg = lora.MethodConfig(method="nola", r=4, alpha=4.0, dropout=0.1,
                            options={"num_basis_A": 24, "num_basis_B": 24,
                                     "basis_device": "native"})
    lora.inject(ours, cfg, TARGETS)
    sd = {}
    for name, m in official.named_modules():
        if isinstance(m, OfficialLoraLinear):
            sd.update({f"{name}.nola_A0": m.lora_A.weight, f"{name}.nola_B0": m.lora_B.weight,
                       f"{name}.nola_alpha": m.lora_A.coefficients.view(1, -1),
                       f"{name}.nola_beta": m.lora_B.coefficients.view(1, -1),
                       f"{name}.nola_seed": torch.cat([m.lora_A.seed, m.lora_B.seed]).view(1, 2)})
    own = ours.state_dict()
    lora.load_lora_state_dict(ours, {**{k: v for k, v in own.items()
                                         if lora.is_adapter_key(k)}, **sd})
    for m in ours.modules():
        if isinstance(m, lora.AdaptedLinear):
            m.lora_dropout = Half()
    with torch.random.fork_rng():
        want = official(X).logits
    torch.testing.assert_close(ours(X).logits, want, rtol=1e-5, atol=1e-6)


def test_initial_adapter_as_the_official_reset():
    """reset_lora_parameters (882-890): coefficients 0, A0 kaiming-uniform (bound
    1/sqrt(in)), B0 = 0, so the model starts as the base; one k for A and B (822-826)."""
    base = tiny_llama()
    ours = tiny_llama()
    args = qlora.build_parser().parse_args(["--use_nola", "--lora_r", "4", "--nola_num_basis",
                                            "24"])
    lora.inject(ours, qlora.method_from_args(args), TARGETS)
    torch.testing.assert_close(ours(X).logits, base(X).logits, rtol=0, atol=0)
    for name, m in ours.named_modules():
        if isinstance(m, lora.AdaptedLinear):
            assert m.nola_alpha.shape == m.nola_beta.shape == (1, 24)
            assert not m.nola_alpha.any() and not m.nola_beta.any() and not m.nola_B0.any()
            bound = 1 / math.sqrt(m.in_features)
            assert m.nola_A0.abs().max() <= bound and m.nola_A0.abs().max() > 0.8 * bound
            assert m.scaling == 16.0 / 4


def test_merging_uses_the_whole_factors_not_the_official_offsets_only():
    """The official get_delta_weight (949-956) is B0 A0 s: it leaves the generated parts out
    (and with B0 = 0 merges nothing). loralib merges s (B0 + sum beta B_j)(A0 + sum alpha A_i):
    the merged model computes what the unmerged one does (a fixed bug)."""
    official = official_model()
    ours = tiny_llama()
    lora.inject(ours, lora.MethodConfig(method="nola", r=4, alpha=4.0, options={
        "num_basis_A": 24, "num_basis_B": 24, "basis_device": "native"}), TARGETS)
    own = {k: v for k, v in ours.state_dict().items() if lora.is_adapter_key(k)}
    for name, m in official.named_modules():
        if isinstance(m, OfficialLoraLinear):
            own.update({f"{name}.nola_A0": m.lora_A.weight, f"{name}.nola_B0": m.lora_B.weight,
                        f"{name}.nola_alpha": m.lora_A.coefficients.view(1, -1),
                        f"{name}.nola_beta": m.lora_B.coefficients.view(1, -1),
                        f"{name}.nola_seed": torch.cat([m.lora_A.seed,
                                                        m.lora_B.seed]).view(1, 2)})
    lora.load_lora_state_dict(ours, own)
    with torch.random.fork_rng():
        unmerged = official(X).logits.detach()
        ref = official.model.layers[0].self_attn.q_proj
        official_merge = ref.base.weight + ref.delta_weight()
    lora.merge_and_unload(ours)
    torch.testing.assert_close(ours(X).logits, unmerged, rtol=1e-5, atol=1e-6)
    merged = ours.model.layers[0].self_attn.q_proj.weight
    assert (merged - official_merge).abs().max() > 1e-3


def test_official_folders_with_missing_or_foreign_tensors_are_refused(tmp_path):
    official = official_model()
    state = official_folder(official, tmp_path / "a")
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.seed"
    torch.save({k: v for k, v in state.items() if k != key}, tmp_path / "a" / "adapter_model.bin")
    with pytest.raises(KeyError, match=re.escape("q_proj.lora_B.seed")):
        lora.load_adapter(tiny_llama(), str(tmp_path / "a"))
    torch.save({**state, "base_model.model.lm_head.weight": torch.zeros(1)},
               tmp_path / "a" / "adapter_model.bin")
    with pytest.raises(KeyError, match="is not a NOLA LLaMA key"):
        lora.load_adapter(tiny_llama(), str(tmp_path / "a"))


# ------------------------------------------------------------- the scripts' trainable counts

def script_args(name):
    """The flags of one of NOLA's scripts (NLG/llama/...), as the script passes them."""
    text = (LLAMA / name).read_text()
    argv = []
    for line in text.split("qlora.py \\\n", 1)[1].splitlines():
        line = line.strip().rstrip("\\").strip()
        if not line or line == '"$@"':
            continue
        argv += [a.strip("'\"") for a in line.split()]
    argv = [a if not a.startswith("${MODEL_PATH") else "meta" for a in argv]
    return qlora.build_parser().parse_args(argv)


LLAMA2 = {  # the published configs: hidden, intermediate, layers, heads, kv heads
    "7b": (4096, 11008, 32, 32, 32), "13b": (5120, 13824, 40, 40, 40),
    "70b": (8192, 28672, 80, 64, 8)}


def meta_llama2(size):
    h, i, n, heads, kv = LLAMA2[size]
    cfg = transformers.LlamaConfig(hidden_size=h, intermediate_size=i, num_hidden_layers=n,
                                   num_attention_heads=heads, num_key_value_heads=kv,
                                   vocab_size=32000)
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(cfg)


@pytest.mark.parametrize("script,count,published", [
    # NOLA: 2 x k per adapted linear, 7 per layer (the scripts' k = 512; the table's 0.06M for
    # 7B is k = 128)
    ("scripts/finetune_llama2_alpaca_7b_nola.sh", 2 * 512 * 7 * 32, 229_376),
    # LoRA r = 1: in + out per linear: the table's 2.50M, and 12.94M for 70B (GQA: k, v 1024
    # wide)
    ("scripts/finetune_llama2_alpaca_7b_lora.sh", 32 * (4 * 2 * 4096 + 3 * (4096 + 11008)),
     2_498_560),
    ("qlora/scripts/finetune_llama2_guanaco_70b_lora.sh",
     80 * (2 * 2 * 8192 + 2 * (8192 + 1024) + 3 * (8192 + 28672)), 12_943_360),
])
def test_the_scripts_train_the_closed_form_count(script, count, published, capsys):
    assert count == published
    args = script_args(script)
    method = qlora.method_from_args(args)
    model = meta_llama2(re.search(r"_(\d+b)_", script).group(1))
    args.bits = 16          # a meta model is not quantized; the adapters do not depend on it
    names = qlora.adapt(args, model, method)
    assert len(names) == 7 * model.config.num_hidden_layers
    print(qlora.trainable_report(model))
    assert f"trainable params: {count} ||" in capsys.readouterr().out
