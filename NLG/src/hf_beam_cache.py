"""The beam search's cache on a Hugging Face model (nlg/beam_search.py drives it): the model's own
KV cache (transformers' DynamicCache), one row per hypothesis.

Prefill: the contexts right-padded to the longest, causal attention (padding comes after a
row's real tokens, so it never reaches them), the logits taken at each row's last real token;
then every row is repeated for the beam's K hypotheses. A step feeds one token per hypothesis
with its explicit position (context length + step) and a 4-D float mask, 0 where a row may
attend and -inf on its context's padding positions. Reordering the beam permutes the cache's
rows (reorder_cache); an example that leaves the batch early drops its rows
(batch_select_indices). Unlike the GPT-2 cache, rows are physically reordered, so no position
is ever dead: nothing to compact.

The model's plain nn.Linear layers compute through loralib.cpu_linear while the search runs it
(oneDNN with packed weights on a CPU, F.linear elsewhere), as the GPT-2 backbone's layers do:
torch's own CPU product (MKL) is slow at a beam's few dozen rows (on the 2-core dev machine
SmolLM2's decoding spent 65% of its time there at about 39 GFLOP/s, against 66 for the oneDNN
products of the same step). Outside the search the layers are the model's own.
"""
import contextlib

import torch

import loralib as lora

NEG_INF = float("-inf")


def _linear(module, x):
    return lora.cpu_linear.linear(x, module.weight, module.bias)


@contextlib.contextmanager
def packed_products(hf):
    """Every plain torch.nn.Linear of `hf` computes through loralib.cpu_linear while open."""
    plain = [m for m in hf.modules() if type(m) is torch.nn.Linear]
    for m in plain:
        m.forward = _linear.__get__(m)      # an instance attribute: nn.Module.__call__ uses it
    try:
        yield
    finally:
        for m in plain:
            del m.forward                   # the class's forward again


class HFBeamCache:
    in_place = True         # rows are reordered in place: no dead positions to compact

    def __init__(self, model, cache, pad_bias, beam):
        self.model, self.cache, self.beam = model, cache, beam
        self.pad_bias = pad_bias            # (rows, T): 0 on real context tokens, -inf on padding
        self.generated = 0                  # tokens fed since the prefill

    @classmethod
    def open(cls, model, ids, lengths, beam):
        """(logits (B, V) after each context's last token, the cache with K rows per context)."""
        from transformers import DynamicCache
        hf = model.hf
        cache = DynamicCache(config=hf.config)
        with packed_products(hf):
            hidden = model.decoder()(input_ids=ids, cache=cache, use_cache=True).last_hidden_state
            rows = torch.arange(ids.shape[0], device=ids.device)
            logits = model.head(hidden[rows, lengths - 1])
        cache.batch_repeat_interleave(beam)
        T = ids.shape[1]
        pad = torch.arange(T, device=ids.device)[None, :] >= lengths[:, None]
        bias = torch.zeros(pad.shape, dtype=hidden.dtype, device=ids.device)
        bias.masked_fill_(pad, NEG_INF)
        return logits, cls(model, cache, bias.repeat_interleave(beam, dim=0), beam)

    def step_logits(self, model, tokens, positions, j, compile_backend=None):
        """Logits (n * K, V) for one new token per hypothesis (tokens, positions (n, K))."""
        if compile_backend:
            raise ValueError("--compile compiles the GPT-2 backbone's decoding step; a Hugging "
                             "Face backbone decodes without it")
        rows = self.pad_bias.shape[0]
        self.generated += 1
        seen = torch.zeros(rows, self.generated, dtype=self.pad_bias.dtype,
                           device=self.pad_bias.device)
        mask = torch.cat((self.pad_bias, seen), dim=1)[:, None, None, :]
        with packed_products(model.hf):
            hidden = model.decoder()(input_ids=tokens.reshape(rows, 1),
                                     position_ids=positions.reshape(rows, 1), attention_mask=mask,
                                     cache=self.cache, use_cache=True).last_hidden_state
            return model.head(hidden[:, -1])

    def reorder(self, parent, steps):
        """Hypothesis t of example e continues hypothesis parent[e, t] (of the same example)."""
        n, K = parent.shape
        src = (parent + K * torch.arange(n, device=parent.device).unsqueeze(1)).reshape(-1)
        self.cache.reorder_cache(src)
        # (a hypothesis' padding is its example's: the bias rows of one example are equal)

    def live(self, steps):
        return None                         # rows are reordered in place: no dead positions

    def select(self, keep):
        """Keep these examples only (keep: indices into the examples still in the batch)."""
        K = self.beam
        rows = (keep.unsqueeze(1) * K + torch.arange(K, device=keep.device)).reshape(-1)
        self.cache.batch_select_indices(rows)
        self.pad_bias = self.pad_bias[rows]
