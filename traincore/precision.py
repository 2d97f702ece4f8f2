"""--fp16 / --bf16, the same in every script and on every device.

--bf16: bf16 autocast (CUDA and CPU). --fp16: fp16 autocast with dynamic loss scaling in
training (CUDA and CPU; fp16 matmuls on a CPU are slow, which is fine for tests and parity
checks). Neither: fp32. Both: an error.
"""
import contextlib
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: Optional[torch.dtype] = None     # None: fp32

    @classmethod
    def from_flags(cls, fp16: bool, bf16: bool, device) -> "Precision":
        if fp16 and bf16:
            raise ValueError("--fp16 and --bf16 are exclusive")
        dtype = torch.float16 if fp16 else torch.bfloat16 if bf16 else None
        return cls(torch.device(device).type, dtype)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self):
        """The loss scaler fp16 training needs (None otherwise)."""
        return torch.amp.GradScaler(self.device_type) if self.dtype == torch.float16 else None
