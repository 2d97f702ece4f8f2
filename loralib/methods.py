"""The method table: every name `MethodConfig(method=...)` and `--method` accept.

Per-pipeline defaults are what that pipeline's official code computes (file:line in README,
"Fidelity"); everything else is a named option.
"""
from . import lorma, nola, quant
from .layers import MergedLinear
from .lorma import DROPOUT_SITES, INITS, KINDS, MODES, LoRMALinear
from .mtlora import STRUCTURES, MTLoRALinear
from .nola import OFFSETS, NOLALinear
from .registry import register, register_preset


def _check_nola(opts):
    if opts["qbits"] is not None:
        quant.levels(opts["qbits"])
    for key in ("num_basis_A", "num_basis_B"):
        k = opts[key]
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"NOLA {key} must be a positive integer, got {k!r}")


register("lora", MergedLinear, defaults={})

register("lorma", LoRMALinear,
         defaults={"kind": "rri", "mode": "pre", "init": "b_zero", "dropout_site": "input"},
         choices={"kind": KINDS, "mode": MODES, "init": INITS, "dropout_site": DROPOUT_SITES},
         pipeline_defaults={"gpt2": {"init": "a_zero", "dropout_site": "none"}},
         notes=lorma.notes)
register_preset("lorma_plus", "lorma", kind="rri")
register_preset("lorma_pi", "lorma", kind="shift")

register("mtlora", MTLoRALinear, defaults={"structure": "ICFM", "shared_t": False},
         choices={"structure": STRUCTURES, "shared_t": (False, True)},
         pipeline_defaults={"gpt2": {"shared_t": True}},
         pipeline_targets={"gpt2": ("q", "k", "v", "c_fc"),
                           "roberta": ("q", "v", "c_fc", "mlp_proj")})

register("nola", NOLALinear,
         defaults={"num_basis_A": 1024, "num_basis_B": 1024, "qbits": None, "seed": None,
                   "offsets": "kaiming", "offset_std": 0.02},
         choices={"offsets": OFFSETS},
         pipeline_defaults={"gpt2": {"offsets": "normal"}},
         check=_check_nola, notes=nola.notes)
