"""LoRMA's card (Bihany et al., ACL Findings 2025): its options, each pipeline's official
defaults and its flags. The arithmetic, and where each default comes from in the official code,
is in loralib/lorma.py."""
from typing import Tuple

from ..registry import MethodCLI, register, register_preset

KINDS = ("rri", "shift", "none")
MODES = ("pre", "post", "complete_pre", "complete_post")
INITS = ("b_zero", "a_zero")
DROPOUT_SITES = ("input", "adapter", "none")


def notes(config) -> Tuple[str, ...]:
    """Run-log lines: the official GPT-2 code stores --lora_dropout and never applies it."""
    out = []
    o = config.options
    if config.dropout > 0 and o.get("dropout_site") == "none":
        out.append(f"LoRMA: dropout {config.dropout} is not applied, as in the official GPT-2 "
                   f"code (model_lorma_plus.py / model_lorma_pi.py store it and never use it); "
                   f"--lorma_dropout_site input|adapter applies it")
    if str(o.get("mode", "")).startswith("complete_"):
        out.append(f"LoRMA: mode {o['mode']} trains a dense T starting at I; kind and alpha "
                   f"play no part")
    return tuple(out)


def _add_args(g) -> None:
    g.add_argument("--lorma_type", default=None, choices=KINDS,
                   help="LoRMA variant: rri = LoRMA_+ (I + sBA), shift = LoRMA_pi (s pi(BA)), "
                        "none = s BA")
    g.add_argument("--lorma_mode", default=None, choices=MODES,
                   help="LoRMA side: pre = T W0, post = W0 T (default pre); complete_*: dense T")
    g.add_argument("--lorma_init", default=None, choices=INITS,
                   help="LoRMA_+ zero factor (default: the pipeline's official one; GPT-2 a_zero)")
    g.add_argument("--lorma_dropout_site", default=None, choices=DROPOUT_SITES,
                   help="where LoRMA applies dropout (default: official; GPT-2 none, NLU input)")


_FLAG_OPTION = {"lorma_type": "kind", "lorma_mode": "mode", "lorma_init": "init",
                "lorma_dropout_site": "dropout_site"}


def _to_config(args):
    return {"options": {o: getattr(args, f) for f, o in _FLAG_OPTION.items()
                        if getattr(args, f, None) is not None}}


register("lorma", "loralib.lorma:LoRMALinear",
         defaults={"kind": "rri", "mode": "pre", "init": "b_zero", "dropout_site": "input"},
         choices={"kind": KINDS, "mode": MODES, "init": INITS, "dropout_site": DROPOUT_SITES},
         pipeline_defaults={"gpt2": {"init": "a_zero", "dropout_site": "none"}},
         notes=notes, init_only=("init", "dropout_site"),
         cli=MethodCLI(add_args=_add_args, flags=tuple(_FLAG_OPTION), to_config=_to_config,
                       variants={"lorma_plus": "--lorma_type rri",
                                 "lorma_pi": "--lorma_type shift"},
                       aliases={  # LoRMA's GPT-2 scripts, NLU run_glue_lorma_*.py, MetaMathQA
                           "mult_lora_dim": ("lora_dim", int),
                           "mult_lora_alpha": ("lora_alpha", float),
                           "mult_lora_dropout": ("lora_dropout", float),
                           "lorma_r": ("lora_dim", int), "lorma_alpha": ("lora_alpha", float),
                           "lorma_dropout": ("lora_dropout", float),
                           "rank_inflation": ("lorma_type", str)}))
register_preset("lorma_plus", "lorma", kind="rri")
register_preset("lorma_pi", "lorma", kind="shift")
