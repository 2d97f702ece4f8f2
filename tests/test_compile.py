"""torch.compile sees one graph per step: the training step's forward and loss (the call
finetune.py makes) across batch lengths, and beam search's decode step on its KV cache, for
every method on a tiny GPT-2 (dynamo's tracing only, nothing is compiled to code; on a failure
`torch._dynamo.explain` says where the graph breaks).

A graph break costs a GPU step a return to Python and one more kernel launch sequence per break:
in every layer before `is_causal` stopped depending on the sequence length (a SymBool that
scaled_dot_product_attention refuses), and a second compilation when a layer's constant came
from a cache the first trace had filled.
"""
import pytest
import torch

import loralib as lora
from nlg import beam_search as bs
from nlg.model import GPT2Config, GPT2LMModel

TINY = dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=1, n_head=4)
METHODS = [("lora", {}),
           ("lorma", {"kind": "rri"}),       # LoRMA_+
           ("lorma", {"kind": "shift"}),     # LoRMA_pi
           ("mtlora", {"structure": "ICFM"}),
           ("nola", {"num_basis_A": 8, "num_basis_B": 8}),
           ("lorma", {"kind": "shift", "side": "weight"})]
IDS = ["lora", "lorma_plus", "lorma_pi", "mtlora_icfm", "nola", "lorma_pi_weight_side"]


def build(method, options):
    options = dict(options)
    side = options.pop("side", "auto")      # LoRMA_pi: T on the activations here unless forced
    cfg = lora.MethodConfig(method=method, r=2, alpha=4.0, options=options, pipeline="gpt2")
    torch.manual_seed(0)
    model = GPT2LMModel(GPT2Config(method=cfg, **TINY))
    for m in model.modules():
        if isinstance(m, lora.LoRMALinear):
            m.compute_side = side
    lora.mark_only_lora_as_trainable(model)
    return model


def why(explained):
    return [f"{str(r.reason).splitlines()[0]} at {r.user_stack[-1] if r.user_stack else '?'}"
            for r in explained.break_reasons]


def graphs_over(fn, calls):
    """The graphs torch.compile(dynamic=True) builds for `fn` over these calls: one means no
    break and no recompilation."""
    torch._dynamo.reset()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(fn, backend=backend, dynamic=True)
    for args in calls:
        compiled(*args)
    torch._dynamo.reset()
    return graphs


def train_batch(T, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY["vocab_size"], (2, T), generator=g)
    mask = torch.ones(2, T)
    mask[:, :3] = 0                                      # the context is not scored
    return ids, ids.roll(-1, 1), mask, mask.reshape(-1).nonzero().squeeze(1)


@pytest.mark.parametrize("method,options", METHODS, ids=IDS)
def test_training_step_is_one_graph_across_lengths(method, options):
    model = build(method, options)

    def step(ids, labels, mask, positions):
        _, loss = model(ids, lm_labels=labels, lm_mask=mask, label_smooth=0.1, reduction="sum",
                        loss_positions=positions)
        return loss

    # One graph over two lengths: no break (explain's graph_break_count == 0) and no second
    # compilation. Tracing once is the slow part of this file, so explain runs only to say why.
    first, second = train_batch(9, 0), train_batch(14, 1)
    if len(graphs_over(step, [first, second])) != 1:
        for t, dim in zip(first, (1, 1, 1, 0)):             # the lengths symbolic, as above
            torch._dynamo.mark_dynamic(t, dim)
        explained = torch._dynamo.explain(step)(*first)
        pytest.fail(f"{explained.graph_break_count} graph break(s): {why(explained)}, or a "
                    f"recompilation for the second length (TORCH_LOGS=recompiles says why)")


@pytest.mark.parametrize("method,options", METHODS, ids=IDS)
def test_decode_step_is_one_graph(method, options):
    """beam_search.step_logits, the model call of a beam step on the KV cache (unmerged
    adapters, so that the adapter's own forward is traced)."""
    model = build(method, options).eval()
    with torch.no_grad():
        ids, lengths = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]]), torch.tensor([5, 3])
        _, presents = bs.prefill(model, ids, lengths)
        cache = bs._BeamCache(presents, lengths, beam=2, steps=4)
        cache.add_step(0)                                  # step 0's tokens are in the cache
        tokens = torch.tensor([[9, 10], [11, 12]])
        positions = (lengths + 1).unsqueeze(1).expand(2, 2)
        # step 1: not a step that compacts the cache (that one syncs with the host by design)
        explained = torch._dynamo.explain(bs.step_logits)(model, cache, tokens, positions, 1)
    assert explained.graph_break_count == 0, why(explained)
