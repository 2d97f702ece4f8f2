"""GPT-2 with pluggable low-rank adapters, in one file read top to bottom.

Parameter names and shapes follow the published GPT-2 checkpoints (Conv1D layout: weights stored
(in, out)), so `h.N.attn.c_attn.weight` etc. load without renaming. Every projection that may be
adapted is built by `loralib.adapt_linear`; which method (LoRA, LoRMA, MTLoRA, NOLA, none) and which
projections (q, k, v, c_proj, c_fc, mlp_proj) come from a `loralib.MethodConfig` in the config.

Decoding interface (used by gpt2_beam.py):
    logits, presents = model(input_ids, past=presents, attention_mask=..., position_ids=...)
`past` / `presents`: one tensor per layer, shape (2, B, n_head, S, head_dim) (keys, values), so a
beam search reorders a cache with `p.index_select(1, idx)`. `attention_mask` (B, S_past + T): 1 for
real tokens, 0 for padding (left-padded prompts); positions then count from each row's first real
token unless `position_ids` is given.
"""
import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

import loralib as lora
from nlg.lm_loss import lm_loss


# ----------------------------------------------------------------------------------------------
# Configuration

@dataclass
class GPT2Config:
    """Microsoft's GPT2Config keywords. `method` (a loralib.MethodConfig) picks the adapter; without
    it, `lora_attn_dim > 0` means LoRA on q, v as in Microsoft's code."""
    vocab_size: int = 50257
    n_positions: int = 1024
    n_ctx: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    lora_attn_dim: int = 0
    lora_attn_alpha: float = 128
    lora_dropout: float = 0.0
    lora_r_dropout: float = 0.0
    fix_dropout: float = 0.0
    # The official GPT-2 code of every method (Microsoft's model.py and its forks) builds one
    # Block and deep-copies it, so every layer's adapter starts from the same values (NOLA:
    # the same basis seeds). True draws each layer's adapter on its own (a named deviation).
    independent_layer_init: bool = False
    method: Any = None
    # Microsoft's first positional argument: an int vocabulary size or a JSON file of kwargs.
    vocab_size_or_config_json_file: dataclasses.InitVar[Any] = None

    def __post_init__(self, vocab_size_or_config_json_file):
        if isinstance(vocab_size_or_config_json_file, int):
            self.vocab_size = vocab_size_or_config_json_file
        elif isinstance(vocab_size_or_config_json_file, str):
            for k, v in _read_card_json(vocab_size_or_config_json_file).items():
                setattr(self, k, v)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.method is None and self.lora_attn_dim > 0:
            self.method = lora.MethodConfig(method="lora", r=self.lora_attn_dim,
                                            alpha=self.lora_attn_alpha, dropout=self.lora_dropout,
                                            pipeline="gpt2")

    @property
    def adapter(self):
        """The MethodConfig when it adds adapter layers, else None (plain or fully fine-tuned)."""
        m = self.method
        return m if (m is not None and getattr(m, "is_adapter", False)) else None

    def to_dict(self):
        d = dataclasses.asdict(self)
        d.pop("method")
        return d


MODEL_CARDS = {
    "gpt2.sm": dict(n_embd=768, n_layer=12, n_head=12),
    "gpt2.md": dict(n_embd=1024, n_layer=24, n_head=16),
    "gpt2.lg": dict(n_embd=1280, n_layer=36, n_head=20),
    # for tests and smoke runs: the real vocabulary, a toy body
    "gpt2.tiny": dict(n_embd=64, n_layer=2, n_head=4),
}

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(GPT2Config)} - {"method"}


def _read_card_json(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"model card {path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"model card {path}: expected a JSON object of GPT2Config keywords")
    unknown = sorted(set(d) - _CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"model card {path}: unknown GPT2Config key(s) {unknown}; "
                         f"known: {sorted(_CONFIG_FIELDS)}")
    return d


def config_from_card(card, method=None, **overrides):
    """`card` is gpt2.sm / gpt2.md / gpt2.lg / gpt2.tiny or a path to a JSON file of GPT2Config
    keywords (e.g. {"vocab_size": 1000, "n_embd": 64, "n_layer": 2, "n_head": 4})."""
    if card in MODEL_CARDS:
        kw = dict(MODEL_CARDS[card])
    elif os.path.isfile(card):
        kw = _read_card_json(card)
    else:
        raise ValueError(f"--model_card {card!r}: neither one of {sorted(MODEL_CARDS)} "
                         f"nor an existing JSON file")
    kw.update(overrides)
    return GPT2Config(method=method, **kw)


# ----------------------------------------------------------------------------------------------
# Layers

def _projection(n_in, n_out, method, enable=None):
    """A (possibly adapted) projection in the Conv1D layout of the published checkpoints."""
    return lora.adapt_linear(n_in, n_out, method, enable=enable if method is not None else None,
                             fan_in_fan_out=True, bias=True)


class Attention(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        m = config.adapter
        targets = set(m.targets) if m is not None else set()
        qkv = [t in targets for t in ("q", "k", "v")]
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = _projection(config.n_embd, 3 * config.n_embd, m if any(qkv) else None, qkv)
        self.c_proj = _projection(config.n_embd, config.n_embd,
                                  m if "c_proj" in targets else None)

    def forward(self, x, layer_past=None, mask=None, len_past=None, use_cache=True):
        B, T, C = x.shape
        H = self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, H, C // H).transpose(1, 2)
        v = v.view(B, T, H, C // H).transpose(1, 2)
        present = None
        if layer_past is not None and len_past is not None:
            # Microsoft's fixed-size cache: each row writes its single new token at len_past[b].
            rows = torch.arange(B, device=x.device)
            layer_past[0, rows, :, len_past] = k[:, :, 0]
            layer_past[1, rows, :, len_past] = v[:, :, 0]
            present = layer_past
            k, v = layer_past[0], layer_past[1]
        elif layer_past is not None:
            if not torch.is_tensor(layer_past):  # a (keys, values) pair
                layer_past = torch.stack(tuple(layer_past))
            present = torch.cat((layer_past, torch.stack((k, v))), dim=3)
            k, v = present[0], present[1]
        elif use_cache:
            present = torch.stack((k, v))
        # Without a mask, a call without a cache is causal (for T == 1 too: a 1 x 1 causal mask
        # is no mask) and a call with one is a single step that sees its whole past (the model
        # gives a several-token call on a cache, an empty one included, an explicit mask).
        # Not `T > 1`: under torch.compile with varying lengths T is symbolic and that is a
        # SymBool, which scaled_dot_product_attention refuses (a graph break in every layer).
        is_causal = mask is None and layer_past is None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y), present

    def beam_step(self, x, kv, start, bias):
        """One new token per hypothesis, hypotheses grouped by example: x (b, K, C).

        kv (2, b, T + slots * K, H, hd), keys then values, position-major (a position's heads
        are one contiguous row, so writing a step and dropping dead positions are row copies):
        positions [0, T) hold each example's context, shared by its K hypotheses (read once for
        all of them); from T on, the generated tokens. This step's go in at [start, start + K).
        A beam's reorder never moves them: `bias` (b, 1, K, start + K), 0 or -inf, lets each
        hypothesis see its context and its own ancestors only (exp(-inf) is an exact 0 in the
        softmax).
        """
        b, K, C = x.shape
        H = self.n_head
        hd = C // H
        q, k, v = self.c_attn(x).split(C, dim=2)
        end = start + K
        kv[0, :, start:end] = k.view(b, K, H, hd)
        kv[1, :, start:end] = v.view(b, K, H, hd)
        q = q.view(b, K, H, hd).transpose(1, 2)                       # (b, H, K, hd)
        y = F.scaled_dot_product_attention(q, kv[0, :, :end].transpose(1, 2),
                                           kv[1, :, :end].transpose(1, 2), attn_mask=bias)
        return self.c_proj(y.transpose(1, 2).reshape(b, K, C))


class MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        m = config.adapter
        targets = set(m.targets) if m is not None else set()
        self.c_fc = _projection(config.n_embd, 4 * config.n_embd, m if "c_fc" in targets else None)
        self.c_proj = _projection(4 * config.n_embd, config.n_embd,
                                  m if "mlp_proj" in targets else None)

    def forward(self, x):
        return self.c_proj(self.c_fc.forward_gelu_tanh(x))


class Block(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, layer_past=None, mask=None, len_past=None, use_cache=True):
        a, present = self.attn(self.ln_1(x), layer_past, mask, len_past, use_cache)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, present

    def beam_step(self, x, kv, start, bias):
        x = x + self.attn.beam_step(self.ln_1(x), kv, start, bias)
        return x + self.mlp(self.ln_2(x))


class GPT2Model(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        if config.independent_layer_init:
            self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        else:
            block = Block(config)
            self.h = nn.ModuleList([copy.deepcopy(block) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, input_ids, position_ids=None, past=None, len_past=None,
                attention_mask=None, use_cache=True):
        B, T = input_ids.shape
        dev = input_ids.device
        s_past = 0 if past is None else past[0].size(3)
        S = s_past + T
        mask = None
        if len_past is not None:
            if past is None or T != 1:
                raise ValueError("len_past needs a preallocated past and one new token per row")
            len_past = len_past.to(dev).long()
            if position_ids is None:
                position_ids = len_past.unsqueeze(1)
            mask = (torch.arange(s_past, device=dev)[None, :] <= len_past[:, None])[:, None, None, :]
        else:
            qpos = torch.arange(s_past, S, device=dev)
            causal = torch.arange(S, device=dev)[None, :] <= qpos[:, None]  # (T, S)
            if attention_mask is not None:
                if attention_mask.shape != (B, S):
                    raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; "
                                     f"expected (batch, past + new) = {(B, S)}")
                am = attention_mask.to(dev).bool()
                if position_ids is None:
                    position_ids = (am.long().cumsum(-1) - 1).clamp(min=0)[:, s_past:]
                mask = causal[None] & am[:, None, :]
                # A padding query would attend to nothing (NaN); let it see itself.
                mask = (mask | (torch.arange(S, device=dev)[None, :] == qpos[:, None])[None])
                mask = mask[:, None]  # (B, 1, T, S)
            elif past is not None and T > 1:
                mask = causal               # new tokens on a cache (see Attention.forward)
            if position_ids is None:
                position_ids = qpos.unsqueeze(0)
        x = self.wte(input_ids) + self.wpe(position_ids)
        presents = []
        for i, block in enumerate(self.h):
            x, present = block(x, None if past is None else past[i], mask, len_past, use_cache)
            presents.append(present)
        return self.ln_f(x), (presents if use_cache else None)

    def beam_step(self, tokens, positions, cache, start, bias):
        """Hidden states (b, K, C) of one new token per hypothesis (tokens, positions (b, K)),
        with the beam search's cache: one kv tensor per layer (see Attention.beam_step)."""
        x = self.wte(tokens) + self.wpe(positions)
        for block, kv in zip(self.h, cache):
            x = block.beam_step(x, kv, start, bias)
        return self.ln_f(x)


# ----------------------------------------------------------------------------------------------
# Language model

class GPT2LMModel(nn.Module):
    def __init__(self, config: GPT2Config, init_weights: bool = True, init_backbone: bool = True):
        """init_weights=False: leave the backbone's tensors as allocated (a checkpoint will set
        every one; see traincore/noinit.py). init_backbone=False: every adapter value as with
        the full init, but not the backbone's normal draws that a checkpoint overwrites (they
        come after the adapters' draws, so the adapters a seed gives stay the same; what
        draws from the RNG later, dropout, sees another state)."""
        super().__init__()
        self.config = config
        self.transformer = GPT2Model(config)
        if init_weights:
            self._init_backbone(config.initializer_range, backbone=init_backbone)

    @torch.no_grad()
    def _init_backbone(self, std, backbone=True):
        # Backbone tensors, as the official `_init_weights`. Adapter parameters keep the
        # initialisation their method defines, except what `_init_weights` re-draws in the
        # official code too (NOLA's frozen offsets: `init_like_backbone`).
        for m in self.transformer.modules():
            if isinstance(m, lora.LoRALayer):
                m.init_like_backbone(std)
        if not backbone:
            return
        for name, p in self.transformer.named_parameters():
            if lora.is_adapter_key(name):
                continue
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, std)

    def lm_head(self, hidden):
        return lora.cpu_linear.linear(hidden, self.transformer.wte.weight)  # tied to the input embedding

    @property
    def vocab_size(self):
        return self.config.vocab_size

    def cache_bytes_per_position(self):
        """Bytes of keys and values one position takes in a decoding cache (gpt2_beam.py's
        batch budget)."""
        c = self.config
        return 2 * c.n_layer * c.n_embd * next(self.parameters()).element_size()

    def forward(self, input_ids, lm_labels=None, lm_mask=None, past=None, len_past=None,
                label_smooth=0.0, is_report_accuracy=False, position_ids=None,
                attention_mask=None, reduction="mean", loss_positions=None):
        """Without lm_labels: (lm_logits (B, T, V), presents).

        With lm_labels (B, T): (lm_logits, loss) as Microsoft's model, except that logits are only
        computed where they count: lm_logits is (N, V), one row per position with lm_mask != 0
        (all positions when lm_mask is None), in row-major order. loss = sum(token_loss * mask) /
        (sum(mask) + 1e-4); reduction="sum" returns the numerator instead (the trainer normalises
        over the whole distributed batch). Label smoothing: (1 - eps) NLL + eps * mean over the
        vocabulary of -log p. is_report_accuracy adds per-row (first-token hit, all-tokens hit).
        `loss_positions`: the flat indices of the nonzero mask entries, precomputed on the host
        so that a GPU step needs no sync (nlg/lm_loss.py, shared with the Hugging Face
        backbone)."""
        hidden, presents = self.transformer(input_ids, position_ids=position_ids, past=past,
                                            len_past=len_past, attention_mask=attention_mask,
                                            use_cache=lm_labels is None)
        if lm_labels is None:
            return self.lm_head(hidden), presents
        return lm_loss(hidden, self.lm_head, lm_labels, lm_mask, label_smooth, reduction,
                       loss_positions, is_report_accuracy)

    @torch.no_grad()
    def lm_logits_last(self, input_ids, past=None, attention_mask=None, position_ids=None):
        """Logits of the last position only (B, V) and the cache: a prefill that skips the
        vocabulary projection of every other position."""
        hidden, presents = self.transformer(input_ids, position_ids=position_ids, past=past,
                                            attention_mask=attention_mask)
        return self.lm_head(hidden[:, -1]), presents

    def load_weight(self, state_dict, random_init=False):
        """Microsoft's entry point: load a published / fine-tuned state dict (see checkpoint.py)."""
        from nlg.checkpoint import load_state_dict_into
        return load_state_dict_into(self, state_dict, random_init=random_init)
