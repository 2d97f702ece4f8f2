"""loralib: pluggable low-rank adapters (LoRA, LoRMA, MTLoRA, NOLA) for PyTorch.

A drop-in superset of Microsoft's loralib 0.1.2 (`lora.Linear`, `lora.MergedLinear`,
`lora.Embedding`, `lora.Conv1d/2d/3d`, `mark_only_lora_as_trainable`, `lora_state_dict`), plus
methods chosen by name through `MethodConfig` and `adapt_linear`.
"""
name = "lora"
__version__ = "0.3.0"

from .base import AdaptedLinear, LoRALayer, LowRankAdapter
from .layers import Conv1d, Conv2d, Conv3d, ConvLoRA, Embedding, Linear, MergedLinear
from .lorma import LoRMALinear
from .mtlora import MTLoRALinear
from .nola import NOLALinear
from .registry import (MethodCLI, MethodConfig, adapt_linear, available_methods, families,
                       get_spec, register, register_preset, script_variants,
                       unregister)
from .utils import (count_parameters, is_adapter_key, load_lora_state_dict, lora_state_dict,
                    mark_only_lora_as_trainable, merge_all, parameter_report, unmerge_all)
from .cli import add_method_args, method_config_from_args
from .inject import inject, merge_and_unload
from .adapter_io import load_adapter, read_adapter_config, save_adapter
from . import cpu_linear
