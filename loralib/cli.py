"""Command-line flags shared by the NLG and NLU scripts, and their translation to a MethodConfig.

The flag names are the ones researchers already type: Microsoft's --lora_dim/--lora_alpha/
--lora_dropout, NOLA's README --nola_rank/--nola_c/--nola_qv/--qnola/--qbits, plus --method and
the variant flags. The official training scripts of the methods spell some of these otherwise,
and those spellings are accepted too (DIALECTS below; giving both spellings with different values
is an error). Method-specific flags default to None so that a flag given for the wrong method is
an error instead of being ignored; options not given take the pipeline's official defaults.
"""
import argparse
from typing import List, Optional

from .registry import NO_ADAPTER, TARGETS, MethodConfig, available_methods

_LORMA_FLAGS = ("lorma_type", "lorma_mode", "lorma_init", "lorma_dropout_site")
_MTLORA_FLAGS = ("mtlora_structure", "mtlora_shared_t", "mtlora_per_projection_t")
_NOLA_FLAGS = ("nola_rank", "nola_c", "nola_num_basis", "nola_num_basis_A", "nola_num_basis_B",
               "nola_seed", "nola_offsets", "qnola", "qbits", "nola_qv", "nola_mlp")
_FAMILY = {"lorma_plus": "lorma", "lorma_pi": "lorma"}

# alias flag -> (our dest, the method it implies or None, where the spelling comes from)
DIALECTS = {
    "xtuning_dim": ("lora_dim", "mtlora", "MTLoRA NLG/src/gpt2_ft.py"),
    "xtuning_alpha": ("lora_alpha", "mtlora", "MTLoRA NLG/src/gpt2_ft.py"),
    "xtuning_dropout": ("lora_dropout", "mtlora", "MTLoRA NLG/src/gpt2_ft.py"),
    "mult_lora_dim": ("lora_dim", "lorma", "LoRMA NLG/Language-generation/src/gpt2_ft_lorma_*.py"),
    "mult_lora_alpha": ("lora_alpha", "lorma", "LoRMA gpt2_ft_lorma_*.py"),
    "mult_lora_dropout": ("lora_dropout", "lorma", "LoRMA gpt2_ft_lorma_*.py"),
    "lorma_r": ("lora_dim", "lorma", "LoRMA NLU/run_glue_lorma_*.py, MetaMathQA"),
    "lorma_alpha": ("lora_alpha", "lorma", "LoRMA NLU/run_glue_lorma_*.py, MetaMathQA"),
    "lorma_dropout": ("lora_dropout", "lorma", "LoRMA NLU/run_glue_lorma_*.py, MetaMathQA"),
    "rank_inflation": ("lorma_type", "lorma", "LoRMA MetaMathQA/train_math_lorma.py"),
    "lora_r": ("lora_dim", None, "MTLoRA / Microsoft NLU run_glue.py"),
    "lora_rank": ("nola_rank", "nola", "NOLA gpt/examples/NLG/src/gpt2_ft.py"),
}


def _bool(v) -> bool:
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def add_method_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("adaptation method (loralib)")
    g.add_argument("--method", default=None, choices=available_methods(),
                   help="adapter method; default: nola if a --nola_* flag is given, else lora "
                        "if --lora_dim > 0, else the script's default")
    g.add_argument("--lora_dim", type=int, default=None, help="rank r (LoRA, LoRMA, MTLoRA)")
    g.add_argument("--lora_alpha", type=float, default=None,
                   help="scale numerator: s = alpha / r (default 128; NOLA: same as --nola_c)")
    g.add_argument("--lora_dropout", type=float, default=None,
                   help="dropout (where: the method's official placement; LoRA: adapter input)")
    g.add_argument("--lorma_type", default=None, choices=("rri", "shift", "none"),
                   help="LoRMA variant: rri = LoRMA_+ (I + sBA), shift = LoRMA_pi (s pi(BA)), "
                        "none = s BA")
    g.add_argument("--lorma_mode", default=None,
                   choices=("pre", "post", "complete_pre", "complete_post"),
                   help="LoRMA side: pre = T W0, post = W0 T (default pre); complete_*: dense T")
    g.add_argument("--lorma_init", default=None, choices=("a_zero", "b_zero"),
                   help="LoRMA_+ zero factor (default: the pipeline's official one; GPT-2 a_zero)")
    g.add_argument("--lorma_dropout_site", default=None, choices=("input", "adapter", "none"),
                   help="where LoRMA applies dropout (default: official; GPT-2 none, NLU input)")
    g.add_argument("--mtlora_structure", default=None, type=str.upper,
                   choices=("SHIM", "ICFM", "CTCM", "DTSM"), help="MTLoRA structure (default ICFM)")
    g.add_argument("--mtlora_shared_t", action="store_true", default=None,
                   help="MTLoRA: one T shared across fused q/k/v (the official GPT-2 default)")
    g.add_argument("--mtlora_per_projection_t", action="store_true", default=None,
                   help="MTLoRA: one r x r T per projection instead (the paper's prose)")
    g.add_argument("--nola_rank", type=int, default=None, help="NOLA rank (default 8)")
    g.add_argument("--nola_c", type=float, default=None,
                   help="NOLA scale numerator: s = nola_c / nola_rank (default 1.0)")
    g.add_argument("--nola_num_basis", type=int, default=None, help="NOLA kA = kB (default 1024)")
    g.add_argument("--nola_num_basis_A", type=int, default=None, help="NOLA kA")
    g.add_argument("--nola_num_basis_B", type=int, default=None, help="NOLA kB")
    g.add_argument("--nola_seed", type=int, default=None,
                   help="seed of the NOLA basis seeds (default: drawn from --random_seed's RNG)")
    g.add_argument("--nola_offsets", default=None, choices=("normal", "kaiming", "none"),
                   help="NOLA's frozen offsets A0, B0 (default: official; GPT-2 normal)")
    g.add_argument("--qnola", action="store_true", default=None, help="quantized NOLA")
    g.add_argument("--qbits", type=int, default=None, help="bits of quantized NOLA (2..8)")
    g.add_argument("--nola_qv", "--lora_qv", dest="nola_qv", action="store_true", default=None,
                   help="NOLA on q and v (the default targets)")
    g.add_argument("--nola_mlp", "--lora_mlp", dest="nola_mlp", action="store_true", default=None,
                   help="NOLA also on the MLP (c_fc, c_proj)")
    g.add_argument("--use_nola", action="store_true", default=None,
                   help="(NOLA's official spelling of --method nola)")
    g.add_argument("--adapt_targets", default=None,
                   help=f"comma-separated projections to adapt, from {','.join(TARGETS)} "
                        f"(default: the method's official targets in this pipeline)")
    d = parser.add_argument_group("flag spellings of the official scripts (aliases)")
    for flag, (dest, _, source) in DIALECTS.items():
        kind = {"lora_dim": int, "nola_rank": int, "lorma_type": str}.get(dest, float)
        d.add_argument(f"--{flag}", dest=f"alias_{flag}", type=kind, default=None,
                       help=f"= --{dest} ({source})")
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


def _given(args, names) -> List[str]:
    return [n for n in names if getattr(args, n, None) is not None]


def _set(args, dest, value, flag):
    """Give `dest` the alias's value; both spellings with different values is an error."""
    mine = getattr(args, dest, None)
    if mine is not None and mine != value:
        raise ValueError(f"--{dest} {mine} and --{flag} {value} disagree (they are one setting)")
    setattr(args, dest, value)


def resolve_dialects(args: argparse.Namespace) -> Optional[str]:
    """Fold the official scripts' spellings into ours; returns the method they imply, if any."""
    implied = set()
    for flag, (dest, method, _) in DIALECTS.items():
        value = getattr(args, f"alias_{flag}", None)
        if value is None:
            continue
        _set(args, dest, value, flag)
        if method:
            implied.add(method)
    if getattr(args, "use_nola", None):
        implied.add("nola")
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


def method_config_from_args(args: argparse.Namespace, default: str = "full",
                            pipeline: Optional[str] = None) -> MethodConfig:
    implied = resolve_dialects(args)
    nola_given = _given(args, _NOLA_FLAGS)
    method = args.method
    if method is None:
        if implied:
            method = implied
        elif nola_given:
            method = "nola"
        elif (args.lora_dim or 0) > 0:
            method = "lora"
        else:
            method = default
    family = _FAMILY.get(method, method)
    if implied and implied != family:
        raise ValueError(f"flags of {implied!r} given, but the method is {method!r}")

    def reject(flags, owner):
        if flags and family != owner:
            raise ValueError(f"--{' --'.join(flags)} given, but the method is {method!r}, "
                             f"not {owner!r}")

    reject(_given(args, _LORMA_FLAGS), "lorma")
    reject(_given(args, _MTLORA_FLAGS), "mtlora")
    reject(nola_given, "nola")
    if args.qbits is not None and not args.qnola:
        raise ValueError("--qbits is given without --qnola")
    if args.mtlora_shared_t and args.mtlora_per_projection_t:
        raise ValueError("--mtlora_shared_t and --mtlora_per_projection_t exclude each other")

    targets = None
    if args.adapt_targets is not None:
        targets = [t.strip() for t in args.adapt_targets.split(",") if t.strip()]
    if args.nola_mlp:
        targets = list(targets or ("q", "v"))
        targets += [t for t in ("c_fc", "mlp_proj") if t not in targets]
    targets = tuple(targets) if targets is not None else None
    dropout = args.lora_dropout if args.lora_dropout is not None else 0.0

    if method in NO_ADAPTER:
        if (args.lora_dim or 0) > 0:
            raise ValueError(f"--lora_dim {args.lora_dim} given, but the method is {method!r}")
        return MethodConfig(method=method, targets=targets, pipeline=pipeline)
    if family == "nola":
        if args.lora_dim is not None:
            raise ValueError("NOLA takes its rank from --nola_rank (or --lora_rank), "
                             "not --lora_dim")
        scale = args.nola_c
        if args.lora_alpha is not None:
            _set(args, "nola_c", args.lora_alpha, "lora_alpha")
            scale = args.lora_alpha
        k = args.nola_num_basis
        options = {"qbits": (args.qbits if args.qbits is not None else 8) if args.qnola else None}
        if args.nola_num_basis_A or k:
            options["num_basis_A"] = args.nola_num_basis_A or k
        if args.nola_num_basis_B or k:
            options["num_basis_B"] = args.nola_num_basis_B or k
        if args.nola_seed is not None:
            options["seed"] = args.nola_seed
        if args.nola_offsets is not None:
            options["offsets"] = args.nola_offsets
        return MethodConfig(method="nola", r=args.nola_rank if args.nola_rank is not None else 8,
                            alpha=scale if scale is not None else 1.0, dropout=dropout,
                            options=options, targets=targets, pipeline=pipeline)
    options = {}
    if family == "lorma":
        for flag, key in (("lorma_type", "kind"), ("lorma_mode", "mode"), ("lorma_init", "init"),
                          ("lorma_dropout_site", "dropout_site")):
            if getattr(args, flag) is not None:
                options[key] = getattr(args, flag)
    elif family == "mtlora":
        if args.mtlora_structure is not None:
            options["structure"] = args.mtlora_structure
        if args.mtlora_shared_t:
            options["shared_t"] = True
        if args.mtlora_per_projection_t:
            options["shared_t"] = False
    if (args.lora_dim or 0) <= 0:
        raise ValueError(f"method {method!r} needs a rank: --lora_dim must be > 0, "
                         f"got {args.lora_dim}")
    return MethodConfig(method=method, r=args.lora_dim,
                        alpha=args.lora_alpha if args.lora_alpha is not None else 128.0,
                        dropout=dropout, options=options, targets=targets, pipeline=pipeline)
