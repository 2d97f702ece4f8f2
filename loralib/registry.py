"""Choosing a method by name: one registration per method, one config type for all.

A method is a layer class plus the options it accepts (with defaults and, where the set is
closed, the allowed values). Adding a fifth method means one new file with its layer class and
one `register(...)` line in `methods.py`.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch.nn as nn

from .base import check_rank

# Methods that build no adapter layer: full fine-tuning (the papers' FT row) and a plain model.
NO_ADAPTER = ("full", "none")
TARGETS = ("q", "k", "v", "c_proj", "c_fc", "mlp_proj")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    layer: type
    defaults: Dict[str, Any]
    choices: Dict[str, Tuple] = field(default_factory=dict)
    check: Optional[Callable[[Dict[str, Any]], None]] = None
    fixed: Dict[str, Any] = field(default_factory=dict)   # options a preset pins


_REGISTRY: Dict[str, MethodSpec] = {}


def register(name: str, layer: type, defaults: Dict[str, Any], choices=None, check=None) -> None:
    _REGISTRY[name] = MethodSpec(name, layer, dict(defaults), dict(choices or {}), check)


def register_preset(name: str, of: str, **fixed) -> None:
    """A named variant: e.g. `lorma_plus` is `lorma` with kind='rri'."""
    base = _REGISTRY[of]
    _REGISTRY[name] = MethodSpec(name, base.layer, {**base.defaults, **fixed}, base.choices,
                                 base.check, fixed=dict(fixed))


def available_methods() -> Tuple[str, ...]:
    return NO_ADAPTER + tuple(sorted(_REGISTRY))


def get_spec(name: str) -> MethodSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r} (available: {', '.join(available_methods())})")


@dataclass
class MethodConfig:
    """A method and its options, validated on construction.

    r / alpha / dropout mean rank, scale numerator (s = alpha / r) and dropout on the adapter
    input for every method (for NOLA: nola_rank and nola_c).
    """
    method: str = "lora"
    r: int = 4
    alpha: float = 32.0
    dropout: float = 0.0
    options: Dict[str, Any] = field(default_factory=dict)
    targets: Tuple[str, ...] = ("q", "v")

    def __post_init__(self):
        self.targets = tuple(self.targets)
        bad = [t for t in self.targets if t not in TARGETS]
        if bad:
            raise ValueError(f"unknown adapter target(s) {bad} (choose from {TARGETS})")
        if self.method in NO_ADAPTER:
            if self.options:
                raise ValueError(f"method {self.method!r} takes no options, got {self.options}")
            return
        spec = get_spec(self.method)
        check_rank(self.r, f"rank for method {self.method!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        unknown = sorted(set(self.options) - set(spec.defaults))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for method {self.method!r} "
                             f"(valid: {sorted(spec.defaults)})")
        clash = {k: v for k, v in self.options.items() if k in spec.fixed and v != spec.fixed[k]}
        if clash:
            raise ValueError(f"method {self.method!r} fixes {spec.fixed}; got {clash}")
        merged = {**spec.defaults, **self.options}
        for key, allowed in spec.choices.items():
            if merged[key] not in allowed:
                raise ValueError(f"method {self.method!r}: option {key}={merged[key]!r} "
                                 f"is not one of {allowed}")
        if spec.check:
            spec.check(merged)
        self.options = merged

    @property
    def is_adapter(self) -> bool:
        return self.method not in NO_ADAPTER

    def to_dict(self) -> Dict[str, Any]:
        return {"method": self.method, "r": self.r, "alpha": self.alpha, "dropout": self.dropout,
                "options": dict(self.options), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "MethodConfig":
        return cls(**{**d, "targets": tuple(d.get("targets", ("q", "v")))})


def adapt_linear(in_features: int, out_features: int, config: Optional[MethodConfig], *,
                 enable: Optional[Sequence[bool]] = None, fan_in_fan_out: bool = False,
                 bias: bool = True, **kwargs) -> nn.Linear:
    """A projection adapted by `config` on the enabled output slices, or a plain one.

    The weight keeps the layout of the checkpoint it loads from: (in, out) with
    fan_in_fan_out=True (GPT-2's Conv1D), else (out, in). Merging is explicit (merge_weights
    is off), so evaluation mode never changes the weights behind a user's back.
    """
    from .layers import MergedLinear
    if config is None or not config.is_adapter or not any(enable or [True]):
        return MergedLinear(in_features, out_features, r=0, enable_lora=enable or [True],
                            fan_in_fan_out=fan_in_fan_out, merge_weights=False, bias=bias,
                            **kwargs)
    spec = get_spec(config.method)
    return spec.layer(in_features, out_features, r=config.r, lora_alpha=config.alpha,
                      lora_dropout=config.dropout, enable_lora=list(enable or [True]),
                      fan_in_fan_out=fan_in_fan_out, merge_weights=False, bias=bias,
                      **config.options, **kwargs)
