"""A toy fifth method in one file, as a contributor would add one: a gated LoRA,
Delta W = s * B diag(g) A, with parameters named toy_* (no 'lora_' anywhere)."""
import math

import torch
import torch.nn as nn

import loralib as lora
from loralib.base import LowRankAdapter


class ToyLinear(LowRankAdapter):
    def build_adapter(self):
        n, r = self.n_enabled, self.r
        self.toy_down = nn.Parameter(self.weight.new_zeros((r * n, self.in_features)))
        self.toy_up = nn.Parameter(self.weight.new_zeros((self.slice_size * n, r)))
        self.toy_gate = nn.Parameter(self.weight.new_zeros((n * r,)))

    def reset_adapter_parameters(self):
        nn.init.kaiming_uniform_(self.toy_down, a=math.sqrt(5))
        nn.init.zeros_(self.toy_up)
        nn.init.ones_(self.toy_gate)

    def factors(self, w):
        A = self.toy_down * self.toy_gate[:, None]
        return A, self.toy_up.view(self.n_enabled, self.slice_size, self.r)


def _add_args(g):
    g.add_argument("--toy_flag", default=None, help="a toy method's own flag (unused)")


def register():
    lora.register("toy", ToyLinear, defaults={}, prefix="toy_",
                  cli=lora.MethodCLI(add_args=_add_args, flags=("toy_flag",)))


def reference(layer):
    """Delta W = s B diag(g) A per enabled slice, written out."""
    w0 = (layer.weight.t() if layer.fan_in_fan_out else layer.weight).detach().clone()
    r, d = layer.r, layer.slice_size
    for j, i in enumerate(layer.enabled_slices):
        A = layer.toy_down.detach()[j * r:(j + 1) * r]
        g = layer.toy_gate.detach()[j * r:(j + 1) * r]
        B = layer.toy_up.detach()[j * d:(j + 1) * d]
        w0[i * d:(i + 1) * d] += layer.scaling * B @ torch.diag(g) @ A
    return w0
