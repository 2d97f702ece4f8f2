"""The model behind the NLG pipeline: the hand-rolled GPT-2 of a --model_card (the reference
backbone), or a Hugging Face causal LM named by `--backbone hf:<hub id | folder | file.gguf>`.

Both give the trainer and the decoder the same small interface, so that finetune.py and
beam_run.py do not branch on the backbone:

  backbone.vocab_size                 ids the model embeds (the data are checked against it)
  backbone.max_positions              the longest sequence it takes (None: no limit known)
  backbone.build(args, method)        (model, what was loaded): the model with `method`'s
                                      adapter, only the trained tensors requiring grad
  backbone.record()                   what a checkpoint records of the backbone ({} for GPT-2:
                                      its files stay Microsoft's layout)
  backbone.periodic_state(model, full), backbone.final_state(model)
                                      the tensors of model.<step>.pt
  backbone.export(model, path)        the trained model, adapter merged, as the backbone's own
                                      published format
  backbone.run_info()                 what run_info.json says of the backbone

and the model itself: model(input_ids, lm_labels=..., lm_mask=..., label_smooth=...,
reduction=..., loss_positions=...) -> (logits, loss) (the loss of nlg/lm_loss.py),
model.vocab_size, model.cache_bytes_per_position(), and the beam search's cache
(beam_search.open_cache).
"""
import os
import re
from dataclasses import dataclass
from typing import Optional

import torch

GPT2 = "gpt2"
HF_PREFIX = "hf:"
# A hub repository id: "name" or "owner/name" (letters, digits, '-', '_', '.').
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class HFSpec:
    """Where a Hugging Face model (or tokenizer) comes from: a hub id or a local folder
    (`source`), and the GGUF file in it when the weights are one (`gguf_file`)."""
    source: str
    gguf_file: Optional[str] = None
    local: bool = False

    def __str__(self):
        if self.gguf_file is None:
            return HF_PREFIX + self.source
        joined = os.path.join(self.source, self.gguf_file) if self.local \
            else f"{self.source}/{self.gguf_file}"
        return HF_PREFIX + joined

    def load_kwargs(self):
        """Keywords for transformers' from_pretrained beside the source."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def parse_hf_spec(text: str, flag: str = "--backbone") -> HFSpec:
    """`hf:` + a local folder (made absolute, so a checkpoint that records it works from any
    directory), a local .gguf file, a hub id ("owner/name"), or a GGUF file in a hub repository
    ("owner/name/file.gguf"). A path that looks local (/, ., ~) and does not exist is an error,
    not a hub id."""
    if not isinstance(text, str) or not text.startswith(HF_PREFIX):
        raise ValueError(f"{flag} {text!r}: a Hugging Face model is written hf:<hub id | folder "
                         f"| file.gguf>")
    body = text[len(HF_PREFIX):].strip()
    if not body:
        raise ValueError(f"{flag} {text!r}: nothing after 'hf:' (give a hub id, a folder or a "
                         f".gguf file)")
    path = os.path.expanduser(body)
    if os.path.isdir(path):
        return HFSpec(os.path.abspath(path), local=True)
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ValueError(f"{flag} {text!r}: a file, but not a .gguf file (give the model's "
                             f"folder, or its GGUF file)")
        folder, name = os.path.split(os.path.abspath(path))
        return HFSpec(folder, name, local=True)
    if body.startswith(("/", ".", "~")):
        raise ValueError(f"{flag} {text!r}: no such folder or file")
    if body.endswith(".gguf"):
        parts = body.split("/")
        if len(parts) < 3:
            raise ValueError(f"{flag} {text!r}: a GGUF file on the hub is written "
                             f"hf:owner/name/file.gguf")
        repo, name = "/".join(parts[:2]), "/".join(parts[2:])
        if not _REPO_ID.match(repo):
            raise ValueError(f"{flag} {text!r}: {repo!r} is not a hub repository id")
        return HFSpec(repo, name)
    if not _REPO_ID.match(body):
        raise ValueError(f"{flag} {text!r}: neither an existing folder or .gguf file nor a hub "
                         f"id (owner/name)")
    return HFSpec(body)


def is_hf(text: Optional[str]) -> bool:
    return isinstance(text, str) and text.startswith(HF_PREFIX)


# ---------------------------------------------------------------------------- GPT-2

class GPT2Backbone:
    """The hand-rolled GPT-2 (nlg/model.py): --model_card, weights from --init_checkpoint."""
    kind = GPT2

    def __init__(self, args, method):
        self.args, self.method = args, method
        self._config = None

    @property
    def config(self):
        if self._config is None:
            from nlg.model import config_from_card
            self._config = config_from_card(self.args.model_card, method=self.method,
                                            independent_layer_init=self.args.independent_layer_init)
        return self._config

    @property
    def vocab_size(self):
        return self.config.vocab_size

    @property
    def max_positions(self):
        return self.config.n_positions

    def build(self, args, method):
        from nlg.checkpoint import load_model_weights
        from nlg.model import GPT2LMModel, lora
        # A checkpoint without --random_init sets every backbone tensor (the loader checks): no
        # random draws for them.
        model = GPT2LMModel(self.config, init_backbone=args.random_init or not args.init_checkpoint)
        info = load_model_weights(model, args.init_checkpoint, random_init=args.random_init)
        if self.config.adapter is not None:
            lora.mark_only_lora_as_trainable(model)
        return model, info

    def record(self):
        return {}

    def periodic_state(self, model, full):
        from nlg.model import lora
        return model.state_dict() if full else lora.lora_state_dict(model)

    def final_state(self, model):
        from nlg.checkpoint import training_state_dict
        return training_state_dict(model)

    def export(self, model, path):
        from nlg.checkpoint import export_published
        return export_published(model, path, merge=True)

    def run_info(self):
        return {"model_card": self.args.model_card}


def open_backbone(args, method):
    """The backbone gpt2_ft.py trains (args.backbone: "gpt2" or "hf:...")."""
    if is_hf(getattr(args, "backbone", GPT2)):
        from nlg.hf_backbone import HFBackbone
        return HFBackbone.from_args(args, method)
    return GPT2Backbone(args, method)


def stored_backbone(path) -> Optional[dict]:
    """The backbone record a checkpoint holds (None: a GPT-2 file, which records none)."""
    if path is None or not os.path.isfile(path) or os.fspath(path).endswith(".safetensors"):
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None     # the checkpoint loader reports unreadable files with the full story
    record = obj.get("backbone") if isinstance(obj, dict) else None
    if record is None:
        return None
    if not isinstance(record, dict) or "kind" not in record:
        raise ValueError(f"checkpoint {path}: its 'backbone' entry {record!r} is not a "
                         f"backbone record")
    return record
