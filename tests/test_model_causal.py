"""Which GPT-2 calls attend causally without an explicit mask (`is_causal`, decided from the
cache, not from the length: see nlg/model.py Attention.forward), checked against the full
forward: one token without a cache, a step on a cache, several tokens on an empty cache."""
import torch

from nlg.model import GPT2Config, GPT2LMModel

TINY = dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4)


def model_and_ids(seed=0):
    torch.manual_seed(seed)
    m = GPT2LMModel(GPT2Config(**TINY)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3 if p.dim() > 1 else 0.1)
    return m, torch.randint(0, TINY["vocab_size"], (2, 9))


@torch.no_grad()
def test_one_token_without_cache_is_the_first_position():
    m, ids = model_and_ids()
    full, _ = m(ids)
    one, presents = m(ids[:, :1])
    assert torch.allclose(one[:, 0], full[:, 0], atol=1e-5)
    step, _ = m(ids[:, 1:2], past=presents)          # then a step on that cache
    assert torch.allclose(step[:, 0], full[:, 1], atol=1e-5)


@torch.no_grad()
def test_several_tokens_on_an_empty_cache_are_causal():
    m, ids = model_and_ids(1)
    full, presents = m(ids)
    empty = [p[:, :, :, :0] for p in presents]       # (2, B, H, 0, hd): no past position
    got, _ = m(ids, past=empty)
    assert torch.allclose(got, full, atol=1e-5)
    one, _ = m(ids[:, :1], past=empty)
    assert torch.allclose(one[:, 0], full[:, 0], atol=1e-5)
