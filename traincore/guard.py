"""No silent divergence: a non-finite loss stops training naming its step, and no checkpoint
holding a non-finite tensor is written."""
from typing import Dict

import torch


class NonFiniteError(RuntimeError):
    pass


class LossWatch:
    """Remembers the first step whose loss was not finite, on the device (no host sync per
    step); `check()` raises at the next log or save point."""

    def __init__(self, device):
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        self.first_bad = torch.where(bad & (self.first_bad < 0),
                                     torch.full_like(self.first_bad, step), self.first_bad)

    def check(self, hint: str = "") -> None:
        step = int(self.first_bad)
        if step >= 0:
            raise NonFiniteError(f"the training loss is not finite (nan or inf) from step "
                                 f"{step}: stopped, nothing of it saved{hint}")


def check_finite_state(state: Dict[str, torch.Tensor], what: str) -> None:
    """Refuse to save `state` when a floating tensor in it holds nan or inf."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteError(f"{what}: not written, {len(bad)} tensor(s) hold nan or inf "
                             f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
