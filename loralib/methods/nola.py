"""NOLA's card (Koohpayegani et al., ICLR 2024): its options, each pipeline's official defaults
and its flags. The arithmetic, and where each default comes from in the official code, is in
loralib/nola.py."""
from typing import Tuple

from ..registry import MethodCLI, register

OFFSETS = ("normal", "kaiming", "none")
# where a fresh adapter's random bases are drawn: "cpu" reproduces on every machine; "native" is
# the official code (the coefficients' device: a GPU draws other numbers than a CPU)
BASIS_DEVICES = ("cpu", "native")


def notes(config) -> Tuple[str, ...]:
    if config.options.get("qbits") is None:
        return ()
    return (f"NOLA: {config.options['qbits']}-bit quantized coefficients are this project's "
            f"implementation of the paper's description; the official GPT-2 code parses "
            f"--qnola/--qbits and never uses them",)


def _check(opts):
    if opts["qbits"] is not None:
        from .. import quant      # torch: only once a config is built, never for --help
        quant.levels(opts["qbits"])
    for key in ("num_basis_A", "num_basis_B"):
        k = opts[key]
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"NOLA {key} must be a positive integer, got {k!r}")


def _add_args(g) -> None:
    g.add_argument("--nola_rank", type=int, default=None, help="NOLA rank (default 8)")
    g.add_argument("--nola_c", type=float, default=None,
                   help="NOLA scale numerator: s = nola_c / nola_rank (default 1.0; the official "
                        "scripts' --lora_alpha)")
    g.add_argument("--nola_num_basis", type=int, default=None, help="NOLA kA = kB (default 1024)")
    g.add_argument("--nola_num_basis_A", type=int, default=None, help="NOLA kA")
    g.add_argument("--nola_num_basis_B", type=int, default=None, help="NOLA kB")
    g.add_argument("--nola_seed", type=int, default=None,
                   help="seed of the NOLA basis seeds (default: drawn from --random_seed's RNG)")
    g.add_argument("--nola_offsets", default=None, choices=OFFSETS,
                   help="NOLA's frozen offsets A0, B0 (default: official; GPT-2 normal)")
    g.add_argument("--nola_basis_device", default=None, choices=BASIS_DEVICES,
                   help="where NOLA's random bases are drawn (default cpu: the same bases on "
                        "every machine; native: the official code, on the training device, "
                        "needed to load official checkpoints)")
    g.add_argument("--qnola", action="store_true", default=None, help="quantized NOLA")
    g.add_argument("--qbits", type=int, default=None, help="bits of quantized NOLA (2..8)")
    g.add_argument("--nola_qv", "--lora_qv", dest="nola_qv", action="store_true", default=None,
                   help="NOLA on q and v (the default targets)")
    g.add_argument("--nola_mlp", "--lora_mlp", dest="nola_mlp", action="store_true", default=None,
                   help="NOLA also on the MLP (c_fc, c_proj)")
    g.add_argument("--use_nola", action="store_true", default=None,
                   help="(NOLA's official spelling of --method nola)")


def _to_config(args):
    if args.qbits is not None and not args.qnola:
        raise ValueError("--qbits is given without --qnola")
    if args.lora_dim is not None:
        raise ValueError("NOLA takes its rank from --nola_rank (or --lora_rank), not --lora_dim")
    scale = args.nola_c
    if args.lora_alpha is not None:
        if scale is not None and scale != args.lora_alpha:
            raise ValueError(f"--nola_c {scale} and --lora_alpha {args.lora_alpha} disagree "
                             f"(for NOLA they are one setting)")
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
    if args.nola_basis_device is not None:
        options["basis_device"] = args.nola_basis_device
    out = {"r": args.nola_rank if args.nola_rank is not None else 8,
           "alpha": scale if scale is not None else 1.0, "options": options}
    if args.nola_mlp:
        targets = list(out.get("targets") or args.adapt_targets_list or ("q", "v"))
        out["targets"] = tuple(targets + [t for t in ("c_fc", "mlp_proj") if t not in targets])
    return out


register("nola", "loralib.nola:NOLALinear",
         defaults={"num_basis_A": 1024, "num_basis_B": 1024, "qbits": None, "seed": None,
                   "offsets": "kaiming", "offset_std": 0.02, "basis_device": "cpu"},
         choices={"offsets": OFFSETS, "basis_device": BASIS_DEVICES},
         pipeline_defaults={"gpt2": {"offsets": "normal"}},
         check=_check, notes=notes, prefix="nola_",
         init_only=("seed", "offset_std", "basis_device"),
         cli=MethodCLI(add_args=_add_args, selects=True, uses_lora_dim=False,
                       flags=("nola_rank", "nola_c", "nola_num_basis", "nola_num_basis_A",
                              "nola_num_basis_B", "nola_seed", "nola_offsets",
                              "nola_basis_device", "qnola", "qbits", "nola_qv", "nola_mlp",
                              "use_nola"),
                       to_config=_to_config,
                       variants={"nola": "", "qnola": "--qnola --qbits ${QBITS}"},
                       aliases={"lora_rank": ("nola_rank", int)}))   # NOLA's gpt2_ft.py
