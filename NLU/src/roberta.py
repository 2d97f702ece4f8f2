"""RoBERTa for sequence classification with pluggable low-rank adapters, in one file.

Parameter names and shapes are Hugging Face's (`roberta.embeddings.word_embeddings.weight`,
`roberta.encoder.layer.N.attention.self.query.weight`, ..., `classifier.dense`,
`classifier.out_proj`), so the published `pytorch_model.bin` files and Microsoft's released NLU
adapters (`roberta.encoder.layer.N.attention.self.{query,value}.lora_{A,B}` + `classifier.*`)
load without renaming. Every projection that may be adapted is built by `loralib.adapt_linear`
(F.linear layout); loralib's target names map onto RoBERTa's projections as

    q -> attention.self.query      k -> attention.self.key       v -> attention.self.value
    c_proj -> attention.output.dense   c_fc -> intermediate.dense   mlp_proj -> output.dense

Given the same weights, logits equal `transformers.RobertaForSequenceClassification` (fp32).
Checkpoint loading (`load_weights`) never leaves the backbone silently random: missing backbone
tensors are an error naming them unless `random_init=True`.
"""
import contextlib
import dataclasses
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import loralib as lora
from traincore import check_backbone, read_checkpoint, unwrap_state_dict
from traincore.noinit import no_init

# loralib target name -> attribute path inside one encoder layer
TARGET_MODULES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "c_proj": "attention.output.dense",
    "c_fc": "intermediate.dense",
    "mlp_proj": "output.dense",
}


# ----------------------------------------------------------------------------------------------
# Configuration

@dataclass
class RobertaConfig:
    """Hugging Face's RobertaConfig keys (a `config.json` of a RoBERTa checkpoint loads as is)."""
    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    num_labels: int = 2
    classifier_dropout: Optional[float] = None
    method: Any = None   # a loralib.MethodConfig (None: plain model)

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported "
                             f"(choose from {sorted(_ACTIVATIONS)})")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")

    @property
    def adapter(self):
        m = self.method
        return m if (m is not None and getattr(m, "is_adapter", False)) else None

    def to_dict(self) -> Dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "method"}
        if self.method is not None:
            d["method"] = self.method.to_dict()
        return d


CARDS = {
    "roberta-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072),
    "roberta-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096),
    # For tests and smoke runs; its vocabulary fits the GPT-2 BPE files used as a stand-in.
    "roberta-tiny": dict(vocab_size=50265, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=130),
}


def config_from_card(card: str, **overrides) -> RobertaConfig:
    """A card name (roberta-base | roberta-large | roberta-tiny) or a HF-style config.json path;
    keys of config.json that are not RobertaConfig fields (architectures, model_type, ...) are
    ignored, as they describe nothing this model builds."""
    if card in CARDS:
        kw = dict(CARDS[card])
    elif os.path.isfile(card):
        with open(card, encoding="utf-8") as f:
            try:
                raw = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{card}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{card}: expected a JSON object of RobertaConfig keys")
        names = {f.name for f in dataclasses.fields(RobertaConfig)} - {"method"}
        kw = {k: v for k, v in raw.items() if k in names}
    else:
        raise ValueError(f"unknown model card {card!r}: use one of {sorted(CARDS)} "
                         f"or the path of a config.json")
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return RobertaConfig(**kw)


def _gelu(x):
    return F.gelu(x)


_ACTIVATIONS = {"gelu": _gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
                "relu": F.relu, "tanh": torch.tanh}


# ----------------------------------------------------------------------------------------------
# Model

def _projection(cfg: RobertaConfig, target: str, n_in: int, n_out: int) -> nn.Linear:
    a = cfg.adapter
    return lora.adapt_linear(n_in, n_out, a if (a is not None and target in a.targets) else None)


class RobertaEmbeddings(nn.Module):
    def __init__(self, cfg: RobertaConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size,
                                            padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size,
                                                padding_idx=cfg.pad_token_id)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.padding_idx = cfg.pad_token_id

    def forward(self, input_ids, token_type_ids=None, layout=None):
        # RoBERTa numbers real tokens from padding_idx + 1; padding keeps padding_idx.
        longest = self.position_embeddings.num_embeddings - self.padding_idx - 1
        if input_ids.shape[1] > longest:   # a shape check: no device sync per step
            raise ValueError(f"sequence of {input_ids.shape[1]} tokens is longer than the "
                             f"model's {longest} positions: lower --max_seq_length")
        mask = input_ids.ne(self.padding_idx).long()
        position_ids = torch.cumsum(mask, dim=1) * mask + self.padding_idx
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(position_ids))
        if layout is not None:
            x = layout.unpad(x)
        return self.dropout(self.LayerNorm(x))


class Layout:
    """Where a batch's real tokens are. Every token-wise layer (projections, feed-forward, layer
    norms, dropout) runs on the real tokens only, as rows (N, C): on GLUE about half of a padded
    batch is padding, which would otherwise cost as much as the text. Only attention needs the
    (B, T) grid: `pad` scatters rows into it (padding rows 0, masked out as keys, their query
    outputs dropped) and `unpad` gathers them back. Each real token's result is what the padded
    computation gives it; dropout draws a mask for the real tokens only, the same distribution.
    `token_rows`: those flat indices computed on the host by the batch's collate (a nonzero on
    the device makes a GPU step wait for the device: its result's size is data)."""

    def __init__(self, batch: int, length: int, attention_mask=None, token_rows=None):
        self.B, self.T = batch, length
        self.rows = None     # None: no padding, rows are the grid itself
        if attention_mask is not None:
            rows = token_rows if token_rows is not None else \
                attention_mask.reshape(-1).nonzero().squeeze(1)
            if rows.numel() < batch * length:
                self.rows = rows

    def unpad(self, x):
        flat = x.reshape(self.B * self.T, x.shape[-1])
        return flat if self.rows is None else flat.index_select(0, self.rows)

    def pad(self, rows):
        if self.rows is None:
            return rows.view(self.B, self.T, rows.shape[-1])
        grid = rows.new_zeros(self.B * self.T, rows.shape[-1])
        return grid.index_copy(0, self.rows, rows).view(self.B, self.T, rows.shape[-1])


class RobertaSelfAttention(nn.Module):
    def __init__(self, cfg: RobertaConfig):
        super().__init__()
        h = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.query = _projection(cfg, "q", h, h)
        self.key = _projection(cfg, "k", h, h)
        self.value = _projection(cfg, "v", h, h)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def forward(self, x, keep, layout):
        B, T, C = layout.B, layout.T, x.shape[-1]

        def split(t):
            return layout.pad(t).view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                           dropout_p=self.dropout_p if self.training else 0.0)
        return layout.unpad(y.transpose(1, 2).reshape(B, T, C))


class RobertaSelfOutput(nn.Module):
    def __init__(self, cfg: RobertaConfig, target: str, n_in: int):
        super().__init__()
        self.dense = _projection(cfg, target, n_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class RobertaAttention(nn.Module):
    def __init__(self, cfg: RobertaConfig):
        super().__init__()
        self.self = RobertaSelfAttention(cfg)
        self.output = RobertaSelfOutput(cfg, "c_proj", cfg.hidden_size)

    def forward(self, x, keep, layout):
        return self.output(self.self(x, keep, layout), x)


class RobertaIntermediate(nn.Module):
    def __init__(self, cfg: RobertaConfig):
        super().__init__()
        self.dense = _projection(cfg, "c_fc", cfg.hidden_size, cfg.intermediate_size)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))


class RobertaLayer(nn.Module):
    def __init__(self, cfg: RobertaConfig):
        super().__init__()
        self.attention = RobertaAttention(cfg)
        self.intermediate = RobertaIntermediate(cfg)
        self.output = RobertaSelfOutput(cfg, "mlp_proj", cfg.intermediate_size)

    def forward(self, x, keep, layout):
        a = self.attention(x, keep, layout)
        return self.output(self.intermediate(a), a)


class RobertaEncoder(nn.Module):
    def __init__(self, cfg: RobertaConfig):
        super().__init__()
        self.layer = nn.ModuleList(RobertaLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x, keep, layout):
        for layer in self.layer:
            x = layer(x, keep, layout)
        return x


class RobertaModel(nn.Module):
    """The encoder without a pooler (RobertaForSequenceClassification has none)."""

    def __init__(self, cfg: RobertaConfig):
        super().__init__()
        self.embeddings = RobertaEmbeddings(cfg)
        self.encoder = RobertaEncoder(cfg)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, token_rows=None):
        """(B, T, C) hidden states; rows of padding hold zeros. token_rows: see Layout."""
        layout = Layout(*input_ids.shape, attention_mask, token_rows)
        x = self.embeddings(input_ids, token_type_ids, layout)
        keep = None
        if attention_mask is not None:
            # Boolean (B, 1, 1, T), True = attend: valid for SDPA whatever dtype autocast gives
            # q/k/v (an additive float mask must match it). Every row keeps its <s> token.
            keep = attention_mask[:, None, None, :].to(torch.bool)
        return layout.pad(self.encoder(x, keep, layout))


class RobertaClassificationHead(nn.Module):
    def __init__(self, cfg: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        p = cfg.classifier_dropout if cfg.classifier_dropout is not None else cfg.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.num_labels)

    def forward(self, features):
        x = self.dropout(features[:, 0])   # the <s> token
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


def _has_adapter_init(m: nn.Module) -> bool:
    return (isinstance(m, lora.LoRALayer) and hasattr(m, "reset_adapter_parameters")
            and getattr(m, "has_adapter", False))


class RobertaForSequenceClassification(nn.Module):
    def __init__(self, cfg: RobertaConfig, init_backbone: bool = True):
        """init_backbone=False: for a checkpoint that sets every backbone tensor (load_weights
        refuses one that lacks any): their random draws, most of the start-up on a CPU, are
        skipped; the adapters and the classifier head are drawn as with the full init, in
        module order. They then see another RNG state than with it, so a seed's adapters
        differ between the two."""
        super().__init__()
        self.config = cfg
        with contextlib.nullcontext() if init_backbone else no_init():
            self.roberta = RobertaModel(cfg)
        self.classifier = RobertaClassificationHead(cfg)
        if init_backbone:
            self.apply(self._init_weights)
            return
        for m in self.roberta.modules():
            if _has_adapter_init(m):
                m.reset_adapter_parameters()
        self.classifier.apply(self._init_weights)

    def _init_weights(self, m):
        # HF's initialization; adapter factors keep their own (reset after, below).
        std = self.config.initializer_range
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            if _has_adapter_init(m):
                m.reset_adapter_parameters()
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                token_rows=None):
        """Logits (B, num_labels); with `labels`, (loss, logits): MSE when num_labels == 1
        (STS-B regression), else cross-entropy. token_rows: the flat indices of the real tokens
        (attention_mask's nonzero), computed on the host (see Layout)."""
        logits = self.classifier(self.roberta(input_ids, attention_mask, token_type_ids,
                                              token_rows))
        if labels is None:
            return logits
        if self.config.num_labels == 1:
            loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
        else:
            loss = F.cross_entropy(logits.float(), labels.long())
        return loss, logits


# ----------------------------------------------------------------------------------------------
# Checkpoints

# Tensors of published checkpoints that this classification model does not have.
_IGNORED_PREFIXES = ("roberta.pooler.", "lm_head.")
_IGNORED_KEYS = ("roberta.embeddings.position_ids", "roberta.embeddings.token_type_ids")


def read_state_file(path) -> Dict[str, torch.Tensor]:
    """A flat {HF key: tensor} dict from pytorch_model.bin / a {'model_state_dict': ...} file /
    .safetensors; `module.` prefixes (DDP) dropped and bare RobertaModel keys (`embeddings.`,
    `encoder.`) given the `roberta.` prefix."""
    path = os.fspath(path)
    sd = unwrap_state_dict(read_checkpoint(path), path,
                           containers=("model_state_dict", "state_dict", "model"), tensors_only=True)
    out = {}
    for k, v in sd.items():
        if k.startswith(("embeddings.", "encoder.", "pooler.")):
            k = "roberta." + k
        k = _official_key(k)
        if k is None:
            continue
        if k in out:
            raise ValueError(f"checkpoint {path}: two keys map to {k!r}")
        out[k] = v
    return out


_XTUNING = re.compile(r"\.xtuning_([ABCD])$")


def _official_key(k: str) -> Optional[str]:
    """Keys of the methods' official NLU code in this model's naming (None: drop the key).

    LoRMA's run_glue_lorma_*.py wraps each adapted nn.Linear as `original_layer`; MTLoRA's
    modeling_roberta.py names its factors xtuning_{A,B,C,D} and builds a `key_proj` adapter
    that its forward never uses (dropped: it never trained)."""
    k = k.replace(".original_layer.", ".")
    if ".attention.self.key_proj." in k:
        return None
    return _XTUNING.sub(lambda m: f".lora_{m.group(1)}", k)


def _is_classifier(k: str) -> bool:
    return k.startswith("classifier.")


def load_weights(model: RobertaForSequenceClassification, init_checkpoint=None,
                 adapter_checkpoint=None, random_init: bool = False,
                 log=print) -> Dict[str, List[str]]:
    """Load a backbone (+ optional classifier / adapter) and an optional adapter file.

    Backbone tensors come from init_checkpoint, then adapter_checkpoint (later wins), and must
    cover every backbone tensor of the model, else ValueError listing the missing keys (unless
    random_init). Adapter tensors are taken from the last file that has any and loaded strictly
    (`lora.load_lora_state_dict`). The classifier head is loaded from the last file that has one
    when its shapes match the model's (an MNLI head does not fit a 2-label task: it is skipped
    and reported). Returns {'backbone', 'adapter', 'classifier', 'skipped'} key lists.
    """
    own = model.state_dict()
    backbone_keys = [k for k in own if not lora.is_adapter_key(k) and not _is_classifier(k)]
    want = {k: own[k].shape for k in backbone_keys}
    backbone, adapter, head, head_src = {}, None, None, None
    adapter_src = None
    skipped: List[str] = []
    for path in (init_checkpoint, adapter_checkpoint):
        if path is None:
            continue
        sd = read_state_file(path)
        part = {k: v for k, v in sd.items() if not lora.is_adapter_key(k) and not _is_classifier(k)
                and k not in _IGNORED_KEYS and not k.startswith(_IGNORED_PREFIXES)}
        check_backbone(want, part, path, random_init=True)   # tensors it lacks, shapes
        backbone.update(part)
        ad = {k: v for k, v in sd.items() if lora.is_adapter_key(k)}
        if ad:
            if model.config.adapter is None:
                raise KeyError(f"checkpoint {path} holds adapter tensors ({next(iter(ad))!r}, ...) "
                               f"but the model has no adapter: pass the method flags it was "
                               f"trained with (e.g. --lora_dim 8)")
            adapter, adapter_src = ad, path
        hd = {k: v for k, v in sd.items() if _is_classifier(k)}
        if hd:
            head, head_src = hd, path
    given = " + ".join(str(p) for p in (init_checkpoint, adapter_checkpoint) if p) or "(none)"
    missing = check_backbone(want, backbone, given, random_init,
                             " An adapter-only file needs the pretrained model too "
                             "(--init_checkpoint pytorch_model.bin --adapter_checkpoint ADAPTER).")
    if missing:
        log(f"random_init: {len(missing)} of {len(backbone_keys)} backbone tensors left random")
    model.load_state_dict(backbone, strict=False)
    loaded_adapter: List[str] = []
    if model.config.adapter is not None and adapter is not None:
        loaded_adapter = lora.load_lora_state_dict(model, adapter, source=f"checkpoint {adapter_src}")
    loaded_head: List[str] = []
    if head is not None:
        fits = (set(head) == {k for k in own if _is_classifier(k)}
                and all(tuple(v.shape) == tuple(own[k].shape) for k, v in head.items()))
        if fits:
            model.load_state_dict(head, strict=False)
            loaded_head = sorted(head)
        else:
            skipped = sorted(head)
            shapes = {k: tuple(v.shape) for k, v in head.items() if "out_proj" in k}
            log(f"classifier head of {head_src} not loaded: it does not fit this task "
                f"({shapes} vs num_labels={model.config.num_labels}); a new head is trained")
    return {"backbone": sorted(backbone), "adapter": loaded_adapter, "classifier": loaded_head,
            "skipped": skipped}


def trainable_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """What a run saves: adapter + classifier head, or every tensor for full fine-tuning."""
    cfg = model.config
    if cfg.adapter is None:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = {k: v.detach().cpu() for k, v in lora.lora_state_dict(model).items()}
    out.update({k: v.detach().cpu() for k, v in model.state_dict().items() if _is_classifier(k)})
    return out
