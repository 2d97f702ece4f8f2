"""Command-line flags shared by the NLG and NLU scripts, and their translation to a MethodConfig.

The flag names are the ones researchers already type: Microsoft's --lora_dim/--lora_alpha/
--lora_dropout, NOLA's --nola_rank/--nola_c/--nola_qv/--qnola/--qbits, plus --method and the
variant flags. Method-specific flags default to None so that a flag given for the wrong method
is an error instead of being ignored.
"""
import argparse
from typing import List, Optional

from .registry import NO_ADAPTER, TARGETS, MethodConfig, available_methods

_LORMA_FLAGS = ("lorma_type", "lorma_mode")
_MTLORA_FLAGS = ("mtlora_structure", "mtlora_shared_t")
_NOLA_FLAGS = ("nola_rank", "nola_c", "nola_num_basis", "nola_num_basis_A", "nola_num_basis_B",
               "nola_seed", "qnola", "qbits", "nola_qv", "nola_mlp")


def add_method_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("adaptation method (loralib)")
    g.add_argument("--method", default=None, choices=available_methods(),
                   help="adapter method; default: nola if a --nola_* flag is given, else lora "
                        "if --lora_dim > 0, else the script's default")
    g.add_argument("--lora_dim", type=int, default=0, help="rank r (LoRA, LoRMA, MTLoRA)")
    g.add_argument("--lora_alpha", type=float, default=128, help="scale numerator: s = alpha / r")
    g.add_argument("--lora_dropout", type=float, default=0.0, help="dropout on the adapter input")
    g.add_argument("--lorma_type", default=None, choices=("rri", "shift"),
                   help="LoRMA variant: rri = LoRMA_+ (I + sBA), shift = LoRMA_pi (s pi(BA))")
    g.add_argument("--lorma_mode", default=None, choices=("pre", "post"),
                   help="LoRMA side: pre = T W0, post = W0 T (default pre)")
    g.add_argument("--mtlora_structure", default=None, type=str.upper,
                   choices=("SHIM", "ICFM", "CTCM", "DTSM"), help="MTLoRA structure (default SHIM)")
    g.add_argument("--mtlora_shared_t", action="store_true", default=None,
                   help="MTLoRA: one T shared across fused q/k/v (the official GPT-2 code)")
    g.add_argument("--nola_rank", type=int, default=None, help="NOLA rank")
    g.add_argument("--nola_c", type=float, default=None, help="NOLA scale: s = nola_c / nola_rank")
    g.add_argument("--nola_num_basis", type=int, default=None, help="NOLA kA = kB (default 1000)")
    g.add_argument("--nola_num_basis_A", type=int, default=None, help="NOLA kA")
    g.add_argument("--nola_num_basis_B", type=int, default=None, help="NOLA kB")
    g.add_argument("--nola_seed", type=int, default=None, help="seed of the NOLA bases (default 0)")
    g.add_argument("--qnola", action="store_true", default=None, help="quantized NOLA")
    g.add_argument("--qbits", type=int, default=None, help="bits of quantized NOLA (2..8)")
    g.add_argument("--nola_qv", action="store_true", default=None,
                   help="NOLA on q and v (the default targets)")
    g.add_argument("--nola_mlp", action="store_true", default=None,
                   help="NOLA also on the MLP (c_fc, c_proj)")
    g.add_argument("--adapt_targets", default="q,v",
                   help=f"comma-separated projections to adapt, from {','.join(TARGETS)}")
    return parser


def _given(args, names) -> List[str]:
    return [n for n in names if getattr(args, n, None) is not None]


def method_config_from_args(args: argparse.Namespace, default: str = "full") -> MethodConfig:
    nola_given = _given(args, _NOLA_FLAGS)
    method = args.method
    if method is None:
        if nola_given:
            method = "nola"
        elif args.lora_dim > 0:
            method = "lora"
        else:
            method = default
    family = {"lorma_plus": "lorma", "lorma_pi": "lorma"}.get(method, method)

    def reject(flags, owner):
        if flags and family != owner:
            raise ValueError(f"--{' --'.join(flags)} given, but the method is {method!r}, "
                             f"not {owner!r}")

    reject(_given(args, _LORMA_FLAGS), "lorma")
    reject(_given(args, _MTLORA_FLAGS), "mtlora")
    reject(nola_given, "nola")
    if args.qbits is not None and not args.qnola:
        raise ValueError("--qbits is given without --qnola")

    targets = [t.strip() for t in args.adapt_targets.split(",") if t.strip()]
    if args.nola_mlp:
        targets += [t for t in ("c_fc", "mlp_proj") if t not in targets]

    if method in NO_ADAPTER:
        if args.lora_dim > 0:
            raise ValueError(f"--lora_dim {args.lora_dim} given, but the method is {method!r}")
        return MethodConfig(method=method, targets=tuple(targets))
    if family == "nola":
        if args.lora_dim > 0:
            raise ValueError("NOLA takes its rank from --nola_rank, not --lora_dim")
        k = args.nola_num_basis
        options = {"num_basis_A": args.nola_num_basis_A or k or 1000,
                   "num_basis_B": args.nola_num_basis_B or k or 1000,
                   "qbits": (args.qbits if args.qbits is not None else 8) if args.qnola else None,
                   "seed": args.nola_seed or 0}
        return MethodConfig(method="nola", r=args.nola_rank if args.nola_rank is not None else 8,
                            alpha=args.nola_c if args.nola_c is not None else 1.0,
                            dropout=args.lora_dropout, options=options, targets=tuple(targets))
    options = {}
    if family == "lorma":
        if args.lorma_type is not None:
            options["kind"] = args.lorma_type
        if args.lorma_mode is not None:
            options["mode"] = args.lorma_mode
    elif family == "mtlora":
        if args.mtlora_structure is not None:
            options["structure"] = args.mtlora_structure
        if args.mtlora_shared_t:
            options["shared_t"] = True
    if args.lora_dim <= 0:
        raise ValueError(f"method {method!r} needs a rank: --lora_dim must be > 0, "
                         f"got {args.lora_dim}")
    return MethodConfig(method=method, r=args.lora_dim, alpha=args.lora_alpha,
                        dropout=args.lora_dropout, options=options, targets=tuple(targets))
