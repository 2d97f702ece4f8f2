"""MTLoRA's card (Liang, Wang, Zeng, arXiv 2403.07440): its options, each pipeline's official
defaults and its flags. The arithmetic, and where each default comes from in the official code,
is in loralib/mtlora.py."""
from ..registry import MethodCLI, register

STRUCTURES = ("SHIM", "ICFM", "CTCM", "DTSM")


def _add_args(g) -> None:
    g.add_argument("--mtlora_structure", default=None, type=str.upper, choices=STRUCTURES,
                   help="MTLoRA structure (default ICFM, the file the official code ships)")
    g.add_argument("--mtlora_shared_t", action="store_true", default=None,
                   help="MTLoRA: one T shared across fused q/k/v (the official GPT-2 default)")
    g.add_argument("--mtlora_per_projection_t", action="store_true", default=None,
                   help="MTLoRA: one r x r T per projection instead (the paper's prose)")


def _to_config(args):
    if args.mtlora_shared_t and args.mtlora_per_projection_t:
        raise ValueError("--mtlora_shared_t and --mtlora_per_projection_t exclude each other")
    options = {}
    if args.mtlora_structure is not None:
        options["structure"] = args.mtlora_structure
    if args.mtlora_shared_t or args.mtlora_per_projection_t:
        options["shared_t"] = bool(args.mtlora_shared_t)
    return {"options": options}


register("mtlora", "loralib.mtlora:MTLoRALinear", defaults={"structure": "ICFM", "shared_t": False},
         choices={"structure": STRUCTURES, "shared_t": (False, True)},
         pipeline_defaults={"gpt2": {"shared_t": True}},
         pipeline_targets={"gpt2": ("q", "k", "v", "c_fc"),
                           "roberta": ("q", "v", "c_fc", "mlp_proj")},
         cli=MethodCLI(add_args=_add_args,
                       flags=("mtlora_structure", "mtlora_shared_t", "mtlora_per_projection_t"),
                       to_config=_to_config,
                       variants={f"mtlora_{s.lower()}": f"--mtlora_structure {s}"
                                 for s in STRUCTURES},
                       aliases={"xtuning_dim": ("lora_dim", int),      # MTLoRA NLG/src/gpt2_ft.py
                                "xtuning_alpha": ("lora_alpha", float),
                                "xtuning_dropout": ("lora_dropout", float)}))
