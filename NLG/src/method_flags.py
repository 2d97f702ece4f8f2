"""Method flags given beside a checkpoint that records its method (gpt2_beam.py, run_glue.py with
--adapter_checkpoint): the checkpoint's method is the one built, and every method flag given
must agree with it, or it is an error naming the flag as typed, its value and the checkpoint's.

What was not given never takes part: the defaults a flag would fill in (alpha 128, MTLoRA's
ICFM, NOLA's 8 ranks) are not compared with the checkpoint, and the checkpoint's values fill
what the flags leave out (gpt2_beam_lorma_plus.py without --lora_dim decodes the checkpoint's
rank). An entry point's presets (gpt2_beam_mtlora.py: --method mtlora --mtlora_structure ICFM)
count as given and are named as its presets.
"""
import copy
from typing import Dict, List, Optional, Tuple

import loralib as lora
from loralib.registry import NO_ADAPTER

# What each flag sets in a MethodConfig (after resolve_dialects folds the official spellings
# into ours); tests/test_method_flags.py checks that every registered flag is here.
FLAG_KEYS: Dict[str, Tuple[str, ...]] = {
    "method": ("method",), "use_nola": ("method",), "apply_lorma": ("method",),
    "apply_lora": ("method",),
    "lora_dim": ("r",), "nola_rank": ("r",),
    "lora_alpha": ("alpha",), "nola_c": ("alpha",),
    "lora_dropout": ("dropout",),
    "adapt_targets": ("targets",), "adapted_weights": ("targets",), "nola_qv": ("targets",),
    "nola_mlp": ("targets",),
    "lorma_type": ("kind",), "do_rri": ("kind",), "do_pi": ("kind",), "lorma_mode": ("mode",),
    "lorma_init": ("init",), "lorma_dropout_site": ("dropout_site",),
    "mtlora_structure": ("structure",), "mtlora_shared_t": ("shared_t",),
    "mtlora_per_projection_t": ("shared_t",),
    "nola_num_basis": ("num_basis_A", "num_basis_B"), "nola_num_basis_A": ("num_basis_A",),
    "nola_num_basis_B": ("num_basis_B",), "nola_seed": ("seed",), "nola_offsets": ("offsets",),
    "nola_basis_device": ("basis_device",), "qnola": ("qbits",), "qbits": ("qbits",),
}
_GENERIC = ("method", "lora_dim", "lora_alpha", "lora_dropout", "adapt_targets", "apply_lorma",
            "apply_lora", "do_rri", "do_pi", "adapted_weights")


class Given:
    """A method flag on the command line (or an entry point's preset)."""

    def __init__(self, dest, flag, value, preset_by=None):
        self.dest, self.flag, self.value, self.preset_by = dest, flag, value, preset_by

    def __str__(self):
        v = self.value
        value = "" if v is True else f" {int(v)}" if isinstance(v, float) and v.is_integer() \
            else f" {v}"
        return f"{self.flag}{value}" + (f" (preset by {self.preset_by})" if self.preset_by else "")


def _specs():
    return [lora.get_spec(name) for name in lora.families()]


def given_flags(args, preset: Optional[dict] = None, prog: str = "") -> List[Given]:
    """The method flags that have a value, in the spelling the user typed (an official alias is
    named as such) and with the dest it folds into."""
    preset = preset or {}
    out = []

    def add(attr, dest, flag):
        value = getattr(args, attr, None)
        if value is None:
            return
        by = prog if attr in preset and preset[attr] == value else None
        out.append(Given(dest, flag, value, by))

    for dest in _GENERIC:
        add(dest, dest, f"--{dest}")
    for spec in _specs():
        for dest in spec.cli.flags:
            add(dest, dest, f"--{dest}")
    aliases = {"lora_r": ("lora_dim", int)}
    for spec in _specs():
        aliases.update(spec.cli.aliases)
    for flag, (dest, _) in aliases.items():
        add(f"alias_{flag}", dest, f"--{flag}")
    return out


def _describe(stored) -> str:
    if not stored.is_adapter:
        return f"no adapter (method {stored.method!r})"
    kind = {k: v for k, v in stored.options.items()
            if k in ("kind", "mode", "structure", "qbits") and v is not None}
    extra = "".join(f", {k} {v!r}" for k, v in kind.items())
    return f"a {stored.method} adapter (r {stored.r}, alpha {stored.alpha}{extra})"


def _view(config) -> dict:
    """A config's values by key; the method as its family (presets pin options instead)."""
    method = config.method if config.method in NO_ADAPTER else lora.get_spec(config.method).family
    return {"method": method, "r": config.r, "alpha": config.alpha, "dropout": config.dropout,
            "targets": tuple(config.targets or ()), **config.options}


def _family(method: str) -> str:
    return method if method in NO_ADAPTER else lora.get_spec(method).family


def _claims(given: List[Given]) -> List[Tuple[Given, str]]:
    """(flag, method family it names or implies): --method, a method's own flags and official
    spellings, LoRMA's NLU switches; --lora_dim > 0 without them picks LoRA (Microsoft's rule)."""
    owner = {}
    for spec in _specs():
        owner.update({dest: spec.name for dest in spec.cli.flags})
        owner.update({f"--{flag}": spec.name for flag in spec.cli.aliases})
    out = []
    for g in given:
        if g.dest == "method":
            out.append((g, _family(g.value)))
        elif g.dest in ("apply_lorma", "do_rri", "do_pi") and g.value is not False:
            out.append((g, "lorma"))
        elif g.flag in owner:
            out.append((g, owner[g.flag]))
        elif g.dest in owner and g.flag == f"--{g.dest}":
            out.append((g, owner[g.dest]))
    if not out:
        out += [(g, "lora") for g in given if g.dest == "lora_dim" and g.value > 0
                and g.flag == "--lora_dim"]
    return out


def resolve(args, stored, where: str, pipeline: str, preset: Optional[dict] = None,
            prog: str = "", default: str = "none"):
    """The MethodConfig to build. stored: what the checkpoint records (None: nothing; the flags
    decide, `default` without them); where: how messages name the checkpoint."""
    if stored is None:
        return lora.method_config_from_args(args, default=default, pipeline=pipeline)
    given = given_flags(args, preset, prog)
    if not given:
        return stored if stored.is_adapter else lora.MethodConfig(method="none")
    trained = f"{where} was trained with another method setting"
    drop = "Drop the method flags to use the checkpoint's own"
    have = _view(stored)
    claims = _claims(given)
    clashes = [f"{g} gives method {fam!r} (checkpoint: {have['method']!r})"
               for g, fam in claims if fam != have["method"]]
    if not stored.is_adapter:
        clashes = clashes or [f"{g} (checkpoint: no adapter)" for g in given
                              if not (g.dest == "method" and g.value in NO_ADAPTER)]
        if clashes:
            raise ValueError(f"{trained}: {'; '.join(clashes)}. {drop}")
        return lora.MethodConfig(method="none")
    if clashes:
        raise ValueError(f"{trained}: {'; '.join(clashes)}. {drop}")
    ns = copy.copy(args)
    if ns.method is None:     # a preset's pinned options are compared only when given
        ns.method = lora.get_spec(stored.method).family
    if lora.get_spec(ns.method).cli.uses_lora_dim:
        # what the flags leave out comes from the checkpoint
        ns.lora_dim = stored.r if ns.lora_dim is None else ns.lora_dim
        ns.lora_alpha = stored.alpha if ns.lora_alpha is None else ns.lora_alpha
    try:
        config = lora.method_config_from_args(ns, default=default, pipeline=pipeline)
    except ValueError as e:
        raise ValueError(f"{where} holds {_describe(stored)}: {e}") from None
    want = _view(config)
    for g in given:
        keys = FLAG_KEYS.get(g.dest, ())
        if g.dest == "method":      # a preset (lorma_plus) pins options (kind rri)
            keys += tuple(lora.get_spec(g.value).fixed)
        for key in keys:
            # an option this file does not record (older files) cannot disagree
            if key in have and key in want and not _same(want[key], have[key]):
                clashes.append(f"{g} gives {key} {want[key]!r} (checkpoint: {have[key]!r})")
                break
    if clashes:
        raise ValueError(f"{trained}: {'; '.join(clashes)}. {drop}")
    return stored


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return tuple(a) == tuple(b)
    return a == b
