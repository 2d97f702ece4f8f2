"""The method table: every name `MethodConfig(method=...)` and `--method` accept."""
from . import quant
from .layers import MergedLinear
from .lorma import KINDS, MODES, LoRMALinear
from .mtlora import STRUCTURES, MTLoRALinear
from .nola import NOLALinear
from .registry import register, register_preset


def _check_nola(opts):
    if opts["qbits"] is not None:
        quant.levels(opts["qbits"])
    for key in ("num_basis_A", "num_basis_B"):
        k = opts[key]
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"NOLA {key} must be a positive integer, got {k!r}")


register("lora", MergedLinear, defaults={})
register("lorma", LoRMALinear, defaults={"kind": "rri", "mode": "pre"},
         choices={"kind": KINDS, "mode": MODES})
register_preset("lorma_plus", "lorma", kind="rri")
register_preset("lorma_pi", "lorma", kind="shift")
register("mtlora", MTLoRALinear, defaults={"structure": "SHIM", "shared_t": False},
         choices={"structure": STRUCTURES, "shared_t": (False, True)})
register("nola", NOLALinear,
         defaults={"num_basis_A": 1000, "num_basis_B": 1000, "qbits": None, "seed": 0},
         check=_check_nola)
