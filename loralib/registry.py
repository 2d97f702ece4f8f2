"""Choosing a method by name: one registration per method, one config type for all.

A method is a layer class plus the options it accepts (with defaults and, where the set is
closed, the allowed values). A built-in method is two files: its layer (`loralib/lorma.py`: the
arithmetic) and its card (`loralib/methods/lorma.py`: the `register(...)` call with its options,
defaults per pipeline and command-line flags). Every card in `loralib/methods/` is loaded with
this module; nothing else lists the methods. Cards import no torch, and name their layer as
"module:Class", imported on first use, so a script's `--help` needs no torch.

Defaults may differ by pipeline. The fidelity rule: a method's default in a pipeline computes
what that pipeline's official code computes (LoRMA's GPT-2 code starts A = 0, its NLU and math
code start B = 0; MTLoRA's GPT-2 code shares one T over q/k/v and adapts c_fc too). A pipeline is
named by the code that builds the model: "gpt2" (NLG/), "roberta" (NLU/), "llm" (Hugging Face
causal LMs through loralib.inject). Without a pipeline, the "llm" defaults apply: that is the
setting closest to PEFT's, where a user of loralib in their own model comes from.
"""
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

# Methods that build no adapter layer: full fine-tuning (the papers' FT row) and a plain model.
NO_ADAPTER = ("full", "none")
TARGETS = ("q", "k", "v", "c_proj", "c_fc", "mlp_proj")
PIPELINES = ("gpt2", "roberta", "llm")
DEFAULT_PIPELINE = "llm"
DEFAULT_TARGETS = ("q", "v")


@dataclass(frozen=True)
class MethodCLI:
    """What the shared command line (cli.py) asks of a method.

    add_args(group): declare the method's own flags, default None (so that a flag given with
    another method is an error); flags: their dests; aliases: the official scripts' spellings,
    alias -> our dest (e.g. "xtuning_dim" -> "lora_dim"), each implying the method;
    to_config(args): the MethodConfig keywords its flags give (r, alpha, options, targets; what
    is left out comes from --lora_dim / --lora_alpha / --lora_dropout and the pipeline);
    selects: its own flags alone pick the method (NOLA's README commands name no method).
    """
    add_args: Optional[Callable[[Any], None]] = None
    flags: Tuple[str, ...] = ()
    aliases: Dict[str, Tuple[str, type]] = field(default_factory=dict)
    to_config: Optional[Callable[[Any], Dict[str, Any]]] = None
    selects: bool = False
    uses_lora_dim: bool = True
    # the named variants scripts are generated for: name -> flags beside --method (e.g.
    # "mtlora_icfm": "--mtlora_structure ICFM"); empty: one variant, the method itself
    variants: Dict[str, str] = field(default_factory=dict)


def check_rank(r, what: str = "rank") -> int:
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"{what} must be a positive integer, got {r!r}")
    return r


@dataclass(frozen=True)
class MethodSpec:
    name: str
    layer_ref: Union[type, str]     # the layer class, or "module:Class" (imported on first use)
    defaults: Dict[str, Any]
    choices: Dict[str, Tuple] = field(default_factory=dict)
    check: Optional[Callable[[Dict[str, Any]], None]] = None
    fixed: Dict[str, Any] = field(default_factory=dict)   # options a preset pins
    # pipeline -> option defaults / adapted projections of that pipeline's official code
    pipeline_defaults: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    pipeline_targets: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    # config -> lines a run log should carry (e.g. a flag the official code ignores)
    notes: Optional[Callable[["MethodConfig"], Sequence[str]]] = None
    # what marks a state-dict key as this method's adapter state ("lora_" in the key)
    prefix: str = "lora_"
    cli: MethodCLI = field(default_factory=MethodCLI)
    family: str = ""          # the registered method a preset belongs to ("" : itself)
    # options that only shape initialisation or training (a decoder may ignore a difference)
    init_only: Tuple[str, ...] = ()

    @property
    def layer(self) -> type:
        if not isinstance(self.layer_ref, str):
            return self.layer_ref
        module, _, name = self.layer_ref.partition(":")
        return getattr(importlib.import_module(module), name)

    def defaults_for(self, pipeline: Optional[str]) -> Dict[str, Any]:
        out = dict(self.defaults)
        out.update(self.pipeline_defaults.get(pipeline or DEFAULT_PIPELINE, {}))
        out.update(self.fixed)
        return out

    def targets_for(self, pipeline: Optional[str]) -> Tuple[str, ...]:
        return tuple(self.pipeline_targets.get(pipeline or DEFAULT_PIPELINE, DEFAULT_TARGETS))


_REGISTRY: Dict[str, MethodSpec] = {}


def register(name: str, layer: Union[type, str], defaults: Dict[str, Any], choices=None, check=None,
             pipeline_defaults=None, pipeline_targets=None, notes=None, prefix: str = "lora_",
             cli: Optional[MethodCLI] = None, init_only: Sequence[str] = ()) -> None:
    """Make `name` a method: MethodConfig(method=name), --method name, the models, the scripts.

    layer: the class, or "module:Class" for a card that must not import torch.
    prefix: the substring that marks the method's parameter and buffer names (its tensors are
    then trained, saved and loaded as adapter state). The rest: see MethodSpec.
    """
    if name in NO_ADAPTER or not name.isidentifier():
        raise ValueError(f"register: {name!r} cannot be a method name")
    for p in list(pipeline_defaults or {}) + list(pipeline_targets or {}):
        if p not in PIPELINES:
            raise ValueError(f"register({name!r}): unknown pipeline {p!r} (known: {PIPELINES})")
    if not prefix or not prefix.endswith("_"):
        raise ValueError(f"register({name!r}): prefix {prefix!r} must be a name part ending "
                         f"in '_' (e.g. 'lora_')")
    _REGISTRY[name] = MethodSpec(name, layer, dict(defaults), dict(choices or {}), check,
                                 pipeline_defaults={k: dict(v) for k, v in
                                                    (pipeline_defaults or {}).items()},
                                 pipeline_targets={k: tuple(v) for k, v in
                                                   (pipeline_targets or {}).items()},
                                 notes=notes, prefix=prefix, cli=cli or MethodCLI(),
                                 family=name, init_only=tuple(init_only))


def register_preset(name: str, of: str, **fixed) -> None:
    """A named variant: e.g. `lorma_plus` is `lorma` with kind='rri'."""
    base = _REGISTRY[of]
    _REGISTRY[name] = MethodSpec(name, base.layer_ref, {**base.defaults, **fixed}, base.choices,
                                 base.check, fixed=dict(fixed),
                                 pipeline_defaults=base.pipeline_defaults,
                                 pipeline_targets=base.pipeline_targets, notes=base.notes,
                                 prefix=base.prefix, cli=base.cli, family=base.family,
                                 init_only=base.init_only)


def unregister(name: str) -> None:
    """Remove a method and its presets (tests register toy methods)."""
    for key in [k for k, s in _REGISTRY.items() if k == name or s.family == name]:
        del _REGISTRY[key]


def available_methods() -> Tuple[str, ...]:
    return NO_ADAPTER + tuple(sorted(_REGISTRY))


def families() -> Tuple[str, ...]:
    """The registered methods themselves, without presets."""
    return tuple(sorted(k for k, s in _REGISTRY.items() if s.family == k))


def presets() -> Dict[str, MethodSpec]:
    return {k: s for k, s in _REGISTRY.items() if s.family != k}


def script_variants() -> Dict[str, Tuple[str, str]]:
    """variant name -> (method, flags): what the script generators write one script for."""
    out = {}
    for name in families():
        cli = _REGISTRY[name].cli
        for variant, flags in (cli.variants or {name: ""}).items():
            out[variant] = (name, flags)
    return out


def adapter_prefixes() -> Tuple[str, ...]:
    return tuple(sorted({"lora_"} | {s.prefix for s in _REGISTRY.values()}))


def get_spec(name: str) -> MethodSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r} (available: {', '.join(available_methods())})")


@dataclass
class MethodConfig:
    """A method and its options, validated on construction.

    r / alpha / dropout mean rank, scale numerator (s = alpha / r) and dropout for every method
    (for NOLA: nola_rank and nola_c). Options not given take the defaults of `pipeline` (see the
    module docstring); after construction `options` holds every option explicitly, so a saved
    config rebuilds the same layers whatever the defaults of a later version. `targets` None
    means the pipeline's official targets.
    """
    method: str = "lora"
    r: int = 4
    alpha: float = 32.0
    dropout: float = 0.0
    options: Dict[str, Any] = field(default_factory=dict)
    targets: Optional[Tuple[str, ...]] = None
    pipeline: Optional[str] = None

    def __post_init__(self):
        if self.pipeline is not None and self.pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {self.pipeline!r} (choose from {PIPELINES})")
        if self.method in NO_ADAPTER:
            if self.options:
                raise ValueError(f"method {self.method!r} takes no options, got {self.options}")
            self.targets = tuple(self.targets) if self.targets is not None else DEFAULT_TARGETS
            self._check_targets()
            return
        spec = get_spec(self.method)
        if self.targets is None:
            self.targets = spec.targets_for(self.pipeline)
        self.targets = tuple(self.targets)
        self._check_targets()
        check_rank(self.r, f"rank for method {self.method!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        defaults = spec.defaults_for(self.pipeline)
        unknown = sorted(set(self.options) - set(defaults))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for method {self.method!r} "
                             f"(valid: {sorted(defaults)})")
        clash = {k: v for k, v in self.options.items() if k in spec.fixed and v != spec.fixed[k]}
        if clash:
            raise ValueError(f"method {self.method!r} fixes {spec.fixed}; got {clash}")
        merged = {**defaults, **self.options}
        for key, allowed in spec.choices.items():
            if merged[key] not in allowed:
                raise ValueError(f"method {self.method!r}: option {key}={merged[key]!r} "
                                 f"is not one of {allowed}")
        if spec.check:
            spec.check(merged)
        self.options = merged

    def _check_targets(self):
        bad = [t for t in self.targets if t not in TARGETS]
        if bad:
            raise ValueError(f"unknown adapter target(s) {bad} (choose from {TARGETS})")

    @property
    def is_adapter(self) -> bool:
        return self.method not in NO_ADAPTER

    def notes(self) -> Tuple[str, ...]:
        """What a run log should say about this configuration (e.g. an ignored flag)."""
        if not self.is_adapter:
            return ()
        spec = get_spec(self.method)
        return tuple(spec.notes(self)) if spec.notes else ()

    def _function_view(self) -> Dict[str, Any]:
        """What decides the adapted model's function (not how it was initialised or trained)."""
        if not self.is_adapter:
            return {"method": "none"}
        spec = get_spec(self.method)
        return {"method": spec.family, "r": self.r, "alpha": self.alpha,
                "targets": tuple(self.targets),
                "options": {k: v for k, v in self.options.items() if k not in spec.init_only}}

    def differences(self, stored: "MethodConfig") -> Tuple[str, ...]:
        """Where this config computes something else than `stored` ("alpha 1000.0 (checkpoint:
        32.0)"); empty when an adapter trained with `stored` means the same here."""
        a, b = self._function_view(), stored._function_view()
        out = [f"{k} {a.get(k)!r} (checkpoint: {b.get(k)!r})"
               for k in ("method", "r", "alpha", "targets") if a.get(k) != b.get(k)]
        oa, ob = a.get("options", {}), b.get("options", {})
        out += [f"{k} {oa.get(k)!r} (checkpoint: {ob.get(k)!r})"
                for k in sorted(set(oa) | set(ob)) if oa.get(k) != ob.get(k)]
        return tuple(out)

    def to_dict(self) -> Dict[str, Any]:
        return {"method": self.method, "r": self.r, "alpha": self.alpha, "dropout": self.dropout,
                "options": dict(self.options), "targets": list(self.targets),
                "pipeline": self.pipeline}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "MethodConfig":
        d = dict(d)
        if d.get("targets") is not None:
            d["targets"] = tuple(d["targets"])
        return cls(**d)


def adapt_linear(in_features: int, out_features: int, config: Optional[MethodConfig], *,
                 enable: Optional[Sequence[bool]] = None, fan_in_fan_out: bool = False,
                 bias: bool = True, **kwargs):
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


# The built-in methods' cards (after the definitions above: they call register).
from . import methods  # noqa: E402,F401
