"""The beam search's cache on a Hugging Face model (nlg/beam_search.py drives it): the GPT-2
backbone's shared-prefix cache (beam_search._BeamCache), filled and read by the model's own
attention layers.

A Hugging Face attention layer hands its new keys / values to `cache.update(keys, values,
layer_idx)` and attends over what that returns; this module's cache answers that call. So the
layout, the ancestor bookkeeping and the compaction are the GPT-2 backbone's, step for step:

- prefill: the contexts right-padded to the longest, with an explicit causal mask (padding
  comes after a row's real tokens, so it never reaches them); the logits are taken at each row's
  last real token; one copy of the context's keys / values per example, shared by its K
  hypotheses (never repeated K times);
- a step feeds one row per example holding its K hypotheses' new tokens (input ids (n, K), each
  at its explicit position, context length + step) and the 4-D attention bias built from the
  ancestors (0 where a hypothesis may attend: its context's real tokens, its ancestors, its
  own new token; -inf elsewhere); the new keys / values are written in place at K new positions;
- a reorder moves no key or value (the ancestors record where each hypothesis' past sits);
  positions no hypothesis descends from any more are dropped at each check (every step on a
  CPU), and an example that leaves the batch drops its row.

Against the model's own DynamicCache with one row per hypothesis (this module's first
version), this drops the two copies of the whole cache each step made (its concatenation of the
new position, its reorder of the rows): SmolLM2-135M, 30 E2E MRs, beam 4, one thread, 2-core CPU,
they took about 13% of the decoding time.

The model's plain nn.Linear layers compute through loralib.cpu_linear while the search runs it
(oneDNN with packed weights on a CPU, F.linear elsewhere), as the GPT-2 backbone's layers do:
torch's own CPU product (MKL) is slow at a beam's few dozen rows (on the 2-core dev machine
SmolLM2's decoding spent 65% of its time there at about 39 GFLOP/s, against 66 for the oneDNN
products of the same step). Outside the search the layers are the model's own.
"""
import contextlib

import torch

import loralib as lora
from nlg.beam_search import NEG_INF, _BeamCache


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


GROUPED = "lora_beam_grouped_sdpa"      # the name under which _grouped_sdpa is registered


def _grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                  **kwargs):
    """transformers' "sdpa" attention for an explicit additive mask, with the queries of each
    key / value head's group attending together: (b, G * rep, q, d) queries as (b, G, rep * q, d)
    against the G heads' keys as they are. transformers' own function repeats the keys and
    values rep times (a copy of the whole cache per layer and step) whenever more than one
    query position comes at once, as the K hypotheses of a step do here: SmolLM2 (rep 3), 30 E2E
    MRs, one thread, attention and copies went from 15% of the decoding time to 7%."""
    b, H, q, d = query.shape
    G, S = key.shape[1], key.shape[2]
    rep = H // G
    grouped = query.reshape(b, G, rep * q, d)           # row r * q + i: head g * rep + r, query i
    mask = attention_mask.unsqueeze(2).expand(b, 1, rep, q, S).reshape(b, 1, rep * q, S)
    out = torch.nn.functional.scaled_dot_product_attention(
        grouped, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.view(b, H, q, d).transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def grouped_attention(hf):
    """A model on transformers' "sdpa" attention computes through _grouped_sdpa while open (the
    same result); any other attention implementation is left as it is."""
    if getattr(hf.config, "_attn_implementation", None) != "sdpa":
        yield
        return
    from transformers import AttentionInterface
    if GROUPED not in AttentionInterface._global_mapping:
        AttentionInterface.register(GROUPED, _grouped_sdpa)
    hf.config._attn_implementation = GROUPED           # the setter reaches the sub-configs too
    try:
        yield
    finally:
        hf.config._attn_implementation = "sdpa"


class _Layers:
    """What a Hugging Face attention layer is given as its cache for one forward: `update` is
    the one call it makes. Prefill (kv None): records each layer's keys / values and returns
    them; a step: writes them at positions [start, start + K) of the layer's buffer and returns
    the buffer up to there, as (batch, heads, positions, head_dim) views."""

    def __init__(self, kv=None, start=0):
        self.kv, self.start, self.recorded = kv, start, {}

    def update(self, keys, values, layer_idx, *args, **kwargs):
        if self.kv is None:
            self.recorded[layer_idx] = (keys, values)
            return keys, values
        kv, end = self.kv[layer_idx], self.start + keys.shape[2]
        kv[0, :, self.start:end] = keys.transpose(1, 2)     # the buffer is position-major
        kv[1, :, self.start:end] = values.transpose(1, 2)
        return kv[0, :, :end].transpose(1, 2), kv[1, :, :end].transpose(1, 2)

    def __getattr__(self, name):
        # A model whose layers ask their cache for more than update() (recurrent or sliding-
        # window layers, say) is not one this search can drive: say so by name.
        raise AttributeError(f"the beam search's cache answers update() only; this model's "
                             f"forward asked for '{name}'")


class HFBeamCache(_BeamCache):

    @classmethod
    def open(cls, model, ids, lengths, beam, steps):
        """(logits (B, V) after each context's last token, the cache, room for `steps` steps)."""
        hf, (B, T) = model.hf, ids.shape
        dtype = hf.get_input_embeddings().weight.dtype
        causal = torch.full((T, T), NEG_INF, dtype=dtype, device=ids.device).triu_(1)
        positions = torch.arange(T, device=ids.device).expand(B, T)
        layers = _Layers()
        with packed_products(hf):
            hidden = model.decoder()(input_ids=ids, position_ids=positions,
                                     attention_mask=causal.expand(B, 1, T, T), cache=layers,
                                     use_cache=True).last_hidden_state
            logits = model.head(hidden[torch.arange(B, device=ids.device), lengths - 1])
        if len(layers.recorded) != hf.config.num_hidden_layers:
            raise ValueError(f"beam search: {len(layers.recorded)} of the model's "
                             f"{hf.config.num_hidden_layers} layers stored keys / values")
        presents = [torch.stack(layers.recorded[i]) for i in range(len(layers.recorded))]
        return logits, cls(presents, lengths, beam, steps)

    def step_logits(self, model, tokens, positions, j, compile_backend=None):
        """Logits (n * K, V) for one new token per hypothesis (tokens, positions (n, K)), the
        tokens chosen at step j."""
        if compile_backend:
            raise ValueError("--compile compiles the GPT-2 backbone's decoding step; a Hugging "
                             "Face backbone decodes without it")
        start, bias = self.add_step(j)
        with packed_products(model.hf), grouped_attention(model.hf):
            hidden = model.decoder()(input_ids=tokens, position_ids=positions,
                                     attention_mask=bias, cache=_Layers(self.kv, start),
                                     use_cache=True).last_hidden_state
            return model.head(hidden.reshape(-1, hidden.shape[-1]))
