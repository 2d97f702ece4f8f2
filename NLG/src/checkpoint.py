"""Reading and writing GPT-2 checkpoints.

Files this reads (all through `load_state_file`):
  * the published `gpt2{,-medium,-large}-pytorch_model.bin`: keys without prefix (`h.0.attn.c_attn.weight`),
    Conv1D layout, optional `h.N.attn.bias` / `h.N.attn.masked_bias` buffers (dropped);
  * `.safetensors` files of the same layout (when the `safetensors` package is installed);
  * fine-tuned checkpoints `{'model_state_dict': ...}` with `module.` / `module.transformer.` /
    `transformer.` prefixes (Microsoft's periodic adapter-only files and final full files);
  * the files gpt2_ft.py writes (below);
  * the files the LoRMA, MTLoRA and NOLA official GPT-2 code writes (official_keys.py).
Keys come back in the published naming (no prefix); `lm_head.*` is dropped (tied to wte).

Files gpt2_ft.py writes:
  * `model.<step>.pt` every --save_interval: {'model_state_dict': adapter tensors only}
    (full fine-tuning: every tensor), keys `transformer.h.N...` as `lora.lora_state_dict` gives them;
  * the final `model.<last step>.pt`: {'model_state_dict': backbone + adapter}, enough on its own
    for `--init_checkpoint` (the adapter in `lora_state_dict` form, e.g. quantized NOLA codes);
  * `resume.pt`: the above plus optimizer / scheduler / RNG / step, for `--resume`.

Command line (export a checkpoint as a published GPT-2 file, e.g. a pretrained demo base):
    python src/checkpoint.py export --model_card CARD --init_checkpoint work_dir/model.N.pt \
        --output pytorch_model.bin [--backbone_checkpoint BASE] [--merge] [method flags]

Contract used by gpt2_beam.py (keep stable):
    load_model_weights(model, init_checkpoint, adapter_checkpoint=None, random_init=False,
                       backbone_checkpoint=None, require_adapter=False) -> dict
Every file given is read; backbone tensors are merged (backbone_checkpoint, then init_checkpoint,
then adapter_checkpoint; later files win per key) and must cover every backbone tensor the model
has, else ValueError listing the missing ones (unless random_init). Adapter tensors are taken as a
whole from the last file that has any and loaded with `lora.load_lora_state_dict` (strict).
"""
import os
import re

import torch

from nlg.model import lora
from nlg.official_keys import translate as translate_official_keys
from traincore import (check_backbone, few, read_checkpoint, remove_stale_temporaries,  # noqa: F401
                       save_atomic, unwrap_state_dict)

_PREFIXES = ("transformer.",)   # after DDP's `module.` (traincore.unwrap_state_dict)
_SUFFIXES = {".g": ".weight", ".b": ".bias", ".w": ".weight"}  # TF-converted GPT-2 names
_ATTN_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


def load_state_file(path):
    """A flat {published key: tensor} dict from any checkpoint file above; clear errors otherwise."""
    return normalize_state_dict(read_checkpoint(path), source=os.fspath(path))


def normalize_state_dict(obj, source="<state dict>"):
    """Unwrap `model_state_dict`, strip training prefixes, drop tied / buffer entries."""
    out = {}
    for key, value in unwrap_state_dict(obj, source).items():
        k = key
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        if k.startswith("lm_head.") or _ATTN_BUFFER.match(k):
            continue
        for old, new in _SUFFIXES.items():
            if k.endswith(old):
                k = k[: -len(old)] + new
        if k in out:
            raise ValueError(f"checkpoint {source}: keys {key!r} and another one both map to {k!r}")
        out[k] = value
    return translate_official_keys(out, source)


def split_state(sd):
    """(backbone, adapter) halves of a published-naming state dict."""
    backbone = {k: v for k, v in sd.items() if not lora.is_adapter_key(k)}
    adapter = {k: v for k, v in sd.items() if lora.is_adapter_key(k)}
    return backbone, adapter


def _model_has_adapter(model):
    return any(lora.is_adapter_key(n) for n, _ in model.named_parameters())


def load_state_dict_into(model, state_dict, random_init=False, require_adapter=False,
                         source="<state dict>", adapter_source=None):
    """Load a (possibly raw) state dict into a GPT2LMModel with the checks described above."""
    sd = normalize_state_dict(state_dict, source=source)
    backbone, adapter = split_state(sd)
    want = {k: v.shape for k, v in model.transformer.state_dict().items()
            if not lora.is_adapter_key(k)}
    hint = (" It holds only adapter weights: also give the pretrained backbone"
            " (e.g. gpt2-medium-pytorch_model.bin)." if adapter and not backbone else "")
    missing = check_backbone(want, backbone, source, random_init, hint)
    with torch.no_grad():
        model.transformer.load_state_dict(backbone, strict=False)
    has_adapter = _model_has_adapter(model)
    if adapter:
        if not has_adapter:
            raise ValueError(f"checkpoint {adapter_source or source}: holds adapter tensors "
                             f"({few(adapter)}) but the model was built without an adapter: "
                             f"pass the method flags used for training (e.g. --lora_dim 4 "
                             f"--lora_alpha 32, --nola_rank 8 ..., --method ...)")
        try:
            lora.load_lora_state_dict(model, {"transformer." + k: v for k, v in adapter.items()})
        except (KeyError, RuntimeError, ValueError) as e:
            raise type(e)(f"checkpoint {adapter_source or source}: adapter does not match the "
                          f"model's method flags: {e}") from None
    elif require_adapter and has_adapter:
        raise ValueError(f"checkpoint {source}: holds no adapter tensors but the model has an "
                         f"adapter to load (pass the trained model.<step>.pt)")
    return {"backbone_loaded": len(backbone), "backbone_missing": len(missing),
            "adapter_loaded": len(adapter)}


def load_model_weights(model, init_checkpoint=None, adapter_checkpoint=None, random_init=False,
                       backbone_checkpoint=None, require_adapter=False):
    """See the module docstring. Returns a summary dict (counts and which file gave what)."""
    files = [p for p in (backbone_checkpoint, init_checkpoint, adapter_checkpoint) if p]
    if not files:
        if not random_init:
            raise ValueError("no checkpoint given: pass --init_checkpoint (the pretrained GPT-2 "
                             "pytorch_model.bin or a trained model.<step>.pt), or --random_init "
                             "to train from random weights on purpose")
        return {"backbone_loaded": 0, "backbone_missing": None, "adapter_loaded": 0,
                "backbone_from": [], "adapter_from": None}
    backbone, adapter, adapter_from, backbone_from = {}, {}, None, []
    for path in files:
        b, a = split_state(load_state_file(path))
        if b:
            backbone.update(b)
            backbone_from.append(os.fspath(path))
        if a:
            adapter, adapter_from = a, os.fspath(path)
    source = " + ".join(os.fspath(p) for p in files)
    info = load_state_dict_into(model, {**backbone, **adapter}, random_init=random_init,
                                require_adapter=require_adapter, source=source,
                                adapter_source=adapter_from)
    info.update(backbone_from=backbone_from, adapter_from=adapter_from)
    return info


def method_record(method):
    """What a checkpoint records of how it was trained, beside Microsoft's `model_state_dict`
    (whose readers ignore other keys): the loralib MethodConfig and version."""
    return {"loralib": {**method.to_dict(), "loralib_version": lora.__version__}}


def stored_method(path):
    """The MethodConfig a checkpoint records (None: a file that records nothing, e.g. the
    published GPT-2 or one written by Microsoft's or a method's official code)."""
    if path is None or not os.path.isfile(path) or os.fspath(path).endswith(".safetensors"):
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None     # load_state_file reports unreadable files with the full story
    record = obj.get("loralib") if isinstance(obj, dict) else None
    if not isinstance(record, dict):
        return None
    record = {k: v for k, v in record.items() if k != "loralib_version"}
    try:
        return lora.MethodConfig.from_dict(record)
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: its recorded method {record} is not valid "
                         f"here ({e})") from None


def backbone_state_dict(model):
    """The model's backbone in the published naming and layout (no adapter tensors)."""
    return {k: v.detach().clone().contiguous() for k, v in model.transformer.state_dict().items()
            if not lora.is_adapter_key(k)}


def export_published(model, path, merge=False):
    """Write the backbone as a published GPT-2 `pytorch_model.bin` (or `.safetensors`). With
    merge=True the adapter is folded into the weights first (and unfolded afterwards)."""
    if merge:
        lora.merge_all(model)
    try:
        sd = backbone_state_dict(model)
    finally:
        if merge:
            lora.unmerge_all(model)
    save_atomic(sd, path)
    return path


def training_state_dict(model):
    """What a final checkpoint holds: backbone + adapter (adapter in lora_state_dict form)."""
    sd = {"transformer." + k: v for k, v in backbone_state_dict(model).items()}
    if _model_has_adapter(model):
        sd.update(lora.lora_state_dict(model))
    return sd


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="GPT-2 checkpoint tools")
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write a checkpoint's model as a published GPT-2 "
                                       "pytorch_model.bin (or .safetensors)")
    ex.add_argument("--model_card", required=True,
                    help="gpt2.sm | gpt2.md | gpt2.lg | gpt2.tiny or a JSON card")
    ex.add_argument("--init_checkpoint", required=True, help="model.<step>.pt or any checkpoint")
    ex.add_argument("--backbone_checkpoint", default=None,
                    help="the pretrained backbone, when --init_checkpoint is adapter-only")
    ex.add_argument("--output", required=True, help="file to write")
    ex.add_argument("--merge", action="store_true",
                    help="fold the adapter into the weights (otherwise an adapter is dropped)")
    lora.add_method_args(ex)
    from traincore.cli import setup_parser
    setup_parser(ap)
    ex.error = ap.error            # one line for the subcommand's errors too
    args = ap.parse_args(argv)
    from nlg.model import GPT2LMModel, config_from_card
    method = lora.method_config_from_args(args, default="full", pipeline="gpt2")
    model = GPT2LMModel(config_from_card(args.model_card, method=method))
    load_model_weights(model, args.init_checkpoint, backbone_checkpoint=args.backbone_checkpoint,
                       require_adapter=args.merge)
    export_published(model, args.output, merge=args.merge)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    from traincore.cli import run
    run("checkpoint", main)
