"""Drop-in compatibility with Microsoft's loralib 0.1.2: names, shapes, semantics, checkpoints."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import loralib as lora


def test_linear_names_shapes_and_eval_merge():
    torch.manual_seed(0)
    layer = lora.Linear(10, 6, r=2, lora_alpha=4)
    assert isinstance(layer, nn.Linear)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {"weight": (6, 10), "bias": (6,), "lora_A": (2, 10), "lora_B": (6, 2)}
    assert not layer.weight.requires_grad
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 10)
    w0 = layer.weight.detach().clone()
    expected = F.linear(x, w0 + 2.0 * layer.lora_B @ layer.lora_A, layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    layer.eval()            # merge_weights=True (the default): eval() merges, train() unmerges
    assert layer.merged
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    layer.train()
    assert not layer.merged and torch.equal(layer.weight, w0)


def test_linear_r0_is_a_plain_trainable_linear():
    layer = lora.Linear(4, 3)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight.requires_grad


def test_merged_linear_gpt2_usage():
    torch.manual_seed(0)
    layer = lora.MergedLinear(16, 48, r=4, lora_alpha=32, lora_dropout=0.1,
                              enable_lora=[True, False, True], fan_in_fan_out=True,
                              merge_weights=False)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {"weight": (16, 48), "bias": (48,), "lora_A": (8, 16), "lora_B": (32, 4)}
    layer.eval()
    assert not layer.merged      # merge_weights=False: eval() leaves the weight alone
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 3, 16)
    w = layer.weight.t().detach().clone()
    s = 32 / 4
    w[0:16] += s * layer.lora_B[0:16] @ layer.lora_A[0:4]
    w[32:48] += s * layer.lora_B[16:32] @ layer.lora_A[4:8]
    torch.testing.assert_close(layer(x), F.linear(x, w, layer.bias), rtol=1e-5, atol=1e-5)


def test_merged_linear_uses_the_low_rank_path():
    """No dense delta-W (out x in) is formed while training (Microsoft's PR 107 regression)."""
    layer = lora.MergedLinear(64, 192, r=4, lora_alpha=8, enable_lora=[True, False, True],
                              fan_in_fan_out=True, merge_weights=False)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(5, 64, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x).sum().backward()
    weight_ptr = layer.weight.untyped_storage().data_ptr()
    dense = [tuple(t.shape) for t in saved
             if t.numel() >= 64 * 64 and t.untyped_storage().data_ptr() != weight_ptr]
    assert dense == [], f"dense weight-sized tensors in the graph: {dense}"
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None


def test_embedding_names_shapes_and_merge():
    torch.manual_seed(0)
    emb = lora.Embedding(20, 8, r=3, lora_alpha=6)
    shapes = {n: tuple(p.shape) for n, p in emb.named_parameters()}
    assert shapes == {"weight": (20, 8), "lora_A": (3, 20), "lora_B": (8, 3)}
    with torch.no_grad():
        emb.lora_A.normal_()
    idx = torch.tensor([[1, 5, 19]])
    expected = F.embedding(idx, emb.weight + 2.0 * (emb.lora_B @ emb.lora_A).t())
    torch.testing.assert_close(emb(idx), expected)
    w0 = emb.weight.detach().clone()
    emb.eval()
    torch.testing.assert_close(emb(idx), expected)
    emb.train()
    assert torch.equal(emb.weight, w0)


@pytest.mark.parametrize("cls,shape,groups", [(lora.Conv1d, (2, 6, 9), 1),
                                              (lora.Conv2d, (2, 6, 9, 9), 1),
                                              (lora.Conv2d, (2, 6, 9, 9), 2),
                                              (lora.Conv3d, (1, 6, 5, 5, 5), 1)])
def test_conv_wraps_conv_and_merges(cls, shape, groups):
    torch.manual_seed(0)
    conv = cls(6, 4, 3, r=2, lora_alpha=4, groups=groups)
    names = {n for n, _ in conv.named_parameters()}
    assert names == {"conv.weight", "conv.bias", "lora_A", "lora_B"}
    assert tuple(conv.lora_A.shape) == (2 * 3, 6 * 3)
    with torch.no_grad():
        conv.lora_B.normal_()
    x = torch.randn(*shape)
    out = conv(x)
    w = conv.conv.weight + (conv.lora_B @ conv.lora_A).view(conv.conv.weight.shape) * 2.0
    torch.testing.assert_close(out, conv.conv._conv_forward(x, w, conv.conv.bias))
    w0 = conv.conv.weight.detach().clone()
    conv.eval()
    torch.testing.assert_close(conv(x), out, rtol=1e-5, atol=1e-5)
    conv.train()
    assert torch.equal(conv.conv.weight, w0)


def _tiny_roberta(layers=12, dim=768, r=8, labels=3):
    """Module paths of HF RoBERTa for the parts Microsoft's NLU adapter touches."""
    def attention():
        self_attn = nn.Module()
        self_attn.query = lora.Linear(dim, dim, r=r, lora_alpha=16, merge_weights=False)
        self_attn.value = lora.Linear(dim, dim, r=r, lora_alpha=16, merge_weights=False)
        att = nn.Module()
        att.self = self_attn
        block = nn.Module()
        block.attention = att
        return block
    model = nn.Module()
    model.roberta = nn.Module()
    model.roberta.encoder = nn.Module()
    model.roberta.encoder.layer = nn.ModuleList(attention() for _ in range(layers))
    model.classifier = nn.Module()
    model.classifier.dense = nn.Linear(dim, dim)
    model.classifier.out_proj = nn.Linear(dim, labels)
    return model


def test_microsoft_released_roberta_adapter_loads(shared_data):
    path = shared_data / "checkpoints" / "roberta_base_lora_mnli.bin"
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert len(sd) == 52
    model = _tiny_roberta()
    loaded = lora.load_lora_state_dict(model, sd, source=str(path))
    assert set(loaded) == set(sd)
    q = model.roberta.encoder.layer[3].attention.self.query
    assert torch.equal(q.lora_A, sd["roberta.encoder.layer.3.attention.self.query.lora_A"])
    lora.mark_only_lora_as_trainable(model, bias="none")
    assert lora.count_parameters(model)[0] == 294_912
    # bias='all' also brings the classifier's biases; the adapter file holds all of them
    sd_all = lora.lora_state_dict(model, bias="all")
    assert "classifier.out_proj.bias" in sd_all


def test_mark_only_lora_as_trainable_bias_modes():
    model = nn.Sequential(lora.Linear(4, 4, r=2), nn.Linear(4, 2))
    lora.mark_only_lora_as_trainable(model, bias="lora_only")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {"0.lora_A", "0.lora_B", "0.bias"}
    lora.mark_only_lora_as_trainable(model, bias="all")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {"0.lora_A", "0.lora_B", "0.bias", "1.bias"}
    assert set(lora.lora_state_dict(model, bias="lora_only")) == {"0.lora_A", "0.lora_B", "0.bias"}
    with pytest.raises(ValueError, match="bias"):
        lora.mark_only_lora_as_trainable(model, bias="some")
