"""loralib: pluggable low-rank adapters (LoRA, LoRMA, MTLoRA, NOLA) for PyTorch.

A drop-in superset of Microsoft's loralib 0.1.2 (`lora.Linear`, `lora.MergedLinear`,
`lora.Embedding`, `lora.Conv1d/2d/3d`, `mark_only_lora_as_trainable`, `lora_state_dict`), plus
methods chosen by name through `MethodConfig` and `adapt_linear`.

Names load on first use (PEP 562): the command-line part (`add_method_args`, the registry, the
methods' cards) imports no torch, so a script's `--help` answers without it.
"""
import importlib
import importlib.util

name = "lora"
__version__ = "0.3.0"

_HOME = {
    "base": ("AdaptedLinear", "LoRALayer", "LowRankAdapter"),
    "layers": ("Conv1d", "Conv2d", "Conv3d", "ConvLoRA", "Embedding", "Linear", "MergedLinear"),
    "lorma": ("LoRMALinear",),
    "mtlora": ("MTLoRALinear",),
    "nola": ("NOLALinear",),
    "registry": ("MethodCLI", "MethodConfig", "adapt_linear", "available_methods", "families",
                 "get_spec", "register", "register_preset", "script_variants", "unregister"),
    "utils": ("count_parameters", "is_adapter_key", "load_lora_state_dict", "lora_state_dict",
              "mark_only_lora_as_trainable", "merge_all", "parameter_report", "unmerge_all"),
    "cli": ("add_method_args", "method_config_from_args"),
    "inject": ("inject", "merge_and_unload"),
    "adapter_io": ("load_adapter", "read_adapter_config", "save_adapter"),
    "fsdp": ("is_writer", "sharding"),
}
_MODULE_OF = {n: module for module, names in _HOME.items() for n in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(attr):
    module = _MODULE_OF.get(attr)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[attr] = value
        return value
    if not attr.startswith("_") and importlib.util.find_spec(f"{__name__}.{attr}") is not None:
        return importlib.import_module(f".{attr}", __name__)     # lora.cpu_linear, lora.quant, ...
    raise AttributeError(f"module 'loralib' has no attribute {attr!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
