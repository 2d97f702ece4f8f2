"""Command-line flags shared by the NLG and NLU scripts, and their translation to a MethodConfig.

The shared flags are the ones researchers already type: --method, Microsoft's --lora_dim/
--lora_alpha/--lora_dropout and --adapt_targets. Each registered method adds its own flags and
the spellings its official scripts use (`MethodCLI` in its registration: NOLA's --nola_*,
LoRMA's --mult_lora_*, MTLoRA's --xtuning_*, ...); giving an alias and our spelling with
different values is an error. Method flags default to None so that a flag given for the wrong
method is an error instead of being ignored; options not given take the pipeline's official
defaults.
"""
import argparse
from typing import List, Optional

from .registry import NO_ADAPTER, TARGETS, MethodConfig, available_methods, families, get_spec

# Spellings of the NLU scripts that belong to no one method (Microsoft's and MTLoRA's
# run_glue.py name the rank --lora_r whatever the method).
_SHARED_ALIASES = {"lora_r": ("lora_dim", int)}


def _bool(v) -> bool:
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def _specs():
    return [get_spec(name) for name in families()]


def add_method_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("adaptation method (loralib)")
    g.add_argument("--method", default=None, choices=available_methods(),
                   help="adapter method; default: picked from the method flags given (e.g. "
                        "--nola_*), else lora if --lora_dim > 0, else the script's default")
    g.add_argument("--lora_dim", type=int, default=None, help="rank r")
    g.add_argument("--lora_alpha", type=float, default=None,
                   help="scale numerator: s = alpha / r (default 128; NOLA: same as --nola_c)")
    g.add_argument("--lora_dropout", type=float, default=None,
                   help="dropout (where: the method's official placement; LoRA: adapter input)")
    g.add_argument("--adapt_targets", default=None,
                   help=f"comma-separated projections to adapt, from {','.join(TARGETS)} "
                        f"(default: the method's official targets in this pipeline)")
    for spec in _specs():
        if spec.cli.add_args:
            spec.cli.add_args(parser.add_argument_group(f"{spec.name} (loralib)"))
    d = parser.add_argument_group("flag spellings of the official scripts (aliases)")
    aliases = dict(_SHARED_ALIASES)
    for spec in _specs():
        aliases.update(spec.cli.aliases)
    for flag, (dest, kind) in aliases.items():
        d.add_argument(f"--{flag}", dest=f"alias_{flag}", type=kind, default=None,
                       help=f"= --{dest}")
    d.add_argument("--apply_lorma", type=_bool, nargs="?", const=True, default=None,
                   help="(LoRMA NLU: adapter on; the method is lorma)")
    d.add_argument("--apply_lora", type=_bool, nargs="?", const=True, default=None,
                   help="(Microsoft / MTLoRA NLU: adapter on)")
    d.add_argument("--do_rri", type=_bool, nargs="?", const=True, default=None,
                   help="(LoRMA NLU plus: False = --lorma_type none)")
    d.add_argument("--do_pi", type=_bool, nargs="?", const=True, default=None,
                   help="(LoRMA NLU pi: True = --lorma_type shift, False = none)")
    d.add_argument("--adapted_weights", default=None,
                   help="(LoRMA NLU: letters of q, k, v, o; o = c_proj)")
    return parser


def _set(args, dest, value, flag):
    """Give `dest` the alias's value; both spellings with different values is an error."""
    mine = getattr(args, dest, None)
    if mine is not None and mine != value:
        raise ValueError(f"--{dest} {mine} and --{flag} {value} disagree (they are one setting)")
    setattr(args, dest, value)


def resolve_dialects(args: argparse.Namespace) -> Optional[str]:
    """Fold the official scripts' spellings into ours; returns the method they imply, if any."""
    implied = set()
    owners = [(None, _SHARED_ALIASES)] + [(s.name, s.cli.aliases) for s in _specs()]
    for method, aliases in owners:
        for flag, (dest, _) in aliases.items():
            value = getattr(args, f"alias_{flag}", None)
            if value is None:
                continue
            _set(args, dest, value, flag)
            if method:
                implied.add(method)
    for spec in _specs():
        if spec.cli.selects and any(getattr(args, f, None) is not None for f in spec.cli.flags):
            implied.add(spec.name)
    if getattr(args, "apply_lorma", None):
        implied.add("lorma")
    for flag in ("do_rri", "do_pi"):
        v = getattr(args, flag, None)
        if v is None:
            continue
        kind = ("rri" if v else "none") if flag == "do_rri" else ("shift" if v else "none")
        _set(args, "lorma_type", kind, f"{flag} {v}")
        implied.add("lorma")
    if getattr(args, "adapted_weights", None):
        names = {"q": "q", "k": "k", "v": "v", "o": "c_proj"}
        bad = [c for c in args.adapted_weights if c not in names]
        if bad:
            raise ValueError(f"--adapted_weights {args.adapted_weights!r}: unknown letter(s) "
                             f"{bad} (use q, k, v, o)")
        _set(args, "adapt_targets", ",".join(names[c] for c in args.adapted_weights),
             "adapted_weights")
    if len(implied) > 1:
        raise ValueError(f"flags of several methods given: {sorted(implied)}")
    return implied.pop() if implied else None


def _given(args, names) -> List[str]:
    return [n for n in names if getattr(args, n, None) is not None]


def method_config_from_args(args: argparse.Namespace, default: str = "full",
                            pipeline: Optional[str] = None) -> MethodConfig:
    implied = resolve_dialects(args)
    method = args.method
    if method is None:
        if implied:
            method = implied
        elif (args.lora_dim or 0) > 0:
            method = "lora"
        else:
            method = default
    family = get_spec(method).family if method not in NO_ADAPTER else method
    for spec in _specs():
        flags = _given(args, spec.cli.flags)
        if flags and spec.name != family:
            raise ValueError(f"--{' --'.join(flags)} given, but the method is {method!r}, "
                             f"not {spec.name!r}")
    if implied and implied != family:
        raise ValueError(f"flags of {implied!r} given, but the method is {method!r}")

    targets = None
    if args.adapt_targets is not None:
        targets = tuple(t.strip() for t in args.adapt_targets.split(",") if t.strip())
    args.adapt_targets_list = targets
    dropout = args.lora_dropout if args.lora_dropout is not None else 0.0

    if method in NO_ADAPTER:
        if (args.lora_dim or 0) > 0:
            raise ValueError(f"--lora_dim {args.lora_dim} given, but the method is {method!r}")
        return MethodConfig(method=method, targets=targets, pipeline=pipeline)
    cli = get_spec(method).cli
    kw = {"r": args.lora_dim,
          "alpha": args.lora_alpha if args.lora_alpha is not None else 128.0,
          "dropout": dropout, "options": {}, "targets": targets}
    kw.update(cli.to_config(args) if cli.to_config else {})
    if cli.uses_lora_dim and (kw["r"] or 0) <= 0:
        raise ValueError(f"method {method!r} needs a rank: --lora_dim must be > 0, "
                         f"got {args.lora_dim}")
    return MethodConfig(method=method, pipeline=pipeline, **kw)
