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
"""
import torch

NEG_INF = float("-inf")


class HFBeamCache:
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
