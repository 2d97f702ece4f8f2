"""A Hugging Face causal LM as the NLG pipeline's backbone (`--backbone hf:...`; the interface:
nlg/backbone.py).

The model is loaded in float32, every method goes in through `loralib.inject` on the projections
--adapt_targets names, and the loss is the GPT-2 pipeline's (nlg/lm_loss.py: logits only at the
loss positions, label smoothing, a sum over the tokens) computed from the model's own hidden
states and output layer.

Targets: --adapt_targets takes loralib's names (q, k, v, c_proj, c_fc, mlp_proj), translated for
the Llama family's module names (q_proj, k_proj, v_proj, o_proj, gate_proj + up_proj,
down_proj: Llama, Mistral, Qwen2, SmolLM2, ...), or the model's own module-name suffixes
(e.g. q_proj,v_proj or c_attn). Default: the method's targets in loralib's "llm" pipeline, q and
v for every method (the papers' setting), i.e. q_proj,v_proj. The method's other defaults are
the "llm" pipeline's too (loralib/registry.py: the Hugging Face causal LMs), e.g. LoRMA starts
B = 0 as its math code does, MTLoRA keeps one T per projection (the fused GPT-2 layer that
shares T does not exist here). Each layer's adapter is drawn on its own.

Checkpoints (model.<step>.pt) hold the adapter (every tensor for full fine-tuning), the
loralib method record and a backbone record ({"kind": "hf", "spec", "target_modules",
"model_class", "vocab_size", "eos_token_id", "tokenizer"}): the backbone's frozen weights come
again from the recorded spec, so gpt2_beam.py needs the checkpoint alone.
"""
import torch
import torch.nn as nn

import loralib as lora
from nlg.backbone import parse_hf_spec
from nlg.hf_loading import load_config, load_model, load_tokenizer
from nlg.lm_loss import lm_loss
from traincore import read_checkpoint, unwrap_state_dict

KIND = "hf"
# loralib's target names -> the Llama family's module names
LLAMA_NAMES = {"q": ("q_proj",), "k": ("k_proj",), "v": ("v_proj",), "c_proj": ("o_proj",),
               "c_fc": ("gate_proj", "up_proj"), "mlp_proj": ("down_proj",)}


# ---------------------------------------------------------------------------- the model

class HFCausalLM(nn.Module):
    """A transformers causal LM behind the interface GPT2LMModel gives the pipeline."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf
        decoder = hf.get_decoder() if hasattr(hf, "get_decoder") else None
        if decoder is None or decoder is hf or hf.get_output_embeddings() is None:
            raise ValueError(f"{type(hf).__name__}: not a causal LM with a decoder and an "
                             f"output layer (get_decoder / get_output_embeddings)")
        cfg = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
        self.text_config = cfg

    @property
    def vocab_size(self):
        return self.hf.get_output_embeddings().weight.shape[0]

    def decoder(self):
        return self.hf.get_decoder()

    def head(self, hidden):
        """Logits from hidden states, as the model's own forward computes them (its output
        layer, then the final scalings some architectures apply)."""
        logits = self.hf.get_output_embeddings()(hidden)
        cfg = self.text_config
        if getattr(cfg, "logit_scale", None) is not None:            # Cohere
            logits = logits * cfg.logit_scale
        if getattr(cfg, "logits_scaling", None) is not None:         # Granite
            logits = logits / cfg.logits_scaling
        cap = getattr(cfg, "final_logit_softcapping", None)          # Gemma 2 / 3
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def forward(self, input_ids, lm_labels=None, lm_mask=None, label_smooth=0.0,
                reduction="mean", loss_positions=None, is_report_accuracy=False):
        """GPT2LMModel's training interface: (logits (B, T, V), None) without labels, else
        nlg.lm_loss's (logits at the loss positions, loss). Batches are right-padded and
        attention is causal, so padding never reaches a real position: no mask needed."""
        hidden = self.decoder()(input_ids=input_ids, use_cache=False).last_hidden_state
        if lm_labels is None:
            return self.head(hidden), None
        return lm_loss(hidden, self.head, lm_labels, lm_mask, label_smooth, reduction,
                       loss_positions, is_report_accuracy)

    def cache_bytes_per_position(self):
        cfg = self.text_config
        heads = cfg.num_attention_heads
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        size = next(self.parameters()).element_size()
        return 2 * cfg.num_hidden_layers * kv * head_dim * size

    def beam_cache(self, ids, lengths, beam, steps):
        """(logits after each context, the beam search's cache): see nlg/hf_beam_cache.py."""
        from nlg.hf_beam_cache import HFBeamCache
        return HFBeamCache.open(self, ids, lengths, beam, steps)


@torch.no_grad()
def check_head(model: HFCausalLM, what: str):
    """The logits the pipeline computes (decoder, then head) must be the model's own: an
    architecture whose forward does something else to them is refused, not trained wrongly."""
    was = model.training
    model.eval()
    try:
        ids = (torch.arange(4) % model.vocab_size).view(1, -1).to(next(model.parameters()).device)
        own = model.hf(input_ids=ids).logits
        ours = model.head(model.decoder()(input_ids=ids).last_hidden_state)
    finally:
        model.train(was)
    if own.shape != ours.shape or not torch.allclose(own, ours, rtol=1e-5, atol=1e-5):
        raise ValueError(f"{what}: {type(model.hf).__name__} computes its logits in a way this "
                         f"pipeline does not reproduce (decoder output through the output layer "
                         f"differs from its forward's logits)")


# ---------------------------------------------------------------------------- targets

def explicit_targets(args):
    """--adapt_targets as the model's module names (a list), or None when it is absent or
    loralib's names (then args keeps them for the method config). Module names are taken out
    of args, so that loralib's parser does not refuse them."""
    text = getattr(args, "adapt_targets", None)
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError("--adapt_targets is empty")
    if all(n in LLAMA_NAMES for n in names):
        return None
    if any(n in LLAMA_NAMES for n in names):
        raise ValueError(f"--adapt_targets {text}: mixes loralib's names "
                         f"({', '.join(LLAMA_NAMES)}) with module names; use one kind")
    if getattr(args, "nola_mlp", None):
        raise ValueError("--nola_mlp adds loralib's c_fc, mlp_proj, but --adapt_targets names "
                         "modules: name the MLP's modules there instead")
    args.adapt_targets = None
    return names


def _linear_suffixes(hf):
    out = []
    for name, m in hf.named_modules():
        if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D":
            last = name.rsplit(".", 1)[-1]
            if last not in out:
                out.append(last)
    return out


def resolve_targets(hf, method, explicit, flag="--adapt_targets"):
    """The module-name suffixes to adapt: `explicit`, else the method's loralib targets through
    LLAMA_NAMES. Each must name some module of the model."""
    if explicit is not None:
        names = list(explicit)
    else:
        names = [n for t in method.targets for n in LLAMA_NAMES[t]]
    present = {name.rsplit(".", 1)[-1] for name, _ in hf.named_modules()}
    missing = [n for n in names if n not in present]
    if missing:
        given = ",".join(explicit) if explicit is not None else ",".join(method.targets)
        raise ValueError(f"{flag} {given}: {type(hf).__name__} has no module named "
                         f"{', '.join(missing)}; its projections: "
                         f"{', '.join(_linear_suffixes(hf))} (name them in --adapt_targets)")
    return names


def check_targets(config, method, explicit):
    """resolve_targets on a weightless copy of the model (built on the meta device from its
    configuration): the command line's errors before any weight is read."""
    if not method.is_adapter:
        return None
    from nlg.hf_loading import transformers_module
    with torch.device("meta"):
        skeleton = transformers_module().AutoModelForCausalLM.from_config(config)
    return resolve_targets(skeleton, method, explicit)


# ---------------------------------------------------------------------------- the backbone

class HFBackbone:
    kind = KIND

    def __init__(self, spec, explicit=None):
        self.spec, self.explicit = spec, explicit
        self.config = load_config(spec)
        self.target_modules = None
        self.eos_token_id = None
        self.model_class = None

    @classmethod
    def from_args(cls, args, method):
        return cls(parse_hf_spec(args.backbone), getattr(args, "hf_target_modules", None))

    @property
    def vocab_size(self):
        return self.config.vocab_size

    @property
    def max_positions(self):
        return getattr(self.config, "max_position_embeddings", None)

    def build(self, args, method):
        tok = load_tokenizer(self.spec, "--backbone")
        if tok.eos_token_id is None:
            raise ValueError(f"--backbone {self.spec}: its tokenizer has no end-of-sequence "
                             f"token, which the data use as separator and end")
        self.eos_token_id = int(tok.eos_token_id)
        hf = load_model(self.spec)
        self.model_class = type(hf).__name__
        model = HFCausalLM(hf)
        check_head(model, f"--backbone {self.spec}")
        if method.is_adapter:
            self.target_modules = resolve_targets(hf, method, self.explicit)
            names = lora.inject(hf, method, self.target_modules)
            info = f"{self.spec} ({self.model_class}); adapted {len(names)} modules " \
                   f"({', '.join(self.target_modules)})"
        else:
            info = f"{self.spec} ({self.model_class}); every weight trained"
        return model, info

    def record(self):
        return {"kind": KIND, "spec": str(self.spec), "target_modules": self.target_modules,
                "model_class": self.model_class, "vocab_size": self.vocab_size,
                "eos_token_id": self.eos_token_id, "tokenizer": str(self.spec)}

    def periodic_state(self, model, full):
        """Keys in the model's own naming (model.layers.0...); the frozen weights are not saved:
        they come from the recorded spec."""
        return dict(model.hf.state_dict()) if full else lora.lora_state_dict(model.hf)

    def final_state(self, model):
        return self.periodic_state(model, self.target_modules is None)

    def export(self, model, path):
        """The trained model, adapter merged, as a model folder (save_pretrained) with its
        tokenizer: `--backbone hf:<path>` loads it. Called last: the model is merged in place."""
        lora.merge_and_unload(model.hf)
        model.hf.save_pretrained(path)
        load_tokenizer(self.spec, "--backbone").save_pretrained(path)
        return path

    def run_info(self):
        return {"model_card": str(self.spec), "backbone": str(self.spec),
                "target_modules": self.target_modules}


# ---------------------------------------------------------------------------- decoding

def load_trained(path, record, method, spec_text=None):
    """(model, info) for decoding a checkpoint with an HF backbone record. spec_text: a
    --backbone given to gpt2_beam.py, used instead of the recorded spec (a moved folder); it
    must hold the same architecture and vocabulary."""
    spec = parse_hf_spec(spec_text or record.get("spec"),
                         "--backbone" if spec_text else f"checkpoint {path}: backbone")
    hf = load_model(spec, "--backbone" if spec_text else f"checkpoint {path}: backbone")
    model = HFCausalLM(hf)
    for key, now in (("model_class", type(hf).__name__), ("vocab_size", model.vocab_size)):
        if record.get(key) is not None and record[key] != now:
            raise ValueError(f"checkpoint {path} was trained on a {key} {record[key]!r} backbone "
                             f"({record.get('spec')}); {spec} has {now!r}")
    sd = unwrap_state_dict(read_checkpoint(path), str(path))
    has_adapter = any(lora.is_adapter_key(k) for k in sd)
    if method.is_adapter:
        if not has_adapter:
            raise ValueError(f"checkpoint {path}: holds no adapter tensors, but the method is "
                             f"{method.method!r}")
        lora.inject(hf, method, record.get("target_modules") or [])
        lora.load_lora_state_dict(hf, sd, source=f"checkpoint {path}")
        info = f"{spec} + the adapter of {path} ({', '.join(record['target_modules'])})"
    else:
        if has_adapter:
            raise ValueError(f"checkpoint {path}: holds adapter tensors but records no adapter "
                             f"method")
        try:
            hf.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ValueError(f"checkpoint {path}: does not fit {spec}: "
                             f"{str(e).splitlines()[0]}") from None
        info = f"{spec} with every weight from {path}"
    return model.eval(), info
