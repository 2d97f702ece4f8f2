"""--fp16 / --bf16 / --tf32, the same in every script and on every device.

fp32 (no flag): every product in float32, as the official runs (PyTorch's default float32
matmul precision, "highest", set explicitly so that nothing inherited changes it). --tf32: float32
tensors, but CUDA matmuls on Ampere and newer GPUs take TF32 inputs (10-bit mantissa, float32
accumulation; torch.set_float32_matmul_precision("high")); oneDNN on a CPU with TF32 support
may do the same, other CPUs compute as fp32. --bf16: bf16 autocast (CUDA and CPU). --fp16: fp16
autocast with dynamic loss scaling in training (CUDA and CPU; fp16 matmuls on a CPU are slow,
which is fine for tests and parity checks). --fp16 with --bf16 is an error; --tf32 goes with
either (it then covers the products autocast leaves in float32).
"""
import contextlib
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: Optional[torch.dtype] = None     # None: fp32
    tf32: bool = False

    @classmethod
    def from_flags(cls, fp16: bool, bf16: bool, device, tf32: bool = False) -> "Precision":
        if fp16 and bf16:
            raise ValueError("--fp16 and --bf16 are exclusive")
        dtype = torch.float16 if fp16 else torch.bfloat16 if bf16 else None
        return cls(torch.device(device).type, dtype, bool(tf32))

    @property
    def name(self) -> str:
        base = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]
        if self.tf32:
            return "tf32" if self.dtype is None else base + "+tf32"
        return base

    def apply(self) -> None:
        """Set torch's float32 matmul precision for this process: TF32 with --tf32, full
        float32 otherwise (a process-wide setting: call it once, when the run starts)."""
        torch.set_float32_matmul_precision("high" if self.tf32 else "highest")

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self):
        """The loss scaler fp16 training needs (None otherwise)."""
        return torch.amp.GradScaler(self.device_type) if self.dtype == torch.float16 else None
