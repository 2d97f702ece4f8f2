"""LoRA's card (Hu et al., arXiv 2106.09685): the layer is loralib.layers.MergedLinear
(Microsoft's loralib 0.1.2 arithmetic); its flags are the shared --lora_dim / --lora_alpha /
--lora_dropout of cli.py."""
from ..registry import register

register("lora", "loralib.layers:MergedLinear", defaults={})
